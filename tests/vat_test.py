"""Tests of virtual adversarial training (jaxadv.training.vat) and its MLP."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxadv import models
from jaxadv import training
from jaxadv.training import vat

B, D, C = 6, 12, 5


def _linear(seed=0, scale=1.0):
  """A linear-softmax model logits = x W (+ b) on flat inputs [B, D]."""
  kw, kb = jax.random.split(jax.random.key(seed))
  w = scale * jax.random.normal(kw, (D, C))
  b = jax.random.normal(kb, (C,))
  return w, b, lambda x: x.reshape(x.shape[0], -1) @ w + b


def _x(seed=1, shape=(B, D)):
  return jax.random.uniform(jax.random.key(seed), shape)


def test_kl_zero_at_r_zero_and_positive_elsewhere():
  _, _, f = _linear()
  x = _x()
  np.testing.assert_array_equal(vat.kl_divergence(f(x), f(x)), 0.0)
  kl = vat.kl_divergence(f(x), f(x + 0.3))
  assert np.all(np.asarray(kl) > 0)
  # Against the definition sum p log(p / q).
  p, q = jax.nn.softmax(f(x)), jax.nn.softmax(f(x + 0.3))
  np.testing.assert_allclose(kl, np.sum(p * np.log(p / q), -1), rtol=1e-4)


@pytest.mark.parametrize("jit,eps", [(True, 0.5), (False, 2.0)])
def test_r_adv_has_norm_eps_per_example(jit, eps):
  _, _, f = _linear()
  x = _x(shape=(B, 3, 2, 2))
  fn = lambda x, key, eps: vat.virtual_adversarial_perturbation(
      f, x, key, eps=eps, iterations=2)
  r = (jax.jit(fn) if jit else fn)(x, jax.random.key(3), eps)
  assert r.shape == x.shape
  np.testing.assert_allclose(np.linalg.norm(np.asarray(r).reshape(B, -1),
                                            axis=1), eps, rtol=1e-5)


def test_r_adv_jit_equals_unjitted_and_per_example_eps():
  _, _, f = _linear()
  x = _x()
  eps = jnp.linspace(0.1, 1.0, B)
  fn = lambda x, key, eps: vat.virtual_adversarial_perturbation(
      f, x, key, eps=eps, xi=1e-6, iterations=1)
  a = fn(x, jax.random.key(5), eps)
  b = jax.jit(fn)(x, jax.random.key(5), eps)
  np.testing.assert_allclose(a, b, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(a, axis=1), eps, rtol=1e-5)


def test_power_iteration_finds_top_eigenvector_of_linear_softmax():
  # For logits = x W + b, the KL's Hessian in r at r = 0 is
  # H = W (diag(p) - p p^T) W^T per example: r_adv must be its top
  # eigenvector (up to sign), scaled to eps.
  # Small |x|: x + xi d (xi = 1e-6) is then exact in float32 (for x of
  # order 1 the rounding of x + xi d adds noise of the size of xi d).
  w, _, f = _linear(scale=2.0)
  x = 1e-3 * _x()
  r = vat.virtual_adversarial_perturbation(f, x, jax.random.key(0), eps=1.0,
                                           iterations=30)
  p = np.asarray(jax.nn.softmax(f(x)), np.float64)
  wn = np.asarray(w, np.float64)
  for i in range(B):
    h = wn @ (np.diag(p[i]) - np.outer(p[i], p[i])) @ wn.T
    vals, vecs = np.linalg.eigh(h)
    assert vals[-1] > 1.5 * vals[-2]  # an eigengap, so the answer is unique
    cos = abs(float(np.dot(np.asarray(r[i], np.float64), vecs[:, -1])))
    assert cos > 0.99, (i, cos)
  # One iteration (the paper's setting) already beats a random direction.
  r1 = vat.virtual_adversarial_perturbation(f, x, jax.random.key(0), eps=1.0)
  d = jax.random.normal(jax.random.key(9), x.shape)
  rand = d / jnp.linalg.norm(d, axis=1, keepdims=True)
  kl_adv = vat.kl_divergence(f(x), f(x + r1))
  kl_rand = vat.kl_divergence(f(x), f(x + rand))
  assert np.all(np.asarray(kl_adv) > np.asarray(kl_rand))


@pytest.mark.slow
def test_r_adv_beats_random_directions_on_an_mlp():
  model = models.get_model("mlp", hidden=(16,), batch_norm=False)
  x = _x(shape=(8, 4, 4, 1))
  variables = model.init(jax.random.key(0), x)
  f = jax.jit(lambda z: model.apply(variables, z))
  r = jax.jit(lambda x: vat.virtual_adversarial_perturbation(
      f, x, jax.random.key(1), eps=1.0))(x)
  kl_adv = vat.kl_divergence(f(x), f(x + r))
  for s in range(5):
    d = jax.random.normal(jax.random.key(10 + s), x.shape)
    rand = d / jnp.sqrt(jnp.sum(d ** 2, axis=(1, 2, 3), keepdims=True))
    assert np.all(np.asarray(kl_adv) >
                  np.asarray(vat.kl_divergence(f(x), f(x + rand))))


def test_lds_gradient_ignores_the_clean_distribution():
  # d LDS / d params only through p(.|x + r_adv): at r_adv = 0 (eps = 0) the
  # loss and its gradient are exactly 0.
  w, b, _ = _linear()
  x = _x()
  def loss(w):
    f = lambda z: z @ w + b
    return jnp.sum(vat.lds_loss(f, x, jax.random.key(0), eps=0.0))
  value, grad = jax.value_and_grad(loss)(w)
  assert float(value) == 0.0
  np.testing.assert_allclose(grad, 0.0, atol=1e-6)  # rounding only
  g2 = jax.grad(lambda w: jnp.sum(vat.lds_loss(
      lambda z: z @ w + b, x, jax.random.key(0), eps=1.0)))(w)
  assert float(jnp.abs(g2).max()) > 1e-3


def test_bad_arguments():
  _, _, f = _linear()
  with pytest.raises(ValueError, match="iterations"):
    vat.virtual_adversarial_perturbation(f, _x(), jax.random.key(0), eps=1.0,
                                         iterations=0)
  with pytest.raises(ValueError, match="eps"):
    vat.virtual_adversarial_perturbation(f, _x(), jax.random.key(0), eps=-1.0)
  with pytest.raises(TypeError, match="x"):
    vat.virtual_adversarial_perturbation(f, jnp.ones((2, 3), jnp.int32),
                                         jax.random.key(0), eps=1.0)
  with pytest.raises(ValueError, match="alpha"):
    training.vat_step(eps=1.0, alpha=-1.0)


def _bn_state():
  model = models.get_model("mlp", hidden=(32,), batch_norm=True)
  return jax.jit(lambda key: training.create_train_state(
      model, key, (1, 4, 4, 1), optax.sgd(0.1)))(jax.random.key(0))


@pytest.mark.slow  # ~60 s of compilation on the shared 2-core machine
@pytest.mark.parametrize("semi", [True, False])
def test_vat_step_is_one_sgd_update_of_ce_plus_alpha_lds(semi):
  state = _bn_state()
  x = _x(2, (8, 4, 4, 1))
  y = jnp.arange(8) % 10
  x_u = _x(3, (16, 4, 4, 1))
  batch = {"x": x, "y": y, **({"x_ul": x_u} if semi else {})}
  key = jax.random.key(4)
  # xi = 1e-2: with 1e-6 the finite difference on this tiny random net is
  # at float32 rounding level, and jit / eager rounding differ.
  state = state.replace(attack_params={**state.attack_params,
                                       "eps": jnp.float32(0.5)})
  new, metrics = jax.jit(training.vat_step(xi=1e-2, alpha=2.0))(
      state, batch, key)
  # The same update written out by hand (one jit: eager ops are slow here).
  xu = x_u if semi else x
  def f(params, z):
    return training.apply_model(state, params, z, train=True)[0]

  @jax.jit
  def reference(params):
    k = jax.random.fold_in(key, state.step)
    r = vat.virtual_adversarial_perturbation(lambda z: f(params, z), xu, k,
                                             eps=0.5, xi=1e-2)
    p0 = jax.lax.stop_gradient(f(params, xu))
    def loss(params):
      ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
          f(params, x), y))
      return ce + 2.0 * jnp.mean(vat.kl_divergence(p0, f(params, xu + r)))
    return jax.value_and_grad(loss)(params)

  value, g = reference(state.params)
  expected = jax.tree.map(lambda p, g: p - 0.1 * g, state.params, g)
  for u, v in zip(jax.tree.leaves(new.params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(u, v, atol=2e-5, rtol=1e-4)
  np.testing.assert_allclose(metrics["loss"], value, rtol=1e-4)
  assert float(metrics["lds"]) > 0
  assert int(new.step) == 1
  # BN running statistics moved (from the clean pass over x_u).
  assert not np.allclose(jax.tree.leaves(new.batch_stats)[0],
                         jax.tree.leaves(state.batch_stats)[0])


def test_vat_mlp_shapes_and_registry():
  # Shapes only (jax.eval_shape): no compilation of the 2.4M-parameter net.
  model = models.get_model("vat_mlp")
  x = jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert models.has_batch_norm(variables)
  kernels = [variables["params"][k]["kernel"].shape
             for k in ("fc1", "fc2", "logits")]
  assert kernels == [(784, 1200), (1200, 1200), (1200, 10)]
  assert jax.eval_shape(model.apply, variables, x).shape == (2, 10)
  with pytest.raises(ValueError, match="rank-4"):
    jax.eval_shape(model.apply, variables,
                   jax.ShapeDtypeStruct((2, 784), jnp.float32))


def test_vat_experiment_test_config_on_real_mnist(tmp_path):
  from experiments import vat as vat_exp
  from experiments.configs import vat as vat_config
  config = vat_config.get_config("test")
  config.progress = False
  workdir = str(tmp_path / "vat")
  records = vat_exp.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  if isinstance(saved, dict):  # {"environment": ..., "records": [...]}
    saved = saved["records"]
  assert saved == records
  assert [r["method"] for r in saved] == list(config.methods)
  for r in saved:
    assert tuple(r) == vat_exp.RESULT_KEYS
    assert 0.0 <= r["test_error"] <= 1.0 and r["steps"] == config.steps
  with open(os.path.join(workdir, "details.json")) as f:
    details = json.load(f)
  lab = details["labelled_train_indices"]
  assert len(lab) == config.num_labels
  assert os.path.getsize(os.path.join(workdir, "val_error.png")) > 0
  # 10 labels per class.
  (x_l, y_l), *_ = vat_exp.load_data(config)
  assert np.bincount(y_l).tolist() == [10] * 10
