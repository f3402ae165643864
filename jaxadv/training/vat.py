"""Virtual adversarial training (Miyato, Maeda, Koyama & Ishii, TPAMI 2018).

VAT smooths the model's output distribution around every input, labelled or
not. With `p(. | x)` the model's class distribution (held fixed), the virtual
adversarial perturbation is

    r_adv = argmax_{||r||_2 <= eps} KL(p(. | x) || p(. | x + r)),

the top eigenvector of the KL's Hessian at `r = 0` scaled to norm `eps`,
found by power iteration with a finite difference (the gradient of the KL at
`x + xi d` is `xi H d` to first order):

    d ~ N(0, I), d <- d / ||d||_2
    repeat `iterations` times:
        g = grad_d KL(p(.|x) || p(.|x + xi d)),  d <- g / ||g||_2
    r_adv = eps d

The local distributional smoothness (LDS) loss is `KL(p(.|x) || p(.|x + r_adv))`
with `p(.|x)` a constant; training minimises `CE(labelled) + alpha * LDS`.
The perturbation is in input units (pixels in [0, 1]), per example, over all
of an example's H*W*C pixels; `x + r_adv` is not clipped to [0, 1] (VAT
smooths the model where the data lies, it does not craft images).

With BatchNorm models the perturbed forward passes run in train mode (batch
statistics) and their running-statistics updates are discarded, as in the
authors' code (`update_batch_stats=False`).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jaxadv import validation
from jaxadv import losses
from jaxadv.training.state import TrainState
from jaxadv.training.state import apply_model
from jaxadv.training.state import current_attack_params
from jaxadv.training.steps import Penalty
from jaxadv.training.steps import Regularizer
from jaxadv.training.steps import StepFn
from jaxadv.training.steps import clean_inputs
from jaxadv.training.steps import make_step
from jaxadv.types import Batch
from jaxadv.types import LogitsFn

_TINY = 1e-30       # max-abs floor (gradients of order xi^2 are ~1e-12)
_NORM_FLOOR = 1e-12  # inside the sqrt, so a zero gradient stays finite


def kl_divergence(logits_p: jax.Array, logits_q: jax.Array) -> jax.Array:
  """Per-example `KL(softmax(logits_p) || softmax(logits_q))` in nats.

  Computed from log-softmax, so it is exactly 0 when the logits agree and
  finite for saturated distributions.

  Args:
    logits_p: float [B, C], the reference distribution's logits.
    logits_q: float [B, C].

  Returns:
    float [B], >= 0 up to rounding.
  """
  log_p = jax.nn.log_softmax(logits_p, axis=-1)
  log_q = jax.nn.log_softmax(logits_q, axis=-1)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def _unit(d: jax.Array) -> jax.Array:
  """Each example of `d` [B, ...] scaled to L2 norm 1 (over all its entries).

  First divided by its largest |entry| (as `get_normalized_vector` in the
  authors' code): the power iteration's gradients are O(xi) = 1e-6 small,
  and their squares would underflow a plain `sqrt(sum d^2 + floor)`.
  An all-zero example stays zero.
  """
  axes = tuple(range(1, d.ndim))
  d = d / (jnp.max(jnp.abs(d), axis=axes, keepdims=True) + _TINY)
  norm = jnp.sqrt(jnp.sum(jnp.square(d), axis=axes, keepdims=True) +
                  _NORM_FLOOR)
  return d / norm


def virtual_adversarial_perturbation(
    logits_fn: LogitsFn, x: jax.Array, key: jax.Array, *, eps, xi=1e-6,
    iterations: int = 1, logits: Optional[jax.Array] = None) -> jax.Array:
  """The virtual adversarial perturbation `r_adv` by power iteration.

  Miyato et al., "Virtual Adversarial Training: A Regularization Method for
  Supervised and Semi-Supervised Learning", TPAMI 2018 (Algorithm 1).

  Args:
    logits_fn: `x [B, ...] -> logits [B, C]` at the current parameters (for
      BatchNorm models, train mode without updating the running statistics).
    x: float32 [B, ...] inputs (pixels in [0, 1]); labels are not needed.
    key: PRNG key for the random start `d ~ N(0, I)`.
    eps: L2 radius of the perturbation per example, in pixel units over all
      of an example's entries (a scalar or float [B]); may be traced.
    xi: the finite-difference step (1e-6 in the paper); may be traced. In
      float32, `x + xi d` rounds away much of `xi d` on entries of `x` near
      1 (resolution ~1e-7); on MNIST the direction still raises the KL as
      much as with xi = 1e-2 (measured at initialisation and after 300
      updates of the VAT MLP).
    iterations: power-iteration steps (static; 1 suffices in the paper).
    logits: float [B, C], the clean logits `logits_fn(x)` when already
      computed (treated as constants either way).

  Returns:
    float32 `r_adv`, the shape of `x`, with `||r_adv[i]||_2 = eps` per example;
    a constant (no gradient flows through it).

  Raises:
    TypeError: `x` is not floating point, or `iterations` is not an int.
    ValueError: `x` of rank < 2, `iterations < 1`, or a negative / non-finite
      `eps` or `xi` (when concrete).
  """
  validation.check_image_batch_static(x, "x")
  validation.check_count(iterations, "iterations", 1)
  validation.check_nonnegative(eps, "eps")
  validation.check_nonnegative(xi, "xi")
  if logits is None:
    logits = logits_fn(x)
  logits = jax.lax.stop_gradient(logits)

  def kl_sum(d):
    return jnp.sum(kl_divergence(logits, logits_fn(x + xi * d)))

  d = _unit(jax.random.normal(key, x.shape, x.dtype))
  for _ in range(iterations):  # a handful of static steps: unrolled
    d = _unit(jax.lax.stop_gradient(jax.grad(kl_sum)(d)))
  eps = jnp.asarray(eps, x.dtype)
  eps = eps.reshape(eps.shape + (1,) * (x.ndim - eps.ndim)) if eps.ndim else eps
  return jax.lax.stop_gradient(eps * d)


def lds_loss(logits_fn: LogitsFn, x: jax.Array, key: jax.Array, *, eps,
             xi=1e-6, iterations: int = 1,
             logits: Optional[jax.Array] = None) -> jax.Array:
  """Local distributional smoothness loss, `KL(p(.|x) || p(.|x + r_adv))`.

  Miyato et al., TPAMI 2018, eq. (5)-(7). `p(.|x)` is held constant (stop
  gradient); the gradient with respect to the parameters flows only through
  `p(.|x + r_adv)`.

  Args:
    logits_fn: `x -> logits [B, C]` (differentiable in the parameters it
      closes over).
    x: float32 [B, ...] inputs in [0, 1].
    key: PRNG key of the power iteration's random start.
    eps: see `virtual_adversarial_perturbation`.
    xi: see `virtual_adversarial_perturbation`.
    iterations: see `virtual_adversarial_perturbation`.
    logits: the clean logits [B, C] if already computed.

  Returns:
    float32 [B], the per-example smoothness loss in nats.

  Raises:
    TypeError, ValueError: as `virtual_adversarial_perturbation`.
  """
  if logits is None:
    logits = logits_fn(x)
  logits = jax.lax.stop_gradient(logits)
  r_adv = virtual_adversarial_perturbation(
      logits_fn, x, key, eps=eps, xi=xi, iterations=iterations, logits=logits)
  return kl_divergence(logits, logits_fn(x + r_adv))


def lds_regularizer(*, eps: Optional[float] = None, xi: float = 1e-6,
                    iterations: int = 1, alpha: float = 1.0) -> Regularizer:
  """VAT's extra loss term `alpha * mean LDS(x_u)` for `make_step`.

  Miyato et al., TPAMI 2018. `x_u` is `batch["x_ul"]` (an unlabelled batch
  of any size) or, without it, the labelled `batch["x"]`. At the current
  parameters (a constant of the update): the clean logits `p(.|x_u)` and
  `r_adv` (power iteration with the step key); the term differentiates only
  through `p(.|x_u + r_adv)`. The BatchNorm statistics kept are those of the
  clean pass over `x_u`; the perturbed passes leave them alone.

  Args:
    eps: L2 radius of `r_adv` per example, pixel units; None reads it from
      `state.attack_params` (traced).
    xi: power-iteration finite-difference step.
    iterations: power-iteration steps, static.
    alpha: weight of the LDS term.

  Returns:
    `(state, batch, key) -> Penalty` whose term reports the metric "lds"
    (the unweighted mean LDS, nats).

  Raises:
    ValueError, TypeError: `iterations < 1` / not an int, or negative `eps`,
      `xi` or `alpha`.
  """
  validation.check_count(iterations, "iterations", 1)
  if eps is not None:
    validation.check_nonnegative(eps, "eps")
  validation.check_nonnegative(xi, "xi")
  validation.check_nonnegative(alpha, "alpha")

  def regularizer(state: TrainState, batch: Batch, key: jax.Array) -> Penalty:
    x_u = batch.get("x_ul", batch["x"])

    def perturbed_logits(params):
      # Train-mode BatchNorm, running statistics left alone.
      return lambda z: apply_model(state, params, z, train=True)[0]

    # p(.|x_u) and r_adv at the current parameters: constants of the update.
    logits_u, batch_stats = apply_model(state, state.params, x_u, train=True)
    logits_u = jax.lax.stop_gradient(logits_u)
    radius = current_attack_params(state)[0] if eps is None else eps
    r_adv = virtual_adversarial_perturbation(
        perturbed_logits(state.params), x_u, key, eps=radius, xi=xi,
        iterations=iterations, logits=logits_u)

    def term(params):
      lds = jnp.mean(kl_divergence(logits_u,
                                   perturbed_logits(params)(x_u + r_adv)))
      return alpha * lds, {"lds": lds}

    return Penalty(term, batch_stats)

  return regularizer


def vat_step(*, eps: Optional[float] = None, xi: float = 1e-6,
             iterations: int = 1, alpha: float = 1.0) -> StepFn:
  """A virtual adversarial training step, supervised or semi-supervised.

  Miyato et al., TPAMI 2018. The loss of one update is

      mean CE(p(.|x_l), y_l) + alpha * mean LDS(x_u)

  where `x_u` is `batch["x_ul"]` (semi-supervised: an unlabelled batch of
  any size) or, when the batch has no "x_ul", the labelled `batch["x"]`
  itself (supervised VAT): `make_step` with `delta = 0` and
  `lds_regularizer`. ONE `jax.value_and_grad` per update; the power
  iteration differentiates with respect to the perturbation only, at the
  current parameters, and `p(.|x_u)` is a constant. BatchNorm running
  statistics follow the clean pass over `x_u` (the unlabelled batch when
  there is one).

  Args:
    eps: L2 radius of `r_adv` per example, pixel units; None (the default)
      reads it from `state.attack_params` (traced, so an eps sweep does not
      recompile; `create_train_state(..., eps=...)`, with its optional
      linear ramp).
    xi: power-iteration finite-difference step (1e-6 in the paper).
    iterations: power-iteration steps, static (1 in the paper).
    alpha: weight of the LDS term (1 in the paper).

  Returns:
    `step(state, batch, key) -> (state, metrics)` with `batch = {"x": float32
    [B_l, ...] in [0, 1], "y": int32 [B_l]}` plus optionally `"x_ul"`: float32
    [B_u, ...]; metrics "loss", "ce", "lds" and "accuracy" (of the labelled
    batch).

  Raises:
    ValueError, TypeError: `iterations < 1` / not an int, or negative `eps`,
      `xi` or `alpha`.
  """
  return make_step(clean_inputs, regularizer=lds_regularizer(
      eps=eps, xi=xi, iterations=iterations, alpha=alpha))
