"""Square Attack, L-inf: score-based random search, no gradients.

Andriushchenko, Croce, Flammarion & Hein (ECCV 2020), "Square Attack: a
query-efficient black-box adversarial attack via random search". It needs
only the model's logits, so it is blind to gradient masking: a model that
resists PGD but not Square has masked gradients.

Start: vertical stripes, `x + eps * s` with one random sign `s` per column and
channel. Each query draws, per example, a random square window of side
`round(sqrt(p * H * W))` and a random sign per channel, sets the window of
the perturbation to `+-eps`, and accepts the proposal only where it lowers
the margin `z_y - max_{j != y} z_j`; an example stops changing once its
margin is negative (misclassified). `p` shrinks over the queries (halved at
fixed fractions of the budget, the schedule of the paper's code).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv import validation
from jaxadv import losses
from jaxadv.attacks import core
from jaxadv import loops
from jaxadv import projections

# Upper ends (per 10,000 queries) of the intervals where p = p_init / 2^k.
_P_BOUNDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(i: np.ndarray, iterations: int, p_init: float) -> np.ndarray:
  """Fraction `p` of the image a square covers at iteration `i`.

  The schedule of the reference code, rescaled from 10,000 iterations:
  `p_init` for the first 0.1%, then halved after 0.5%, 2%, 5%, 10%, 20%,
  40%, 60% and 80% of the budget.

  Args:
    i: int iteration indices in [0, iterations).
    iterations: the number of iterations (queries after the first).
    p_init: the initial fraction (0.8 in AutoAttack, 0.05 in the paper's
      ImageNet L-inf runs).

  Returns:
    float array like `i`.
  """
  it = (np.asarray(i) * 10000 // max(iterations, 1)).astype(np.int64)
  halvings = np.searchsorted(np.asarray(_P_BOUNDS), it, side="left")
  return p_init / 2.0 ** halvings


def _sizes(iterations: int, h: int, w: int, p_init: float) -> np.ndarray:
  """Square side per iteration: `round(sqrt(p * H * W))` in [1, min(H,W)-1]."""
  p = p_schedule(np.arange(max(iterations, 1)), iterations, p_init)
  s = np.round(np.sqrt(p * h * w)).astype(np.int32)
  return np.clip(s, 1, max(min(h, w) - 1, 1))


def _margin(logits_fn, x, y) -> jax.Array:
  return -losses.cw_margin(logits_fn(x), y)  # z_y - max_{j != y} z_j


def square(logits_fn: losses.LogitsFn, x: jax.Array, y: jax.Array,
           key: jax.Array, *, eps, queries: int, p_init: float = 0.8,
           unroll: Optional[bool] = False) -> jax.Array:
  """Square Attack, L-inf (Andriushchenko et al., ECCV 2020).

  Score-based: only forward passes of `logits_fn`, never a gradient. All
  examples run together (one forward of the batch per query), each with its
  own window, signs and acceptance.

  Args:
    logits_fn: `x [B, H, W, C] -> logits [B, K]`.
    x: float32 [B, H, W, C] clean images, pixels in [0, 1].
    y: int [B] true labels.
    key: PRNG key; query i draws from `fold_in(key, i)`.
    eps: scalar or [B] L-inf budget, pixel units; may be traced.
    queries: static number of forward passes per example (>= 1, the first
      is the stripe start); 5000 in AutoAttack.
    p_init: static initial square fraction in (0, 1] (0.8 in AutoAttack).
    unroll: False (default: queries are many, one rolled loop) or True.

  Returns:
    x_adv, same shape and dtype as `x`, `||x_adv - x||_inf <= eps`, in
    [0, 1]: the lowest-margin point found (the first misclassified one).

  Raises:
    ValueError, TypeError: bad images (rank != 4, dtype, range), labels,
      eps < 0, queries < 1 or p_init outside (0, 1].
  """
  validation.check_image_batch_static(x, "x", rank=4)
  core.validate(x, y, eps=eps, norm="linf")
  core.check_finite_outputs(logits_fn, x, name="logits_fn")
  validation.check_count(queries, "queries", 1)
  if not 0.0 < p_init <= 1.0:
    raise ValueError(f"`p_init` must lie in (0, 1]; got {p_init}.")
  b, h, w, c = x.shape
  e = projections.per_example(jnp.asarray(eps, x.dtype), x.ndim)
  iterations = queries - 1
  sizes = jnp.asarray(_sizes(iterations, h, w, p_init))
  stripes = jax.random.rademacher(jax.random.fold_in(key, 0), (b, 1, w, c),
                                  x.dtype)
  delta0 = projections.clip_box(x, jnp.broadcast_to(e * stripes, x.shape))
  rows = jnp.arange(h)[None, :, None, None]
  cols = jnp.arange(w)[None, None, :, None]

  def body(i, carry):
    delta, margin = carry
    kh, kw, ks = jax.random.split(jax.random.fold_in(key, i + 1), 3)
    s = sizes[i]
    top = jax.random.randint(kh, (b, 1, 1, 1), 0, h - s + 1)
    left = jax.random.randint(kw, (b, 1, 1, 1), 0, w - s + 1)
    window = ((rows >= top) & (rows < top + s) & (cols >= left) &
              (cols < left + s))
    signs = jax.random.rademacher(ks, (b, 1, 1, c), x.dtype)

    def propose(sg):
      return jnp.where(window, projections.clip_box(x, e * sg), delta)

    new = propose(signs)
    # A window already at these signs would waste the query: flip them (the
    # reference code redraws until the window changes).
    same = jnp.all(jnp.abs(new - delta) < 1e-7, axis=(1, 2, 3))
    new = jnp.where(same[:, None, None, None], propose(-signs), new)
    m = _margin(logits_fn, x + new, y)
    accept = (m < margin) & (margin > 0)
    return (jnp.where(accept[:, None, None, None], new, delta),
            jnp.where(accept, m, margin))

  init = (delta0, _margin(logits_fn, x + delta0, y))
  delta, _ = loops.run_loop(iterations, body, init, unroll=unroll)
  return projections.apply_delta(x, delta, eps, "linf")
