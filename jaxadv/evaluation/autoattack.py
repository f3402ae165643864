"""AutoAttack-style robustness evaluation: APGD-CE, APGD-T, FAB-T and Square.

Croce & Hein (ICML 2020), "Reliable evaluation of adversarial robustness with
an ensemble of diverse parameter-free attacks": the "standard" ensemble runs
APGD-CE, then targeted APGD with the DLR loss towards each of the top-9
other classes (by clean logits), then targeted FAB (Croce & Hein, ICML
2020, `jaxadv.attacks.fab`) towards the same 9 classes, then the Square
attack (Andriushchenko et al., ECCV 2020), every attack only on the points
still robust after the ones before it. `ENSEMBLES["apgd-t+square"]` is
the cheaper ensemble without FAB-T that jaxadv called standard before. An
example is robust when it is classified correctly clean and survives every
attack. `evaluate_randomized` is AutoAttack's "rand" version for randomized
defences (APGD-CE and APGD-DLR with Expectation over Transformation over 20
draws).

Batching: the survivors of each attack run in padded batches of at most
`batch_size`, sized to them from a few sizes (`fit_batches`), `eps`
traced, batches spread over local devices.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxadv import parallel
from jaxadv import validation
from jaxadv import attacks
from jaxadv.evaluation import robust
from jaxadv.evaluation import verdicts

STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")
# Named ensembles; only "standard" is AutoAttack's standard version.
ENSEMBLES = {"standard": STANDARD,
             "apgd-t+square": ("apgd-ce", "apgd-t", "square")}
# attack name -> APGD loss ("fab-t" and "square" are not APGD)
_APGD_LOSSES = {"apgd-ce": "ce", "apgd-dlr": "dlr", "apgd-t": "dlr_targeted"}
ENSEMBLE_ATTACKS = tuple(_APGD_LOSSES) + ("fab-t", "square")
# Attacks that run once per target class rank.
_TARGETED = ("apgd-t", "fab-t")
# AutoAttack's "rand" version, for randomized defences: EOT over 20 draws.
RAND = ("apgd-ce", "apgd-dlr")
_RAND_ATTACKS = ("apgd-ce", "apgd-dlr")
# Key streams of the randomized evaluation (clean draw, verdict draws).
_CLEAN_STREAM = 0x0C1EA4
_VERDICT_STREAM = 0x7E4D1C7


def _target(logits: jax.Array, y: jax.Array, target_rank) -> jax.Array:
  """The `target_rank`-th highest clean logit's class other than `y`."""
  others = jnp.where(jax.nn.one_hot(y, logits.shape[-1]) > 0, -jnp.inf,
                     logits)
  return jnp.argsort(-others, axis=-1)[:, target_rank]


@functools.partial(
    jax.jit,
    static_argnames=("apply_fn", "loss", "steps", "restarts", "norm", "unroll"))
def _apgd_correct(apply_fn, variables, x, y, key, eps, target_rank, *,
                  loss: str, steps: int, restarts: int, norm: str,
                  unroll: Optional[bool]) -> jax.Array:
  """Correct under APGD; APGD-T aims at the `target_rank`-th other class."""
  logits_fn = lambda v: apply_fn(variables, v, train=False)
  target = None
  if loss == "dlr_targeted":
    target = _target(logits_fn(x), y, target_rank)
  x_adv = attacks.apgd_logits(logits_fn, x, y, key, eps=eps, steps=steps,
                              loss=loss, target=target, norm=norm,
                              restarts=restarts, unroll=unroll)
  return jnp.argmax(logits_fn(x_adv), axis=-1) == y, x_adv


@functools.partial(jax.jit, static_argnames=("apply_fn", "steps", "restarts",
                                             "norm", "unroll"))
def _fab_correct(apply_fn, variables, x, y, key, eps, target_rank, *,
                 steps: int, restarts: int, norm: str,
                 unroll: Optional[bool]) -> jax.Array:
  """Correct under FAB-T towards the `target_rank`-th other class."""
  logits_fn = lambda v: apply_fn(variables, v, train=False)
  x_adv = attacks.fab(logits_fn, x, y, key, eps=eps, norm=norm, steps=steps,
                      target=_target(logits_fn(x), y, target_rank),
                      restarts=restarts, unroll=unroll)
  return jnp.argmax(logits_fn(x_adv), axis=-1) == y, x_adv


@functools.partial(jax.jit, static_argnames=("apply_fn", "queries", "p_init"))
def _square_correct(apply_fn, variables, x, y, key, eps, target_rank, *,
                    queries: int, p_init: float) -> jax.Array:
  del target_rank
  logits_fn = lambda v: apply_fn(variables, v, train=False)
  x_adv = attacks.square(logits_fn, x, y, key, eps=eps, queries=queries,
                         p_init=p_init)
  return jnp.argmax(logits_fn(x_adv), axis=-1) == y, x_adv


@functools.partial(
    jax.jit, static_argnames=("apply_fn", "loss", "steps", "restarts", "norm",
                              "eot_samples", "unroll"))
def _apgd_eot_correct(apply_fn, variables, x, y, key, eps, target_rank, *,
                      loss: str, steps: int, restarts: int, norm: str,
                      eot_samples: int, unroll: Optional[bool]):
  """Correct under EOT-APGD on a randomized model, judged by a fresh draw."""
  del target_rank
  logits_fn = lambda v, k: apply_fn(variables, v, k)
  x_adv = attacks.apgd_logits(logits_fn, x, y, key, eps=eps, steps=steps,
                              loss=loss, norm=norm, restarts=restarts,
                              eot_samples=eot_samples, unroll=unroll)
  verdict_key = jax.random.fold_in(key, _VERDICT_STREAM)
  return jnp.argmax(logits_fn(x_adv, verdict_key), axis=-1) == y, x_adv


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def _predict_randomized(apply_fn, variables, x, key):
  logits = apply_fn(variables, x, key)
  return jnp.argmax(logits, axis=-1), jnp.all(jnp.isfinite(logits))


def _run_chain(chain: Sequence[tuple], apply_fn, variables, x: np.ndarray,
               y: np.ndarray, key: jax.Array, correct: np.ndarray, eps, *,
               batch_size: int, fit_batches: bool, progress: bool,
               return_adv: bool, workdir: Optional[str] = None,
               settings: Optional[dict] = None) -> dict:
  """Runs `chain` = [(name, jitted fn, target ranks)] on the survivors.

  Attack `a` uses `fold_in(key, a)`, its target rank `r` `fold_in(., r)`
  and its batch `b` `fold_in(., b)`. Each round (attack, rank) runs its
  survivors in batches of `batch_size`, or with `fit_batches` of
  `parallel.fitted_batch_size` (fewer padded examples, a compilation per
  new size). With `workdir`, the verdicts are saved after every batch
  (`verdicts.VerdictLog`, keyed by `settings`) and a repeated call resumes.
  `correct` holds the clean verdicts (ignored when resuming).
  """
  names = [name for name, _, _ in chain]
  if workdir is not None and return_adv:
    raise ValueError("`return_adv` with `workdir` is not supported: only the "
                     "verdicts are saved as the evaluation goes.")
  digest = lambda: verdicts.fingerprint(
      dict(settings or {}, attacks=names, eps=float(eps),
           batch_size=batch_size, fit_batches=fit_batches), key, x, y,
      variables)
  log = verdicts.VerdictLog(workdir, "ensemble", digest, correct=correct,
                            fooled_by=np.where(correct, -1, 0))
  correct, fooled_by = log.arrays["correct"], log.arrays["fooled_by"]
  if not log.meta:
    log.meta = {"per_attack": {}, "attacked": {n: 0 for n in names},
                "seconds": {n: 0.0 for n in names}}
  meta = log.meta
  x_adv = np.array(x, copy=True) if return_adv else None
  placed = {}   # batch size -> (placed variables, put)
  eps_a = jnp.float32(eps)
  rounds = [(a, r) for a, (_, _, ranks) in enumerate(chain)
            for r in range(ranks)]
  for k, (a, r) in enumerate(rounds):
    name, fn, ranks = chain[a]
    if log.done(k):
      continue
    t0 = time.perf_counter()
    idx = log.start_round(k, np.nonzero(correct)[0])
    if len(idx) == 0:
      meta["per_attack"][name] = float(correct.mean())
      continue
    size = batch_size
    if fit_batches:
      size = parallel.fitted_batch_size(
          len(idx), batch_size, multiple=jax.local_device_count())
    if size not in placed:
      placed[size] = parallel.placement(variables, size)
    pvars, put = placed[size]
    rkey = jax.random.fold_in(jax.random.fold_in(key, a), r)
    bar = tqdm(total=len(idx), disable=not progress, dynamic_ncols=True,
               desc=name + (f" target {r + 1}" if ranks > 1 else ""),
               mininterval=1.0)
    batches = list(parallel.padded_batches(idx, size))
    todo = log.batches(k, len(batches))
    for i in todo:
      chunk, n = batches[i]
      if i == 0:
        meta["attacked"][name] += len(idx)
      ok, adv = fn(apply_fn, pvars, put(x[chunk]), put(y[chunk]),
                   jax.random.fold_in(rkey, i), eps_a, jnp.int32(r))
      ok = np.asarray(ok)[:n]
      real = chunk[:n]
      newly = real[~ok & correct[real]]
      fooled_by[newly] = a + 1
      if return_adv:
        x_adv[newly] = np.asarray(adv)[:n][~ok & correct[real]]
      correct[real] &= ok
      bar.update(n)
      meta["seconds"][name] += time.perf_counter() - t0
      t0 = time.perf_counter()
      meta["per_attack"][name] = float(correct.mean())
      log.commit(k, i + 1)
    bar.close()
  log.finish(len(rounds))
  out = {"per_attack": {n: meta["per_attack"][n] for n in names},
         "attacked": dict(meta["attacked"]), "seconds": dict(meta["seconds"]),
         "attacks": names}
  out["robust_acc"] = float(correct.mean())
  out["robust"] = correct
  out["fooled_by"] = fooled_by
  if return_adv:
    out["x_adv"] = x_adv
  return out


def evaluate_robustness(apply_fn: robust.ApplyFn, variables: Any,
                        x: np.ndarray, y: np.ndarray, key: jax.Array, *,
                        eps: float, norm: str = "linf",
                        attack_names: Sequence[str] = STANDARD,
                        apgd_steps: int = 100, apgd_restarts: int = 1,
                        num_targets: int = 9, fab_steps: int = 100,
                        fab_restarts: int = 1, square_queries: int = 5000,
                        square_p_init: float = 0.8, batch_size: int = 500,
                        fit_batches: bool = True,
                        unroll: Optional[bool] = None,
                        progress: bool = False,
                        return_adv: bool = False,
                        workdir: Optional[str] = None) -> dict:
  """Robust accuracy under the AutoAttack "standard" ensemble.

  Attacks run in the order given, each only on the examples still robust
  (correct clean and after every earlier attack); APGD-T and FAB-T run
  once per target class, the `num_targets` highest clean logits other than
  `y`.
  Attack `a` uses the key `fold_in(key, a)`, its target rank `t`
  `fold_in(., t)` and its batch `b` `fold_in(., b)`: the same key gives the
  same result.

  Args:
    apply_fn: `apply_fn(variables, x, train=False) -> logits [B, C]`
      (`jaxadv.evaluation.as_apply_fn` turns any `x -> logits` function
      into one).
    variables: model variables.
    x: float32 [N, H, W, C] (or [N, D] without Square) in [0, 1].
    y: int [N] true labels.
    key: PRNG key.
    eps: budget, pixel units (0.3 on MNIST, 8/255 on CIFAR).
    norm: "linf" or "l2" (Square is L-inf only).
    attack_names: a sequence of "apgd-ce", "apgd-dlr", "apgd-t", "fab-t",
      "square" (`ENSEMBLES` names some; the default is AutoAttack's
      standard version).
    apgd_steps: APGD iterations (100 in AutoAttack).
    apgd_restarts: APGD restarts (1 in AutoAttack).
    num_targets: APGD-T and FAB-T target classes (9; capped at C - 1).
    fab_steps: FAB-T iterations per target (100 in AutoAttack).
    fab_restarts: FAB-T runs per target (1 in AutoAttack's standard).
    square_queries: Square's query budget (5000 in AutoAttack).
    square_p_init: Square's initial square fraction (0.8).
    batch_size: the largest attack batch (a batch short of it is padded).
    fit_batches: True (default): each attack (and each target) runs its
      survivors in the fewest batches of at most `batch_size`, each only as
      large as needed, from 16 sizes (`jaxadv.parallel.fitted_batch_size`;
      a compilation per new size); False: every batch is `batch_size` (one
      compilation per attack, more padding). The key of batch `b` depends
      on which examples it holds, so the two draw different random starts.
    unroll: unroll the step loop (True), roll it (False) or None
      (`jaxadv.loops.default_unroll()`: unrolled on CPU only).
    progress: progress bars.
    return_adv: also return "x_adv", float32 [N, ...]: each example's first
      successful adversarial example, or `x` where none was found.
    workdir: a folder where the per-example verdicts are saved after every
      batch (`jaxadv.evaluation.verdicts`): a killed call, repeated with the
      same arguments, resumes and gives the verdicts of an uninterrupted
      run ("seconds" then sum the runs). None = nothing written. Not with
      `return_adv`.

  Returns:
    A dict: "clean_acc" and "robust_acc" (fractions); "per_attack": robust
    accuracy after each attack, cumulative, in order; "attacked": how many
    examples each attack ran on (APGD-T: summed over targets); "seconds":
    wall time per attack; "robust": bool [N] per example; "fooled_by":
    int [N], -1 robust, 0 wrong clean, a + 1 first fooled by attack a;
    "attacks": the attack names; "x_adv" with `return_adv`.

  Raises:
    ValueError, TypeError: bad inputs (empty, labels outside the model's
      classes), NaN/inf logits, an unknown attack name, Square with norm
      "l2", or counts out of range.
  """
  robust.check_inputs(x, y, batch_size, apply_fn, variables)
  validation.check_nonnegative(eps, "eps")
  validation.check_choice(norm, "norm", ("linf", "l2"))
  for name in attack_names:
    validation.check_choice(name, "attack_names", ENSEMBLE_ATTACKS)
  if "square" in attack_names and norm != "linf":
    raise ValueError("the Square attack here is L-inf only; drop 'square' "
                     f"from `attack_names` for norm={norm!r}.")
  validation.check_count(apgd_steps, "apgd_steps", 0)
  validation.check_count(apgd_restarts, "apgd_restarts", 1)
  validation.check_count(num_targets, "num_targets", 1)
  validation.check_count(fab_steps, "fab_steps", 0)
  validation.check_count(fab_restarts, "fab_restarts", 1)
  validation.check_count(square_queries, "square_queries", 1)
  y = np.asarray(y, np.int32)
  correct = robust.predict(apply_fn, variables, x, batch_size=batch_size) == y
  clean_acc = float(correct.mean())
  num_classes = None
  chain = []
  for name in attack_names:
    ranks = 1
    if name == "square":
      fn = functools.partial(_square_correct, queries=square_queries,
                             p_init=square_p_init)
    elif name == "fab-t":
      fn = functools.partial(_fab_correct, steps=fab_steps,
                             restarts=fab_restarts, norm=norm, unroll=unroll)
    else:
      fn = functools.partial(_apgd_correct, loss=_APGD_LOSSES[name],
                             steps=apgd_steps, restarts=apgd_restarts,
                             norm=norm, unroll=unroll)
    if name in _TARGETED:
      if num_classes is None:
        num_classes = int(jax.eval_shape(
            robust.logits, apply_fn, variables, jnp.asarray(x[:1])).shape[-1])
      ranks = min(num_targets, num_classes - 1)
    chain.append((name, fn, ranks))
  settings = dict(norm=norm, apgd_steps=apgd_steps,
                  apgd_restarts=apgd_restarts, num_targets=num_targets,
                  fab_steps=fab_steps, fab_restarts=fab_restarts,
                  square_queries=square_queries, square_p_init=square_p_init,
                  unroll=unroll)
  out = _run_chain(chain, apply_fn, variables, x, y, key, correct, eps,
                   batch_size=batch_size, fit_batches=fit_batches,
                   progress=progress, return_adv=return_adv, workdir=workdir,
                   settings=settings)
  return {"clean_acc": clean_acc, **out}


def evaluate_randomized(apply_fn: Callable[..., jax.Array], variables: Any,
                        x: np.ndarray, y: np.ndarray, key: jax.Array, *,
                        eps: float, norm: str = "linf",
                        attack_names: Sequence[str] = RAND,
                        apgd_steps: int = 100, apgd_restarts: int = 1,
                        eot_samples: int = 20, batch_size: int = 500,
                        fit_batches: bool = True,
                        unroll: Optional[bool] = None,
                        progress: bool = False,
                        return_adv: bool = False,
                        workdir: Optional[str] = None) -> dict:
  """AutoAttack's "rand" version, for randomized defences.

  Croce & Hein (ICML 2020): APGD-CE, then APGD-DLR, each with Expectation
  over Transformation (every iterate's loss and gradient averaged over
  `eot_samples` draws of the defence's randomness; 20 in AutoAttack), each
  only on the examples still robust. As in AutoAttack, a verdict is the
  defence's prediction on one fresh draw: clean correctness from
  `fold_in(key, _CLEAN_STREAM)`, each attack's verdict from a draw split
  off its own key.

  Args:
    apply_fn: `apply_fn(variables, x, key) -> logits [B, C]` of the
      randomized model (log-probabilities for a defence that outputs
      probabilities, e.g. Mixup Inference).
    variables: its variables (any pytree; may be empty).
    x: float32 [N, ...] in [0, 1].
    y: int [N] true labels.
    key: PRNG key.
    eps: budget, pixel units.
    norm: "linf" or "l2".
    attack_names: a sequence of "apgd-ce", "apgd-dlr" (default both, in
      AutoAttack's order).
    apgd_steps: APGD iterations (100).
    apgd_restarts: APGD restarts (1).
    eot_samples: draws averaged per iterate (20).
    batch_size: the largest attack batch (a batch short of it is padded).
    fit_batches: as `evaluate_robustness`.
    unroll: as `evaluate_robustness`.
    progress: progress bars.
    return_adv: as `evaluate_robustness`.
    workdir: as `evaluate_robustness` (resumable verdicts).

  Returns:
    The dict of `evaluate_robustness`, plus "eot_samples".

  Raises:
    ValueError, TypeError: bad inputs, an unknown attack name, or counts out
      of range.
  """
  validation.check_images(x, "x")
  validation.check_count(batch_size, "batch_size", 1)
  validation.check_nonnegative(eps, "eps")
  validation.check_choice(norm, "norm", ("linf", "l2"))
  for name in attack_names:
    validation.check_choice(name, "attack_names", _RAND_ATTACKS)
  validation.check_count(apgd_steps, "apgd_steps", 0)
  validation.check_count(apgd_restarts, "apgd_restarts", 1)
  validation.check_count(eot_samples, "eot_samples", 1)
  probe = jax.eval_shape(lambda v: apply_fn(v, jnp.asarray(x[:1]),
                                            jax.random.key(0)), variables)
  validation.check_labels(y, len(x), "y", num_classes=int(probe.shape[-1]))
  y = np.asarray(y, np.int32)
  clean_key = jax.random.fold_in(key, _CLEAN_STREAM)
  correct = np.zeros(len(x), bool)
  pvars, put = parallel.placement(variables, batch_size)
  for i, (chunk, n) in enumerate(
      parallel.padded_batches(np.arange(len(x)), batch_size)):
    pred, finite = _predict_randomized(apply_fn, pvars, put(x[chunk]),
                                       jax.random.fold_in(clean_key, i))
    robust.check_finite_logits(finite)
    correct[chunk[:n]] = np.asarray(pred)[:n] == y[chunk[:n]]
  clean_acc = float(correct.mean())
  chain = [(name, functools.partial(
      _apgd_eot_correct, loss=_APGD_LOSSES[name], steps=apgd_steps,
      restarts=apgd_restarts, norm=norm, eot_samples=eot_samples,
      unroll=unroll), 1) for name in attack_names]
  out = _run_chain(chain, apply_fn, variables, x, y, key, correct, eps,
                   batch_size=batch_size, fit_batches=fit_batches,
                   progress=progress, return_adv=return_adv, workdir=workdir,
                   settings=dict(version="rand", norm=norm,
                                 apgd_steps=apgd_steps,
                                 apgd_restarts=apgd_restarts,
                                 eot_samples=eot_samples, unroll=unroll))
  return {"clean_acc": clean_acc, **out, "eot_samples": eot_samples}
