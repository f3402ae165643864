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

from jaxadv import validation

from jaxadv.types import LogitsFn
from jaxadv.types import LossFn
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
  validation.check_logits(logits, y)
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
  validation.check_logits(logits, y)
  num_classes = logits.shape[-1]
  onehot = jax.nn.one_hot(y, num_classes, dtype=logits.dtype)
  z_y = jnp.sum(logits * onehot, axis=-1)
  others = jnp.where(onehot > 0, -jnp.inf, logits)
  return jnp.max(others, axis=-1) - z_y


def _sorted_top(logits: jax.Array, k: int) -> jax.Array:
  """The `k` largest logits per example, in decreasing order [B, k]."""
  if logits.shape[-1] < k:
    raise ValueError(f"`logits` must have at least {k} classes for the DLR "
                     f"loss; got shape {logits.shape}.")
  return jax.lax.top_k(logits, k)[0]


def dlr(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Difference of Logits Ratio loss (Croce & Hein, ICML 2020).

  `DLR(z, y) = -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3)`, with `z_pi1 >=
  z_pi2 >= ...` the sorted logits: the CW margin divided by a scale of the
  logits, so it is invariant to shifting and rescaling them (no gradient
  masking by logit scale). Positive exactly when `y` is not the top class.
  Untargeted attacks maximise it.

  Args:
    logits: float [B, C], C >= 3.
    y: int [B] true labels.

  Returns:
    float [B].

  Raises:
    ValueError: fewer than 3 classes.
  """
  top = _sorted_top(logits, 3)
  return cw_margin(logits, y) / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_targeted(logits: jax.Array, y: jax.Array,
                 target: jax.Array) -> jax.Array:
  """Targeted DLR loss of APGD-T (Croce & Hein, ICML 2020).

  `-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`: maximising it pushes the
  target logit `z_t` above the true one `z_y`.

  Args:
    logits: float [B, C], C >= 4.
    y: int [B] true labels.
    target: int [B] target classes.

  Returns:
    float [B].

  Raises:
    ValueError: fewer than 4 classes.
  """
  top = _sorted_top(logits, 4)
  z_y = jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
  z_t = jnp.take_along_axis(logits, target[:, None], axis=-1)[:, 0]
  return (z_t - z_y) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


LOSSES: dict[str, LogitsLoss] = {
    "ce": cross_entropy,
    "cw": cw_margin,
    "dlr": dlr,
}


def get_loss(loss: Union[str, LogitsLoss]) -> LogitsLoss:
  """Returns a per-example logits loss by name ("ce", "cw", "dlr") or a callable.

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
    loss: "ce" (cross-entropy), "cw" (CW margin), "dlr" (DLR) or a callable
      `(logits [B, C], y [B]) -> [B]`.

  Returns:
    `loss_fn(x, y)` returning the per-example loss [B].
  """
  per_example = get_loss(loss)

  def loss_fn(x: jax.Array, y: jax.Array) -> jax.Array:
    logits = logits_fn(x)
    validation.check_labels(y, logits.shape[0], "y", num_classes=logits.shape[-1])
    return per_example(logits, y)

  return loss_fn
