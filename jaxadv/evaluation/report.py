"""The standard robustness report (clean / FGSM / PGD) and its sanity checks."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import jax
import numpy as np

from jaxadv.evaluation import robust


@dataclasses.dataclass
class SanityCheck:
  """One sanity check of an evaluation: its name, verdict and the numbers."""
  name: str
  passed: bool
  detail: str

  def __str__(self) -> str:
    return f"[{'PASS' if self.passed else 'WARN'}] {self.name}: {self.detail}"


def evaluate(apply_fn: robust.ApplyFn, variables: Any, x: np.ndarray,
             y: np.ndarray, key: jax.Array, *, eps: float,
             pgd_steps: int = 50, pgd_step_size: float = 0.01,
             pgd_restarts: int = 10, norm: str = "linf",
             batch_size: int = 500, loop: Optional[str] = None,
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
    pgd_steps, pgd_step_size, pgd_restarts: the PGD attack.
    norm: "linf" or "l2".
    batch_size: attack batch size.
    loop: attack loop form.
    progress: progress bars.
    mesh: devices to split the batches over (`jaxadv.parallel.make_mesh`);
      None = all local devices.

  Returns:
    {"clean_acc", "fgsm_acc", "pgd_acc"} as fractions, plus
    "pgd_steps", "pgd_restarts".
  """
  clean = robust.accuracy(apply_fn, variables, x, y, batch_size=batch_size,
                          mesh=mesh)
  fgsm = robust.robust_accuracy(apply_fn, variables, x, y, key, attack="fgsm",
                                eps=eps, norm=norm, batch_size=batch_size,
                                mesh=mesh)
  pgd = robust.robust_accuracy(
      apply_fn, variables, x, y, jax.random.fold_in(key, 1), attack="pgd",
      eps=eps, step_size=pgd_step_size, steps=pgd_steps,
      restarts=pgd_restarts, norm=norm, batch_size=batch_size, loop=loop,
      progress=progress, mesh=mesh)
  return {"clean_acc": clean, "fgsm_acc": fgsm, "pgd_acc": pgd,
          "pgd_steps": pgd_steps, "pgd_restarts": pgd_restarts}


def sanity_checks(apply_fn: robust.ApplyFn, variables: Any, x: np.ndarray,
                  y: np.ndarray, key: jax.Array, results: dict, *, eps: float,
                  pgd_steps: int = 50, pgd_step_size: float = 0.01,
                  eps_fractions: Sequence[float] = (1 / 3, 2 / 3, 1.0),
                  subset: int = 1000, norm: str = "linf",
                  batch_size: int = 500) -> list[SanityCheck]:
  """Checks that catch a broken attack or evaluation.

  1. eps = 0 reproduces clean accuracy (FGSM on the full set, PGD on
     `subset` examples);
  2. PGD accuracy <= FGSM accuracy;
  3. PGD accuracy does not rise as eps grows (one restart, on `subset`).

  Args:
    results: the dict `evaluate` returned for this model.
    Others: as `evaluate`.

  Returns:
    A list of `SanityCheck`s (print them; `passed=False` is a warning).
  """
  checks = []
  fgsm0 = robust.robust_accuracy(apply_fn, variables, x, y, key, attack="fgsm",
                                 eps=0.0, norm=norm, batch_size=batch_size)
  xs, ys = x[:subset], y[:subset]
  clean_s = robust.accuracy(apply_fn, variables, xs, ys, batch_size=batch_size)
  pgd0 = robust.robust_accuracy(apply_fn, variables, xs, ys, key, attack="pgd",
                                eps=0.0, step_size=pgd_step_size,
                                steps=pgd_steps, norm=norm,
                                batch_size=batch_size)
  ok = abs(fgsm0 - results["clean_acc"]) < 1e-9 and abs(pgd0 - clean_s) < 1e-9
  checks.append(SanityCheck(
      "eps=0 reproduces clean accuracy", ok,
      f"clean {results['clean_acc']:.4f}, FGSM(eps=0) {fgsm0:.4f}; "
      f"subset clean {clean_s:.4f}, PGD(eps=0) {pgd0:.4f}"))
  ok = results["pgd_acc"] <= results["fgsm_acc"] + 1e-9
  checks.append(SanityCheck(
      "PGD accuracy <= FGSM accuracy", ok,
      f"PGD {results['pgd_acc']:.4f} vs FGSM {results['fgsm_acc']:.4f}"))
  grid = [eps * f for f in eps_fractions]
  accs = [robust.robust_accuracy(apply_fn, variables, xs, ys,
                                 jax.random.fold_in(key, 7), attack="pgd",
                                 eps=e, step_size=pgd_step_size,
                                 steps=pgd_steps, norm=norm,
                                 batch_size=batch_size) for e in grid]
  # Allow sampling noise of one example per 1000.
  ok = all(a2 <= a1 + 1.0 / len(xs) for a1, a2 in zip(accs, accs[1:]))
  checks.append(SanityCheck(
      "accuracy falls as eps grows", ok,
      ", ".join(f"eps {e:.3f}: {a:.3f}" for e, a in zip(grid, accs))))
  return checks
