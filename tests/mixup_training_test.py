"""Tests of the mixup and interpolated-AT training steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxadv import attacks
from jaxadv import losses
from jaxadv import models
from jaxadv import training
from jaxadv.training import steps as steps_lib

SHAPE = (8, 28, 28, 1)


def _state(eps=0.3, step_size=0.1):
  return training.create_train_state(
      models.get_model("fast_at_mnist"), jax.random.key(0), (1, 28, 28, 1),
      optax.sgd(0.1), eps=eps, step_size=step_size)


def _batch(seed):
  kx, ky = jax.random.split(jax.random.key(seed))
  return {"x": jax.random.uniform(kx, SHAPE),
          "y": jax.random.randint(ky, (SHAPE[0],), 0, 10)}


def _tree_close(a, b, atol=1e-6):
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(u, v, atol=atol, rtol=1e-5)


@pytest.mark.parametrize("jit", [pytest.param(True, marks=pytest.mark.slow),
                                 False])
def test_mixup_step_is_sgd_on_mixed_one_hot_targets(jit):
  state, batch, key, alpha = _state(), _batch(1), jax.random.key(7), 0.4
  step = training.mixup_step(alpha=alpha)
  new, metrics = (jax.jit(step) if jit else step)(state, batch, key)
  # Reference: the same draw, soft cross-entropy against mixed one-hots.
  mix = steps_lib.draw_mix(jax.random.fold_in(key, 0), SHAPE[0], alpha)
  lam = float(mix.lam)
  assert 0.0 < lam < 1.0
  x_mix = lam * batch["x"] + (1 - lam) * batch["x"][mix.perm]
  onehot = jax.nn.one_hot(batch["y"], 10)
  targets = lam * onehot + (1 - lam) * onehot[mix.perm]

  def loss(p):
    logits = state.apply_fn({"params": p}, x_mix, train=True)
    return jnp.mean(losses.soft_cross_entropy(logits, targets))

  value, g = jax.value_and_grad(loss)(state.params)
  _tree_close(new.params, jax.tree.map(lambda p, g: p - 0.1 * g,
                                       state.params, g))
  np.testing.assert_allclose(metrics["loss"], value, rtol=1e-5)


def test_mixup_draws_change_with_the_step():
  state, batch, key = _state(), _batch(2), jax.random.key(0)
  step = jax.jit(training.mixup_step(alpha=1.0))
  a, _ = step(state, batch, key)
  b, _ = step(state.replace(step=state.step + 1), batch, key)
  assert not np.allclose(jax.tree.leaves(a.params)[0],
                         jax.tree.leaves(b.params)[0])
  lams = [float(steps_lib.draw_mix(jax.random.key(i), 8, 1.0).lam)
          for i in range(200)]
  # Beta(1, 1) is uniform: mean 1/2, variance 1/12.
  assert abs(np.mean(lams) - 0.5) < 0.06 and abs(np.var(lams) - 1 / 12) < 0.03


@pytest.mark.parametrize("jit", [True, pytest.param(False,
                                                       marks=pytest.mark.slow)])
def test_iat_step_matches_its_definition(jit):
  state, batch, key = _state(), _batch(3), jax.random.key(5)
  step = training.iat_step(alpha=1.0, steps=3, adv_ratio=0.5)
  new, metrics = (jax.jit(step) if jit else step)(state, batch, key)
  k = jax.random.fold_in(key, 0)
  k_pgd, k_clean, k_adv = jax.random.split(k, 3)

  loss_fn = losses.make_loss_fn(
      lambda x: state.apply_fn({"params": state.params}, x, train=True), "ce")
  x_adv = attacks.pgd(loss_fn, batch["x"], batch["y"], k_pgd, eps=0.3,
                      step_size=0.1, steps=3)

  def mixup_loss(p, x, mix):
    lam = mix.lam
    logits = state.apply_fn({"params": p},
                            lam * x + (1 - lam) * x[mix.perm], train=True)
    return jnp.mean(lam * losses.cross_entropy(logits, batch["y"]) +
                    (1 - lam) * losses.cross_entropy(logits,
                                                     batch["y"][mix.perm]))

  def total(p):
    return 0.5 * (mixup_loss(p, batch["x"], steps_lib.draw_mix(k_clean, 8, 1.0))
                  + mixup_loss(p, x_adv, steps_lib.draw_mix(k_adv, 8, 1.0)))

  value, g = jax.value_and_grad(total)(state.params)
  np.testing.assert_allclose(metrics["loss"], value, rtol=1e-4)
  _tree_close(new.params, jax.tree.map(lambda p, g: p - 0.1 * g,
                                       state.params, g), atol=1e-5)


@pytest.mark.slow  # ~10 s; CI's slow line
def test_iat_adv_ratio_zero_ignores_the_attack():
  """adv_ratio 0 leaves only the clean mixup loss: eps has no effect."""
  batch, key = _batch(4), jax.random.key(1)
  step = jax.jit(training.iat_step(alpha=1.0, steps=2, adv_ratio=0.0))
  a, ma = step(_state(eps=0.0), batch, key)
  b, mb = step(_state(eps=0.3), batch, key)
  _tree_close(a.params, b.params, atol=1e-7)
  c, mc = jax.jit(training.iat_step(alpha=1.0, steps=2, adv_ratio=1.0))(
      _state(eps=0.3), batch, key)
  assert float(mc["loss"]) > float(mb["loss"])


@pytest.mark.parametrize("kwargs,match", [
    ({"alpha": 0.0}, "alpha"), ({"adv_ratio": 1.5}, "adv_ratio")])
def test_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    training.iat_step(**kwargs)
  if "alpha" in kwargs:
    with pytest.raises(ValueError, match=match):
      training.mixup_step(**kwargs)
