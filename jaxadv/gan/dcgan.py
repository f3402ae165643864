"""DCGAN generator and discriminator for 28x28 images (Radford et al., 2016).

Following the paper's architecture guidelines: strided convolutions in the
discriminator and fractionally-strided (transposed) convolutions in the
generator instead of pooling; BatchNorm in both, except on the generator's
output layer and the discriminator's input layer; no hidden fully-connected
layers (the generator's first layer is the projection of `z`, reshaped to a
7x7 feature map, and the discriminator's last layer flattens to one logit, as
in the paper); ReLU in the generator with tanh on its output; LeakyReLU 0.2
in the discriminator. Weights are initialised from N(0, 0.02).

Images are float32 `[B, 28, 28, C]` in `[-1, 1]` (the tanh range); map
pixels in [0, 1] with `2 x - 1` and back with `(g + 1) / 2`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxadv import validation

__all__ = ["DCGANDiscriminator", "DCGANGenerator"]

_init = nn.initializers.normal(stddev=0.02)


def _scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)  # N(1, 0.02)


def _bn(train: bool, name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                      epsilon=1e-5, scale_init=_scale_init, name=name)


class DCGANGenerator(nn.Module):
  """z [B, latent_dim] -> images [B, 28, 28, channels] in [-1, 1].

  Architecture::

      Dense(7*7*2F) (the projection of z) -> reshape [7, 7, 2F] -> BN -> ReLU
      -> ConvTranspose(F, 4x4, stride 2)          14x14  -> BN -> ReLU
      -> ConvTranspose(channels, 4x4, stride 2)   28x28  -> tanh

  Attributes:
    features: F, the width of the last hidden feature map.
    channels: output channels (1 for MNIST / Fashion-MNIST).
  """

  features: int = 64
  channels: int = 1

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
    """Generates images.

    Args:
      z: float32 latent codes [B, latent_dim].
      train: BatchNorm on batch statistics (else running averages).

    Returns:
      float32 [B, 28, 28, channels] in [-1, 1].

    Raises:
      ValueError: `z` not of rank 2.  TypeError: non-floating `z`.
    """
    validation.check_image_batch_static(z, "z", rank=2,
                                     context=type(self).__name__)
    f = self.features
    h = nn.Dense(7 * 7 * 2 * f, use_bias=False, kernel_init=_init,
                 name="project")(z)
    h = h.reshape((z.shape[0], 7, 7, 2 * f))
    h = nn.relu(_bn(train, "bn0")(h))
    h = nn.ConvTranspose(f, (4, 4), strides=(2, 2), padding="SAME",
                         use_bias=False, kernel_init=_init, name="deconv1")(h)
    h = nn.relu(_bn(train, "bn1")(h))
    h = nn.ConvTranspose(self.channels, (4, 4), strides=(2, 2),
                         padding="SAME", kernel_init=_init, name="deconv2")(h)
    return jnp.tanh(h)


class DCGANDiscriminator(nn.Module):
  """Images [B, 28, 28, C] in [-1, 1] -> one real/fake logit per image [B].

  Architecture::

      Conv(F, 4x4, stride 2)    14x14 -> LeakyReLU(0.2)        (no BN on input)
      -> Conv(2F, 4x4, stride 2) 7x7  -> BN -> LeakyReLU(0.2)
      -> flatten -> Dense(1)          (the output layer, a logit)

  Attributes:
    features: F, the width of the first feature map.
  """

  features: int = 64

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Computes real/fake logits.

    Args:
      x: float32 images [B, 28, 28, C] in [-1, 1].
      train: BatchNorm on batch statistics (else running averages).

    Returns:
      float32 logits [B]; `sigmoid` of them is D's probability of "real".

    Raises:
      ValueError: `x` not of rank 4.  TypeError: non-floating `x`.
    """
    validation.check_image_batch_static(x, "x", rank=4,
                                     context=type(self).__name__)
    f = self.features
    h = nn.Conv(f, (4, 4), strides=(2, 2), padding="SAME", kernel_init=_init,
                name="conv1")(x)
    h = nn.leaky_relu(h, 0.2)
    h = nn.Conv(2 * f, (4, 4), strides=(2, 2), padding="SAME", use_bias=False,
                kernel_init=_init, name="conv2")(h)
    h = nn.leaky_relu(_bn(train, "bn2")(h), 0.2)
    h = h.reshape((x.shape[0], -1))
    return nn.Dense(1, kernel_init=_init, name="logit")(h)[:, 0]
