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
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from jaxadv import attacks
from jaxadv import losses
from jaxadv.attacks import _loop
from jaxadv.training.state import TrainState
from jaxadv.training.state import apply_model
from jaxadv.training.state import current_attack_params

Batch = dict
Metrics = dict
StepFn = Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]
Perturb = Callable[[TrainState, jax.Array, jax.Array, jax.Array], jax.Array]


def _update(state: TrainState, x: jax.Array, y: jax.Array,
            delta: jax.Array) -> tuple[TrainState, jax.Array, Metrics]:
  """One optimizer update on `clip(x + delta, 0, 1)`; also returns grad_delta.

  The perturbation gradient is free: it comes out of the same backward pass
  as the parameter gradient (unused outputs are pruned by XLA under jit).
  """
  def loss_fn(params, delta):
    logits, batch_stats = apply_model(state, params,
                                      jnp.clip(x + delta, 0.0, 1.0), train=True)
    loss = jnp.mean(losses.cross_entropy(logits, y))
    return loss, (logits, batch_stats)

  grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)
  (loss, (logits, batch_stats)), (g_params, g_delta) = grad_fn(state.params,
                                                                delta)
  state = state.apply_gradients(grads=g_params, batch_stats=batch_stats)
  metrics = {"loss": loss,
             "accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}
  return state, g_delta, metrics


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
                loop: Optional[str] = None) -> StepFn:
  """K-PGD adversarial training (Madry et al., 2018).

  Each step runs `steps` PGD steps (eps and step size from
  `state.attack_params`, pixel units) on the current parameters, then one
  update on the adversarial batch: about `steps + 1` forward-backward passes.

  Args:
    steps: K, the static number of PGD steps.
    norm: "linf" or "l2".
    random_start: uniform start in the ball.
    loop: attack loop form ("unroll", "fori", None = backend default).
  """
  def perturb(state, x, y, key):
    eps, step_size = current_attack_params(state)
    x_adv = attacks.pgd(_attack_loss_fn(state), x, y, key, eps=eps,
                        step_size=step_size, steps=steps, norm=norm,
                        random_start=random_start, loop=loop)
    return x_adv - x

  return make_step(perturb)


def fgsm_rs_step(*, norm: str = "linf") -> StepFn:
  """FGSM-RS "fast" adversarial training (Wong, Rice & Kolter, 2020).

  `delta0 ~ U(-eps, eps)`, one step of size `state.attack_params["step_size"]`
  (alpha; 1.25 eps in the paper, 0.375 for eps 0.3 on MNIST), then one update:
  two forward-backward passes per step.
  """
  def perturb(state, x, y, key):
    eps, step_size = current_attack_params(state)
    x_adv = attacks.fgsm_rs(_attack_loss_fn(state), x, y, key, eps=eps,
                            step_size=step_size, norm=norm)
    return x_adv - x

  return make_step(perturb)


def free_at_step(*, replays: int, loop: Optional[str] = None) -> StepFn:
  """Free adversarial training (Shafahi et al., NeurIPS 2019).

  Replays the minibatch `replays` (m) times. Each replay is ONE
  `jax.value_and_grad` over (params, delta): the parameter gradient updates
  the model, and the delta gradient updates the perturbation,
  `delta <- clip(delta + eps * sign(g_delta), -eps, eps)`. `state.delta`
  (fixed batch shape) is carried over to the next minibatch, never reset. Run
  for `epochs / m` passes over the data to match natural training's cost.

  Args:
    replays: m, static.
    loop: the replay loop's form ("unroll", "fori", None = backend default).

  Returns:
    `step(state, batch, key) -> (state, metrics)`; `state.step` advances by
    `replays`; metrics are averaged over the replays.

  Raises:
    ValueError: at trace time, when `state.delta` is missing or its shape
      differs from the batch's.
  """
  if replays < 1:
    raise ValueError(f"`replays` must be >= 1; got {replays}.")

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
    state, total = _loop.run_loop(replays, replay, (state, zeros), loop)
    return state, jax.tree.map(lambda v: v / replays, total)

  return step
