"""Tests of jaxadv.analysis: logit line scans and class-map cross-sections."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import analysis
from jaxadv import data
from jaxadv import losses
from jaxadv import models


@functools.lru_cache(maxsize=None)
def _setup():
  x, y = data.load("mnist", "test", limit=3)
  model = models.get_model("fast_at_mnist")
  variables = models.init_model(model, jax.random.key(0), (1, 28, 28, 1))
  logits_fn = lambda v: model.apply(variables, v)
  return x, y, logits_fn


@pytest.mark.slow  # ~8 s; CI's slow line
def test_logit_scan_shape_and_clean_logits_at_zero():
  x, y, logits_fn = _setup()
  d = analysis.sign_gradient(losses.make_loss_fn(logits_fn), x, y)
  assert set(np.unique(np.asarray(d))) <= {-1.0, 0.0, 1.0}
  ts = jnp.linspace(-0.4, 0.4, 9)  # 0 is ts[4]
  scan = jax.jit(analysis.logit_scan, static_argnums=0)(logits_fn, x, d, ts)
  assert scan.shape == (3, 9, 10)  # [B, T, C]: one [T, C] scan per example
  np.testing.assert_allclose(scan[:, 4], logits_fn(x), atol=1e-5)
  # Point j of example i is the logits at x_i + ts[j] d_i (vmap is right).
  np.testing.assert_allclose(scan[1, 7], logits_fn(x[1:2] + ts[7] * d[1:2])[0],
                             atol=1e-5)
  # The FGSM direction raises the loss: higher at t > 0 than at t = 0.
  ce = jax.vmap(losses.cross_entropy, in_axes=(1, None), out_axes=1)(scan, y)
  assert np.all(ce[:, 5] > ce[:, 4])


@pytest.mark.slow  # 6-14 s; CI's slow line
def test_logit_scan_of_a_linear_model_is_exactly_linear():
  x, _, _ = _setup()
  model = models.LinearSoftmax()
  w = jax.random.normal(jax.random.key(1), (784, 10))
  variables = {"params": {"dense": {"kernel": w, "bias": jnp.arange(10.0)}}}
  d = analysis.random_sign(jax.random.key(2), x.shape)
  ts = jnp.array([-1.0, 0.0, 2.0])
  scan = analysis.logit_scan(lambda v: model.apply(variables, v), x, d, ts)
  slope = d.reshape(3, -1) @ w                              # [B, C]
  expected = model.apply(variables, x)[:, None] + ts[None, :, None] * slope[:, None]
  np.testing.assert_allclose(scan, expected, rtol=1e-4, atol=1e-3)


def test_cross_section_origin_is_the_clean_prediction():
  x, y, logits_fn = _setup()
  d1 = analysis.sign_gradient(losses.make_loss_fn(logits_fn), x, y)
  d2 = analysis.random_sign(jax.random.key(3), x.shape)
  a = jnp.linspace(-0.3, 0.3, 5)
  b = jnp.linspace(-0.3, 0.3, 7)
  maps = analysis.cross_section(logits_fn, x, d1, d2, a, b)
  assert maps.shape == (3, 5, 7) and maps.dtype == jnp.int32
  clean = np.asarray(jnp.argmax(logits_fn(x), -1))
  np.testing.assert_array_equal(maps[:, 2, 3], clean)
  # An off-origin point, computed directly (clipped to the box).
  point = jnp.clip(x[2:3] + a[0] * d1[2:3] + b[6] * d2[2:3], 0.0, 1.0)
  assert int(maps[2, 0, 6]) == int(jnp.argmax(logits_fn(point), -1)[0])


def test_random_sign_is_rademacher():
  d = np.asarray(analysis.random_sign(jax.random.key(0), (4, 28, 28, 1)))
  assert set(np.unique(d)) == {-1.0, 1.0}
  assert abs(d.mean()) < 0.05


def test_bad_arguments_raise():
  x, y, logits_fn = _setup()
  with pytest.raises(ValueError, match="direction"):
    analysis.logit_scan(logits_fn, x, x[:2], jnp.zeros(3))
  with pytest.raises(ValueError, match="ts"):
    analysis.logit_scan(logits_fn, x, x, jnp.zeros((2, 2)))
  with pytest.raises(ValueError, match="d2"):
    analysis.cross_section(logits_fn, x, x, x[:1], jnp.zeros(2), jnp.zeros(2))
  with pytest.raises(ValueError, match="`b`"):
    analysis.cross_section(logits_fn, x, x, x, jnp.zeros(2), jnp.zeros(0))
  with pytest.raises(ValueError, match="pixels"):
    analysis.logit_scan(logits_fn, 2.0 * x + 1.0, x, jnp.zeros(3))
