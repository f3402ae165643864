"""ResNets for CIFAR-sized inputs.

* Pre-activation ResNet-18: He, Zhang, Ren & Sun (2016), "Identity Mappings
  in Deep Residual Networks", in the CIFAR variant used by Wong, Rice &
  Kolter (2020), "Fast is better than free", and Rice, Wong & Kolter (2020),
  "Overfitting in adversarially robust deep learning" (`preact_resnet.py` in
  both code bases).
* ResNet-50: He, Zhang, Ren & Sun (2016), "Deep Residual Learning for Image
  Recognition", bottleneck blocks (3, 4, 6, 3) in the usual CIFAR form (a
  3x3 stride-1 stem, no max pool), the network Pang, Xu & Zhu (ICLR 2020)
  name for their Mixup Inference experiments.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxadv import validation
from jaxadv.models import layers

__all__ = ["Bottleneck", "PreActBlock", "PreActResNet18", "ResNet50"]

# PyTorch's default Conv2d / Linear weight init is
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)); biases start at zero here.
_torch_default_kernel_init = nn.initializers.variance_scaling(
    1.0 / 3.0, "fan_in", "uniform")

# PyTorch `padding=1` for 3x3 convolutions. Flax's "SAME" pads (0, 1) for
# stride-2 convolutions on even inputs, which would shift the sampling grid.
_PAD1 = ((1, 1), (1, 1))


def _batch_norm(train: bool, name: str) -> nn.BatchNorm:
  """BatchNorm equivalent to PyTorch's defaults (momentum 0.1, eps 1e-5)."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                      epsilon=1e-5, name=name)


class PreActBlock(nn.Module):
  """Pre-activation basic block: BN-ReLU-Conv3x3-BN-ReLU-Conv3x3 + shortcut.

  The shortcut is the identity when the shape is unchanged and otherwise a 1x1
  convolution (no bias) with stride `stride` applied to the *pre-activated*
  input, as in the reference implementation.

  Attributes:
    features: Number of output channels.
    stride: Stride of the first 3x3 convolution (and of the shortcut).
  """

  features: int
  stride: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Applies the block.

    Args:
      x: float32 activations `[B, H, W, C_in]`.
      train: Use batch statistics and update running averages in
        `batch_stats` when True; use the running averages when False.

    Returns:
      float32 activations `[B, ceil(H / stride), ceil(W / stride), features]`.
    """
    conv = functools.partial(layers.Conv, use_bias=False,
                             kernel_init=_torch_default_kernel_init)
    out = nn.relu(_batch_norm(train, "bn1")(x))
    if self.stride != 1 or x.shape[-1] != self.features:
      shortcut = conv(self.features, (1, 1), strides=(self.stride, self.stride),
                      padding="VALID", name="shortcut")(out)
    else:
      shortcut = x
    out = conv(self.features, (3, 3), strides=(self.stride, self.stride),
               padding=_PAD1, name="conv1")(out)
    out = nn.relu(_batch_norm(train, "bn2")(out))
    out = conv(self.features, (3, 3), strides=(1, 1), padding=_PAD1,
               name="conv2")(out)
    return out + shortcut


class PreActResNet18(nn.Module):
  """Pre-activation ResNet-18 for 32x32 images (He et al., 2016).

  Architecture::

      Conv(64, 3x3, stride 1, pad 1, no bias)
      -> 4 stages x 2 PreActBlocks with (64, 128, 256, 512) channels and
         strides (1, 2, 2, 2)
      -> BN -> ReLU -> global average pool -> Dense(num_classes)

  This is the network of Wong et al. (2020) and Rice et al. (2020), including
  their final BatchNorm; it has 11,172,170 parameters for `num_classes = 10`,
  the same count as the PyTorch reference. The reference `avg_pool2d(out, 4)`
  equals the global average pool used here for 32x32 inputs; other input sizes
  also work.
  Weights use PyTorch's default initialisation, biases start at zero.

  BatchNorm layers use `momentum=0.9`, `epsilon=1e-5` (PyTorch's defaults) and
  keep running statistics in the `batch_stats` collection; pass
  `mutable=["batch_stats"]` to `apply` when `train=True`. Unlike PyTorch, Flax
  tracks the biased batch variance in its running average.

  Attributes:
    num_classes: Number of output logits `K`.
  """

  num_classes: int = 10

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Computes logits.

    Args:
      x: float32 images `[B, H, W, C]` (`[B, 32, 32, 3]` for CIFAR) with
        values in `[0, 1]`. Any input normalisation is up to the caller.
      train: Use batch statistics and update the running averages in
        `batch_stats` when True; use the running averages when False.

    Returns:
      float32 logits of shape `[B, num_classes]`.

    Raises:
      ValueError: If `x` is not rank 4.
      TypeError: If `x` is not floating point.
    """
    validation.check_nhwc(x, type(self).__name__)
    x = layers.Conv(64, (3, 3), strides=(1, 1), padding=_PAD1, use_bias=False,
                kernel_init=_torch_default_kernel_init, name="conv1")(x)
    stages = ((64, 1), (128, 2), (256, 2), (512, 2))
    for i, (features, stride) in enumerate(stages):
      for j in range(2):
        x = PreActBlock(features, stride if j == 0 else 1,
                        name=f"layer{i + 1}_{j}")(x, train)
    x = nn.relu(_batch_norm(train, "bn")(x))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, kernel_init=_torch_default_kernel_init,
                 name="linear")(x)
    return x


class Bottleneck(nn.Module):
  """Bottleneck block: Conv1x1-BN-ReLU-Conv3x3-BN-ReLU-Conv1x1-BN + shortcut,
  then ReLU (He et al., 2016; the stride sits on the 3x3 convolution).

  The shortcut is the identity when the shape is unchanged and otherwise a
  1x1 convolution (no bias) with stride `stride` followed by BatchNorm.

  Attributes:
    features: Width of the 1x1 and 3x3 convolutions; the block outputs
      `4 * features` channels.
    stride: Stride of the 3x3 convolution (and of the shortcut).
  """

  features: int
  stride: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Applies the block to float32 `[B, H, W, C_in]` activations; returns
    `[B, ceil(H / stride), ceil(W / stride), 4 * features]`."""
    conv = functools.partial(layers.Conv, use_bias=False,
                             kernel_init=_torch_default_kernel_init)
    strides = (self.stride, self.stride)
    out = conv(self.features, (1, 1), padding="VALID", name="conv1")(x)
    out = nn.relu(_batch_norm(train, "bn1")(out))
    out = conv(self.features, (3, 3), strides=strides, padding=_PAD1,
               name="conv2")(out)
    out = nn.relu(_batch_norm(train, "bn2")(out))
    out = conv(4 * self.features, (1, 1), padding="VALID", name="conv3")(out)
    out = _batch_norm(train, "bn3")(out)
    if self.stride != 1 or x.shape[-1] != 4 * self.features:
      x = conv(4 * self.features, (1, 1), strides=strides, padding="VALID",
               name="shortcut")(x)
      x = _batch_norm(train, "shortcut_bn")(x)
    return nn.relu(out + x)


class ResNet50(nn.Module):
  """ResNet-50 for 32x32 images (He et al., 2016), CIFAR form.

  Architecture::

      Conv(64, 3x3, stride 1, pad 1, no bias) -> BN -> ReLU
      -> 4 stages of (3, 4, 6, 3) Bottlenecks, widths (64, 128, 256, 512)
         (outputs x4), strides (1, 2, 2, 2)
      -> global average pool -> Dense(num_classes)

  23,520,842 parameters for `num_classes = 10`. Weights use PyTorch's
  default initialisation, biases start at zero; BatchNorm as in
  `PreActResNet18` (running statistics in `batch_stats`).

  Attributes:
    num_classes: Number of output logits `K`.
  """

  num_classes: int = 10

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Computes logits.

    Args:
      x: float32 images `[B, H, W, C]` (`[B, 32, 32, 3]` for CIFAR) in
        `[0, 1]`. Any input normalisation is up to the caller.
      train: Use batch statistics and update the running averages in
        `batch_stats` when True; use the running averages when False.

    Returns:
      float32 logits of shape `[B, num_classes]`.

    Raises:
      ValueError: If `x` is not rank 4.
      TypeError: If `x` is not floating point.
    """
    validation.check_nhwc(x, type(self).__name__)
    x = layers.Conv(64, (3, 3), strides=(1, 1), padding=_PAD1, use_bias=False,
                    kernel_init=_torch_default_kernel_init, name="conv1")(x)
    x = nn.relu(_batch_norm(train, "bn1")(x))
    stages = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))
    for i, (features, blocks, stride) in enumerate(stages):
      for j in range(blocks):
        x = Bottleneck(features, stride if j == 0 else 1,
                       name=f"layer{i + 1}_{j}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=_torch_default_kernel_init,
                    name="linear")(x)
