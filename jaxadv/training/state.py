"""The training state shared by every trainer.

Mixed precision (`create_train_state(..., compute_dtype=jnp.bfloat16)`): the
parameters, the optimizer state and the BatchNorm statistics stay float32
(the master weights); every forward pass of training (attacks included)
casts the parameters and the inputs to `compute_dtype` and returns float32
logits, so the gradients, taken through the casts, are float32. Meant for
GPU/TPU (bf16 has no fast path on XLA:CPU). Evaluation with `model.apply`
stays float32.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from jaxadv import validation


class TrainState(train_state.TrainState):
  """flax `TrainState` plus what adversarial training carries.

  Attributes:
    batch_stats: BatchNorm running statistics ({} for BN-free models).
    delta: free AT's persistent perturbation, float32 [B, H, W, C] with the
      fixed batch shape; None for the other trainers.
    attack_params: traced attack hyper-parameters {"eps", "step_size"} (pixel
      units) and "eps_ramp_steps", so changing them does not recompile.
  """
  batch_stats: Any = None
  delta: Optional[jax.Array] = None
  attack_params: Any = None


def _cast_floats(tree: Any, dtype) -> Any:
  return jax.tree.map(
      lambda v: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating)
      else v, tree)


def mixed_precision(apply_fn: Callable[..., Any], compute_dtype
                    ) -> Callable[..., Any]:
  """`apply_fn` computing in `compute_dtype`, with float32 logits and stats.

  Args:
    apply_fn: a Flax `model.apply`.
    compute_dtype: e.g. `jnp.bfloat16`.

  Returns:
    `apply(variables, x, **kw)`: casts `variables["params"]` and `x` to
    `compute_dtype`, runs `apply_fn` (the model must compute in its inputs'
    dtype: jaxadv's layers and `Normalized` do), and casts the logits (and,
    with `mutable`, the updated collections) back to float32.
  """
  def apply(variables, x, *args, **kwargs):
    variables = dict(variables)
    variables["params"] = _cast_floats(variables["params"], compute_dtype)
    out = apply_fn(variables, x.astype(compute_dtype), *args, **kwargs)
    if kwargs.get("mutable"):
      logits, updates = out
      return (logits.astype(jnp.float32),
              _cast_floats(updates, jnp.float32))
    return out.astype(jnp.float32)

  return apply


def create_train_state(model: nn.Module, key: jax.Array,
                       input_shape: Sequence[int], tx: optax.GradientTransformation,
                       *, eps: float = 0.0, step_size: float = 0.0,
                       eps_ramp_steps: int = 0,
                       delta_shape: Optional[Sequence[int]] = None,
                       compute_dtype: Any = None) -> TrainState:
  """Initialises a model and its optimizer state.

  Args:
    model: a Flax Linen module called as `model(x, train=...)`.
    key: PRNG key for the parameter initialisation.
    input_shape: [B, H, W, C] of one batch (B may be 1 here).
    tx: optax optimizer.
    eps: attack budget in pixel units, stored in `attack_params`.
    step_size: attack step size in pixel units.
    eps_ramp_steps: ramp eps (and step_size with it) linearly from 0 over this
      many optimizer updates; 0 trains at full eps from the start.
    delta_shape: the batch shape of free AT's `delta` (zeros), or None.
    compute_dtype: None (float32 throughout) or e.g. `jnp.bfloat16`: the
      training forward passes compute in it, float32 master weights
      (`mixed_precision`; for GPU/TPU).

  Returns:
    A `TrainState` at step 0.

  Raises:
    ValueError: negative or non-finite eps, step_size or eps_ramp_steps.
  """
  validation.check_nonnegative(eps, "eps")
  validation.check_nonnegative(step_size, "step_size")
  validation.check_nonnegative(eps_ramp_steps, "eps_ramp_steps",
                            "optimizer updates")
  variables = model.init(key, jnp.zeros(input_shape, jnp.float32), train=False)
  params = variables["params"]
  batch_stats = variables.get("batch_stats", {})
  delta = None if delta_shape is None else jnp.zeros(delta_shape, jnp.float32)
  apply_fn = (model.apply if compute_dtype is None else
              mixed_precision(model.apply, compute_dtype))
  return TrainState.create(
      apply_fn=apply_fn, params=params, tx=tx, batch_stats=batch_stats,
      delta=delta,
      attack_params={"eps": jnp.float32(eps),
                     "step_size": jnp.float32(step_size),
                     "eps_ramp_steps": jnp.float32(eps_ramp_steps)})


def current_attack_params(state: TrainState) -> tuple[jax.Array, jax.Array]:
  """(eps, step_size) at `state.step`, after the optional linear eps ramp."""
  p = state.attack_params
  ramp = p.get("eps_ramp_steps", 0.0)
  scale = jnp.where(ramp > 0, jnp.minimum(1.0, state.step / jnp.maximum(ramp, 1.0)),
                    1.0)
  return p["eps"] * scale, p["step_size"] * scale


def variables_of(state: TrainState, params: Any = None) -> dict:
  """The Flax variables dict of `state` (with `params` overriding its own)."""
  params = state.params if params is None else params
  if state.batch_stats:
    return {"params": params, "batch_stats": state.batch_stats}
  return {"params": params}


def apply_model(state: TrainState, params: Any, x: jax.Array, *,
                train: bool) -> tuple[jax.Array, Any]:
  """Runs the model; returns (logits [B, C], updated batch_stats)."""
  variables = variables_of(state, params)
  if train and state.batch_stats:
    logits, updates = state.apply_fn(variables, x, train=True,
                                     mutable=["batch_stats"])
    return logits, updates["batch_stats"]
  return state.apply_fn(variables, x, train=train), state.batch_stats
