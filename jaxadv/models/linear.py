"""A linear-softmax classifier (multinomial logistic regression) as a Flax model.

The same module serves two purposes: trained with jaxadv's training steps it is
logistic regression (natural, FGSM or PGD adversarial training reuse exactly
the code of the neural networks), and with the weights of a fitted
scikit-learn linear model (`sklearn_variables`) it is that model's
differentiable forward pass (`decision_function`), so the gradient attacks
apply to it.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxadv import validation

__all__ = ["LinearSoftmax", "sklearn_variables"]


class LinearSoftmax(nn.Module):
  """`logits = flatten(x) @ kernel + bias` (logistic regression's scores).

  For 28x28x1 inputs and K classes: 784 * K + K parameters (7,850 for K = 10).
  Weights start at zero (the convex problem has no symmetry to break).

  Attributes:
    num_classes: number of output logits K.
  """

  num_classes: int = 10

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Computes the class scores.

    Args:
      x: float32 [B, H, W, C] (or [B, D]) pixels in [0, 1].
      train: ignored (no BatchNorm or dropout).

    Returns:
      float32 logits [B, num_classes].

    Raises:
      ValueError: rank < 2. TypeError: non-floating `x`.
    """
    del train
    validation.check_image_batch_static(x, "x", context=type(self).__name__)
    x = x.reshape((x.shape[0], -1))
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                    name="dense")(x)


def sklearn_variables(coef: np.ndarray, intercept: np.ndarray) -> dict:
  """Flax variables of `LinearSoftmax` equal to a fitted scikit-learn model.

  For `LogisticRegression` (multinomial) and `LinearSVC` (one-vs-rest),
  `decision_function(X) = X @ coef_.T + intercept_` and `predict` is its
  argmax, so `LinearSoftmax().apply(variables, x)` reproduces both on
  flattened inputs `X = x.reshape(B, -1)`.

  Args:
    coef: float [K, D], the estimator's `coef_` (D = H * W * C, K >= 2).
    intercept: float [K], its `intercept_`.

  Returns:
    `{"params": {"dense": {"kernel": float32 [D, K], "bias": float32 [K]}}}`.

  Raises:
    ValueError: `coef` not [K, D] with K >= 2 (binary models have one row:
      not supported), or `intercept` not [K].
  """
  coef = np.asarray(coef)
  intercept = np.asarray(intercept)
  if coef.ndim != 2 or coef.shape[0] < 2:
    raise ValueError(f"`coef` must be [K, D] with K >= 2 classes (a multiclass "
                     f"model's coef_); got shape {coef.shape}.")
  if intercept.shape != (coef.shape[0],):
    raise ValueError(f"`intercept` must have shape ({coef.shape[0]},); got "
                     f"{intercept.shape}.")
  return {"params": {"dense": {"kernel": jnp.asarray(coef.T, jnp.float32),
                               "bias": jnp.asarray(intercept, jnp.float32)}}}
