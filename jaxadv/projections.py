"""Per-example projections onto L-inf / L2 balls and the [0, 1] box.

All functions act on a batch [B, ...]; norms are taken per example over all
non-batch axes. `eps` is a scalar or a per-example vector [B] in pixel units.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NORMS = ("linf", "l2")
_TINY = 1e-12


def per_example(v: jax.Array, ndim: int) -> jax.Array:
  """Broadcasts a scalar or [B] vector against a [B, ...] batch."""
  v = jnp.asarray(v)
  if v.ndim == 0:
    return v
  return v.reshape(v.shape + (1,) * (ndim - 1))


def l2_norm(v: jax.Array) -> jax.Array:
  """Per-example L2 norm [B] of a batch [B, ...] (finite gradient at 0)."""
  flat = v.reshape(v.shape[0], -1)
  return jnp.sqrt(jnp.sum(flat * flat, axis=-1) + _TINY)


def normalize(g: jax.Array, norm: str) -> jax.Array:
  """Steepest-ascent direction of unit `norm` for a gradient batch.

  L-inf: `sign(g)`; L2: `g / ||g||_2` per example.
  """
  if norm == "linf":
    return jnp.sign(g)
  return g / per_example(l2_norm(g), g.ndim)


def project(delta: jax.Array, eps: jax.Array, norm: str) -> jax.Array:
  """Projects each perturbation onto `||delta||_norm <= eps`."""
  eps = per_example(eps, delta.ndim)
  if norm == "linf":
    return jnp.clip(delta, -eps, eps)
  n = per_example(l2_norm(delta), delta.ndim)
  return delta * jnp.minimum(1.0, eps / n)


def clip_box(x: jax.Array, delta: jax.Array) -> jax.Array:
  """Returns the delta that keeps `x + delta` inside [0, 1]."""
  return jnp.clip(x + delta, 0.0, 1.0) - x


def apply_delta(x: jax.Array, delta: jax.Array, eps: jax.Array,
                norm: str) -> jax.Array:
  """`x + delta` as an adversarial example that meets its constraints exactly.

  In float32, `x + delta` with `|delta| <= eps` can land one ulp outside the
  L-inf ball (`|x_adv - x| = 0.30000004 > float32(0.3)`) or the box. This
  clips to [0, 1] and, for L-inf, moves each pixel that a strict check
  `abs(x_adv - x) <= eps` would reject one ulp towards `x` (twice at most),
  so that check holds exactly. L2 holds up to float32 rounding of the norm.

  Args:
    x: float32 [B, ...] clean inputs in [0, 1].
    delta: float32 [B, ...] perturbation, `||delta||_norm <= eps`.
    eps: scalar or [B] budget, pixel units.
    norm: "linf" or "l2".

  Returns:
    x_adv [B, ...] in [0, 1].
  """
  x_adv = jnp.clip(x + delta, 0.0, 1.0)
  if norm == "linf":
    e = per_example(jnp.asarray(eps, x.dtype), x.ndim)
    for _ in range(2):
      x_adv = jnp.where(jnp.abs(x_adv - x) > e, jnp.nextafter(x_adv, x),
                        x_adv)
  return x_adv


def random_init(key: jax.Array, x: jax.Array, eps: jax.Array,
                norm: str) -> jax.Array:
  """Uniform random start in the eps-ball (Madry et al., 2018).

  L-inf: `U(-eps, eps)` per pixel. L2: uniform in the ball (Gaussian direction,
  radius `eps * u^(1/d)`).
  """
  if norm == "linf":
    u = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
    return u * per_example(eps, x.ndim)
  kd, kr = jax.random.split(key)
  d = x[0].size
  direction = jax.random.normal(kd, x.shape, x.dtype)
  direction = direction / per_example(l2_norm(direction), x.ndim)
  radius = jax.random.uniform(kr, (x.shape[0],), x.dtype) ** (1.0 / d)
  return direction * per_example(radius, x.ndim) * per_example(eps, x.ndim)
