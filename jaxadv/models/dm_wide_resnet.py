"""DeepMind's Wide ResNet (Swish, in-model normalisation) for CIFAR images.

The architecture of the strongest RobustBench CIFAR-10 entries: Gowal et al.
(2020), "Uncovering the limits of adversarial training against norm-bounded
adversarial examples" (WRN-28-10 and WRN-70-16 with Swish), Rebuffi et al.
(2021), "Fixing data augmentation to improve adversarial robustness", and
later work that reuses their code (e.g. Wang et al. 2023). Module and
variable names follow RobustBench's PyTorch port
(`robustbench/model_zoo/architectures/dm_wide_resnet.py`, itself from
`deepmind-research/adversarial_robustness/pytorch/model_zoo.py`), so its
`state_dict`s load with `jaxadv.models.load_torch_state_dict`:

    PyTorch (RobustBench)               Flax (this module)
    init_conv.weight                    init_conv/kernel
    layer.I.block.J.batchnorm_0.*       layer_I_block_J/batchnorm_0/...
    layer.I.block.J.conv_0.weight       layer_I_block_J/conv_0/kernel
    layer.I.block.J.batchnorm_1.*       layer_I_block_J/batchnorm_1/...
    layer.I.block.J.conv_1.weight       layer_I_block_J/conv_1/kernel
    layer.I.block.J.shortcut.weight     layer_I_block_J/shortcut/kernel
    batchnorm.*, logits.*               batchnorm/..., logits/...

The per-channel `mean` / `std` are module attributes (constants), as in the
reference, where they are constructor arguments held as plain or
non-persistent tensors and are therefore not part of RobustBench
checkpoints.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxadv import validation
from jaxadv.models import layers
from jaxadv.models.normalize import CIFAR10_MEAN
from jaxadv.models.normalize import CIFAR10_STD
from jaxadv.models.normalize import normalize

__all__ = [
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "DMWideResNet",
    "DMWideResNet16_2",
    "DMWideResNet28_10",
    "DMWideResNet70_16",
    "DMWideResNetBlock",
]

# RobustBench's CIFAR-100 statistics for this architecture (its CIFAR-10 ones
# are `normalize.CIFAR10_MEAN` / `CIFAR10_STD`, the defaults below).
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

# DeepMind's (Haiku) training code: conv kernels ~ truncated normal with
# variance 1 / fan_in; BN scale 1, bias 0.
_conv_init = nn.initializers.variance_scaling(1.0, "fan_in",
                                              "truncated_normal")
# The final Linear keeps PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in))
# (DeepMind's JAX code starts it at zero, which makes every input gradient of
# a fresh model zero).
_dense_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

_PAD_SAME_1 = ((1, 1), (1, 1))  # stride 1: PyTorch `F.pad(v, (1, 1, 1, 1))`.
_PAD_SAME_2 = ((0, 1), (0, 1))  # stride 2: `F.pad(v, (0, 1, 0, 1))`, i.e. TF
# "SAME" for even sizes: one zero row at the bottom, one column at the right.


def _batch_norm(train: bool, name: str) -> nn.BatchNorm:
  """BatchNorm with decay 0.99 (PyTorch momentum 0.01) and eps 1e-5.

  The decay is that of DeepMind's training code (Haiku `decay_rate=0.99`);
  RobustBench's PyTorch port keeps `nn.BatchNorm2d`'s default momentum 0.1,
  which only matters when training. Evaluation uses the running statistics
  either way.
  """
  return nn.BatchNorm(use_running_average=not train, momentum=0.99,
                      epsilon=1e-5, name=name)


class DMWideResNetBlock(nn.Module):
  """Pre-activation block: BN-act-Conv3x3(stride)-BN-act-Conv3x3 + shortcut.

  As in the reference `_Block`, the block has a projection shortcut (a 1x1
  convolution, no bias, with the block's stride) exactly when the number of
  channels changes, and that shortcut is applied to the *activated* input
  `act(batchnorm_0(x))`; otherwise the residual is the raw input `x`. The
  first 3x3 convolution pads explicitly: one pixel on every side for stride
  1, and zero above / left and one below / right for stride 2.

  Attributes:
    features: Number of output channels.
    stride: Stride of the first 3x3 convolution and the shortcut, 1 or 2.
    activation: Elementwise activation (Swish by default).
    conv_fn: every conv's kernel (`layers.Conv.conv_fn`); None = `lax_conv`.
  """

  features: int
  stride: int = 1
  activation: Callable[[jax.Array], jax.Array] = nn.swish
  conv_fn: Optional[layers.ConvFn] = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Applies the block.

    Args:
      x: float32 activations `[B, H, W, C_in]`.
      train: Use batch statistics (updating `batch_stats`) when True.

    Returns:
      float32 activations `[B, ceil(H / stride), ceil(W / stride), features]`.

    Raises:
      ValueError: If `stride` is not 1 or 2, or the block would change the
        resolution without changing the number of channels (the reference
        has no shortcut for that case).
    """
    if self.stride not in (1, 2):
      raise ValueError(
          f"DMWideResNetBlock: `stride` must be 1 or 2; got {self.stride}.")
    has_shortcut = x.shape[-1] != self.features
    if self.stride != 1 and not has_shortcut:
      raise ValueError(
          "DMWideResNetBlock: a stride-2 block must change the number of "
          f"channels (got {x.shape[-1]} -> {self.features}).")
    conv = functools.partial(layers.Conv, self.features, use_bias=False,
                             kernel_init=_conv_init, conv_fn=self.conv_fn)
    out = self.activation(_batch_norm(train, "batchnorm_0")(x))
    if has_shortcut:
      x = out  # the projection sees the activated input
    pad = _PAD_SAME_1 if self.stride == 1 else _PAD_SAME_2
    out = conv((3, 3), strides=(self.stride, self.stride), padding=pad,
               name="conv_0")(out)
    out = self.activation(_batch_norm(train, "batchnorm_1")(out))
    out = conv((3, 3), strides=(1, 1), padding=_PAD_SAME_1,
               name="conv_1")(out)
    if has_shortcut:
      x = conv((1, 1), strides=(self.stride, self.stride), padding="VALID",
               name="shortcut")(x)
    return x + out


class DMWideResNet(nn.Module):
  """WRN-`depth`-`width` of Gowal et al. (2020) / Rebuffi et al. (2021).

  Architecture, with `n = (depth - 4) / 6` blocks per group and `k = width`::

      (x - mean) / std                          (per channel, pixel units)
      -> init_conv: Conv(16, 3x3, stride 1, pad 1, no bias)
      -> layer_0..2: 3 groups x n DMWideResNetBlocks with (16k, 32k, 64k)
         channels and strides (1, 2, 2)
      -> batchnorm -> activation -> global average pool -> logits (Dense)

  The defaults are RobustBench's CIFAR-10 WRN-28-10 with Swish (36,479,194
  parameters for 10 classes); WRN-70-16 (266,796,506 parameters) is the
  largest model of Gowal et al. (2020) and Rebuffi et al. (2021). The
  reference `avg_pool2d(out, 8)` equals the global average pool used here
  for 32x32 inputs. RobustBench's `padding` argument (zero-padding the input
  before normalising; 0 for every CIFAR entry) is not implemented.

  BatchNorm layers use decay 0.99 (PyTorch momentum 0.01, as in DeepMind's
  training code) and `epsilon=1e-5`, and keep running statistics in the
  `batch_stats` collection; pass `mutable=["batch_stats"]` to `apply` when
  `train=True`. `mean` and `std` are constants of the module, not variables:
  build the model with the statistics the checkpoint was trained with (e.g.
  `mean=CIFAR100_MEAN, std=CIFAR100_STD` for RobustBench's CIFAR-100
  entries).

  Attributes:
    num_classes: Number of output logits `K`.
    depth: Total depth; `depth - 4` must be a positive multiple of 6.
    width: Channel multiplier `k`.
    activation: Elementwise activation; `nn.swish` (SiLU, `x * sigmoid(x)`)
      as in the RobustBench entries, `nn.relu` for the ReLU variants.
    mean: Per-channel input means, pixel units (default CIFAR-10's).
    std: Per-channel input standard deviations (> 0; default CIFAR-10's).
    conv_fn: every conv's kernel (`layers.Conv.conv_fn`); None (default)
      is `layers.lax_conv`; `jaxadv.models.get_model(...,
      kernels="xla_cpu")` passes `xla_cpu.conv`. Parameters and outputs are
      the same for every choice.
  """

  num_classes: int = 10
  depth: int = 28
  width: int = 10
  activation: Callable[[jax.Array], jax.Array] = nn.swish
  mean: Sequence[float] = CIFAR10_MEAN
  std: Sequence[float] = CIFAR10_STD
  conv_fn: Optional[layers.ConvFn] = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Computes logits.

    Args:
      x: float32 images `[B, H, W, C]` (`[B, 32, 32, 3]` for CIFAR) with
        values in `[0, 1]`; the model normalises them with `mean` / `std`.
      train: Use batch statistics (updating `batch_stats`) when True; use
        the running averages when False.

    Returns:
      float32 logits of shape `[B, num_classes]`.

    Raises:
      ValueError: If `x` is not rank 4, `mean` / `std` do not have one value
        per input channel or `std` is not positive, or `depth` / `width` are
        invalid.
      TypeError: If `x` is not floating point.
    """
    validation.check_nhwc(x, type(self).__name__)
    if self.depth < 10 or (self.depth - 4) % 6 != 0:
      raise ValueError(
          f"DMWideResNet: `depth` must satisfy (depth - 4) % 6 == 0 and "
          f"depth >= 10 (e.g. 16, 28, 70); got {self.depth}.")
    if self.width < 1:
      raise ValueError(
          f"DMWideResNet: `width` must be >= 1; got {self.width}.")
    n = (self.depth - 4) // 6
    k = self.width
    x = normalize(x, self.mean, self.std)
    x = layers.Conv(16, (3, 3), strides=(1, 1), padding=_PAD_SAME_1,
                    use_bias=False, kernel_init=_conv_init,
                    conv_fn=self.conv_fn, name="init_conv")(x)
    groups = ((16 * k, 1), (32 * k, 2), (64 * k, 2))
    for i, (features, stride) in enumerate(groups):
      for j in range(n):
        x = DMWideResNetBlock(features, stride if j == 0 else 1,
                              self.activation, conv_fn=self.conv_fn,
                              name=f"layer_{i}_block_{j}")(x, train)
    x = self.activation(_batch_norm(train, "batchnorm")(x))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=_dense_init,
                    name="logits")(x)


DMWideResNet28_10 = functools.partial(DMWideResNet, depth=28, width=10)
"""WRN-28-10 with Swish (36.5M parameters); `DMWideResNet`'s defaults."""

DMWideResNet70_16 = functools.partial(DMWideResNet, depth=70, width=16)
"""WRN-70-16 with Swish (266.8M parameters), Gowal et al. / Rebuffi et al."""

DMWideResNet16_2 = functools.partial(DMWideResNet, depth=16, width=2)
"""WRN-16-2 with Swish (691,674 parameters), a small variant for tests."""
