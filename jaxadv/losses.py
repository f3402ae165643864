"""Per-example losses for attacks and training.

Every loss maps `(logits [B, C], y [B] int) -> [B]` and never assumes a number
of classes: `C` is read from the logits.
"""

from __future__ import annotations

from typing import Callable, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxadv import _checks

LogitsFn = Callable[[jax.Array], jax.Array]
LossFn = Callable[[jax.Array, jax.Array], jax.Array]
LogitsLoss = Callable[[jax.Array, jax.Array], jax.Array]


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Softmax cross-entropy with integer labels.

  Args:
    logits: float [B, C].
    y: int [B] labels in [0, C).

  Returns:
    float [B], the per-example loss in nats.

  Raises:
    ValueError, TypeError: logits not [B, C] floats, or y not int [B] in
      [0, C) (the range only for concrete y).
  """
  _checks.check_logits(logits, y)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y)


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Cross-entropy against soft targets (mixup labels).

  Args:
    logits: float [B, C].
    targets: float [B, C], rows summing to 1.

  Returns:
    float [B].

  Raises:
    ValueError: `targets` not of the shape of `logits`.
  """
  if np.shape(targets) != np.shape(logits):
    raise ValueError(f"`targets` must be soft labels of the shape of `logits` "
                     f"{np.shape(logits)}; got {np.shape(targets)} (integer "
                     f"labels go to `cross_entropy`).")
  return optax.softmax_cross_entropy(logits, targets)


def cw_margin(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Carlini-Wagner margin `max_{j != y} z_j - z_y` (Carlini & Wagner, 2017).

  Positive exactly when the example is misclassified. Untargeted attacks
  maximise it; targeted attacks (with `y` the target) minimise it.

  Args:
    logits: float [B, C].
    y: int [B].

  Returns:
    float [B].

  Raises:
    ValueError, TypeError: as `cross_entropy`.
  """
  _checks.check_logits(logits, y)
  num_classes = logits.shape[-1]
  onehot = jax.nn.one_hot(y, num_classes, dtype=logits.dtype)
  z_y = jnp.sum(logits * onehot, axis=-1)
  others = jnp.where(onehot > 0, -jnp.inf, logits)
  return jnp.max(others, axis=-1) - z_y


LOSSES: dict[str, LogitsLoss] = {
    "ce": cross_entropy,
    "cw": cw_margin,
}


def get_loss(loss: Union[str, LogitsLoss]) -> LogitsLoss:
  """Returns a per-example logits loss by name ("ce", "cw") or passes a callable.

  Raises:
    ValueError: unknown loss name.
  """
  if callable(loss):
    return loss
  if loss not in LOSSES:
    raise ValueError(f"`loss` must be one of {sorted(LOSSES)} or a callable "
                     f"(logits, y) -> [B]; got {loss!r}.")
  return LOSSES[loss]


def make_loss_fn(logits_fn: LogitsFn,
                 loss: Union[str, LogitsLoss] = "ce") -> LossFn:
  """Builds the `loss_fn(x, y) -> [B]` that the attacks take from a model.

  Args:
    logits_fn: `x [B, ...] -> logits [B, C]`, e.g.
      `lambda x: model.apply(variables, x)`.
    loss: "ce" (cross-entropy), "cw" (CW margin) or a callable
      `(logits [B, C], y [B]) -> [B]`.

  Returns:
    `loss_fn(x, y)` returning the per-example loss [B].
  """
  per_example = get_loss(loss)

  def loss_fn(x: jax.Array, y: jax.Array) -> jax.Array:
    logits = logits_fn(x)
    _checks.check_labels(y, logits.shape[0], "y", num_classes=logits.shape[-1])
    return per_example(logits, y)

  return loss_fn
