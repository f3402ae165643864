"""Training steps: natural, K-PGD AT, FGSM-RS ("fast") AT and free AT.

Every step is a pure function `(state, batch, key) -> (state, metrics)` meant
for `jax.jit`; `batch` is `{"x": float32 [B, H, W, C] in [0, 1], "y": int32 [B]}`
and the step folds `state.step` into `key` itself. The adversarial variants
share one skeleton, `_update`: ONE `jax.value_and_grad` over (params, delta)
that gives the parameter gradient and the perturbation gradient together.
They differ only in how `delta` is produced:

* natural: `delta = 0`;
* PGD AT (Madry et al., 2018): K PGD steps against the current parameters;
* FGSM-RS (Wong, Rice & Kolter, 2020): one step of size alpha from U(-eps, eps);
* free AT (Shafahi et al., 2019): `delta` lives in the state, is replayed
  `replays` times per minibatch, and each replay's single backward pass also
  updates it, `delta <- clip(delta + eps * sign(g_delta), -eps, eps)`.

Mixup training (Zhang et al., 2018) and interpolated AT (Lamb et al., 2019)
use the same skeleton with a `Mix`: the (possibly perturbed) inputs are mixed
with a permutation of the batch, and the loss with the same permutation of
the labels, `lam * CE(logits, y) + (1 - lam) * CE(logits, y[perm])`, which is
the cross-entropy against the mixed one-hot targets.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxadv import validation
from jaxadv import attacks
from jaxadv import losses
from jaxadv import loops
from jaxadv import projections
from jaxadv.training.state import TrainState
from jaxadv.training.state import apply_model
from jaxadv.training.state import current_attack_params

Batch = dict
Metrics = dict
StepFn = Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]
Perturb = Callable[[TrainState, jax.Array, jax.Array, jax.Array], jax.Array]


class Mix(NamedTuple):
  """One mixup draw for a batch (Zhang et al., 2018)."""
  lam: jax.Array   # float32 [] or [B], the weight of the original example
  perm: jax.Array  # int32 [B], the partner of each example


def draw_mix(key: jax.Array, batch_size: int, alpha: float) -> Mix:
  """`lam ~ Beta(alpha, alpha)` and a random pairing of the batch."""
  k_lam, k_perm = jax.random.split(key)
  lam = jax.random.beta(k_lam, alpha, alpha).astype(jnp.float32)
  return Mix(lam, jax.random.permutation(k_perm, batch_size))


def _mixed(mix: Mix, a: jax.Array) -> jax.Array:
  lam = _bcast(mix.lam, a.ndim) if jnp.ndim(mix.lam) else mix.lam
  return lam * a + (1.0 - lam) * a[mix.perm]


def _update(state: TrainState, x: jax.Array, y: jax.Array,
            delta: jax.Array, *, mix: Optional[Mix] = None,
            weights: Optional[jax.Array] = None
            ) -> tuple[TrainState, jax.Array, Metrics]:
  """One optimizer update on `clip(x + delta, 0, 1)`; also returns grad_delta.

  The perturbation gradient is free: it comes out of the same backward pass
  as the parameter gradient (unused outputs are pruned by XLA under jit).

  Args:
    state, x, y, delta: the state, batch [B, ...] / [B] and perturbation.
    mix: when given, the inputs `clip(x + delta)` and the labels are mixed
      with `mix.perm` and `mix.lam` (mixup); the loss is then
      `lam * CE(y) + (1 - lam) * CE(y[perm])`.
    weights: float32 [B] per-example loss weights (mean over the batch of
      `weights * loss`); None = uniform.
  """
  def loss_fn(params, delta):
    inputs = jnp.clip(x + delta, 0.0, 1.0)
    if mix is not None:
      inputs = _mixed(mix, inputs)
    logits, batch_stats = apply_model(state, params, inputs, train=True)
    per_example = losses.cross_entropy(logits, y)
    if mix is not None:
      per_example = (mix.lam * per_example + (1.0 - mix.lam) *
                     losses.cross_entropy(logits, y[mix.perm]))
    if weights is not None:
      per_example = weights * per_example
    return jnp.mean(per_example), (logits, batch_stats)

  grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)
  (loss, (logits, batch_stats)), (g_params, g_delta) = grad_fn(state.params,
                                                                delta)
  state = state.apply_gradients(grads=g_params, batch_stats=batch_stats)
  hits = jnp.argmax(logits, -1) == y
  if mix is not None:  # mixup accuracy: agreement with the dominant label
    hits = jnp.argmax(logits, -1) == jnp.where(mix.lam >= 0.5, y, y[mix.perm])
  metrics = {"loss": loss, "accuracy": jnp.mean(hits)}
  return state, g_delta, metrics


def _check_attack_options(norm: str, steps: Optional[int] = None,
                          unroll: Optional[bool] = None) -> None:
  """Checks a trainer's static attack options when it is built, not traced."""
  validation.check_choice(norm, "norm", projections.NORMS)
  if steps is not None:
    validation.check_count(steps, "steps", 0)
  if unroll is not None and not isinstance(unroll, bool):
    raise TypeError(f"unroll: expected True, False or None, got {unroll!r}")


def _attack_loss_fn(state: TrainState) -> losses.LossFn:
  """The attack's loss at the current parameters (BN in train mode, no update)."""
  def logits_fn(x):
    return apply_model(state, state.params, x, train=True)[0]
  return losses.make_loss_fn(logits_fn, "ce")


def make_step(perturb: Perturb) -> StepFn:
  """The shared skeleton: produce `delta` with `perturb`, then one update.

  Args:
    perturb: `(state, x, y, key) -> delta` with `x + delta` in the eps-ball
      and in [0, 1]; its output is treated as a constant.

  Returns:
    `step(state, batch, key) -> (state, metrics)`.
  """
  def step(state: TrainState, batch: Batch, key: jax.Array):
    x, y = batch["x"], batch["y"]
    key = jax.random.fold_in(key, state.step)
    delta = jax.lax.stop_gradient(perturb(state, x, y, key))
    state, _, metrics = _update(state, x, y, delta)
    return state, metrics

  return step


def natural_step() -> StepFn:
  """Natural (standard) training: `delta = 0`."""
  return make_step(lambda state, x, y, key: jnp.zeros_like(x))


def pgd_at_step(*, steps: int, norm: str = "linf", random_start: bool = True,
                unroll: Optional[bool] = None) -> StepFn:
  """K-PGD adversarial training (Madry et al., 2018).

  Each step runs `steps` PGD steps (eps and step size from
  `state.attack_params`, pixel units) on the current parameters, then one
  update on the adversarial batch: about `steps + 1` forward-backward passes.

  Args:
    steps: K, the static number of PGD steps.
    norm: "linf" or "l2".
    random_start: uniform start in the ball.
    unroll: unroll the step loop (True), roll it (False) or None
      (`jaxadv.loops.default_unroll()`: unrolled on CPU only).

  Raises:
    ValueError, TypeError: `steps < 0`, unknown `norm`, bad `unroll`.
  """
  _check_attack_options(norm, steps, unroll)

  def perturb(state, x, y, key):
    eps, step_size = current_attack_params(state)
    x_adv = attacks.pgd(_attack_loss_fn(state), x, y, key, eps=eps,
                        step_size=step_size, steps=steps, norm=norm,
                        random_start=random_start, unroll=unroll)
    return x_adv - x

  return make_step(perturb)


def fgsm_rs_step(*, norm: str = "linf") -> StepFn:
  """FGSM-RS "fast" adversarial training (Wong, Rice & Kolter, 2020).

  `delta0 ~ U(-eps, eps)`, one step of size `state.attack_params["step_size"]`
  (alpha; 1.25 eps in the paper, 0.375 for eps 0.3 on MNIST), then one update:
  two forward-backward passes per step.

  Raises:
    ValueError: unknown `norm`.
  """
  _check_attack_options(norm)
  def perturb(state, x, y, key):
    eps, step_size = current_attack_params(state)
    x_adv = attacks.fgsm_rs(_attack_loss_fn(state), x, y, key, eps=eps,
                            step_size=step_size, norm=norm)
    return x_adv - x

  return make_step(perturb)


def free_at_step(*, replays: int, unroll: Optional[bool] = None) -> StepFn:
  """Free adversarial training (Shafahi et al., NeurIPS 2019).

  Replays the minibatch `replays` (m) times. Each replay is ONE
  `jax.value_and_grad` over (params, delta): the parameter gradient updates
  the model, and the delta gradient updates the perturbation,
  `delta <- clip(delta + eps * sign(g_delta), -eps, eps)`. `state.delta`
  (fixed batch shape) is carried over to the next minibatch, never reset. Run
  for `epochs / m` passes over the data to match natural training's cost.

  Args:
    replays: m, static.
    unroll: unroll the replay loop (True), roll it (False) or None
      (`jaxadv.loops.default_unroll()`).

  Returns:
    `step(state, batch, key) -> (state, metrics)`; `state.step` advances by
    `replays`; metrics are averaged over the replays.

  Raises:
    ValueError, TypeError: `replays < 1` or bad `unroll`; at trace time,
      when `state.delta` is missing or its shape differs from the batch's.
  """
  validation.check_count(replays, "replays", 1)
  if unroll is not None and not isinstance(unroll, bool):
    raise TypeError(f"unroll: expected True, False or None, got {unroll!r}")

  def step(state: TrainState, batch: Batch, key: jax.Array):
    del key  # Free AT has no randomness of its own.
    x, y = batch["x"], batch["y"]
    if state.delta is None or state.delta.shape != x.shape:
      raise ValueError(
          "free AT needs `state.delta` with the fixed batch shape "
          f"{x.shape} (create_train_state(..., delta_shape=...), drop the "
          f"last partial batch); got "
          f"{None if state.delta is None else state.delta.shape}.")
    def replay(_, carry):
      state, total = carry
      eps, _ = current_attack_params(state)
      state, g_delta, metrics = _update(state, x, y, state.delta)
      delta = jnp.clip(state.delta + eps * jnp.sign(g_delta), -eps, eps)
      total = jax.tree.map(jnp.add, total, metrics)
      return state.replace(delta=delta), total

    zeros = {"loss": jnp.float32(0), "accuracy": jnp.float32(0)}
    state, total = loops.run_loop(replays, replay, (state, zeros),
                                  unroll=unroll)
    return state, jax.tree.map(lambda v: v / replays, total)

  return step


def _check_alpha(alpha: float) -> None:
  if not alpha > 0:
    raise ValueError(f"`alpha` (the Beta(alpha, alpha) mixup parameter) must "
                     f"be > 0; got {alpha}.")


def mixup_step(*, alpha: float = 1.0) -> StepFn:
  """Mixup training (Zhang, Cisse, Dauphin & Lopez-Paz, ICLR 2018).

  Per step (key folded with `state.step`): `lam ~ Beta(alpha, alpha)` and a
  random permutation `perm` of the batch; trains on
  `x~ = lam x + (1 - lam) x[perm]` with targets
  `y~ = lam onehot(y) + (1 - lam) onehot(y[perm])`. One forward-backward pass,
  the cost of a natural step.

  Args:
    alpha: the Beta parameter (1.0 in the paper for CIFAR; 0.2-0.4 for small
      networks). Python float.

  Returns:
    `step(state, batch, key) -> (state, metrics)`.

  Raises:
    ValueError: `alpha <= 0`.
  """
  _check_alpha(alpha)

  def step(state: TrainState, batch: Batch, key: jax.Array):
    x, y = batch["x"], batch["y"]
    key = jax.random.fold_in(key, state.step)
    mix = draw_mix(key, x.shape[0], alpha)
    state, _, metrics = _update(state, x, y, jnp.zeros_like(x), mix=mix)
    return state, metrics

  return step


def iat_step(*, alpha: float = 1.0, steps: int = 10, adv_ratio: float = 0.5,
             norm: str = "linf", random_start: bool = True,
             unroll: Optional[bool] = None) -> StepFn:
  """Interpolated adversarial training (Lamb, Verma, Kannala & Bengio, 2019).

  Per step: PGD (`steps` steps, eps and step size from `state.attack_params`,
  pixel units) on the clean batch against the current parameters, then ONE
  update on the concatenation [clean batch, adversarial batch], each half
  mixed with its own `lam ~ Beta(alpha, alpha)` and permutation; the clean
  mixup loss has weight `1 - adv_ratio` and the adversarial one `adv_ratio`.
  About `steps + 2` forward-backward passes of one batch.

  Args:
    alpha: mixup Beta parameter.
    steps: PGD steps for the adversarial half (10 in the paper), static.
    adv_ratio: weight of the adversarial mixup loss, in [0, 1] (0.5 = 1:1).
    norm: "linf" or "l2".
    random_start: PGD's uniform random start.
    unroll: unroll the step loop (True), roll it (False) or None
      (`jaxadv.loops.default_unroll()`: unrolled on CPU only).

  Returns:
    `step(state, batch, key) -> (state, metrics)`.

  Raises:
    ValueError, TypeError: `alpha <= 0`, `adv_ratio` outside [0, 1],
      `steps < 0`, unknown `norm`, bad `unroll`.
  """
  _check_alpha(alpha)
  _check_attack_options(norm, steps, unroll)
  if not 0.0 <= adv_ratio <= 1.0:
    raise ValueError(f"`adv_ratio` must be in [0, 1]; got {adv_ratio}.")

  def step(state: TrainState, batch: Batch, key: jax.Array):
    x, y = batch["x"], batch["y"]
    key = jax.random.fold_in(key, state.step)
    k_pgd, k_clean, k_adv = jax.random.split(key, 3)
    eps, step_size = current_attack_params(state)
    x_adv = attacks.pgd(_attack_loss_fn(state), x, y, k_pgd, eps=eps,
                        step_size=step_size, steps=steps, norm=norm,
                        random_start=random_start, unroll=unroll)
    delta = jax.lax.stop_gradient(x_adv - x)
    b = x.shape[0]
    clean, adv = draw_mix(k_clean, b, alpha), draw_mix(k_adv, b, alpha)
    # One mix over the doubled batch: each half pairs only within itself.
    mix = Mix(lam=jnp.concatenate([jnp.full((b,), clean.lam),
                                   jnp.full((b,), adv.lam)]),
              perm=jnp.concatenate([clean.perm, adv.perm + b]))
    weights = 2.0 * jnp.concatenate([jnp.full((b,), 1.0 - adv_ratio),
                                     jnp.full((b,), adv_ratio)])
    state, _, metrics = _update(
        state, jnp.concatenate([x, x]), jnp.concatenate([y, y]),
        jnp.concatenate([jnp.zeros_like(x), delta]), mix=mix, weights=weights)
    return state, metrics

  return step


def _bcast(lam: jax.Array, ndim: int) -> jax.Array:
  """Per-example lam [B] -> [B, 1, ..., 1] for the inputs (rank `ndim`)."""
  return lam.reshape(lam.shape + (1,) * (ndim - 1))
