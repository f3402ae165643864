"""Tests for jaxadv.models: shapes, parameter counts, BatchNorm, registry."""

from __future__ import annotations

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import models
from jaxadv.models import registry

MNIST_SHAPE = (2, 28, 28, 1)
CIFAR_SHAPE = (2, 32, 32, 3)

# Small models that are actually run (the WRN-28/34-10 variants are only
# traced with jax.eval_shape to keep the file fast on CPU).
RUN_MODELS = {
    "fast_at_mnist": MNIST_SHAPE,
    "madry_cnn": MNIST_SHAPE,
    "preact_resnet18": CIFAR_SHAPE,
    "wide_resnet16_4": CIFAR_SHAPE,
}
ALL_MODELS = {
    **RUN_MODELS,
    "wide_resnet28_10": CIFAR_SHAPE,
    "wide_resnet34_10": CIFAR_SHAPE,
    "resnet50": CIFAR_SHAPE,
}
BN_MODELS = ("preact_resnet18", "wide_resnet16_4")
BN_FREE_MODELS = ("fast_at_mnist", "madry_cnn")


def _images(shape, seed=0):
  return jax.random.uniform(jax.random.key(seed), shape, jnp.float32)


@functools.cache
def _model_and_variables(name):
  """Builds and initialises a registered model once per test session."""
  model = models.get_model(name)
  return model, models.init_model(model, jax.random.key(0), RUN_MODELS[name])


@functools.cache
def _jitted_apply(name):
  model, _ = _model_and_variables(name)
  return jax.jit(model.apply, static_argnames="train")


def _param_count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _abstract_variables(model, shape):
  """Variable shapes without running (or compiling) the initialiser."""
  return jax.eval_shape(
      functools.partial(model.init, train=False), jax.random.key(0),
      jax.ShapeDtypeStruct(shape, jnp.float32))


def _conv(k, c_in, c_out, bias=True):
  return k * k * c_in * c_out + (c_out if bias else 0)


def _dense(d_in, d_out):
  return d_in * d_out + d_out


def _bn(c):
  return 2 * c  # scale + bias (running mean/var live in batch_stats).


def _preact_block(c_in, c_out, stride):
  projection = stride != 1 or c_in != c_out
  return (_bn(c_in) + _conv(3, c_in, c_out, bias=False) + _bn(c_out) +
          _conv(3, c_out, c_out, bias=False) +
          (_conv(1, c_in, c_out, bias=False) if projection else 0))


def _preact_resnet18_count(num_classes):
  total = _conv(3, 3, 64, bias=False)
  c_in = 64
  for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
    total += _preact_block(c_in, c_out, stride) + _preact_block(c_out, c_out, 1)
    c_in = c_out
  return total + _bn(512) + _dense(512, num_classes)


def _wide_resnet_count(depth, k, num_classes):
  n = (depth - 4) // 6
  total = _conv(3, 3, 16, bias=False)
  c_in = 16
  for c_out, stride in ((16 * k, 1), (32 * k, 2), (64 * k, 2)):
    for j in range(n):
      total += _preact_block(c_in, c_out, stride if j == 0 else 1)
      c_in = c_out
  return total + _bn(64 * k) + _dense(64 * k, num_classes)


# ---------------------------------------------------------------- shapes ----


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if RUN_MODELS[n] != MNIST_SHAPE
    else n for n in sorted(RUN_MODELS)])  # the CIFAR nets: ~10 s each
def test_output_shape_and_dtype(name):
  model, variables = _model_and_variables(name)
  shape = RUN_MODELS[name]
  logits = _jitted_apply(name)(variables, _images(shape), train=False)
  assert logits.shape == (shape[0], 10)
  assert logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  assert isinstance(model, nn.Module)


@pytest.mark.parametrize("name", sorted(ALL_MODELS))
def test_num_classes_respected(name):
  model = models.get_model(name, num_classes=7)
  shape = ALL_MODELS[name]
  variables = _abstract_variables(model, shape)
  logits = jax.eval_shape(
      functools.partial(model.apply, train=False), variables,
      jax.ShapeDtypeStruct(shape, jnp.float32))
  assert logits.shape == (shape[0], 7)
  assert logits.dtype == jnp.float32


def test_num_classes_respected_when_run():
  model = models.FastATMNIST(num_classes=7)
  variables = models.init_model(model, jax.random.key(1), MNIST_SHAPE)
  assert model.apply(variables, _images(MNIST_SHAPE)).shape == (2, 7)


def test_mnist_nets_accept_any_batch_size():
  model, variables = _model_and_variables("fast_at_mnist")
  assert model.apply(variables, _images((5, 28, 28, 1))).shape == (5, 10)


# ------------------------------------------------------ parameter counts ----


@pytest.mark.parametrize("num_classes", [10, 7])
def test_fast_at_mnist_param_count(num_classes):
  variables = _abstract_variables(models.FastATMNIST(num_classes), MNIST_SHAPE)
  # 28 -> 14 -> 7 with 4x4 kernels, stride 2, padding 1.
  spatial = ((28 + 2 - 4) // 2 + 1 + 2 - 4) // 2 + 1
  assert spatial == 7
  expected = (_conv(4, 1, 16) + _conv(4, 16, 32) +
              _dense(spatial * spatial * 32, 100) + _dense(100, num_classes))
  assert set(variables) == {"params"}
  assert _param_count(variables["params"]) == expected
  if num_classes == 10:
    assert expected == 166_406


@pytest.mark.parametrize("num_classes", [10, 7])
def test_madry_cnn_param_count(num_classes):
  variables = _abstract_variables(models.MadryCNN(num_classes), MNIST_SHAPE)
  spatial = 28 // 2 // 2  # SAME convs, two 2x2 max pools.
  expected = (_conv(5, 1, 32) + _conv(5, 32, 64) +
              _dense(spatial * spatial * 64, 1024) + _dense(1024, num_classes))
  assert set(variables) == {"params"}
  assert _param_count(variables["params"]) == expected
  if num_classes == 10:
    assert expected == 3_274_634


def _resnet50_count(num_classes):
  total = _conv(3, 3, 64, bias=False) + _bn(64)
  c_in = 64
  for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2),
                                (512, 3, 2)):
    for j in range(blocks):
      c_out = 4 * width
      total += (_conv(1, c_in, width, bias=False) + _bn(width) +
                _conv(3, width, width, bias=False) + _bn(width) +
                _conv(1, width, c_out, bias=False) + _bn(c_out))
      if j == 0:  # projection shortcut: shape or stride changes
        total += _conv(1, c_in, c_out, bias=False) + _bn(c_out)
      c_in = c_out
  return total + _dense(2048, num_classes)


@pytest.mark.parametrize("num_classes", [10, 100])
def test_resnet50_param_count(num_classes):
  variables = _abstract_variables(
      models.get_model("resnet50", num_classes=num_classes), CIFAR_SHAPE)
  expected = _resnet50_count(num_classes)
  assert _param_count(variables["params"]) == expected
  if num_classes == 10:  # the PyTorch CIFAR ResNet-50's count
    assert expected == 23_520_842


@pytest.mark.slow  # ~15-30 s: ResNet-50 init and train-mode forward on CPU
def test_resnet50_forward_and_batch_stats():
  model = models.ResNet50(num_classes=10)
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
  variables = model.init(jax.random.key(1), x)
  logits, updates = model.apply(variables, x, train=True,
                                mutable=["batch_stats"])
  assert logits.shape == (2, 10) and bool(jnp.all(jnp.isfinite(logits)))
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)),
                         variables["batch_stats"], updates["batch_stats"])
  assert all(jax.tree.leaves(changed))
  assert model.apply(variables, x).shape == (2, 10)


def test_preact_resnet18_param_count():
  variables = _abstract_variables(models.PreActResNet18(), CIFAR_SHAPE)
  expected = _preact_resnet18_count(10)
  assert _param_count(variables["params"]) == expected == 11_172_170


@pytest.mark.parametrize("name, depth, k", [
    ("wide_resnet16_4", 16, 4),
    ("wide_resnet28_10", 28, 10),
    ("wide_resnet34_10", 34, 10),
])
def test_wide_resnet_param_count(name, depth, k):
  model = models.get_model(name)
  assert (model.depth, model.widen_factor) == (depth, k)
  variables = _abstract_variables(model, CIFAR_SHAPE)
  assert _param_count(variables["params"]) == _wide_resnet_count(depth, k, 10)


def test_wide_resnet_published_sizes():
  assert _wide_resnet_count(28, 10, 10) == 36_479_194
  assert _wide_resnet_count(34, 10, 10) == 46_160_474


def test_wide_resnet_default_is_wrn_28_10():
  model = models.WideResNet()
  assert (model.depth, model.widen_factor, model.dropout_rate) == (28, 10, 0.0)
  assert model.num_classes == 10


# ------------------------------------------------------------- BatchNorm ----


@pytest.mark.slow  # 6-14 s; CI's slow line
@pytest.mark.parametrize("name", BN_MODELS)
def test_batch_stats_update_only_in_train_mode(name):
  model, variables = _model_and_variables(name)
  assert models.has_batch_norm(variables)
  x = _images(RUN_MODELS[name], seed=1)
  old = variables["batch_stats"]

  _, eval_state = model.apply(variables, x, train=False,
                              mutable=["batch_stats"])
  jax.tree.map(np.testing.assert_array_equal, eval_state["batch_stats"], old)

  _, train_state = model.apply(variables, x, train=True,
                               mutable=["batch_stats"])
  new = train_state["batch_stats"]
  assert jax.tree.structure(new) == jax.tree.structure(old)
  changed = jax.tree.leaves(
      jax.tree.map(lambda a, b: bool(np.any(a != b)), new, old))
  assert all(changed)


def test_train_mode_requires_mutable_batch_stats():
  model, variables = _model_and_variables("wide_resnet16_4")
  with pytest.raises(flax.errors.ModifyScopeVariableError):
    model.apply(variables, _images(CIFAR_SHAPE), train=True)


def test_batch_norm_momentum_matches_pytorch():
  # Running mean starts at 0, so after one step it is (1 - 0.9) * batch mean.
  model, variables = _model_and_variables("preact_resnet18")
  x = _images(CIFAR_SHAPE, seed=2)
  _, state = model.apply(
      variables, x, train=True, mutable=["batch_stats", "intermediates"],
      capture_intermediates=lambda mdl, _: mdl.scope.path == ("conv1",))
  (stem,) = state["intermediates"]["conv1"]["__call__"]
  expected = 0.1 * jnp.mean(stem, axis=(0, 1, 2))
  np.testing.assert_allclose(
      state["batch_stats"]["layer1_0"]["bn1"]["mean"], expected,
      rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", BN_MODELS)
def test_eval_mode_is_per_example(name):
  # With running averages, an example's logits do not depend on its batch.
  apply = _jitted_apply(name)
  _, variables = _model_and_variables(name)
  x = _images(RUN_MODELS[name], seed=3)
  full = apply(variables, x, train=False)
  single = apply(variables, x[:1], train=False)
  np.testing.assert_allclose(full[:1], single, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", BN_FREE_MODELS)
def test_bn_free_models_ignore_train(name):
  model, variables = _model_and_variables(name)
  assert not models.has_batch_norm(variables)
  x = _images(RUN_MODELS[name])
  np.testing.assert_array_equal(model.apply(variables, x, train=True),
                                model.apply(variables, x, train=False))


def test_has_batch_norm_on_plain_dicts():
  assert not models.has_batch_norm({"params": {"w": jnp.ones(2)}})
  assert not models.has_batch_norm({"params": {}, "batch_stats": {}})
  assert models.has_batch_norm({"batch_stats": {"bn": {"mean": jnp.ones(2)}}})


@pytest.mark.slow  # about 25 s of WRN compiles; run by .ci/run
def test_wide_resnet_dropout():
  model = models.WideResNet(depth=10, widen_factor=1, dropout_rate=0.5)
  x = _images(CIFAR_SHAPE)
  variables = models.init_model(model, jax.random.key(0), CIFAR_SHAPE)
  np.testing.assert_array_equal(model.apply(variables, x),
                                model.apply(variables, x))

  @jax.jit
  def train_logits(key):
    logits, _ = model.apply(variables, x, train=True, mutable=["batch_stats"],
                            rngs={"dropout": key})
    return logits

  assert not np.allclose(train_logits(jax.random.key(0)),
                         train_logits(jax.random.key(1)))
  with pytest.raises(flax.errors.InvalidRngError):
    model.apply(variables, x, train=True, mutable=["batch_stats"])


# ------------------------------------------------------------ validation ----


@pytest.mark.parametrize("name", sorted(RUN_MODELS))
def test_rank_error(name):
  model = models.get_model(name)
  bad_shape = RUN_MODELS[name][1:]
  with pytest.raises(ValueError, match=r"`x`.*\[B, H, W, C\].*got rank 3") as e:
    model.init(jax.random.key(0), jnp.zeros(bad_shape))
  assert str(bad_shape) in str(e.value)
  assert type(model).__name__ in str(e.value)


def test_rank_error_under_jit():
  model, variables = _model_and_variables("fast_at_mnist")
  with pytest.raises(ValueError, match=r"\(2, 784\)"):
    jax.jit(model.apply)(variables, jnp.zeros((2, 784)))


def test_integer_input_rejected():
  model, variables = _model_and_variables("madry_cnn")
  with pytest.raises(TypeError, match="floating"):
    model.apply(variables, jnp.zeros(MNIST_SHAPE, jnp.uint8))


@pytest.mark.parametrize("depth", [12, 15, 4])
def test_wide_resnet_bad_depth(depth):
  with pytest.raises(ValueError, match="depth"):
    _abstract_variables(models.WideResNet(depth=depth), CIFAR_SHAPE)


@pytest.mark.parametrize(
    "shape", [(32, 32, 3), (1, 32, 32, 0), (1, 32.0, 32, 3)])
def test_init_model_bad_shape(shape):
  with pytest.raises(ValueError, match="input_shape"):
    models.init_model(models.FastATMNIST(), jax.random.key(0), shape)


# -------------------------------------------------------------- registry ----


def test_list_models():
  names = models.list_models()
  assert names == sorted(names)
  assert set(ALL_MODELS) <= set(names)


def test_get_model_types():
  assert isinstance(models.get_model("fast_at_mnist"), models.FastATMNIST)
  assert isinstance(models.get_model("madry_cnn"), models.MadryCNN)
  assert isinstance(models.get_model("preact_resnet18"), models.PreActResNet18)
  wrn = models.get_model("wide_resnet34_10", num_classes=100, dropout_rate=0.3)
  assert isinstance(wrn, models.WideResNet)
  assert (wrn.depth, wrn.widen_factor, wrn.num_classes, wrn.dropout_rate) == (
      34, 10, 100, 0.3)


@pytest.mark.parametrize("name", ["resnet101", "", "FAST_AT_MNIST", "__class__"])
def test_unknown_model_name(name):
  with pytest.raises(ValueError, match="Unknown model name") as e:
    models.get_model(name)
  for valid in ALL_MODELS:
    assert repr(valid) in str(e.value)


def test_register_model(monkeypatch):
  monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
  tiny = functools.partial(models.WideResNet, depth=10, widen_factor=1)
  models.register_model("tiny_wrn", tiny)
  assert "tiny_wrn" in models.list_models()
  model = models.get_model("tiny_wrn", num_classes=3)
  assert (model.depth, model.num_classes) == (10, 3)

  with pytest.raises(ValueError, match="already registered"):
    models.register_model("tiny_wrn", models.MadryCNN)
  with pytest.raises(ValueError, match="already registered"):
    models.register_model("madry_cnn", models.MadryCNN)
  models.register_model("tiny_wrn", models.MadryCNN, overwrite=True)
  assert isinstance(models.get_model("tiny_wrn"), models.MadryCNN)
  with pytest.raises(TypeError, match="constructor"):
    models.register_model("broken", "MadryCNN")
  with pytest.raises(ValueError, match="non-empty"):
    models.register_model("", models.MadryCNN)


def test_register_model_does_not_leak():
  assert "tiny_wrn" not in models.list_models()


# ------------------------------------------------------------------- jit ----


@pytest.mark.parametrize("name", sorted(RUN_MODELS))
def test_jit_matches_eager(name):
  model, variables = _model_and_variables(name)
  x = _images(RUN_MODELS[name], seed=4)
  eager = model.apply(variables, x, train=False)
  jitted = _jitted_apply(name)(variables, x, train=False)
  np.testing.assert_allclose(eager, jitted, rtol=1e-5, atol=1e-5)


def test_jit_matches_eager_train_mode():
  model, variables = _model_and_variables("wide_resnet16_4")
  x = _images(CIFAR_SHAPE, seed=5)
  eager, eager_state = model.apply(variables, x, train=True,
                                   mutable=["batch_stats"])
  jitted, jit_state = jax.jit(
      functools.partial(model.apply, train=True, mutable=["batch_stats"]))(
          variables, x)
  np.testing.assert_allclose(eager, jitted, rtol=1e-5, atol=1e-5)
  jax.tree.map(
      functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6),
      eager_state, jit_state)


@pytest.mark.parametrize("name", BN_FREE_MODELS)
def test_input_gradient(name):
  # Attacks differentiate the logits with respect to the input.
  model, variables = _model_and_variables(name)
  x = _images(RUN_MODELS[name])
  grad = jax.grad(lambda x: model.apply(variables, x)[:, 0].sum())(x)
  assert grad.shape == x.shape
  assert np.all(np.isfinite(grad)) and np.any(grad != 0)
