"""Iterative attacks: BIM / I-FGSM and PGD with random start and restarts."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jaxadv.attacks import core
from jaxadv import loops
from jaxadv import projections
from jaxadv.types import LossFn


def _pgd_run(loss_fn, x, y, key, *, eps, step_size, steps, norm, random_start,
             targeted, unroll):
  """One PGD run from one start; returns (delta, final per-example loss)."""
  delta = core.start(key, x, eps, norm, random_start)

  def body(_, d):
    return core.step(loss_fn, x, y, d, eps=eps, step_size=step_size,
                        norm=norm, targeted=targeted)

  delta = loops.run_loop(steps, body, delta, unroll=unroll)
  return delta, loss_fn(x + delta, y)


def pgd(loss_fn: LossFn, x: jax.Array, y: jax.Array, key: jax.Array, *,
        eps, step_size=None, steps: int, norm: str = "linf",
        restarts: int = 1,
        random_start: bool = True, targeted: bool = False,
        unroll: Optional[bool] = None) -> jax.Array:
  """Projected gradient descent (Madry, Makelov, Schmidt, Tsipras & Vladu, 2018).

  `steps` projected steepest-ascent steps of size `step_size` (L-inf: signed
  gradient; L2: `g / ||g||_2`), from a uniform random start in the eps-ball,
  projecting onto the ball and the [0, 1] box after every step. With
  `restarts > 1`, each example keeps the run with the highest final loss
  (lowest for targeted attacks).

  Args:
    loss_fn: `(x [B, ...], y [B]) -> [B]` per-example loss (see
      `jaxadv.losses.make_loss_fn`; "ce", "cw" or any user loss).
    x: float32 [B, ...] clean inputs, pixels in [0, 1].
    y: int [B] true labels, or target labels when `targeted`.
    key: PRNG key (random starts; restart r uses `fold_in(key, r)`).
    eps: scalar or [B] budget, pixel units (8/255 on CIFAR, 0.3 on MNIST).
      May be a traced value: sweeping it does not recompile.
    step_size: scalar or [B], pixel units; may be traced. None: the rule
      of Madry et al., `2.5 * eps / steps` (for either norm, eps and step
      being in that norm's units).
    steps: static number of steps (>= 0).
    norm: "linf" or "l2".
    restarts: static number of random restarts (>= 1).
    random_start: start from U(eps-ball) (PGD) or from `x` (BIM).
    targeted: descend the loss of the target `y` instead of ascending.
    unroll: unroll the step loop (True), roll it (False) or None
      (`jaxadv.loops.default_unroll()`: unrolled on CPU only).

  Returns:
    x_adv: same shape and dtype as `x`, `||x_adv - x||_norm <= eps` per
    example, pixels in [0, 1].

  Raises:
    ValueError, TypeError: bad shapes, dtypes, pixel range, labels, negative
      eps/step_size/steps, restarts < 1 or unknown norm.
  """
  core.validate(x, y, eps=eps, step_size=step_size, steps=steps, norm=norm,
                   restarts=restarts)
  core.check_loss_fn(loss_fn, x, y)
  if step_size is None:
    step_size = 2.5 * jnp.asarray(eps) / max(steps, 1)
  run = lambda k: _pgd_run(loss_fn, x, y, k, eps=eps, step_size=step_size,
                           steps=steps, norm=norm, random_start=random_start,
                           targeted=targeted, unroll=unroll)
  def better(new, best):
    return new[1] < best[1] if targeted else new[1] > best[1]

  best_delta, _ = core.best_of_restarts(run, key, restarts, better)
  return projections.apply_delta(x, best_delta, eps, norm)


def bim(loss_fn: LossFn, x: jax.Array, y: jax.Array,
        key: Optional[jax.Array] = None, *, eps, step_size=None,
        steps: int, norm: str = "linf", targeted: bool = False,
        unroll: Optional[bool] = None) -> jax.Array:
  """Basic iterative method / I-FGSM (Kurakin, Goodfellow & Bengio, 2017).

  PGD without the random start: `steps` steps of size `step_size` from `x`,
  projecting onto the eps-ball and the box after each.

  Args:
    loss_fn: `(x, y) -> [B]` per-example loss.
    x: float32 [B, ...] in [0, 1].
    y: int [B] labels (targets when `targeted`).
    key: unused (BIM is deterministic); accepted so that every attack is
      called `(loss_fn, x, y, key, *, eps, ...)`.
    eps: scalar or [B] budget, pixel units (may be traced).
    step_size: scalar or [B] step, pixel units (may be traced); None:
      `eps / steps`, so the steps together can just reach the boundary.
    steps: static step count.
    norm: "linf" or "l2".
    targeted: descend the target's loss.
    unroll: unroll the step loop (True), roll it (False) or None
      (`jaxadv.loops.default_unroll()`: unrolled on CPU only).

  Returns:
    x_adv in the eps-ball and in [0, 1].

  Raises:
    ValueError, TypeError: bad inputs.
  """
  del key
  if step_size is None:
    core.validate(x, y, eps=eps, steps=steps, norm=norm)
    step_size = jnp.asarray(eps) / max(steps, 1)
  return pgd(loss_fn, x, y, jax.random.key(0), eps=eps, step_size=step_size,
             steps=steps, norm=norm, restarts=1, random_start=False,
             targeted=targeted, unroll=unroll)
