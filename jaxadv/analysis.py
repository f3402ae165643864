"""Looking at a model along chosen directions: line scans and 2-D cross-sections.

* `logit_scan`: every class logit along `x + t * d` for a vector of t, the
  lecture's picture of how linear a network is along the FGSM direction
  `d = sign(grad_x L)` (Goodfellow, Shlens & Szegedy, 2015).
* `cross_section`: the predicted class on the grid `x + a * d1 + b * d2`,
  e.g. the FGSM direction against a random sign direction, or two random
  directions (Warde-Farley & Goodfellow, 2016).

Both are one batched forward per example, vmapped over examples: the points
of one example's scan or grid form the batch of the model call.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxadv import validation
from jaxadv import losses
from jaxadv.attacks import core


def sign_gradient(loss_fn: losses.LossFn, x: jax.Array,
                  y: jax.Array) -> jax.Array:
  """The FGSM direction `sign(grad_x L(x, y))` per example (Goodfellow, 2015).

  Args:
    loss_fn: `(x [B, ...], y [B]) -> [B]` per-example loss.
    x: float32 [B, ...] in [0, 1].
    y: int [B] labels.

  Returns:
    float32 [B, ...] with entries in {-1, 0, 1}.

  Raises:
    ValueError, TypeError: bad `x` or `y`.
  """
  core.validate(x, y, eps=0.0)
  _, g = core.input_grad(loss_fn, x, y, jnp.zeros_like(x), False)
  return jnp.sign(g)


def random_sign(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
  """A random direction with i.i.d. entries uniform in {-1, +1} (Rademacher).

  Same L-inf norm (1) as an FGSM direction, so `a` and `b` of a cross-section
  are in the same pixel units along both axes.
  """
  return jax.random.rademacher(key, tuple(shape), dtype)


def _check_directions(x, name: str, d) -> None:
  if jnp.shape(d) != jnp.shape(x):
    raise ValueError(f"`{name}` must have the shape of `x` {jnp.shape(x)}; got "
                     f"{jnp.shape(d)}.")


def _check_offsets(t, name: str) -> None:
  if jnp.ndim(t) != 1 or jnp.shape(t)[0] < 1:
    raise ValueError(f"`{name}` must be a non-empty vector [T] of offsets in "
                     f"pixel units; got shape {jnp.shape(t)}.")


def logit_scan(logits_fn: losses.LogitsFn, x: jax.Array, direction: jax.Array,
               ts: jax.Array, *, clip: bool = False) -> jax.Array:
  """Class logits along the line `x + t * direction`, every t, every example.

  Args:
    logits_fn: `x [N, ...] -> logits [N, C]`.
    x: float32 [B, ...] clean inputs in [0, 1].
    direction: float32 [B, ...], e.g. `sign_gradient(...)` (L-inf norm 1, so
      t is in pixel units).
    ts: float32 [T] offsets, e.g. `linspace(-T, T, 41)`; may be traced.
    clip: clip the points to the [0, 1] box (off by default: the lecture's
      plot follows the straight line, box or not).

  Returns:
    float32 [B, T, C]: `out[i, j] = logits_fn(x_i + ts[j] * direction_i)`;
    at `t = 0` the clean logits.

  Raises:
    ValueError, TypeError: bad `x`, `direction` of another shape, or `ts`
      not a non-empty vector.
  """
  validation.check_images(x, "x")
  _check_directions(x, "direction", direction)
  _check_offsets(ts, "ts")
  ts = jnp.asarray(ts, jnp.float32)

  def one(xi, di):
    points = xi[None] + ts.reshape((-1,) + (1,) * xi.ndim) * di[None]
    return logits_fn(jnp.clip(points, 0.0, 1.0) if clip else points)

  return jax.vmap(one)(x, direction)


def cross_section(logits_fn: losses.LogitsFn, x: jax.Array, d1: jax.Array,
                  d2: jax.Array, a: jax.Array, b: jax.Array, *,
                  clip: bool = True) -> jax.Array:
  """Predicted classes on the plane `x + a * d1 + b * d2` (class maps).

  Warde-Farley & Goodfellow (2016): with `d1` the FGSM direction and `d2` a
  random sign direction, the class changes within a small step along `d1`
  while the random axis crosses few boundaries.

  Args:
    logits_fn: `x [N, ...] -> logits [N, C]`.
    x: float32 [B, ...] clean inputs in [0, 1].
    d1, d2: float32 [B, ...] directions (L-inf norm 1 for pixel units).
    a: float32 [A] offsets along `d1` (rows of the map); may be traced.
    b: float32 [Bb] offsets along `d2` (columns).
    clip: clip the points to the [0, 1] box (on by default: the grid shows
      images the threat model allows).

  Returns:
    int32 [B, A, Bb]: `out[i, j, k] = argmax logits_fn(x_i + a[j] d1_i +
    b[k] d2_i)`; where `a[j] = b[k] = 0`, the clean prediction.

  Raises:
    ValueError, TypeError: bad `x`, directions of another shape, or offsets
      not non-empty vectors.
  """
  validation.check_images(x, "x")
  _check_directions(x, "d1", d1)
  _check_directions(x, "d2", d2)
  _check_offsets(a, "a")
  _check_offsets(b, "b")
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)

  def one(xi, u, v):
    bcast = (1,) * xi.ndim
    points = (xi[None, None] + a.reshape((-1, 1) + bcast) * u[None, None]
              + b.reshape((1, -1) + bcast) * v[None, None])   # [A, Bb, ...]
    points = points.reshape((-1,) + xi.shape)
    if clip:
      points = jnp.clip(points, 0.0, 1.0)
    classes = jnp.argmax(logits_fn(points), axis=-1).astype(jnp.int32)
    return classes.reshape(a.shape[0], b.shape[0])

  return jax.vmap(one)(x, d1, d2)
