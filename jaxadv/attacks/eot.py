"""PGD with Expectation over Transformation, for randomized defences.

Athalye, Engstrom, Ilyas & Kwok (ICML 2018), "Synthesizing Robust Adversarial
Examples"; and Athalye, Carlini & Wagner (ICML 2018) for its use against
randomized defences. At every step the gradient of the loss is averaged over
`eot_samples` fresh draws of the defence's randomness, so the attack ascends
the expected loss rather than one random realisation of it.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from jaxadv import validation
from jaxadv.attacks import core
from jaxadv import loops
from jaxadv import projections

# (x [B, ...], y [B], key) -> per-example loss [B]; `key` drives the
# randomness of the defence (e.g. Mixup Inference's partners).
from jaxadv.types import KeyedLossFn


def _expected_loss_grad(loss_fn: KeyedLossFn, x, y, delta, key, eot_samples,
                        targeted):
  """Mean over `eot_samples` keys of the input gradient (ascent direction)."""
  keys = jax.random.split(key, eot_samples)
  sign = -1.0 if targeted else 1.0

  def total(d, k):
    return sign * jnp.sum(loss_fn(x + d, y, k))

  grads = jax.vmap(jax.grad(total), in_axes=(None, 0))(delta, keys)
  return jnp.mean(grads, axis=0)


def eot_pgd(loss_fn: KeyedLossFn, x: jax.Array, y: jax.Array, key: jax.Array,
            *, eps, step_size=None, steps: int, eot_samples: int = 1,
            norm: str = "linf", random_start: bool = True,
            targeted: bool = False, unroll: Optional[bool] = None) -> jax.Array:
  """PGD whose every step averages gradients over the defence's randomness.

  Step t uses `eot_samples` fresh keys split from `fold_in(key, t + 1)` (the
  draws are vmapped, not looped), then takes a projected steepest-ascent
  step of size `step_size` and projects onto the eps-ball and the [0, 1] box.

  Args:
    loss_fn: `(x [B, ...], y [B], key) -> [B]` per-example loss of the
      randomized defence's output (e.g. cross-entropy of Mixup Inference's
      averaged softmax; see `jaxadv.defenses.adaptive.probs_loss_fn`).
    x: float32 [B, ...] clean inputs in [0, 1].
    y: int [B] labels, or target labels when `targeted`.
    key: PRNG key (random start and every step's draws).
    eps: scalar or [B] budget, pixel units; may be traced.
    step_size: scalar or [B] step, pixel units; may be traced. None:
      `2.5 * eps / steps`, as `jaxadv.attacks.pgd`.
    steps: static number of steps (>= 0).
    eot_samples: static number of randomness draws averaged per step (>= 1).
    norm: "linf" or "l2".
    random_start: start uniformly in the eps-ball.
    targeted: descend the target's loss.
    unroll: unroll the step loop (True), roll it (False) or None
      (`jaxadv.loops.default_unroll()`: unrolled on CPU only).

  Returns:
    x_adv, same shape as `x`, in the eps-ball around `x` and in [0, 1].

  Raises:
    ValueError, TypeError: bad inputs (as `jaxadv.attacks.pgd`) or
      `eot_samples < 1`.
  """
  core.validate(x, y, eps=eps, step_size=step_size, steps=steps, norm=norm)
  core.check_loss_fn(loss_fn, x, y, key)
  validation.check_count(eot_samples, "eot_samples", 1)
  if step_size is None:
    step_size = 2.5 * jnp.asarray(eps) / max(steps, 1)
  delta = core.start(jax.random.fold_in(key, 0), x, eps, norm,
                        random_start)

  def body(t, d):
    g = _expected_loss_grad(loss_fn, x, y, d, jax.random.fold_in(key, t + 1),
                            eot_samples, targeted)
    return core.ascend(x, d, g, eps=eps, step_size=step_size, norm=norm)

  return projections.apply_delta(
      x, loops.run_loop(steps, body, delta, unroll=unroll), eps, norm)
