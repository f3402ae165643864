"""The standard robustness report (clean / FGSM / PGD) and its sanity checks.

The checks follow the gradient-masking symptoms of Athalye, Carlini & Wagner
(ICML 2018) and Carlini et al. (2019), "On evaluating adversarial
robustness": an iterative attack weaker than a single step, accuracy that
does not reach ~0 at a large eps, a black-box attack stronger than the
white-box ones, accuracy that keeps falling with more steps or restarts, and
a loss that does not increase along the attack.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv import validation
from jaxadv import losses
from jaxadv.attacks import core
from jaxadv.evaluation import autoattack
from jaxadv.evaluation import robust

CHECKS = ("eps0", "pgd_vs_fgsm", "eps_monotone", "large_eps", "square",
          "more_iterations", "loss_increases")


@dataclasses.dataclass
class SanityCheck:
  """One sanity check of an evaluation: its name, verdict and the numbers."""
  name: str
  passed: bool
  detail: str
  symptom: str = ""  # what a failure means, shown with the warning

  def __str__(self) -> str:
    if self.passed or not self.symptom:
      return f"[{'PASS' if self.passed else 'WARN'}] {self.name}: {self.detail}"
    return f"[WARN] {self.name}: {self.symptom} ({self.detail})"


def evaluate(apply_fn: robust.ApplyFn, variables: Any, x: np.ndarray,
             y: np.ndarray, key: jax.Array, *, eps: float,
             pgd_steps: int = 50, pgd_step_size: float = 0.01,
             pgd_restarts: int = 10, norm: str = "linf",
             batch_size: int = 500, unroll: Optional[bool] = None,
             progress: bool = False,
             mesh: Optional[jax.sharding.Mesh] = None) -> dict:
  """Clean, FGSM and PGD accuracy over a whole test set.

  Defaults are the MNIST protocol (Madry et al., 2018): PGD-50, step 0.01,
  10 restarts. For CIFAR pass eps=8/255, pgd_step_size=2/255.

  Args:
    apply_fn: `apply_fn(variables, x, train=False) -> logits [B, C]`.
    variables: model variables.
    x: float32 [N, H, W, C] in [0, 1].
    y: int [N] labels.
    key: PRNG key for PGD's random starts.
    eps: budget, pixel units.
    pgd_steps: the PGD attack's step count (static).
    pgd_step_size: its step size, pixel units.
    pgd_restarts: its random restarts (static, >= 1).
    norm: "linf" or "l2".
    batch_size: attack batch size.
    unroll: unroll the step loop (True), roll it (False) or None
      (`jaxadv.loops.default_unroll()`: unrolled on CPU only).
    progress: progress bars.
    mesh: devices to split the batches over (`jaxadv.parallel.make_mesh`);
      None = all local devices.

  Returns:
    {"clean_acc", "fgsm_acc", "pgd_acc"} as fractions, plus
    "pgd_steps", "pgd_restarts".

  Raises:
    ValueError, TypeError: bad `x`/`y` (see `robust_correct`), eps < 0,
      pgd_steps < 0, pgd_restarts < 1 or pgd_step_size < 0.
  """
  validation.check_nonnegative(eps, "eps")
  validation.check_count(pgd_steps, "pgd_steps", 0)
  validation.check_count(pgd_restarts, "pgd_restarts", 1)
  validation.check_nonnegative(pgd_step_size, "pgd_step_size")
  clean = robust.accuracy(apply_fn, variables, x, y, batch_size=batch_size,
                          mesh=mesh)
  fgsm = robust.robust_accuracy(apply_fn, variables, x, y, key, attack="fgsm",
                                eps=eps, norm=norm, batch_size=batch_size,
                                mesh=mesh)
  pgd = robust.robust_accuracy(
      apply_fn, variables, x, y, jax.random.fold_in(key, 1), attack="pgd",
      eps=eps, step_size=pgd_step_size, steps=pgd_steps,
      restarts=pgd_restarts, norm=norm, batch_size=batch_size, unroll=unroll,
      progress=progress, mesh=mesh)
  return {"clean_acc": clean, "fgsm_acc": fgsm, "pgd_acc": pgd,
          "pgd_steps": pgd_steps, "pgd_restarts": pgd_restarts}


@functools.partial(jax.jit, static_argnames=("apply_fn", "steps", "norm"))
def _pgd_loss_curve(apply_fn, variables, x, y, key, eps, step_size, *,
                    steps: int, norm: str) -> jax.Array:
  """Mean CE loss at PGD's random start and after each step, [steps + 1]."""
  loss_fn = losses.make_loss_fn(lambda v: apply_fn(variables, v, train=False))

  def body(d, _):
    loss, g = core.input_grad(loss_fn, x, y, d, False)
    d = core.ascend(x, d, g, eps=eps, step_size=step_size, norm=norm)
    return d, jnp.mean(loss)

  delta, curve = jax.lax.scan(body, core.start(key, x, eps, norm, True),
                              None, length=steps)
  return jnp.append(curve, jnp.mean(loss_fn(x + delta, y)))


def _square_drop(ensemble: dict) -> tuple[float, float]:
  """(accuracy before Square, after it) in an `evaluate_robustness` result."""
  names = list(ensemble["per_attack"])
  i = names.index("square")
  before = (ensemble["per_attack"][names[i - 1]] if i else
            ensemble["clean_acc"])
  return before, ensemble["per_attack"]["square"]


def sanity_checks(apply_fn: robust.ApplyFn, variables: Any, x: np.ndarray,
                  y: np.ndarray, key: jax.Array, results: dict, *, eps: float,
                  pgd_steps: int = 50, pgd_step_size: float = 0.01,
                  pgd_restarts: int = 1,
                  eps_fractions: Sequence[float] = (1 / 3, 2 / 3, 1.0),
                  subset: int = 1000, norm: str = "linf",
                  batch_size: int = 500, large_eps: Optional[float] = None,
                  large_eps_max_acc: float = 0.05,
                  ensemble: Optional[dict] = None, square_queries: int = 1000,
                  more_steps_factor: int = 2, more_restarts: int = 5,
                  material: float = 0.02, checks: Sequence[str] = CHECKS,
                  unroll: Optional[bool] = None) -> list[SanityCheck]:
  """Checks that catch a broken attack, a broken evaluation or gradient masking.

  1. "eps0": eps = 0 reproduces clean accuracy (FGSM on the full set, PGD on
     `subset` examples);
  2. "pgd_vs_fgsm": PGD accuracy <= FGSM accuracy;
  3. "eps_monotone": PGD accuracy does not rise as eps grows (one restart);
  4. "large_eps": PGD accuracy at `large_eps` is <= `large_eps_max_acc`
     (any image is within reach at eps 1; at 0.5 the gray image is, so a
     working attack gets close to 0);
  5. "square": the black-box Square attack, run after white-box APGD-CE,
     fools at most `material` of the examples (from `ensemble` when given,
     else APGD-CE + Square with `square_queries` on the subset);
  6. "more_iterations": against the reported attack (PGD-`pgd_steps` x
     `pgd_restarts`), `more_steps_factor` x more steps (same restarts), or
     `more_restarts` further restarts on top of it, lower accuracy by at
     most `material`;
  7. "loss_increases": the mean CE loss along PGD rises from its random
     start (first `batch_size` examples of the subset).
  Checks 3-7 run on the first `subset` examples.

  Args:
    apply_fn: as `evaluate`.
    variables: as `evaluate`.
    x: as `evaluate`.
    y: as `evaluate`.
    key: as `evaluate`.
    results: the dict `evaluate` returned for this model.
    eps: as `evaluate`.
    pgd_steps: as `evaluate`.
    pgd_step_size: as `evaluate`.
    pgd_restarts: the restarts of the reported PGD (`results`); check 6
      starts from that attack.
    norm: as `evaluate`.
    batch_size: as `evaluate`.
    eps_fractions: the eps grid of check 3, as fractions of `eps`.
    subset: examples used by checks 1 (PGD part) and 3-7.
    large_eps: the eps of check 4 (default 0.5 for L-inf, half the image
      diagonal `0.5 sqrt(D)` for L2); PGD there uses step
      `2.5 * large_eps / pgd_steps`.
    large_eps_max_acc: the largest accuracy check 4 accepts.
    ensemble: an `evaluate_robustness` result on the same model, or None.
    square_queries: Square's budget in check 5 when `ensemble` is None.
    more_steps_factor: check 6's longer PGD runs this many times the steps.
    more_restarts: check 6's extra restarts beyond `pgd_restarts`.
    material: the accuracy change (fraction) that counts as material in
      checks 5 and 6.
    checks: which checks to run (names above, in any order).
    unroll: unroll the step loop (True), roll it (False) or None
      (`jaxadv.loops.default_unroll()`: unrolled on CPU only).

  Returns:
    A list of `SanityCheck`s in the order above (print them; `passed=False`
    is a warning whose `symptom` names what it suggests).

  Raises:
    ValueError: an unknown check name.
  """
  for name in checks:
    validation.check_choice(name, "checks", CHECKS)
  out = []
  xs, ys = x[:subset], y[:subset]
  pgd_kw = dict(norm=norm, batch_size=batch_size, unroll=unroll)
  memo = {}

  def pgd_acc(e, steps, step_size, restarts=1, k=7):
    args = (float(e), steps, float(step_size), restarts, k)
    if args not in memo:
      memo[args] = robust.robust_accuracy(
          apply_fn, variables, xs, ys, jax.random.fold_in(key, k),
          attack="pgd", eps=e, step_size=step_size, steps=steps,
          restarts=restarts, **pgd_kw)
    return memo[args]

  if "eps0" in checks:
    fgsm0 = robust.robust_accuracy(apply_fn, variables, x, y, key,
                                   attack="fgsm", eps=0.0, norm=norm,
                                   batch_size=batch_size)
    clean_s = robust.accuracy(apply_fn, variables, xs, ys,
                              batch_size=batch_size)
    pgd0 = pgd_acc(0.0, pgd_steps, pgd_step_size, k=0)
    ok = (abs(fgsm0 - results["clean_acc"]) < 1e-9 and
          abs(pgd0 - clean_s) < 1e-9)
    out.append(SanityCheck(
        "eps=0 reproduces clean accuracy", ok,
        f"clean {results['clean_acc']:.4f}, FGSM(eps=0) {fgsm0:.4f}; "
        f"subset clean {clean_s:.4f}, PGD(eps=0) {pgd0:.4f}",
        "the attack changes predictions with no budget: a bug in the "
        "attack or the evaluation (or a randomized model)"))
  if "pgd_vs_fgsm" in checks:
    ok = results["pgd_acc"] <= results["fgsm_acc"] + 1e-9
    out.append(SanityCheck(
        "PGD accuracy <= FGSM accuracy", ok,
        f"PGD {results['pgd_acc']:.4f} vs FGSM {results['fgsm_acc']:.4f}",
        "PGD accuracy above FGSM's: the iterative attack is weaker than one "
        "step, a sign of gradient masking or a mistuned PGD"))
  if "eps_monotone" in checks:
    grid = [eps * f for f in eps_fractions]
    accs = [pgd_acc(e, pgd_steps, pgd_step_size) for e in grid]
    # Allow sampling noise of one example.
    ok = all(a2 <= a1 + 1.0 / len(xs) for a1, a2 in zip(accs, accs[1:]))
    out.append(SanityCheck(
        "accuracy falls as eps grows", ok,
        ", ".join(f"eps {e:.3f}: {a:.3f}" for e, a in zip(grid, accs)),
        "accuracy rises with eps: the attack gets lost in a larger ball, "
        "a sign of gradient masking or a too-small step"))
  if "large_eps" in checks:
    big = large_eps
    if big is None:
      big = 0.5 if norm == "linf" else 0.5 * math.sqrt(np.prod(x.shape[1:]))
    acc = pgd_acc(big, pgd_steps, 2.5 * big / max(pgd_steps, 1))
    out.append(SanityCheck(
        "accuracy ~0 at large eps", acc <= large_eps_max_acc,
        f"PGD-{pgd_steps} at eps {big:.3g}: {acc:.4f} "
        f"(limit {large_eps_max_acc:.3f})",
        f"accuracy does not reach ~0 at eps {big:.3g}, where the attack can "
        "reach almost any image: gradients are masked or the attack is "
        "broken"))
  if "square" in checks:
    if ensemble is None and (x.ndim != 4 or norm != "linf"):
      out.append(SanityCheck(
          "black-box Square no stronger than white-box", True,
          "skipped: Square needs L-inf and [N, H, W, C] images"))
    else:
      if ensemble is None:
        ensemble = autoattack.evaluate_robustness(
            apply_fn, variables, xs, ys, jax.random.fold_in(key, 8), eps=eps,
            attack_names=("apgd-ce", "square"), apgd_steps=pgd_steps,
            square_queries=square_queries, batch_size=batch_size, unroll=unroll)
      before, after = _square_drop(ensemble)
      out.append(SanityCheck(
          "black-box Square no stronger than white-box",
          before - after <= material,
          f"white-box {before:.4f} -> after Square {after:.4f} "
          f"(limit {material:.3f})",
          "the black-box Square attack fools examples the white-box "
          "attacks could not: gradients are masked (obfuscated)"))
  if "more_iterations" in checks:
    flags = lambda steps, restarts, k: robust.robust_correct(
        apply_fn, variables, xs, ys, jax.random.fold_in(key, k),
        attack="pgd", eps=eps, step_size=pgd_step_size, steps=steps,
        restarts=restarts, **pgd_kw)
    base_flags = flags(pgd_steps, pgd_restarts, 10)
    base = float(base_flags.mean())
    steps_acc = float(flags(more_steps_factor * pgd_steps, pgd_restarts,
                            11).mean())
    restarts_acc = float((base_flags & flags(pgd_steps, more_restarts,
                                             12)).mean())
    drop = base - min(steps_acc, restarts_acc)
    reported = f"PGD-{pgd_steps}x{pgd_restarts}"
    out.append(SanityCheck(
        "more steps or restarts do not lower accuracy materially",
        drop <= material,
        f"{reported} (reported): {base:.4f}, "
        f"PGD-{more_steps_factor * pgd_steps}x{pgd_restarts}: "
        f"{steps_acc:.4f}, "
        f"PGD-{pgd_steps}x{pgd_restarts + more_restarts}: "
        f"{restarts_acc:.4f} (limit {material:.3f})",
        "more steps or restarts still lower accuracy: the attack has not "
        "converged (too few steps, too small a step, or a loss surface that "
        "masks gradients); report the stronger attack"))
  if "loss_increases" in checks:
    n = min(batch_size, len(xs))
    curve = np.asarray(_pgd_loss_curve(
        apply_fn, variables, jnp.asarray(xs[:n]), jnp.asarray(ys[:n]),
        jax.random.fold_in(key, 9), jnp.float32(eps),
        jnp.float32(pgd_step_size), steps=pgd_steps, norm=norm))
    rise = float(curve[-1] - curve[0])
    points = sorted({0, len(curve) // 4, len(curve) // 2, len(curve) - 1})
    out.append(SanityCheck(
        "loss increases along the attack",
        rise > 1e-3 + 0.01 * abs(float(curve[0])),
        "mean CE " + ", ".join(f"step {i}: {curve[i]:.4f}" for i in points),
        "the loss does not increase along the PGD path: zero, noisy or "
        "misleading gradients (gradient masking)"))
  return out
