"""Shared pieces of the gradient attacks: argument checks and the step."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jaxadv import _checks
from jaxadv.attacks import _projections
from jaxadv.losses import LossFn


def validate(x, y, *, eps, step_size=None, steps: Optional[int] = None,
             norm: str = "linf", restarts: int = 1) -> None:
  """Checks the arguments every attack shares (raises ValueError/TypeError)."""
  _checks.check_images(x, "x")
  _checks.check_labels(y, x.shape[0], "y")
  _checks.check_nonnegative(eps, "eps")
  if step_size is not None:
    _checks.check_nonnegative(step_size, "step_size")
  if steps is not None:
    _checks.check_count(steps, "steps", 0)
  _checks.check_count(restarts, "restarts", 1)
  _checks.check_choice(norm, "norm", _projections.NORMS)


def input_grad(loss_fn: LossFn, x: jax.Array, y: jax.Array, delta: jax.Array,
               targeted: bool) -> tuple[jax.Array, jax.Array]:
  """Per-example losses at `x + delta` and the gradient of their sum.

  The gradient of the summed loss is every example's own input gradient, in
  one backward pass for the whole batch. For targeted attacks the sign is
  flipped, so the caller always ascends.

  Returns:
    (loss [B] at x + delta, ascent direction gradient [B, ...]).
  """
  sign = -1.0 if targeted else 1.0

  def total(d):
    losses = loss_fn(x + d, y)
    return sign * jnp.sum(losses), losses

  g, losses = jax.grad(total, has_aux=True)(delta)
  return losses, g


def start(key: jax.Array, x: jax.Array, eps, norm: str,
          random_start: bool) -> jax.Array:
  """The initial `delta`: uniform in the eps-ball (and the box), or zero."""
  if not random_start:
    return jnp.zeros_like(x)
  return _projections.clip_box(x, _projections.random_init(key, x, eps, norm))


def ascend(x, delta, g, *, eps, step_size, norm: str) -> jax.Array:
  """Moves `delta` along the ascent direction `g`, then ball and box."""
  delta = delta + _projections._per_example(step_size, x.ndim) * (
      _projections.normalize(g, norm))
  delta = _projections.project(delta, eps, norm)
  return _projections.clip_box(x, delta)


def step(loss_fn: LossFn, x, y, delta, *, eps, step_size, norm: str,
         targeted: bool) -> jax.Array:
  """One projected steepest-ascent step on `delta` (ball, then box)."""
  _, g = input_grad(loss_fn, x, y, delta, targeted)
  return ascend(x, delta, g, eps=eps, step_size=step_size, norm=norm)
