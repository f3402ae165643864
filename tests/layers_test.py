"""Tests for jaxadv.models.layers: Conv = nn.Conv, conv2d's VJP = jax's."""

from __future__ import annotations

import re

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxadv import attacks
from jaxadv import losses
from jaxadv import training
from jaxadv.models import layers

# (input H, W, C_in, kernel, strides, padding, C_out): the shapes our models
# use plus odd sizes where a stride drops trailing pixels (negative padding
# in the transposed convolution).
CASES = [
    ((28, 28, 1), (4, 4), (2, 2), ((1, 1), (1, 1)), 16),   # fast-AT conv1
    ((14, 14, 16), (4, 4), (2, 2), ((1, 1), (1, 1)), 32),  # fast-AT conv2
    ((28, 28, 1), (5, 5), (1, 1), "SAME", 8),              # Madry CNN
    ((16, 16, 4), (3, 3), (2, 2), ((1, 1), (1, 1)), 8),    # WRN downsample
    ((16, 16, 4), (1, 1), (2, 2), "VALID", 8),             # shortcut
    ((15, 13, 3), (3, 3), (2, 2), "SAME", 5),
    ((15, 13, 3), (4, 3), (3, 2), "VALID", 5),
    ((9, 9, 2), (3, 3), (1, 1), 2, 3),
    # Space-to-depth path (kernel divisible by stride) at awkward sizes.
    ((15, 13, 3), (4, 4), (2, 2), "SAME", 5),
    ((17, 16, 2), (4, 2), (2, 2), "VALID", 3),
    ((10, 11, 1), (6, 6), (3, 3), ((1, 2), (0, 1)), 4),
    ((7, 7, 2), (2, 2), (2, 2), "VALID", 3),
]


def _inputs(shape, kernel_hw, c_out, seed=0):
  kx, kk, kg = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(kx, (3,) + shape)
  kernel = jax.random.normal(kk, tuple(kernel_hw) + (shape[-1], c_out))
  return x, kernel, kg


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("shape,kernel_hw,strides,padding,c_out", CASES)
def test_conv2d_vjp_matches_lax(shape, kernel_hw, strides, padding, c_out,
                                jit):
  x, kernel, kg = _inputs(shape, kernel_hw, c_out)
  pads = layers.explicit_padding(padding, shape[:2], kernel_hw, strides)
  ref_fn = lambda a, k: lax.conv_general_dilated(
      a, k, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  ours_fn = lambda a, k: layers.conv2d(a, k, strides, pads)
  if jit:
    ref_fn, ours_fn = jax.jit(ref_fn), jax.jit(ours_fn)
  y_ref, vjp_ref = jax.vjp(ref_fn, x, kernel)
  y, vjp = jax.vjp(ours_fn, x, kernel)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  g = jax.random.normal(kg, y.shape)
  for ours, ref, name in zip(vjp(g), vjp_ref(g), ("x", "kernel")):
    assert ours.shape == ref.shape, name
    scale = float(jnp.abs(ref).max())
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5 * scale,
                               err_msg=name)


def test_second_order_grad_matches_lax():
  """grad-of-grad (e.g. gradient penalties) goes through the custom VJP."""
  x, kernel, _ = _inputs((10, 10, 2), (3, 3), 4)
  pads = ((1, 1), (1, 1))
  ref_conv = lambda a, k: lax.conv_general_dilated(
      a, k, (2, 2), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  our_conv = lambda a, k: layers.conv2d(a, k, (2, 2), pads)

  def penalty(conv, k):
    gx = jax.grad(lambda a: jnp.sum(jnp.tanh(conv(a, k)) ** 2))(x)
    return jnp.sum(gx ** 2)

  ref = jax.grad(lambda k: penalty(ref_conv, k))(kernel)
  ours = jax.grad(lambda k: penalty(our_conv, k))(kernel)
  np.testing.assert_allclose(ours, ref, rtol=0,
                             atol=1e-4 * float(jnp.abs(ref).max()))


@pytest.mark.parametrize("explicit", [True, False])
@pytest.mark.parametrize("shape,kernel_hw,strides,padding,c_out",
                         CASES[:6] + CASES[-2:])
def test_conv_module_matches_flax(shape, kernel_hw, strides, padding, c_out,
                                  explicit):
  x, _, _ = _inputs(shape, kernel_hw, c_out)
  ours = layers.Conv(c_out, kernel_hw, strides=strides, padding=padding,
                     explicit_grads=explicit)
  ref = nn.Conv(c_out, kernel_hw, strides=strides, padding=padding)
  key = jax.random.key(1)
  v_ours, v_ref = ours.init(key, x), ref.init(key, x)
  # Same parameter tree and the same initial values.
  assert jax.tree.structure(v_ours) == jax.tree.structure(v_ref)
  jax.tree.map(np.testing.assert_array_equal, v_ours, v_ref)
  np.testing.assert_allclose(ours.apply(v_ours, x), ref.apply(v_ref, x),
                             rtol=1e-5, atol=1e-5)


def test_forward_mode_needs_plain_conv():
  x, _, _ = _inputs((8, 8, 2), (3, 3), 4)
  plain = layers.Conv(4, (3, 3), explicit_grads=False)
  custom = layers.Conv(4, (3, 3), explicit_grads=True)
  v = plain.init(jax.random.key(0), x)
  t = jnp.ones_like(x)
  _, jvp_plain = jax.jvp(lambda a: plain.apply(v, a), (x,), (t,))
  np.testing.assert_allclose(jvp_plain, plain.apply(v, t) - plain.apply(
      v, jnp.zeros_like(x)), rtol=1e-5, atol=1e-5)
  with pytest.raises(TypeError, match="custom_vjp"):
    jax.jvp(lambda a: custom.apply(v, a), (x,), (t,))


@pytest.mark.parametrize("padding,match", [("FULL", "padding"),
                                           (((1, 1),), "padding")])
def test_bad_padding(padding, match):
  with pytest.raises(ValueError, match=match):
    layers.explicit_padding(padding, (8, 8), (3, 3), (1, 1))


def test_bad_rank():
  with pytest.raises(ValueError, match="x: expected rank 4"):
    layers.Conv(4, (3, 3)).init(jax.random.key(0), jnp.zeros((8, 8, 1)))


class _Net(nn.Module):
  """Strided and stride-1 convs, as in the fast-AT and Madry nets."""
  explicit: bool

  @nn.compact
  def __call__(self, a, train: bool = False):
    del train
    conv = lambda *args, **kw: layers.Conv(*args, explicit_grads=self.explicit,
                                           **kw)
    a = nn.relu(conv(4, (4, 4), strides=(2, 2), padding=1)(a))
    a = nn.relu(conv(4, (5, 5), padding="SAME")(a))
    a = nn.relu(conv(4, (3, 3), strides=(2, 2), padding=1)(a))
    return nn.Dense(10)(a.reshape(a.shape[0], -1))


def _non_canonical_convs(explicit: bool) -> tuple[int, int]:
  """Non-canonical convs in a compiled rolled PGD and rolled free-AT step."""
  model = _Net(explicit)
  x = jnp.zeros((4, 28, 28, 1))
  y = jnp.zeros(4, jnp.int32)
  variables = model.init(jax.random.key(0), x)

  def attack(v, xb, yb):
    loss_fn = losses.make_loss_fn(lambda a: model.apply(v, a))
    return attacks.pgd(loss_fn, xb, yb, jax.random.key(0), eps=0.1,
                       step_size=0.03, steps=3, loop="fori")

  state = training.create_train_state(
      model, jax.random.key(0), (1, 28, 28, 1), optax.sgd(0.1), eps=0.1,
      delta_shape=x.shape)
  step = training.free_at_step(replays=2, loop="fori")
  counts = []
  for fn, args in ((attack, (variables, x, y)),
                   (step, (state, {"x": x, "y": y}, jax.random.key(0)))):
    hlo = jax.jit(fn).lower(*args).compile().as_text()
    labels = re.findall(r"dim_labels=([a-z0-9_>-]+)", hlo)
    assert labels, "no convolution found in the HLO"
    counts.append(sum(lab != "b01f_01io->b01f" for lab in labels))
  return tuple(counts)


def test_explicit_grads_keep_rolled_loops_canonical():
  """Why layers.Conv exists: canonical convs inside rolled loop bodies.

  On XLA:CPU a conv with swapped kernel dims inside a while body takes a slow
  path (PGD-40 ran 3.4x slower rolled than unrolled with nn.Conv). Checked on
  the compiled HLO, not timed.
  """
  if jax.default_backend() != "cpu":
    pytest.skip("the layouts checked are XLA:CPU's")
  assert _non_canonical_convs(explicit=True) == (0, 0)
  pgd_plain, free_plain = _non_canonical_convs(explicit=False)
  assert pgd_plain > 0 and free_plain > 0
