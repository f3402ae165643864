"""A compact BatchNorm CNN for CIFAR-sized inputs that trains on a few CPU cores.

The paper networks (PreActResNet-18: 0.56 GFLOPs per 32x32 image forward;
WRN-34-10: 6.7) take hours per epoch of adversarial training on two CPU
cores. `CompactCNN` keeps their ingredients (3x3 convolutions, BatchNorm
with PyTorch's momentum and epsilon, ReLU, global average pooling, one
dense layer) at a size whose forward-backward pass costs a few MFLOPs, for
the CPU-scale reproduction (`experiments/configs/robust_cifar10.py`).
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxadv import validation
from jaxadv.models import layers

__all__ = ["CompactCNN", "compact_cnn_cost"]

# PyTorch's default Conv2d / Linear weight init, as the other CIFAR models.
_torch_default_kernel_init = nn.initializers.variance_scaling(
    1.0 / 3.0, "fan_in", "uniform")
_PAD1 = ((1, 1), (1, 1))


class CompactCNN(nn.Module):
  """Stages of [Conv3x3 - BN - ReLU] x `convs_per_stage`, GAP, Dense.

  Architecture, with `widths = (w_1, ..., w_S)`::

      stage 1: Conv(w_1, 3x3, stride 1, pad 1, no bias) - BN - ReLU, ...
      stage s > 1: Conv(w_s, 3x3, stride 2, pad 1, no bias) - BN - ReLU,
                   then convs_per_stage - 1 more at stride 1
      -> global average pool -> Dense(num_classes)

  The default `(32, 64, 128)` x 1 has 94,762 parameters (94,314 weights and
  biases, 448 BatchNorm scales and offsets) and 20.6 MFLOPs (10.3M
  multiply-adds) per 32x32x3 image forward (`compact_cnn_cost`).

  BatchNorm: `momentum=0.9`, `epsilon=1e-5` (PyTorch's defaults), running
  statistics in `batch_stats`; pass `mutable=["batch_stats"]` with
  `train=True`.

  Attributes:
    num_classes: number of output logits `K`.
    widths: output channels of each stage.
    convs_per_stage: 3x3 convolutions per stage (>= 1).
    conv_fn: every conv's kernel (`layers.Conv.conv_fn`); None (default)
      is `layers.lax_conv`; `jaxadv.models.get_model(...,
      kernels="xla_cpu")` passes `xla_cpu.conv`. Parameters and outputs are
      the same for every choice.
  """

  num_classes: int = 10
  widths: Sequence[int] = (32, 64, 128)
  convs_per_stage: int = 1
  conv_fn: Optional[layers.ConvFn] = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Computes logits.

    Args:
      x: float32 images `[B, H, W, C]` (`[B, 32, 32, 3]` for CIFAR); any
        normalisation is up to the caller (`jaxadv.models.Normalized`).
      train: batch statistics (updating `batch_stats`) when True, the
        running averages when False.

    Returns:
      float32 logits `[B, num_classes]`.

    Raises:
      ValueError: `x` not rank 4, empty `widths` or `convs_per_stage < 1`.
      TypeError: `x` not floating point.
    """
    validation.check_nhwc(x, type(self).__name__)
    if not self.widths:
      raise ValueError("CompactCNN: `widths` must name at least one stage.")
    validation.check_count(self.convs_per_stage, "convs_per_stage", 1)
    conv = functools.partial(layers.Conv, kernel_size=(3, 3), padding=_PAD1,
                             use_bias=False, conv_fn=self.conv_fn,
                             kernel_init=_torch_default_kernel_init)
    for s, width in enumerate(self.widths):
      for j in range(self.convs_per_stage):
        stride = 2 if s > 0 and j == 0 else 1
        x = conv(int(width), strides=(stride, stride),
                 name=f"conv{s + 1}_{j}")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                         epsilon=1e-5, name=f"bn{s + 1}_{j}")(x)
        x = nn.relu(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=_torch_default_kernel_init,
                    name="fc")(x)


def compact_cnn_cost(widths: Sequence[int] = (32, 64, 128),
                     convs_per_stage: int = 1, num_classes: int = 10,
                     image_shape: Sequence[int] = (32, 32, 3)
                     ) -> dict:
  """Parameters and forward multiply-adds per image of a `CompactCNN`.

  Args:
    widths, convs_per_stage, num_classes: the model's attributes.
    image_shape: (H, W, C) of one input.

  Returns:
    {"params" (weights + BatchNorm scales and offsets), "macs" (multiply-
    adds of the convolutions and the dense layer), "flops" (2 x macs)}.
  """
  h, w, c = image_shape
  params = macs = 0
  for s, width in enumerate(widths):
    for j in range(convs_per_stage):
      if s > 0 and j == 0:
        h, w = (h + 1) // 2, (w + 1) // 2
      params += 9 * c * width + 2 * width
      macs += h * w * 9 * c * width
      c = width
  params += c * num_classes + num_classes
  macs += c * num_classes
  return {"params": params, "macs": macs, "flops": 2 * macs}
