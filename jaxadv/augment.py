"""Training-time augmentation as pure, jittable functions of a PRNG key.

The CIFAR-10 references (Madry et al. 2018; Shafahi et al. 2019, free AT;
Wong, Rice & Kolter 2020, fast AT) all train with a random crop of the image
zero-padded by 4 pixels and a random horizontal flip
(`transforms.RandomCrop(32, padding=4)`, `transforms.RandomHorizontalFlip()`
in their PyTorch scripts). `crop_flip` is that pair, drawn independently
per example from one key, so it runs inside a jitted training step with no
host round trip: a step derives its augmentation key from its step key.

Images are float [B, H, W, C] with pixels in [0, 1]; the zero padding is
black, as in `RandomCrop(padding=4)`.
"""

from __future__ import annotations

import functools

import jax
from jax import lax
import jax.numpy as jnp

from jaxadv import validation


def _crop_flip_one(key: jax.Array, image: jax.Array, *, padding: int,
                   flip: bool) -> jax.Array:
  """One image [H, W, C]: a random crop of the padded image, maybe flipped."""
  h, w, c = image.shape
  k_y, k_x, k_flip = jax.random.split(key, 3)
  padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  dy = jax.random.randint(k_y, (), 0, 2 * padding + 1)
  dx = jax.random.randint(k_x, (), 0, 2 * padding + 1)
  out = lax.dynamic_slice(padded, (dy, dx, 0), (h, w, c))
  if flip:
    out = jnp.where(jax.random.bernoulli(k_flip), out[:, ::-1], out)
  return out


def crop_flip(key: jax.Array, x: jax.Array, *, padding: int = 4,
              flip: bool = True) -> jax.Array:
  """Random crop with zero padding and random horizontal flip, per example.

  Every example draws its own vertical and horizontal offsets, uniform in
  [0, 2 * padding], into the image zero-padded by `padding` pixels on each
  side, and (with `flip`) a left-right flip with probability 1/2. Example
  b uses `jax.random.split(key, B)[b]`, so the result is a pure function of
  `key`.

  Args:
    key: PRNG key.
    x: float [B, H, W, C] images, pixels in [0, 1].
    padding: static zero padding in pixels (>= 0; 4 on CIFAR-10).
    flip: static; also flip left-right with probability 1/2.

  Returns:
    Array of the shape and dtype of `x`.

  Raises:
    ValueError, TypeError: `x` not a rank-4 float batch, `padding < 0`.
  """
  validation.check_image_batch_static(x, "x", rank=4)
  validation.check_count(padding, "padding", 0)
  keys = jax.random.split(key, x.shape[0])
  one = functools.partial(_crop_flip_one, padding=padding, flip=flip)
  return jax.vmap(one)(keys, x)
