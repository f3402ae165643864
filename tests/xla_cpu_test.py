"""Tests for jaxadv.models.layers.Conv (= nn.Conv) and the XLA:CPU kernels of
jaxadv.models.xla_cpu: im2col and explicit convs' values and gradients = jax's."""

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
from jaxadv import models
from jaxadv.models import layers
from jaxadv.models import xla_cpu

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
    # ... and with more than xla_cpu.FEW_CHANNELS input channels, where
    # im2col_grad's input tangent is a conv on the space-to-depth grid.
    ((15, 13, 5), (4, 4), (2, 2), "SAME", 5),
    ((10, 11, 6), (6, 6), (3, 3), ((1, 2), (0, 1)), 4),
]


def _inputs(shape, kernel_hw, c_out, seed=0):
  kx, kk, kg = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(kx, (3,) + shape)
  kernel = jax.random.normal(kk, tuple(kernel_hw) + (shape[-1], c_out))
  return x, kernel, kg


_CONV_FNS = {"explicit": xla_cpu.conv2d, "im2col": xla_cpu.conv2d_im2col,
             "im2col_grad": xla_cpu.conv2d_im2col_grad}


def _jit_cases():
  """Every case jitted; the first three also un-jitted (the shapes we use)."""
  out = []
  for impl in ("explicit", "im2col"):
    out += [(impl, True) + case for case in CASES]
    out += [(impl, False) + case for case in CASES[:3]]
  # im2col_grad's tangent is im2col's: the shapes we use, the strided and
  # space-to-depth odd sizes, jitted, plus one un-jitted.
  out += [("im2col_grad", True) + case for case in CASES[:2] + CASES[5:]]
  out += [("im2col_grad", False, *CASES[0])]
  return out


@pytest.mark.parametrize("impl,jit,shape,kernel_hw,strides,padding,c_out",
                         _jit_cases())
def test_conv_vjp_matches_lax(impl, jit, shape, kernel_hw, strides, padding,
                              c_out):
  x, kernel, kg = _inputs(shape, kernel_hw, c_out)
  pads = layers.explicit_padding(padding, shape[:2], kernel_hw, strides)
  ref_fn = lambda a, k: lax.conv_general_dilated(
      a, k, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  ours_fn = lambda a, k: _CONV_FNS[impl](a, k, strides, pads)
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


@pytest.mark.parametrize("impl", list(_CONV_FNS))
@pytest.mark.parametrize("kernel_hw,c_in", [((3, 3), 2), ((4, 4), 2),
                                            ((4, 4), 5)])
def test_second_order_grad_matches_lax(impl, kernel_hw, c_in):
  """grad-of-grad (e.g. gradient penalties): custom VJP and im2col."""
  x, kernel, _ = _inputs((10, 10, c_in), kernel_hw, 4)
  pads = ((1, 1), (1, 1))
  ref_conv = lambda a, k: lax.conv_general_dilated(
      a, k, (2, 2), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  our_conv = lambda a, k: _CONV_FNS[impl](a, k, (2, 2), pads)

  def penalty(conv, k):
    gx = jax.grad(lambda a: jnp.sum(jnp.tanh(conv(a, k)) ** 2))(x)
    return jnp.sum(gx ** 2)

  ref = jax.grad(lambda k: penalty(ref_conv, k))(kernel)
  ours = jax.grad(lambda k: penalty(our_conv, k))(kernel)
  np.testing.assert_allclose(ours, ref, rtol=0,
                             atol=1e-4 * float(jnp.abs(ref).max()))


def _conv_fn(impl):
  """None (the default, lax), "cpu" (`xla_cpu.conv`) or a kernel by name."""
  if impl is None:
    return None
  return xla_cpu.conv if impl == "cpu" else xla_cpu.CONV_FNS[impl]


@pytest.mark.parametrize("impl", [None, "cpu", "lax", "im2col", "im2col_grad",
                                  "explicit"])
@pytest.mark.parametrize("shape,kernel_hw,strides,padding,c_out",
                         CASES[:5] + CASES[-2:])
def test_conv_module_matches_flax(shape, kernel_hw, strides, padding, c_out,
                                  impl):
  x, _, _ = _inputs(shape, kernel_hw, c_out)
  ours = layers.Conv(c_out, kernel_hw, strides=strides, padding=padding,
                     conv_fn=_conv_fn(impl))
  ref = nn.Conv(c_out, kernel_hw, strides=strides, padding=padding)
  key = jax.random.key(1)
  v_ours, v_ref = ours.init(key, x), ref.init(key, x)
  # Same parameter tree and the same initial values.
  assert jax.tree.structure(v_ours) == jax.tree.structure(v_ref)
  jax.tree.map(np.testing.assert_array_equal, v_ours, v_ref)
  np.testing.assert_allclose(ours.apply(v_ours, x), ref.apply(v_ref, x),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["lax", "im2col", "im2col_grad"])
@pytest.mark.parametrize("c_in", [2, 5])
def test_forward_mode(impl, c_in):
  """jvp works for lax and im2col(_grad); the explicit custom VJP refuses
  it."""
  x, _, _ = _inputs((8, 8, c_in), (4, 4), 4)
  conv = layers.Conv(4, (4, 4), strides=(2, 2), padding=1,
                     conv_fn=_conv_fn(impl))
  custom = layers.Conv(4, (4, 4), strides=(2, 2), padding=1,
                       conv_fn=xla_cpu.conv2d)
  v = conv.init(jax.random.key(0), x)
  t = jnp.ones_like(x)
  _, jvp = jax.jvp(lambda a: conv.apply(v, a), (x,), (t,))
  # The conv is affine: its jvp is the linear part applied to t.
  np.testing.assert_allclose(jvp, conv.apply(v, t) - conv.apply(
      v, jnp.zeros_like(x)), rtol=1e-5, atol=1e-5)
  with pytest.raises(TypeError, match="custom_vjp"):
    jax.jvp(lambda a: custom.apply(v, a), (x,), (t,))


def _conv_eqns(fn, *args) -> list:
  """The conv_general_dilated equations of `fn`'s jaxpr."""
  return [e for e in jax.make_jaxpr(fn)(*args).jaxpr.eqns
          if e.primitive.name == "conv_general_dilated"]


@pytest.mark.parametrize("c_in", [1, 5])
def test_im2col_grad_input_gradient_forms(c_in):
  """An input gradient (attacks) is col2im with few channels, and one
  canonical stride-1 conv on the space-to-depth grid with more."""
  x, kernel, _ = _inputs((14, 14, c_in), (4, 4), 8)
  pads = ((1, 1), (1, 1))
  conv = lambda a: xla_cpu.conv2d_im2col_grad(a, kernel, (2, 2), pads)
  convs = _conv_eqns(jax.grad(lambda a: jnp.sum(conv(a) ** 2)), x)
  if c_in <= xla_cpu.FEW_CHANNELS:
    assert convs == []  # im2col value, col2im gradient: slices and dots
    return
  canonical = lax.conv_dimension_numbers(x.shape, kernel.shape,
                                         ("NHWC", "HWIO", "NHWC"))
  value, grad = convs  # the lax conv's value, then its input gradient
  assert value.params["window_strides"] == (2, 2)
  assert grad.params["window_strides"] == (1, 1)
  assert grad.params["lhs_dilation"] == (1, 1)
  for eqn in convs:
    assert eqn.params["dimension_numbers"] == canonical


def test_cpu_conv_picks_im2col_for_kernels_the_stride_divides():
  assert xla_cpu.uses_im2col((4, 4), (2, 2))
  assert not xla_cpu.uses_im2col((5, 5), (1, 1))
  assert not xla_cpu.uses_im2col((3, 3), (2, 2))
  x, kernel, _ = _inputs((14, 14, 2), (4, 4), 3)
  pads = ((1, 1), (1, 1))
  # Not differentiated, both forms are the lax conv; the jaxpr tells them
  # apart by the custom JVP.
  eqns = jax.make_jaxpr(lambda a: xla_cpu.conv(a, kernel, (2, 2), pads))(x)
  assert any("custom_jvp" in e.primitive.name for e in eqns.jaxpr.eqns)
  k3 = kernel[:3, :3]
  eqns = jax.make_jaxpr(lambda a: xla_cpu.conv(a, k3, (2, 2), pads))(x)
  assert [e.primitive.name for e in eqns.jaxpr.eqns] == [
      "conv_general_dilated"]


def test_get_model_is_the_one_place_that_picks_kernels():
  assert models.get_model("fast_at_mnist").conv_fn is None
  assert models.get_model("madry_cnn", kernels="lax").conv_fn is None
  assert (models.get_model("fast_at_mnist", kernels="xla_cpu").conv_fn
          is xla_cpu.conv)
  assert models.get_model("mlp", kernels="xla_cpu") is not None
  with pytest.raises(ValueError, match="kernels"):
    models.get_model("fast_at_mnist", kernels="cuda")
  with pytest.raises(ValueError, match="conv_fn"):
    models.get_model("preact_resnet18", kernels="xla_cpu")
  x = jax.random.uniform(jax.random.key(0), (3, 28, 28, 1))
  lax_net = models.get_model("fast_at_mnist")
  cpu_net = models.get_model("fast_at_mnist", kernels="xla_cpu")
  v = lax_net.init(jax.random.key(1), x)
  np.testing.assert_allclose(cpu_net.apply(v, x), lax_net.apply(v, x),
                             rtol=1e-5, atol=1e-5)
  g = lambda net: jax.grad(lambda a: jnp.sum(net.apply(v, a) ** 2))(x)
  np.testing.assert_allclose(g(cpu_net), g(lax_net), rtol=1e-4, atol=1e-5)


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
  impl: str

  @nn.compact
  def __call__(self, a, train: bool = False):
    del train
    conv = lambda *args, **kw: layers.Conv(*args, conv_fn=_conv_fn(self.impl),
                                           **kw)
    a = nn.relu(conv(4, (4, 4), strides=(2, 2), padding=1)(a))
    a = nn.relu(conv(4, (5, 5), padding="SAME")(a))
    a = nn.relu(conv(8, (4, 4), strides=(2, 2), padding=1)(a))  # C_in > 3
    a = nn.relu(conv(4, (3, 3), strides=(2, 2), padding=1)(a))
    return nn.Dense(10)(a.reshape(a.shape[0], -1))


def _compiled_convs(impl: str) -> list[list[str]]:
  """Conv dim_labels in a compiled rolled PGD and rolled free-AT step."""
  model = _Net(impl)
  x = jnp.zeros((4, 28, 28, 1))
  y = jnp.zeros(4, jnp.int32)
  variables = model.init(jax.random.key(0), x)

  def attack(v, xb, yb):
    loss_fn = losses.make_loss_fn(lambda a: model.apply(v, a))
    return attacks.pgd(loss_fn, xb, yb, jax.random.key(0), eps=0.1,
                       step_size=0.03, steps=3, unroll=False)

  state = training.create_train_state(
      model, jax.random.key(0), (1, 28, 28, 1), optax.sgd(0.1), eps=0.1,
      delta_shape=x.shape)
  step = training.free_at_step(replays=2, unroll=False)
  counts = []
  for fn, args in ((attack, (variables, x, y)),
                   (step, (state, {"x": x, "y": y}, jax.random.key(0)))):
    hlo = jax.jit(fn).lower(*args).compile().as_text()
    assert "while" in hlo, "the loop was not rolled"
    counts.append(re.findall(r"dim_labels=([a-z0-9_>-]+)", hlo))
  return counts


# About 25 s of compiles: slow, run by .ci/run after the default suite.
@pytest.mark.slow
def test_rolled_loops_compile_canonical_convs():
  """Why xla_cpu exists: canonical convs inside rolled loop bodies.

  On XLA:CPU a conv with swapped kernel dims inside a while body takes a slow
  path (much slower rolled than unrolled with nn.Conv). Checked on the
  compiled HLO, not timed.
  """
  if jax.default_backend() != "cpu":
    pytest.skip("the layouts checked are XLA:CPU's")
  canonical = "b01f_01io->b01f"
  for labels in _compiled_convs("explicit"):
    assert labels and all(lab == canonical for lab in labels), labels
  for labels in _compiled_convs("lax"):
    assert any(lab != canonical for lab in labels), labels
  # im2col leaves no convolution at all: slices, pads and dots only.
  assert _compiled_convs("im2col") == [[], []]
  # im2col_grad: the attack's convs are the forward lax convs and the
  # space-to-depth input gradient of the conv with 4 input channels, all
  # canonical; the training step (a kernel tangent) is im2col throughout.
  pgd_labels, free_labels = _compiled_convs("im2col_grad")
  assert pgd_labels and all(lab == canonical for lab in pgd_labels), pgd_labels
  assert free_labels == []
