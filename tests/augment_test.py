"""Tests for jaxadv.augment (crop + flip) and jaxadv.models.normalize, on real
CIFAR-10 images (the JPEG copy) and random tensors for the pure functions."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import augment
from jaxadv import data
from jaxadv import models
from jaxadv.models import normalize as norm_lib


@pytest.fixture(scope="module")
def cifar10_jpeg_test():
  """The first 256 real CIFAR-10 (JPEG q75 copy) test images."""
  return data.load("cifar10_jpeg", "test", limit=256)


def _offsets(x, out, padding):
  """The (dy, dx, flipped) of each output, found by matching the padded input."""
  found = []
  p = padding
  for img, o in zip(np.asarray(x), np.asarray(out)):
    padded = np.pad(img, ((p, p), (p, p), (0, 0)))
    hits = []
    h, w = img.shape[:2]
    for flipped in (False, True):
      cand = o[:, ::-1] if flipped else o
      for dy in range(2 * p + 1):
        for dx in range(2 * p + 1):
          if np.array_equal(padded[dy:dy + h, dx:dx + w], cand):
            hits.append((dy, dx, flipped))
    assert hits, "output is not a crop (or flipped crop) of the padded input"
    found.append(hits[0])
  return found


@pytest.mark.parametrize("jit", [False, True])
def test_crop_flip_is_a_crop_of_the_padded_image(jit):
  x = jax.random.uniform(jax.random.key(0), (64, 8, 8, 3))
  fn = lambda k, a: augment.crop_flip(k, a, padding=2)
  out = (jax.jit(fn) if jit else fn)(jax.random.key(1), x)
  assert out.shape == x.shape and out.dtype == x.dtype
  found = _offsets(x, out, 2)
  dys = {f[0] for f in found}
  assert dys == set(range(5))  # every offset in [0, 2p] occurs in 64 draws


def test_crop_flip_rates_and_determinism():
  """Flip rate 1/2 and uniform offsets over 2,000 draws; same key, same out."""
  b = 2000
  x = jnp.broadcast_to(jnp.arange(6.0)[None, None, :, None] / 6, (b, 1, 6, 1))
  x = jnp.asarray(x) + jnp.zeros((b, 1, 6, 1))
  out = augment.crop_flip(jax.random.key(3), x, padding=0)
  flipped = np.asarray(out[:, 0, 0, 0]) > np.asarray(out[:, 0, -1, 0])
  assert abs(flipped.mean() - 0.5) < 0.04
  np.testing.assert_array_equal(
      out, augment.crop_flip(jax.random.key(3), x, padding=0))
  assert not np.array_equal(
      out, augment.crop_flip(jax.random.key(4), x, padding=0))
  no_flip = augment.crop_flip(jax.random.key(3), x, padding=0, flip=False)
  np.testing.assert_array_equal(no_flip, x)


def test_crop_offsets_uniform_on_real_cifar(cifar10_jpeg_test):
  x = cifar10_jpeg_test[0][:200]
  out = augment.crop_flip(jax.random.key(5), x, padding=4)
  found = _offsets(x, out, 4)
  dx = np.array([f[1] for f in found])
  # 9 offsets, 200 draws: each about 22; none missing, none dominant.
  counts = np.bincount(dx, minlength=9)
  assert counts.min() > 5 and counts.max() < 45
  # Zero padding is black: a shifted crop has a black border row or column.
  shifted = [(dy, dx_) != (4, 4) for dy, dx_, _ in found]
  assert np.mean(shifted) > 0.8


def test_crop_flip_bad_input():
  with pytest.raises(ValueError, match="x"):
    augment.crop_flip(jax.random.key(0), jnp.zeros((8, 8, 3)))
  with pytest.raises(TypeError, match="x"):
    augment.crop_flip(jax.random.key(0), jnp.zeros((2, 8, 8, 3), jnp.uint8))
  with pytest.raises(ValueError, match="padding"):
    augment.crop_flip(jax.random.key(0), jnp.zeros((2, 8, 8, 3)), padding=-1)


class _Tiny(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    return nn.Dense(3)(x.reshape(x.shape[0], -1))


def test_normalized_model_sees_normalized_pixels():
  x = jax.random.uniform(jax.random.key(0), (4, 2, 2, 3))
  net = models.Normalized(_Tiny(), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
  v = net.init(jax.random.key(1), x)
  bare = norm_lib.unwrap_variables(v)
  expected = _Tiny().apply(bare, (x - jnp.array([0.5, 0.4, 0.3]))
                           / jnp.array([0.2, 0.25, 0.5]))
  np.testing.assert_allclose(net.apply(v, x), expected, rtol=1e-6)
  back = norm_lib.wrap_variables(bare)
  np.testing.assert_allclose(net.apply(back, x), expected, rtol=1e-6)
  # The input gradient is in pixel units: chain rule through 1 / std.
  g = jax.grad(lambda a: net.apply(v, a).sum())(x)
  g_bare = jax.grad(lambda a: _Tiny().apply(bare, a).sum())(
      norm_lib.normalize(x, (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)))
  np.testing.assert_allclose(g, g_bare / jnp.array([0.2, 0.25, 0.5]),
                             rtol=1e-5)


def test_normalize_bad_stats():
  x = jnp.zeros((1, 2, 2, 3))
  with pytest.raises(ValueError, match="mean, std"):
    norm_lib.normalize(x, (0.5,), (0.2,))
  with pytest.raises(ValueError, match="std"):
    norm_lib.normalize(x, (0.5,) * 3, (0.2, 0.0, 0.1))
