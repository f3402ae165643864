"""Small MNIST convolutional networks from adversarial-robustness papers.

Both models take NHWC float32 images in `[0, 1]` (MNIST: `[B, 28, 28, 1]`) and
return unnormalised logits of shape `[B, num_classes]`. Neither model has
BatchNorm or dropout, so the `train` argument is accepted (for a uniform
interface with the CIFAR models) and ignored.
"""

from __future__ import annotations

import functools
from typing import Optional

import flax.linen as nn
import jax

from jaxadv import validation
from jaxadv.models import layers

__all__ = ["FastATMNIST", "MadryCNN"]

# PyTorch's default initialiser for Conv2d / Linear weights is
# kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), which is
# variance_scaling(1/3, "fan_in", "uniform"). Biases are initialised to zero
# here (PyTorch draws them from the same uniform range).
_torch_default_kernel_init = nn.initializers.variance_scaling(
    1.0 / 3.0, "fan_in", "uniform")


class FastATMNIST(nn.Module):
  """MNIST network from Wong, Rice & Kolter (2020), "Fast is better than free".

  Architecture (`fast_adversarial/MNIST/mnist_net.py`)::

      Conv(16, 4x4, stride 2, pad 1) -> ReLU -> Conv(32, 4x4, stride 2, pad 1)
      -> ReLU -> flatten -> Dense(100) -> ReLU -> Dense(num_classes)

  Padding is explicit `((1, 1), (1, 1))` so that spatial sizes and values match
  PyTorch's `padding=1` (28 -> 14 -> 7). Note that the flatten is in NHWC order;
  porting PyTorch weights of the first Dense layer requires permuting its input
  dimension from CHW to HWC order.

  For 28x28x1 inputs the model has
  `(4*4*1*16 + 16) + (4*4*16*32 + 32) + (7*7*32*100 + 100) + (100*K + K)`
  parameters (166,406 for `K = 10`).

  Attributes:
    num_classes: Number of output logits `K`.
    conv_fn: every conv's kernel (`layers.Conv.conv_fn`); None (default)
      is `layers.lax_conv`; `jaxadv.models.get_model(...,
      kernels="xla_cpu")` passes `xla_cpu.conv`.
      Parameters and outputs are the same for every choice.
  """

  num_classes: int = 10
  conv_fn: Optional[layers.ConvFn] = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Computes logits.

    Args:
      x: float32 images of shape `[B, H, W, C]` (`[B, 28, 28, 1]` for MNIST)
        with values in `[0, 1]`.
      train: Ignored (the model has no BatchNorm or dropout); accepted for
        interface compatibility.

    Returns:
      float32 logits of shape `[B, num_classes]`.

    Raises:
      ValueError: If `x` is not rank 4.
      TypeError: If `x` is not floating point.
    """
    del train  # Unused: no BatchNorm / dropout.
    validation.check_nhwc(x, type(self).__name__)
    conv = functools.partial(layers.Conv, kernel_size=(4, 4), strides=(2, 2),
                             padding=((1, 1), (1, 1)), conv_fn=self.conv_fn,
                             kernel_init=_torch_default_kernel_init)
    x = conv(16, name="conv1")(x)
    x = nn.relu(x)
    x = conv(32, name="conv2")(x)
    x = nn.relu(x)
    x = x.reshape((x.shape[0], -1))
    x = nn.Dense(100, kernel_init=_torch_default_kernel_init, name="fc1")(x)
    x = nn.relu(x)
    x = nn.Dense(self.num_classes, kernel_init=_torch_default_kernel_init,
                 name="fc2")(x)
    return x


class MadryCNN(nn.Module):
  """MNIST network from Madry et al. (2018), "Towards Deep Learning Models
  Resistant to Adversarial Attacks" (`MadryLab/mnist_challenge/model.py`).

  Architecture::

      Conv(32, 5x5, SAME) -> ReLU -> maxpool 2x2 -> Conv(64, 5x5, SAME) -> ReLU
      -> maxpool 2x2 -> flatten -> Dense(1024) -> ReLU -> Dense(num_classes)

  Initialisation follows the TensorFlow original: weights from a truncated
  normal with stddev 0.1 (truncated at two standard deviations) and biases set
  to 0.1. SAME padding matches TensorFlow's and both frameworks flatten in HWC
  order, so the original checkpoints port without permuting the Dense weights.

  For 28x28x1 inputs the model has
  `(5*5*1*32 + 32) + (5*5*32*64 + 64) + (7*7*64*1024 + 1024) + (1024*K + K)`
  parameters (3,274,634 for `K = 10`).

  Attributes:
    num_classes: Number of output logits `K`.
    conv_fn: every conv's kernel (`layers.Conv.conv_fn`); None (default)
      is `layers.lax_conv`; `jaxadv.models.get_model(...,
      kernels="xla_cpu")` passes `xla_cpu.conv`.
      Parameters and outputs are the same for every choice.
  """

  num_classes: int = 10
  conv_fn: Optional[layers.ConvFn] = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Computes logits.

    Args:
      x: float32 images of shape `[B, H, W, C]` (`[B, 28, 28, 1]` for MNIST)
        with values in `[0, 1]`.
      train: Ignored (the model has no BatchNorm or dropout); accepted for
        interface compatibility.

    Returns:
      float32 logits of shape `[B, num_classes]`.

    Raises:
      ValueError: If `x` is not rank 4.
      TypeError: If `x` is not floating point.
    """
    del train  # Unused: no BatchNorm / dropout.
    validation.check_nhwc(x, type(self).__name__)
    kernel_init = nn.initializers.truncated_normal(stddev=0.1)
    bias_init = nn.initializers.constant(0.1)
    conv = functools.partial(layers.Conv, kernel_size=(5, 5), padding="SAME",
                             conv_fn=self.conv_fn, kernel_init=kernel_init,
                             bias_init=bias_init)
    x = conv(32, name="conv1")(x)
    x = nn.relu(x)
    x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
    x = conv(64, name="conv2")(x)
    x = nn.relu(x)
    x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
    x = x.reshape((x.shape[0], -1))
    x = nn.Dense(1024, kernel_init=kernel_init, bias_init=bias_init,
                 name="fc1")(x)
    x = nn.relu(x)
    x = nn.Dense(self.num_classes, kernel_init=kernel_init, bias_init=bias_init,
                 name="fc2")(x)
    return x
