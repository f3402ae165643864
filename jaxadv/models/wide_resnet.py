"""Wide residual networks for CIFAR-sized inputs.

Zagoruyko & Komodakis (2016), "Wide Residual Networks", with pre-activation
basic blocks, in the form used by Zhang et al. (2019, TRADES) and Rice, Wong
& Kolter (2020) (`wideresnet.py` in those code bases).
"""

from __future__ import annotations

import functools
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxadv import validation
from jaxadv.models import layers

__all__ = [
    "WideBasicBlock",
    "WideResNet",
    "WideResNet16_4",
    "WideResNet28_10",
    "WideResNet34_10",
]

# Reference init: conv weights ~ N(0, 2 / (k * k * out_channels)) (He et al.
# 2015, fan-out mode); BN scale 1, bias 0; Linear bias 0.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# Linear weights keep PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
_dense_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

_PAD1 = ((1, 1), (1, 1))  # PyTorch `padding=1`, also for stride-2 convolutions.


def _batch_norm(train: bool, name: str) -> nn.BatchNorm:
  """BatchNorm equivalent to PyTorch's defaults (momentum 0.1, eps 1e-5)."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                      epsilon=1e-5, name=name)


class WideBasicBlock(nn.Module):
  """Pre-activation wide basic block: BN-ReLU-Conv3x3-BN-ReLU-[Dropout]-Conv3x3.

  When the number of channels or the resolution changes, the shortcut is a 1x1
  convolution (no bias) applied to the pre-activated input; otherwise it is the
  identity on the raw input.

  Attributes:
    features: Number of output channels.
    stride: Stride of the first 3x3 convolution (and of the shortcut).
    dropout_rate: Dropout probability between the two convolutions.
    conv_fn: every conv's kernel (`layers.Conv.conv_fn`); None = `lax_conv`.
  """

  features: int
  stride: int = 1
  dropout_rate: float = 0.0
  conv_fn: Optional[layers.ConvFn] = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Applies the block.

    Args:
      x: float32 activations `[B, H, W, C_in]`.
      train: Use batch statistics (updating `batch_stats`) and enable dropout
        when True.

    Returns:
      float32 activations `[B, ceil(H / stride), ceil(W / stride), features]`.
    """
    conv = functools.partial(layers.Conv, use_bias=False,
                             kernel_init=_conv_init, conv_fn=self.conv_fn)
    out = nn.relu(_batch_norm(train, "bn1")(x))
    if self.stride != 1 or x.shape[-1] != self.features:
      shortcut = conv(self.features, (1, 1), strides=(self.stride, self.stride),
                      padding="VALID", name="shortcut")(out)
    else:
      shortcut = x
    out = conv(self.features, (3, 3), strides=(self.stride, self.stride),
               padding=_PAD1, name="conv1")(out)
    out = nn.relu(_batch_norm(train, "bn2")(out))
    if self.dropout_rate > 0.0:
      out = nn.Dropout(rate=self.dropout_rate, deterministic=not train)(out)
    out = conv(self.features, (3, 3), strides=(1, 1), padding=_PAD1,
               name="conv2")(out)
    return out + shortcut


class WideResNet(nn.Module):
  """WRN-`depth`-`widen_factor` (Zagoruyko & Komodakis, 2016) for 32x32 images.

  Architecture, with `n = (depth - 4) / 6` blocks per stage and `k =
  widen_factor`::

      Conv(16, 3x3, stride 1, pad 1, no bias)
      -> 3 stages x n WideBasicBlocks with (16k, 32k, 64k) channels and
         strides (1, 2, 2)
      -> BN -> ReLU -> global average pool -> Dense(num_classes)

  The default is WRN-28-10 (36,479,194 parameters for 10 classes); WRN-34-10
  (46,160,474 parameters) is the standard robust-training model of TRADES
  (Zhang et al., 2019) and Rice et al. (2020). Parameter counts equal those of
  the PyTorch reference, leaving out the unused `sub_block1` some copies of
  `wideresnet.py` define. The reference `avg_pool2d(out, 8)` equals the global
  average pool used here for 32x32 inputs.

  BatchNorm layers use `momentum=0.9`, `epsilon=1e-5` (PyTorch's defaults) and
  keep running statistics in the `batch_stats` collection; pass
  `mutable=["batch_stats"]` to `apply` when `train=True`. With
  `dropout_rate > 0`, training also needs a `"dropout"` PRNG key
  (`rngs={"dropout": key}`).

  Attributes:
    num_classes: Number of output logits `K`.
    depth: Total depth; `depth - 4` must be a positive multiple of 6.
    widen_factor: Channel multiplier `k`.
    dropout_rate: Dropout probability inside each block (0 disables dropout).
    conv_fn: every conv's kernel (`layers.Conv.conv_fn`); None (default)
      is `layers.lax_conv`; `jaxadv.models.get_model(...,
      kernels="xla_cpu")` passes `xla_cpu.conv`. Parameters and outputs are
      the same for every choice.
  """

  num_classes: int = 10
  depth: int = 28
  widen_factor: int = 10
  dropout_rate: float = 0.0
  conv_fn: Optional[layers.ConvFn] = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Computes logits.

    Args:
      x: float32 images `[B, H, W, C]` (`[B, 32, 32, 3]` for CIFAR) with
        values in `[0, 1]`. Any input normalisation is up to the caller.
      train: Use batch statistics (updating `batch_stats`) and enable dropout
        when True; use the running averages and no dropout when False.

    Returns:
      float32 logits of shape `[B, num_classes]`.

    Raises:
      ValueError: If `x` is not rank 4, or `depth` / `widen_factor` /
        `dropout_rate` are invalid.
      TypeError: If `x` is not floating point.
    """
    validation.check_nhwc(x, type(self).__name__)
    if self.depth < 10 or (self.depth - 4) % 6 != 0:
      raise ValueError(
          f"WideResNet: `depth` must satisfy (depth - 4) % 6 == 0 and "
          f"depth >= 10 (e.g. 16, 22, 28, 34); got {self.depth}.")
    if self.widen_factor < 1:
      raise ValueError(
          f"WideResNet: `widen_factor` must be >= 1; got {self.widen_factor}.")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(
          f"WideResNet: `dropout_rate` must lie in [0, 1); got "
          f"{self.dropout_rate}.")
    n = (self.depth - 4) // 6
    k = self.widen_factor
    x = layers.Conv(16, (3, 3), strides=(1, 1), padding=_PAD1, use_bias=False,
                    kernel_init=_conv_init, conv_fn=self.conv_fn,
                    name="conv1")(x)
    stages = ((16 * k, 1), (32 * k, 2), (64 * k, 2))
    for i, (features, stride) in enumerate(stages):
      for j in range(n):
        x = WideBasicBlock(features, stride if j == 0 else 1,
                           self.dropout_rate, conv_fn=self.conv_fn,
                           name=f"block{i + 1}_{j}")(x, train)
    x = nn.relu(_batch_norm(train, "bn")(x))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, kernel_init=_dense_init, name="fc")(x)
    return x


WideResNet28_10 = functools.partial(WideResNet, depth=28, widen_factor=10)
"""WRN-28-10 (Zagoruyko & Komodakis, 2016); `WideResNet` with its defaults."""

WideResNet34_10 = functools.partial(WideResNet, depth=34, widen_factor=10)
"""WRN-34-10, the CIFAR model of TRADES and Rice et al. (2020)."""

WideResNet16_4 = functools.partial(WideResNet, depth=16, widen_factor=4)
"""WRN-16-4 (2.7M parameters), a small variant for tests and quick runs."""
