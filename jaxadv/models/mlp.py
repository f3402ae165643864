"""Fully connected classifiers (the MNIST MLP of virtual adversarial training).

The model flattens NHWC float32 images in `[0, 1]` to `[B, H*W*C]` and
returns logits `[B, num_classes]`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax

from jaxadv import validation

__all__ = ["MLP", "VATMLP"]


class MLP(nn.Module):
  """A ReLU multilayer perceptron, optionally with BatchNorm after each layer.

  Architecture::

      flatten -> [Dense(h) -> (BatchNorm) -> ReLU] for h in hidden
      -> Dense(num_classes) -> (BatchNorm)

  With `batch_norm=True` this is the MNIST network of Miyato et al.,
  "Virtual Adversarial Training", TPAMI 2018 (784-1200-1200-10 with batch
  normalisation after every layer, the output included; their
  `vat_chainer`/`vat_tf` `MLP`). BatchNorm uses the statistics of the batch
  when `train=True` (running averages, collection `batch_stats`, otherwise).

  Attributes:
    hidden: widths of the hidden layers.
    num_classes: number of output logits `K`.
    batch_norm: BatchNorm after every Dense layer (the output one included).
  """

  hidden: Sequence[int] = (1200, 1200)
  num_classes: int = 10
  batch_norm: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Computes logits.

    Args:
      x: float32 images `[B, H, W, C]` (`[B, 28, 28, 1]` for MNIST) in
        `[0, 1]`.
      train: BatchNorm on batch statistics (and updates of the running ones,
        when `batch_stats` is mutable); otherwise the running averages.

    Returns:
      float32 logits `[B, num_classes]`.

    Raises:
      ValueError: `x` is not rank 4.
      TypeError: `x` is not floating point.
    """
    validation.check_image_batch_static(x, "x", rank=4,
                                     context=type(self).__name__)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=0.9, epsilon=1e-5)
    h = x.reshape((x.shape[0], -1))
    for i, width in enumerate(self.hidden):
      h = nn.Dense(width, use_bias=not self.batch_norm, name=f"fc{i + 1}")(h)
      if self.batch_norm:
        h = norm(name=f"bn{i + 1}")(h)
      h = nn.relu(h)
    h = nn.Dense(self.num_classes, use_bias=not self.batch_norm,
                 name="logits")(h)
    if self.batch_norm:
      h = norm(name="bn_logits")(h)
    return h


#: 784-1200-1200-10 with BatchNorm (Miyato et al., 2018, MNIST).
VATMLP = functools.partial(MLP, hidden=(1200, 1200), batch_norm=True)
