"""Shared pieces of the gradient attacks: argument checks and the step."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv import validation
from jaxadv import projections
from jaxadv.types import LossFn


def validate(x, y, *, eps, step_size=None, steps: Optional[int] = None,
             norm: str = "linf", restarts: int = 1) -> None:
  """Checks the arguments every attack shares (raises ValueError/TypeError)."""
  validation.check_images(x, "x")
  validation.check_labels(y, x.shape[0], "y")
  validation.check_nonnegative(eps, "eps")
  validation.check_per_example(eps, "eps", x.shape[0])
  if step_size is not None:
    validation.check_nonnegative(step_size, "step_size")
    validation.check_per_example(step_size, "step_size", x.shape[0])
  if steps is not None:
    validation.check_count(steps, "steps", 0)
  validation.check_count(restarts, "restarts", 1)
  validation.check_choice(norm, "norm", projections.NORMS)


def check_loss_fn(loss_fn: Callable, x: jax.Array, y: jax.Array,
                  *extra: jax.Array, name: str = "loss_fn") -> None:
  """Checks (abstractly, no compute) that `loss_fn` returns one loss per
  example, float [B]: a scalar (e.g. a mean) would make restarts and APGD's
  per-example state act on the whole batch.

  Raises:
    ValueError: the output is not shaped [B].
  """
  spec = lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a))
  out = jax.eval_shape(loss_fn, spec(x), spec(y), *extra)
  if getattr(out, "shape", None) != (x.shape[0],):
    raise ValueError(
        f"`{name}` must return per-example losses of shape ({x.shape[0]},) "
        f"(one per example of `x`, not their mean); got "
        f"{getattr(out, 'shape', type(out).__name__)}. Use "
        "jaxadv.losses.make_loss_fn(logits_fn, 'ce').")
  check_finite_outputs(loss_fn, x, y, *extra, name=name,
                       hint=" (or, for your own loss, labels outside its "
                       "classes: only losses.make_loss_fn checks `y` against "
                       "the logits)")


def check_finite_outputs(fn: Callable, x: jax.Array, *args: jax.Array,
                         name: str, hint: str = "") -> None:
  """On eager calls, checks that `fn(x, *args)` (the model's losses or
  logits at the clean inputs) holds no NaN/inf: an attack on such a model
  would return NaN (or meaningless) points. One forward pass; skipped
  under jit (`jaxadv.validation.checked` catches it there).

  Raises:
    ValueError: NaN or inf outputs.
  """
  if not all(validation.is_concrete(a) for a in (x,) + args):
    return
  out = fn(x, *args)
  if not validation.is_concrete(out):  # traced (jit over the model or key)
    return
  out = np.asarray(out)
  if not np.all(np.isfinite(out)):
    bad = int(np.sum(~np.isfinite(out).reshape(out.shape[0], -1).all(-1)))
    raise ValueError(
        f"`{name}` gives NaN or inf outputs at the clean inputs `x` ({bad} of "
        f"{out.shape[0]} examples): check the model's parameters and "
        f"inputs{hint}; an attack would return NaN or meaningless points.")


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
  return projections.clip_box(x, projections.random_init(key, x, eps, norm))


def ascend(x, delta, g, *, eps, step_size, norm: str) -> jax.Array:
  """Moves `delta` along the ascent direction `g`, then ball and box."""
  delta = delta + projections.per_example(step_size, x.ndim) * (
      projections.normalize(g, norm))
  delta = projections.project(delta, eps, norm)
  return projections.clip_box(x, delta)


def step(loss_fn: LossFn, x, y, delta, *, eps, step_size, norm: str,
         targeted: bool) -> jax.Array:
  """One projected steepest-ascent step on `delta` (ball, then box)."""
  _, g = input_grad(loss_fn, x, y, delta, targeted)
  return ascend(x, delta, g, eps=eps, step_size=step_size, norm=norm)


def best_of_restarts(run: Callable[[jax.Array], Sequence[jax.Array]],
                     key: jax.Array, restarts: int,
                     better: Callable[[Sequence[jax.Array], Sequence[jax.Array]],
                                      jax.Array]) -> tuple[jax.Array, ...]:
  """Runs an attack `restarts` times and keeps, per example, the best run.

  Run r uses the key `fold_in(key, r)`. The restarts are one rolled
  `lax.fori_loop` (unrolling steps x restarts would blow up compile time;
  the inner step loop carries the `unroll` choice).

  Args:
    run: `key -> (delta [B, ...], score_1 [B], ...)`, one attack run.
    key: PRNG key.
    restarts: static number of runs (>= 1).
    better: `(new, best) -> bool [B]`, whether the new run beats the best
      so far for each example (both are `run`'s output tuples).

  Returns:
    The per-example best `run` output tuple.
  """
  best = tuple(run(jax.random.fold_in(key, 0)))
  if restarts == 1:
    return best

  def restart(r, best):
    new = tuple(run(jax.random.fold_in(key, r)))
    wins = better(new, best)
    return tuple(
        jnp.where(wins.reshape(wins.shape + (1,) * (n.ndim - 1)), n, o)
        for n, o in zip(new, best))

  return jax.lax.fori_loop(1, restarts, restart, best)
