"""N-FGSM and GradAlign: their perturbations, the penalty's double backprop,
and reductions to the FGSM step they extend (random tensors: pure-function
tests of the steps)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxadv import models
from jaxadv import training
from jaxadv.training import single_step

SHAPE = (8, 28, 28, 1)
EPS = 0.3


def _state(step_size=EPS, eps=EPS, model="fast_at_mnist"):
  return training.create_train_state(
      models.get_model(model), jax.random.key(0), (1, 28, 28, 1),
      optax.sgd(0.1), eps=eps, step_size=step_size)


def _batch(seed=0):
  kx, ky = jax.random.split(jax.random.key(seed))
  return {"x": jax.random.uniform(kx, SHAPE),
          "y": jax.random.randint(ky, (SHAPE[0],), 0, 10)}


def _close(a, b, atol=1e-6):
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(u, v, atol=atol, rtol=1e-5)


@pytest.mark.parametrize("jit", [True, False])
@pytest.mark.parametrize("noise, clip", [(2.0, None), (2.0, 1.0), (0.5, None)])
def test_n_fgsm_perturbation_box_and_radius(jit, noise, clip):
  state, batch = _state(), _batch()
  perturb = training.n_fgsm_perturbation(noise=noise, clip=clip)
  p = (jax.jit(perturb) if jit else perturb)(state, batch, jax.random.key(1))
  x, d = np.asarray(batch["x"]), np.asarray(p.delta)
  assert (x + d).min() >= 0.0 and (x + d).max() <= 1.0
  radius = EPS * (clip if clip is not None else noise + 1.0)
  assert np.abs(d).max() <= radius + 1e-6
  if clip is None:  # no projection: the point leaves the eps-ball
    assert np.abs(d).max() > EPS + 1e-3


def test_n_fgsm_without_noise_clipped_is_fgsm_from_zero():
  # k = 0 and clip = 1: one signed step of size alpha from x, in the ball:
  # FGSM AT, i.e. one PGD step without random start.
  state, batch = _state(step_size=0.2), _batch(2)
  a, _ = jax.jit(training.n_fgsm_step(noise=0.0, clip=1.0))(
      state, batch, jax.random.key(0))
  b, _ = jax.jit(training.pgd_at_step(steps=1, random_start=False))(
      state, batch, jax.random.key(0))
  _close(a.params, b.params)


def test_grad_align_with_zero_weight_is_fgsm_training():
  state, batch = _state(), _batch(3)
  a, metrics = jax.jit(training.grad_align_step(lam=0.0))(
      state, batch, jax.random.key(0))
  b, _ = jax.jit(training.pgd_at_step(steps=1, random_start=False))(
      state, batch, jax.random.key(0))
  _close(a.params, b.params)
  assert set(metrics) >= {"loss", "ce", "grad_align", "accuracy"}
  assert 0.0 <= float(metrics["grad_align"]) <= 2.0


@pytest.mark.parametrize("jit", [True, False])
def test_grad_align_penalty_gradient_matches_finite_differences(jit):
  # The penalty's parameter gradient goes through the input gradient at the
  # random point (double backprop): compare it with a central difference
  # along a random direction of the parameters. A smooth model (softmax
  # regression): a ReLU net's input gradient jumps with its parameters.
  state, batch = _state(model="linear_softmax"), _batch(4)
  leaves, tree = jax.tree.flatten(state.params)  # away from the zero init
  state = state.replace(params=jax.tree.unflatten(tree, [
      0.1 * jax.random.normal(jax.random.fold_in(jax.random.key(9), i),
                              v.shape, v.dtype) for i, v in enumerate(leaves)]))
  reg = training.grad_align_penalty(lam=1.0)
  term = lambda p: reg(state, batch, jax.random.key(5)).loss(p)[0]
  grad = (jax.jit(jax.grad(term)) if jit else jax.grad(term))(state.params)
  leaves, tree = jax.tree.flatten(state.params)
  keys = jax.random.split(jax.random.key(6), len(leaves))
  direction = [jax.random.normal(k, v.shape, v.dtype)
               for k, v in zip(keys, leaves)]
  norm = np.sqrt(sum(float(jnp.vdot(d, d)) for d in direction))
  direction = jax.tree.unflatten(tree, [d / norm for d in direction])
  along = sum(float(jnp.vdot(g, d)) for g, d in zip(
      jax.tree.leaves(grad), jax.tree.leaves(direction)))
  h = 1e-2
  shift = lambda s: jax.tree.map(lambda p, d: p + s * d, state.params,
                                 direction)
  numeric = (float(term(shift(h))) - float(term(shift(-h)))) / (2 * h)
  assert abs(along) > 1e-3  # the penalty does depend on the parameters
  np.testing.assert_allclose(along, numeric, rtol=0.05)


def test_alignment_cosine_is_one_for_parallel_gradients_and_skips_zeros():
  g = jax.random.normal(jax.random.key(0), SHAPE)
  cos, ok = single_step._cosine(g, 3.0 * g)  # pylint: disable=protected-access
  np.testing.assert_allclose(cos, 1.0, rtol=1e-5)
  assert bool(ok.all())
  cos, ok = single_step._cosine(g, jnp.zeros_like(g))  # pylint: disable=protected-access
  assert not bool(ok.any())
  # Zero gradients give a zero (not NaN) derivative.
  d = jax.grad(lambda b: jnp.sum(single_step._cosine(g, b)[0]))(  # pylint: disable=protected-access
      jnp.zeros_like(g))
  assert bool(jnp.all(d == 0))


def test_alignment_cosine_of_tiny_gradients_is_exact_and_finite():
  """A gradient-masked model's input gradients can be ~1e-20: their sums of
  squares underflow float32, which once gave NaN parameters (GradAlign on
  MNIST at eps 0.3). The cosine is scale-free; so must its value be."""
  k1, k2 = jax.random.split(jax.random.key(1))
  g1, g2 = jax.random.normal(k1, SHAPE), jax.random.normal(k2, SHAPE)
  f = lambda a, b: jnp.sum(single_step._cosine(a, b)[0])  # pylint: disable=protected-access
  ref, ref_grad = jax.value_and_grad(f, argnums=1)(g1, g2)
  tiny = 1e-22
  value, grad = jax.value_and_grad(f, argnums=1)(tiny * g1, tiny * g2)
  np.testing.assert_allclose(value, ref, rtol=1e-5)
  assert bool(jnp.all(jnp.isfinite(grad)))
  np.testing.assert_allclose(grad * tiny, ref_grad, rtol=1e-4, atol=1e-6)


def test_single_step_methods_reject_bad_options():
  with pytest.raises(ValueError, match="noise"):
    training.n_fgsm_step(noise=-1.0)
  with pytest.raises(ValueError, match="clip"):
    training.n_fgsm_step(clip=0.0)
  with pytest.raises(ValueError, match="lam"):
    training.grad_align_step(lam=-0.1)
  with pytest.raises(ValueError, match="attack_bn"):
    training.grad_align_step(lam=0.1, attack_bn="train")
  assert training.n_fgsm_step().requires == ("eps", "step_size")


@pytest.mark.slow  # ~14 s (a CIFAR-shaped BatchNorm net compiles twice)
def test_steps_with_batchnorm_update_the_running_averages():
  shape = (8, 32, 32, 3)
  state = training.create_train_state(
      models.get_model("compact_cnn"), jax.random.key(0), (1,) + shape[1:],
      optax.sgd(0.1), eps=8 / 255, step_size=8 / 255)
  assert state.batch_stats
  kx, ky = jax.random.split(jax.random.key(7))
  batch = {"x": jax.random.uniform(kx, shape),
           "y": jax.random.randint(ky, (shape[0],), 0, 10)}
  for step in (training.n_fgsm_step(), training.grad_align_step(lam=0.5)):
    new, metrics = jax.jit(step)(state, batch, jax.random.key(0))
    assert np.isfinite(float(metrics["loss"]))
    assert any(not np.allclose(a, b) for a, b in zip(
        jax.tree.leaves(new.batch_stats), jax.tree.leaves(state.batch_stats)))
