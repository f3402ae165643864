"""Randomized input-transformation defences, the baselines of Mixup Inference.

Each transform is written for ONE image [H, W, C] and one key, then batched
with `jax.vmap`; `randomized_inference` averages the model's softmax over
`num_samples` random draws (50 in Pang et al., 2020), evaluated like Mixup
Inference's copies (vmapped, or chunked per backend). Geometric transforms
use `jax.scipy.ndimage.map_coordinates` (rotation) and
`jax.image.scale_and_translate` (resizing with a traced size and offset),
not hand-written interpolation.

* `gaussian_noise`: x + N(0, sigma^2), sigma 0.05, clipped to [0, 1].
* `random_rotation`: uniform angle in [-20, 20] degrees (bilinear, zero fill).
* `random_resize_pad` (Xie, Wang, Zhang, Ren & Yuille, ICLR 2018): resize to
  a random size r in [min_size, H] and zero-pad back to H x W at a random
  offset (24-32 px on 32-px CIFAR images; the same fractions on MNIST).
* `random_crop_resize` (Guo, Rana, Cisse & van der Maaten, ICLR 2018): crop a
  random r x r window (r in [min_size, H]) and resize it back to H x W.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp
from jax.scipy import ndimage

from jaxadv import validation
from jaxadv.defenses import mixup_inference

from jaxadv.types import LogitsFn
Transform = Callable[[jax.Array, jax.Array], jax.Array]


def _check_image(image: jax.Array) -> None:
  if image.ndim != 3:
    raise ValueError(f"`image` must be one image [H, W, C]; got shape "
                     f"{image.shape}.")


def _check_fraction(min_fraction) -> None:
  validation.check_interval(min_fraction, "min_fraction", 0.0, 1.0,
                         low_open=True, what="a fraction of the image size")


def gaussian_noise(image: jax.Array, key: jax.Array, *,
                   sigma: float = 0.05) -> jax.Array:
  """Adds N(0, sigma^2) noise to one image and clips to [0, 1].

  Args:
    image: float32 [H, W, C] (any shape works), pixels in [0, 1].
    key: PRNG key.
    sigma: noise standard deviation, pixel units.

  Returns:
    float32, same shape as `image`, in [0, 1].

  Raises:
    ValueError: negative or non-finite `sigma`.
  """
  validation.check_nonnegative(sigma, "sigma", "pixel units, a standard "
                            "deviation")
  noise = sigma * jax.random.normal(key, image.shape, image.dtype)
  return jnp.clip(image + noise, 0.0, 1.0)


def random_rotation(image: jax.Array, key: jax.Array, *,
                    max_degrees: float = 20.0) -> jax.Array:
  """Rotates one image by a uniform angle in [-max_degrees, max_degrees].

  Counter-clockwise about the image centre; bilinear interpolation
  (`jax.scipy.ndimage.map_coordinates`, order 1) with zeros outside the
  image. The interior matches dm-pix's `rotate` to float precision; at the
  border, pixels whose source lies partly outside blend with the zero fill
  instead of being set to zero. On CPU this is much faster than dm-pix's
  gather-based interpolation.

  Args:
    image: float32 [H, W, C] in [0, 1].
    key: PRNG key.
    max_degrees: the largest rotation, degrees.

  Returns:
    float32 [H, W, C] in [0, 1].
  """
  _check_image(image)
  angle = jnp.deg2rad(jax.random.uniform(key, (), minval=-max_degrees,
                                         maxval=max_degrees))
  return jnp.clip(rotate(image, angle), 0.0, 1.0)


def rotate(image: jax.Array, angle: jax.Array | float) -> jax.Array:
  """Rotates one image counter-clockwise by `angle` about its centre.

  Bilinear (`jax.scipy.ndimage.map_coordinates`, order 1), zeros outside.

  Args:
    image: float [H, W, C].
    angle: scalar, radians (may be traced).

  Returns:
    [H, W, C], the dtype of `image`.
  """
  h, w = image.shape[:2]
  cy, cx = (h - 1) / 2, (w - 1) / 2
  yy, xx = jnp.meshgrid(jnp.arange(h, dtype=image.dtype) - cy,
                        jnp.arange(w, dtype=image.dtype) - cx, indexing="ij")
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  # Pull resampling: output pixel (y, x) reads the input at R(-angle) (y, x).
  source = [cos * yy + sin * xx + cy, -sin * yy + cos * xx + cx]
  # One call per channel (C is small and static); vmapping the channel axis
  # turns the gathers into batched ones, much slower on CPU.
  return jnp.stack([ndimage.map_coordinates(image[..., c], source, order=1,
                                            mode="constant", cval=0.0)
                    for c in range(image.shape[-1])], -1)


def _random_window(key: jax.Array, size: int,
                   min_fraction: float) -> tuple[jax.Array, jax.Array]:
  """A random square window: side r in [min_fraction * size, size] and an
  integer offset [2] uniform in [0, size - r]."""
  k_size, k_y, k_x = jax.random.split(key, 3)
  lo = max(1, int(round(min_fraction * size)))
  r = jax.random.randint(k_size, (), lo, size + 1).astype(jnp.float32)
  room = size - r
  offset = jnp.stack([jnp.floor(jax.random.uniform(k_y) * (room + 1)),
                      jnp.floor(jax.random.uniform(k_x) * (room + 1))])
  return r, offset


def _scale_translate(image, scale, translation):
  out = jax.image.scale_and_translate(
      image, image.shape, (0, 1), jnp.stack([scale, scale]), translation,
      method="linear", antialias=True)
  return jnp.clip(out, 0.0, 1.0)


def random_resize_pad(image: jax.Array, key: jax.Array, *,
                      min_fraction: float = 0.75) -> jax.Array:
  """Xie et al. (ICLR 2018): random resize, then random zero padding.

  The image is resized to r x r pixels, r uniform in
  [round(min_fraction * H), H] (24-32 on CIFAR-10, 21-28 on MNIST), and
  placed at a uniform integer offset in an H x W zero canvas.

  Args:
    image: float32 [H, W, C] in [0, 1], square.
    key: PRNG key.
    min_fraction: the smallest size as a fraction of H.

  Returns:
    float32 [H, W, C] in [0, 1].
  """
  _check_image(image)
  _check_fraction(min_fraction)
  h = image.shape[0]
  r, offset = _random_window(key, h, min_fraction)
  return _scale_translate(image, r / h, offset)


def random_crop_resize(image: jax.Array, key: jax.Array, *,
                       min_fraction: float = 0.75) -> jax.Array:
  """Guo et al. (ICLR 2018): random crop, resized back to full size.

  Crops an r x r window, r uniform in [round(min_fraction * H), H], at a
  uniform integer offset, and resizes it to H x W (bilinear, antialiased).

  Args:
    image: float32 [H, W, C] in [0, 1], square.
    key: PRNG key.
    min_fraction: the smallest crop as a fraction of H.

  Returns:
    float32 [H, W, C] in [0, 1].
  """
  _check_image(image)
  _check_fraction(min_fraction)
  h = image.shape[0]
  r, offset = _random_window(key, h, min_fraction)
  scale = h / r
  return _scale_translate(image, scale, -offset * scale)


TRANSFORMS: dict[str, Transform] = {
    "gaussian": gaussian_noise,
    "rotation": random_rotation,
    "xie": random_resize_pad,
    "guo": random_crop_resize,
}


def transform_batch(transform: Transform, x: jax.Array, key: jax.Array,
                    num_samples: int) -> jax.Array:
  """`num_samples` independent random transforms of every image.

  Args:
    transform: `(image [H, W, C], key) -> image`.
    x: float32 [B, H, W, C].
    key: PRNG key; sample n uses `split(key, N)[n]`, split again per example.
    num_samples: N, static.

  Returns:
    float32 [N, B, H, W, C].
  """
  keys = jax.random.split(key, num_samples)
  return jax.vmap(lambda k: _transform_one_sample(transform, x, k))(keys)


def _transform_one_sample(transform: Transform, x: jax.Array,
                          key: jax.Array) -> jax.Array:
  """One random transform of every image of the batch, [B, H, W, C]."""
  return jax.vmap(transform)(x, jax.random.split(key, x.shape[0]))


def randomized_inference(logits_fn: LogitsFn, x: jax.Array, key: jax.Array,
                         *, transform: str | Transform = "gaussian",
                         num_samples: int = 50,
                         chunk_size: Optional[int] = None,
                         **transform_kwargs) -> jax.Array:
  """Averages softmax over random input transformations (the MI baselines).

  Args:
    logits_fn: `x [B, H, W, C] -> logits [B, C]`.
    x: float32 [B, H, W, C] in [0, 1].
    key: PRNG key.
    transform: "gaussian", "rotation", "xie", "guo", or a callable
      `(image [H, W, C], key) -> image`.
    num_samples: N random draws per input (50 in Pang et al., 2020), static.
    chunk_size: evaluate the draws `chunk_size` at a time (static, >= 1);
      None (default): all N x B images in one vmapped forward.
    **transform_kwargs: keyword arguments of the named transform
      (e.g. `sigma=0.05`, `max_degrees=20.0`, `min_fraction=0.75`).

  Returns:
    float32 [B, C]: the softmax averaged over the draws (rows sum to 1).

  Raises:
    ValueError, TypeError: bad `x`, unknown `transform`, `num_samples < 1`.
  """
  validation.check_images(x, "x")
  validation.check_image_batch_static(x, "x", rank=4)
  validation.check_count(num_samples, "num_samples", 1)
  if isinstance(transform, str):
    validation.check_choice(transform, "transform", tuple(TRANSFORMS))
    transform = TRANSFORMS[transform]
  if transform_kwargs:
    transform = functools.partial(transform, **transform_kwargs)
  if chunk_size is not None:
    validation.check_count(chunk_size, "chunk_size", 1)

  def one_sample(k):  # transform and forward fused per draw
    return jax.nn.softmax(logits_fn(_transform_one_sample(transform, x, k)),
                          axis=-1)

  probs = mixup_inference.map_samples(
      one_sample, jax.random.split(key, num_samples), chunk_size)
  return jnp.mean(probs, axis=0)
