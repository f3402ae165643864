"""Single-step adversarial training that resists catastrophic overfitting.

FGSM-RS (`fgsm_rs_step`) can collapse: held-out PGD accuracy falls to about
zero within an epoch while FGSM accuracy stays high (Wong, Rice & Kolter,
2020). Two single-step fixes, both built on the one step skeleton
(`jaxadv.training.make_step`):

* N-FGSM (de Jorge, Bibi, Volpi, Sanyal, Torr, Rogez & Dokania, NeurIPS
  2022, "Make some noise: reliable and efficient single-step adversarial
  training"): a larger noise, `eta ~ U(-k eps, k eps)` (k = 2), one signed
  gradient step of size alpha (= eps) from it, and NO projection back to the
  eps-ball (the training point may lie up to (k + 1) eps away); the cost of
  FGSM-RS, two forward-backward passes.
* GradAlign (Andriushchenko & Flammarion, NeurIPS 2020, "Understanding and
  improving fast adversarial training"): FGSM (from zero, step alpha = eps)
  plus the regulariser `lam * (1 - cos(grad_x l(x), grad_x l(x + eta)))`,
  `eta ~ U(-eps, eps)`, averaged over the batch; its parameter gradient
  needs double backpropagation through the input gradient at `x + eta`,
  all inside the step's one `jax.value_and_grad`. About three times the
  cost of FGSM-RS.

eps and alpha come from `state.attack_params` ("eps", "step_size"; pixel
units) like the other trainers, so eps ramps apply.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jaxadv import losses
from jaxadv import validation
from jaxadv.training import steps as steps_lib
from jaxadv.training.state import TrainState
from jaxadv.training.state import apply_model
from jaxadv.training.state import current_attack_params
from jaxadv.types import Batch
from jaxadv.types import Metrics
from jaxadv.types import PyTree


def _input_grad(state: TrainState, params: PyTree, x: jax.Array,
                y: jax.Array, delta: jax.Array, *, train: bool):
  """(d sum CE(model(clip(x + delta)), y) / d delta, the forward's
  batch_stats): differentiable in `params` (GradAlign's double backprop)."""
  def total(d):
    logits, stats = apply_model(state, params, jnp.clip(x + d, 0.0, 1.0),
                                train=train)
    return jnp.sum(losses.cross_entropy(logits, y)), stats

  return jax.grad(total, has_aux=True)(delta)


def _check_bn(attack_bn: str) -> None:
  validation.check_choice(attack_bn, "attack_bn", steps_lib.ATTACK_BN)


def _signed_step(state: TrainState, x, y, delta0, *, step_size, attack_bn):
  """`delta0 + step_size * sign(g)` and the BatchNorm stats to train from."""
  g, stats = _input_grad(state, state.params, x, y, delta0,
                         train=attack_bn != "eval")
  g = jax.lax.stop_gradient(g)
  stats = stats if attack_bn == "update" and state.batch_stats else None
  return delta0 + step_size * jnp.sign(g), stats


def n_fgsm_perturbation(*, noise: float = 2.0, clip: Optional[float] = None,
                        attack_bn: str = "update") -> steps_lib.Perturb:
  """N-FGSM's `Perturb` (de Jorge et al., NeurIPS 2022), L-inf.

  `eta ~ U(-noise * eps, noise * eps)` (kept in the box [0, 1]), then
  `delta = eta + alpha * sign(grad_delta CE(clip(x + eta)))` with eps,
  alpha = `state.attack_params` "eps", "step_size" (pixel units), kept in
  the box and, only with `clip`, in the `clip * eps` ball.

  Args:
    noise: k, the noise half-width in units of eps (>= 0; 2 in the paper).
    clip: None (the paper's default: no projection) or c > 0: project
      `delta` onto the `c * eps` L-inf ball (c = 1 is FGSM-RS's ball).
    attack_bn: the BatchNorm mode of the attack forward (`ATTACK_BN`).

  Returns:
    `(state, batch, key) -> Perturbation`.

  Raises:
    ValueError: `noise < 0`, `clip <= 0`, unknown `attack_bn`.
  """
  validation.check_interval(noise, "noise", 0.0, float("inf"))
  if clip is not None:
    validation.check_interval(clip, "clip", 0.0, float("inf"), low_open=True)
  _check_bn(attack_bn)

  def perturb(state: TrainState, batch: Batch, key: jax.Array
              ) -> steps_lib.Perturbation:
    x, y = batch["x"], batch["y"]
    eps, step_size = current_attack_params(state)
    eta = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * (noise * eps)
    eta = jnp.clip(x + eta, 0.0, 1.0) - x
    delta, stats = _signed_step(state, x, y, eta, step_size=step_size,
                                attack_bn=attack_bn)
    if clip is not None:
      delta = jnp.clip(delta, -clip * eps, clip * eps)
    delta = jnp.clip(x + delta, 0.0, 1.0) - x
    return steps_lib.Perturbation(x, y, delta, batch_stats=stats)

  return perturb


def n_fgsm_step(*, noise: float = 2.0, clip: Optional[float] = None,
                attack_bn: str = "update",
                augment: Optional[steps_lib.Augment] = None
                ) -> steps_lib.StepFn:
  """N-FGSM adversarial training, L-inf (de Jorge et al., NeurIPS 2022).

  Per step: `n_fgsm_perturbation` (noise k eps, one signed step of size
  alpha = `state.attack_params["step_size"]`; the paper: k = 2, alpha =
  eps, no projection), then one update on `x + delta`. Two
  forward-backward passes, as FGSM-RS.

  Args:
    noise: k (`n_fgsm_perturbation`).
    clip: None or the projection radius in units of eps.
    attack_bn: the BatchNorm mode of the attack forward (`ATTACK_BN`);
      "update" (default, the official code's `model.train()`).
    augment: `(key, x) -> x` training augmentation (`make_step`), or None.

  Returns:
    `step(state, batch, key) -> (state, metrics)`.

  Raises:
    ValueError, TypeError: `noise < 0`, `clip <= 0`, unknown `attack_bn`,
      bad `augment`.
  """
  return steps_lib.make_step(
      n_fgsm_perturbation(noise=noise, clip=clip, attack_bn=attack_bn),
      augment=augment, requires=("eps", "step_size"))


def _cosine(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-example cosine of flattened a, b [B, ...], and where both are
  non-zero (the official code averages over those only).

  Each row is first divided by its largest |entry| (a constant to the
  derivative): the cosine and its derivative are unchanged, but the sums of
  squares stay >= 1, so tiny input gradients (a gradient-masked model's can
  be ~1e-20) neither underflow nor meet sqrt's infinite slope at 0.
  """
  def scaled(v):
    v = v.reshape(v.shape[0], -1)
    m = jax.lax.stop_gradient(jnp.max(jnp.abs(v), -1, keepdims=True))
    return v / jnp.where(m > 0, m, 1.0), m[:, 0] > 0

  (a, ok_a), (b, ok_b) = scaled(a), scaled(b)
  ok = ok_a & ok_b
  norms = (jnp.sqrt(jnp.where(ok, jnp.sum(a * a, -1), 1.0)) *
           jnp.sqrt(jnp.where(ok, jnp.sum(b * b, -1), 1.0)))
  return jnp.where(ok, jnp.sum(a * b, -1) / norms, 0.0), ok


def grad_align_penalty(*, lam: float) -> steps_lib.Regularizer:
  """GradAlign's regulariser as a `Regularizer` (Andriushchenko &
  Flammarion, NeurIPS 2020).

  `lam * (1 - mean_i cos(g1_i, g2_i))` with `g1 = grad_x CE(x)` (a constant
  of the update, as in the official code) and `g2 = grad_x CE(x + eta)`,
  `eta ~ U(-eps, eps)` (kept in the box), differentiated in the parameters
  (double backprop); the mean runs over examples whose two gradients are
  both non-zero. The forwards use batch statistics and do not update the
  running averages.

  Args:
    lam: the weight (>= 0; 0.2 at CIFAR-10 eps 8/255 in the paper, larger for
      larger eps).

  Returns:
    `(state, batch, key) -> Penalty`; its metrics hold "grad_align" (the
    unweighted 1 - mean cosine).

  Raises:
    ValueError: `lam < 0`.
  """
  validation.check_interval(lam, "lam", 0.0, float("inf"))

  def regularizer(state: TrainState, batch: Batch, key: jax.Array
                  ) -> steps_lib.Penalty:
    x, y = batch["x"], batch["y"]
    eps, _ = current_attack_params(state)
    k = jax.random.fold_in(key, _ETA_STREAM)
    eta = jax.random.uniform(k, x.shape, x.dtype, -1.0, 1.0) * eps
    eta = jnp.clip(x + eta, 0.0, 1.0) - x
    g1, _ = _input_grad(state, state.params, x, y, jnp.zeros_like(x),
                        train=True)
    g1 = jax.lax.stop_gradient(g1)

    def term(params: PyTree) -> tuple[jax.Array, Metrics]:
      g2, _ = _input_grad(state, params, x, y, eta, train=True)
      cos, ok = _cosine(g1, g2)
      mean = jnp.sum(jnp.where(ok, cos, 0.0)) / jnp.maximum(jnp.sum(ok), 1)
      misalign = 1.0 - mean
      return lam * misalign, {"grad_align": misalign}

    return steps_lib.Penalty(term)

  return regularizer


_ETA_STREAM = 0x6A11
"""GradAlign draws its random point from `fold_in(step key, _ETA_STREAM)`."""


def fgsm_perturbation(*, random_init: bool = False,
                      attack_bn: str = "update") -> steps_lib.Perturb:
  """FGSM's `Perturb`, from zero (Goodfellow et al., 2015) or, with
  `random_init`, from U(-eps, eps): `delta0 + alpha * sign(g)` projected
  onto the eps-ball and the box, eps and alpha = `state.attack_params`
  "eps", "step_size" (pixel units).

  Args:
    random_init: start from a uniform point of the ball instead of zero.
    attack_bn: the BatchNorm mode of the attack forward (`ATTACK_BN`).

  Returns:
    `(state, batch, key) -> Perturbation`.

  Raises:
    ValueError: unknown `attack_bn`.
  """
  _check_bn(attack_bn)

  def perturb(state: TrainState, batch: Batch, key: jax.Array
              ) -> steps_lib.Perturbation:
    x, y = batch["x"], batch["y"]
    eps, step_size = current_attack_params(state)
    delta0 = jnp.zeros_like(x)
    if random_init:
      delta0 = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * eps
      delta0 = jnp.clip(x + delta0, 0.0, 1.0) - x
    delta, stats = _signed_step(state, x, y, delta0, step_size=step_size,
                                attack_bn=attack_bn)
    delta = jnp.clip(x + jnp.clip(delta, -eps, eps), 0.0, 1.0) - x
    return steps_lib.Perturbation(x, y, delta, batch_stats=stats)

  return perturb


def grad_align_step(*, lam: float, random_init: bool = False,
                    attack_bn: str = "update",
                    augment: Optional[steps_lib.Augment] = None
                    ) -> steps_lib.StepFn:
  """FGSM training with GradAlign (Andriushchenko & Flammarion, NeurIPS 2020).

  Per step: `fgsm_perturbation` (from zero, step alpha =
  `state.attack_params["step_size"]`; the paper: alpha = eps), then ONE
  `jax.value_and_grad` of `CE(x + delta) + grad_align_penalty(lam)`, whose
  parameter gradient backpropagates through the input gradient at the
  random point (double backprop).

  Args:
    lam: the GradAlign weight (`grad_align_penalty`).
    random_init: start FGSM from a uniform point of the ball instead of zero.
    attack_bn: the BatchNorm mode of the FGSM forward (`ATTACK_BN`).
    augment: `(key, x) -> x` training augmentation (`make_step`), or None.

  Returns:
    `step(state, batch, key) -> (state, metrics)`; metrics "loss" (with the
    penalty), "ce", "grad_align", "accuracy".

  Raises:
    ValueError, TypeError: `lam < 0`, unknown `attack_bn`, bad `augment`.
  """
  return steps_lib.make_step(
      fgsm_perturbation(random_init=random_init, attack_bn=attack_bn),
      regularizer=grad_align_penalty(lam=lam), augment=augment,
      requires=("eps", "step_size"))
