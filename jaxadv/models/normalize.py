"""Input normalisation inside the model, so attacks stay in pixel space.

CIFAR-10 networks are trained on `(x - mean) / std`. If that happened in
the data pipeline, `eps`, the [0, 1] box and every attack would have to
live in normalised units. jaxadv keeps them in pixels: the model itself
normalises, so `model.apply(variables, x)` takes `x` in [0, 1] and the
gradient an attack takes is the gradient w.r.t. pixels.

`Normalized(model, mean, std)` wraps any Flax module taking
`(x, train=...)`. Its variables are the wrapped model's (under the
`"model"` scope), so a checkpoint of the bare network loads with
`{"params": {"model": params}}`; `unwrap_variables` / `wrap_variables`
convert between the two.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxadv import validation

# The per-channel statistics of the CIFAR-10 training set used by the
# official free-AT and fast-AT scripts (Wong et al.'s `cifar10_mean/std`).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)


def normalize(x: jax.Array, mean: Sequence[float],
              std: Sequence[float]) -> jax.Array:
  """`(x - mean) / std` over the last (channel) axis.

  Args:
    x: float [..., C] pixels in [0, 1].
    mean: C per-channel means (pixel units).
    std: C per-channel standard deviations (> 0).

  Returns:
    float array of `x`'s shape and dtype (bfloat16 inputs stay bfloat16, for
    mixed precision).

  Raises:
    ValueError: `mean` / `std` not of length C, or a `std` <= 0.
  """
  positive = (bool(np.all(np.asarray(std) > 0))
               if validation.is_concrete(std) else True)  # numpy: under jit too
  dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  if mean.shape != (x.shape[-1],) or std.shape != (x.shape[-1],):
    raise ValueError(f"mean, std: expected {x.shape[-1]} values each (one per "
                     f"channel), got {mean.shape} and {std.shape}")
  if not positive:
    raise ValueError(f"std: expected positive values, got {std}")
  return ((x - mean) / std).astype(dtype)


class Normalized(nn.Module):
  """A model that sees `(x - mean) / std` of its pixel-space input.

  Attributes:
    model: any Flax module with `__call__(x, train=False)`.
    mean: per-channel means (pixel units).
    std: per-channel standard deviations.
  """

  model: nn.Module
  mean: Sequence[float] = CIFAR10_MEAN
  std: Sequence[float] = CIFAR10_STD

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Logits of `model` on normalised `x` (float [B, H, W, C] in [0, 1])."""
    return self.model(normalize(x, self.mean, self.std), train=train)


def wrap_variables(variables: Any) -> dict:
  """A bare model's variables as `Normalized`'s (every collection scoped).

  Args:
    variables: `{"params": ..., "batch_stats": ...}` of the wrapped model.

  Returns:
    The same arrays under `{"params": {"model": ...}, ...}`.
  """
  return {col: {"model": tree} for col, tree in dict(variables).items()}


def unwrap_variables(variables: Any) -> dict:
  """`Normalized`'s variables as the bare model's (inverse of `wrap_variables`).

  Raises:
    KeyError: a collection without the `"model"` scope.
  """
  return {col: tree["model"] for col, tree in dict(variables).items()}
