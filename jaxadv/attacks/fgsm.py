"""Single-step attacks: FGSM, FGM (L2) and FGSM with random start."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jaxadv.attacks import core
from jaxadv import projections
from jaxadv.types import LossFn


def fgm(loss_fn: LossFn, x: jax.Array, y: jax.Array,
        key: Optional[jax.Array] = None, *, eps, norm: str = "linf",
        targeted: bool = False) -> jax.Array:
  """Fast gradient method: one step of size `eps` in the `norm` direction.

  `norm="linf"` is FGSM (Goodfellow, Shlens & Szegedy, 2015):
  `x + eps * sign(g)`; `norm="l2"` is `x + eps * g / ||g||_2` per example.
  Targeted attacks descend the loss of the target class `y`.

  Args:
    loss_fn: `(x [B, ...], y [B]) -> [B]` per-example loss (see
      `jaxadv.losses.make_loss_fn`).
    x: float32 [B, ...] clean inputs, pixels in [0, 1].
    y: int [B] true labels (untargeted) or target labels (targeted).
    key: unused (deterministic); accepted so that every attack is called
      `(loss_fn, x, y, key, *, eps, ...)`.
    eps: scalar or [B] budget in pixel units (may be traced).
    norm: "linf" or "l2".
    targeted: move toward `y` instead of away from it.

  Returns:
    x_adv: float32, same shape as `x`, with `||x_adv - x||_norm <= eps` per
    example and pixels in [0, 1].

  Raises:
    ValueError, TypeError: bad `x`, `y`, `eps` or `norm` (see `jaxadv.validation`).
  """
  del key
  core.validate(x, y, eps=eps, norm=norm)
  core.check_loss_fn(loss_fn, x, y)
  delta = core.step(loss_fn, x, y, jnp.zeros_like(x), eps=eps,
                       step_size=eps, norm=norm, targeted=targeted)
  return projections.apply_delta(x, delta, eps, norm)


def fgsm(loss_fn: LossFn, x: jax.Array, y: jax.Array,
         key: Optional[jax.Array] = None, *, eps,
         targeted: bool = False) -> jax.Array:
  """FGSM (Goodfellow et al., 2015): `clip(x + eps * sign(grad_x L), 0, 1)`.

  Args:
    loss_fn: `(x, y) -> [B]` per-example loss.
    x: float32 [B, ...] in [0, 1].
    y: int [B] labels (targets when `targeted`).
    key: unused (deterministic), as in `fgm`.
    eps: scalar or [B], pixel units.
    targeted: descend the loss of the target instead.

  Returns:
    x_adv with `||x_adv - x||_inf <= eps`, in [0, 1].

  Raises:
    ValueError, TypeError: bad inputs.
  """
  return fgm(loss_fn, x, y, key, eps=eps, norm="linf", targeted=targeted)


def fgsm_rs(loss_fn: LossFn, x: jax.Array, y: jax.Array, key: jax.Array, *,
            eps, step_size=None, norm: str = "linf",
            targeted: bool = False) -> jax.Array:
  """FGSM with a random start, the "fast AT" attack (Wong, Rice & Kolter, 2020).

  `delta0 ~ U(-eps, eps)` (or uniform in the L2 ball), one signed-gradient step
  of size `step_size` (default `1.25 * eps`), then projection onto the ball and
  the box.

  Args:
    loss_fn: `(x, y) -> [B]` per-example loss.
    x: float32 [B, ...] in [0, 1].
    y: int [B] labels.
    key: PRNG key for the random start.
    eps: scalar or [B], pixel units.
    step_size: the step alpha in pixel units; None means `1.25 * eps`.
    norm: "linf" or "l2".
    targeted: descend the target's loss.

  Returns:
    x_adv in the eps-ball around `x` and in [0, 1].

  Raises:
    ValueError, TypeError: bad inputs.
  """
  core.validate(x, y, eps=eps, step_size=step_size, norm=norm)
  core.check_loss_fn(loss_fn, x, y)
  if step_size is None:
    step_size = 1.25 * jnp.asarray(eps)
  delta = projections.random_init(key, x, eps, norm)
  delta = projections.clip_box(x, delta)
  delta = core.step(loss_fn, x, y, delta, eps=eps, step_size=step_size,
                       norm=norm, targeted=targeted)
  return projections.apply_delta(x, delta, eps, norm)
