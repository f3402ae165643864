"""Clean and robust accuracy over whole test sets, batched and jitted.

Robust accuracy follows the usual protocol: an example counts as robust only
when it is classified correctly clean AND under every restart of the attack
(each restart is an independent random start; the first restart that fools
the model settles that example, and later restarts run only on the examples
still standing). Batches have a fixed size (the last one is padded), so one
compilation serves the whole set, and `eps` / `step_size` are traced, so an
eps sweep does not recompile. With several local devices (GPUs, TPU cores, or
CPU devices from `--xla_force_host_platform_device_count`) each batch is
split across them.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxadv import validation
from jaxadv import attacks
from jaxadv import losses
from jaxadv import projections
from jaxadv import parallel
from jaxadv.evaluation import verdicts

from jaxadv.types import ApplyFn
EVAL_ATTACKS = ("fgsm", "fgsm_rs", "bim", "pgd")


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def logits(apply_fn: ApplyFn, variables: Any, x: jax.Array) -> jax.Array:
  """`apply_fn(variables, x, train=False)`, jitted with `apply_fn` static
  (so `jax.eval_shape` of it is cached per model, not traced per call)."""
  return apply_fn(variables, x, train=False)


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def _predict(apply_fn: ApplyFn, variables: Any, x: jax.Array):
  logits = apply_fn(variables, x, train=False)
  return jnp.argmax(logits, axis=-1), jnp.all(jnp.isfinite(logits))


def check_finite_logits(finite) -> None:
  """Raises ValueError unless `finite` (a bool array from the logits) holds."""
  if not bool(finite):
    raise ValueError(
        "the model's logits contain NaN or inf (check `apply_fn` and "
        "`variables`: NaN parameters?); argmax would silently predict "
        "class 0.")


@functools.partial(
    jax.jit,
    static_argnames=("apply_fn", "attack", "steps", "norm", "loss", "unroll"))
def _attack_correct(apply_fn, variables, x, y, key, eps, step_size, *,
                    attack: str, steps: int, norm: str, loss: str,
                    unroll: Optional[bool]) -> jax.Array:
  logits_fn = lambda v: apply_fn(variables, v, train=False)
  loss_fn = losses.make_loss_fn(logits_fn, loss)
  if attack == "fgsm":
    x_adv = attacks.fgm(loss_fn, x, y, eps=eps, norm=norm)
  elif attack == "fgsm_rs":
    x_adv = attacks.fgsm_rs(loss_fn, x, y, key, eps=eps, step_size=step_size,
                            norm=norm)
  else:
    x_adv = attacks.pgd(loss_fn, x, y, key, eps=eps, step_size=step_size,
                        steps=steps, norm=norm, random_start=attack == "pgd",
                        unroll=unroll)
  return jnp.argmax(logits_fn(x_adv), axis=-1) == y


def check_inputs(x: np.ndarray, y: np.ndarray, batch_size: int,
                 apply_fn: Optional[ApplyFn] = None,
                 variables: Any = None) -> None:
  """Checks an evaluation's images, labels and batch size.

  Args:
    x: float32 [N, ...] images in [0, 1].
    y: int [N] labels (below the model's class count when `apply_fn` and
      `variables` are given).
    batch_size: the evaluation batch size (>= 1).
    apply_fn: optionally the model, to check labels against its number of
      outputs.
    variables: the model's variables, with `apply_fn`.

  Raises:
    ValueError, TypeError: naming the bad argument.
  """
  validation.check_images(x, "x")
  num_classes = None if apply_fn is None else validation.output_classes(
      functools.partial(logits, apply_fn, variables), x)
  validation.check_labels(y, len(x), "y", num_classes=num_classes)
  validation.check_count(batch_size, "batch_size", 1)


def predict(apply_fn: ApplyFn, variables: Any, x: np.ndarray, *,
            batch_size: int = 1000,
            mesh: Optional[jax.sharding.Mesh] = None) -> np.ndarray:
  """Predicted classes for a whole array of inputs.

  Args:
    apply_fn: `apply_fn(variables, x, train=False) -> logits [B, C]`
      (a Flax `model.apply`).
    variables: the model's variables.
    x: float32 [N, ...] in [0, 1].
    batch_size: evaluation batch size (the last batch is padded).
    mesh: devices to split each batch over (`jaxadv.parallel.make_mesh`);
      None = all local devices when they divide `batch_size`.

  Returns:
    int [N] predictions.

  Raises:
    ValueError, TypeError: bad `x` or `batch_size`, or NaN/inf logits.
  """
  validation.check_images(x, "x")
  validation.check_count(batch_size, "batch_size", 1)
  out = np.zeros(len(x), np.int32)
  variables, put = parallel.placement(variables, batch_size, mesh)
  for chunk, n in parallel.padded_batches(np.arange(len(x)), batch_size):
    pred, finite = _predict(apply_fn, variables, put(x[chunk]))
    check_finite_logits(finite)
    out[chunk[:n]] = parallel.to_host(pred)[:n]
  return out


def accuracy(apply_fn: ApplyFn, variables: Any, x: np.ndarray, y: np.ndarray,
             *, batch_size: int = 1000,
             mesh: Optional[jax.sharding.Mesh] = None) -> float:
  """Clean accuracy (a fraction in [0, 1]) over `x` [N, ...], `y` int [N].

  `mesh` as in `predict`.

  Raises:
    ValueError, TypeError: bad inputs.
  """
  check_inputs(x, y, batch_size, apply_fn, variables)
  return float(np.mean(predict(apply_fn, variables, x, batch_size=batch_size,
                               mesh=mesh) == np.asarray(y)))


def robust_correct(apply_fn: ApplyFn, variables: Any, x: np.ndarray,
                   y: np.ndarray, key: jax.Array, *, attack: str = "pgd",
                   eps: float, step_size: Optional[float] = None,
                   steps: int = 0, restarts: int = 1, norm: str = "linf",
                   loss: str = "ce", batch_size: int = 500,
                   unroll: Optional[bool] = None,
                   progress: bool = False,
                   mesh: Optional[jax.sharding.Mesh] = None,
                   workdir: Optional[str] = None) -> np.ndarray:
  """Per-example robustness under an untargeted attack with restarts.

  Args:
    apply_fn: `apply_fn(variables, x, train=False) -> logits [B, C]`.
    variables: model variables.
    x: float32 [N, ...] clean inputs in [0, 1].
    y: int [N] true labels.
    key: PRNG key; restart r uses `fold_in(key, r)`.
    attack: "fgsm" (FGM for norm="l2"), "fgsm_rs", "bim" or "pgd".
    eps: budget, pixel units: a scalar or a per-example vector [N]
      (sliced with the batches).
    step_size: step in pixel units (iterative attacks; FGSM-RS's alpha);
      scalar or [N].
    steps: iterations (bim/pgd).
    restarts: independent random restarts; an example is robust only if it
      survives all of them.
    norm: "linf" or "l2".
    loss: "ce" or "cw".
    batch_size: fixed attack batch size.
    unroll: unroll the step loop (True), roll it (False) or None
      (`jaxadv.loops.default_unroll()`: unrolled on CPU only).
    progress: show a progress bar.
    mesh: devices to split each attack batch over (`parallel.make_mesh`,
      possibly spanning several processes); None = all local devices when
      they divide `batch_size`. The result does not depend on it.
    workdir: a folder where the verdicts are saved after every batch
      (`jaxadv.evaluation.verdicts`; the file is named by a hash of the
      settings, key, inputs, labels and variables): a killed call, repeated
      with the same arguments, resumes and returns the verdicts of an
      uninterrupted run. None = nothing written.

  Returns:
    bool [N]: correct on the clean input and under every restart.

  Raises:
    ValueError, TypeError: bad `x` (not floats in [0, 1], NaN/inf), `y` (not
      int [N] in [0, C)), eps < 0, steps < 0, restarts < 1, unknown attack,
      norm or loss, or a missing step_size.
  """
  check_inputs(x, y, batch_size, apply_fn, variables)
  validation.check_choice(attack, "attack", EVAL_ATTACKS)
  validation.check_choice(norm, "norm", projections.NORMS)
  validation.check_choice(loss, "loss", tuple(losses.LOSSES))
  validation.check_nonnegative(eps, "eps")
  validation.check_per_example(eps, "eps", len(x))
  if step_size is not None:
    validation.check_nonnegative(step_size, "step_size")
    validation.check_per_example(step_size, "step_size", len(x))
  validation.check_count(restarts, "restarts", 1)
  if attack in ("bim", "pgd"):
    validation.check_count(steps, "steps", 0)
    if step_size is None:
      raise ValueError(f"`step_size` is required for attack={attack!r}.")
  if step_size is None:
    step_size = 1.25 * eps if attack == "fgsm_rs" else 0.0
  y = np.asarray(y, np.int32)
  if attack in ("fgsm", "bim"):
    restarts = 1  # deterministic attacks: restarts would repeat themselves
  eps_n = np.asarray(eps, np.float32)
  step_n = np.asarray(step_size, np.float32)
  log = verdicts.VerdictLog(
      workdir, "robust_correct", lambda: verdicts.fingerprint(
          dict(attack=attack, eps=eps_n.tolist(), step_size=step_n.tolist(),
               steps=steps, restarts=restarts, norm=norm, loss=loss,
               batch_size=batch_size), key, x, y, variables),
      robust=np.zeros(len(x), bool))
  if not log.resumed:
    log.arrays["robust"] = predict(apply_fn, variables, x,
                                   batch_size=batch_size, mesh=mesh) == y
  robust = log.arrays["robust"]
  per_ex = lambda v, chunk: jnp.asarray(v if v.ndim == 0 else v[chunk])
  variables, put = parallel.placement(variables, batch_size, mesh)
  total = restarts * int(robust.sum())
  bar = tqdm(total=total, disable=not progress, desc=f"{attack}-{steps}",
             dynamic_ncols=True, mininterval=1.0)
  for r in range(restarts):
    if log.done(r):
      continue
    idx = log.start_round(r, np.nonzero(robust)[0])
    if len(idx) == 0:
      break
    rkey = jax.random.fold_in(key, r)
    batches = list(parallel.padded_batches(idx, batch_size))
    for i in log.batches(r, len(batches)):
      chunk, n = batches[i]
      ok = _attack_correct(apply_fn, variables, put(x[chunk]), put(y[chunk]),
                           jax.random.fold_in(rkey, i), per_ex(eps_n, chunk),
                           per_ex(step_n, chunk),
                           attack=attack, steps=steps, norm=norm, loss=loss,
                           unroll=unroll)
      robust[chunk[:n]] &= parallel.to_host(ok)[:n]
      log.commit(r, i + 1)
      bar.update(n)
  bar.close()
  log.finish(restarts)
  return robust


def robust_accuracy(apply_fn: ApplyFn, variables: Any, x: np.ndarray,
                    y: np.ndarray, key: jax.Array, **kwargs) -> float:
  """Robust accuracy (fraction); arguments as `robust_correct`."""
  return float(np.mean(robust_correct(apply_fn, variables, x, y, key,
                                      **kwargs)))
