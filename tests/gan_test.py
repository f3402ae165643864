"""Tests of jaxadv.gan: losses, DCGAN shapes, the k-step update, metrics."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxadv import gan

LOGITS = jnp.array([-30.0, -5.0, -1.0, 0.0, 0.5, 3.0, 30.0])


def _sigmoid(l):
  return 1.0 / (1.0 + np.exp(-np.asarray(l, np.float64)))


def test_losses_match_the_formulas():
  real, fake = LOGITS[2:], LOGITS[:-2][::-1]
  dr, df = _sigmoid(real), _sigmoid(fake)
  np.testing.assert_allclose(gan.discriminator_loss(real, fake),
                             -np.log(dr) - np.log(1 - df), rtol=1e-5,
                             atol=1e-9)
  d = _sigmoid(LOGITS[1:-1])  # away from float64 saturation of 1 - D
  np.testing.assert_allclose(gan.saturating_generator_loss(LOGITS[1:-1]),
                             np.log(1 - d), rtol=1e-5)
  np.testing.assert_allclose(gan.non_saturating_generator_loss(LOGITS[1:-1]),
                             -np.log(d), rtol=1e-5)
  # [B, 1] logits are accepted; finite where D saturates.
  assert gan.non_saturating_generator_loss(LOGITS[:, None]).shape == (7,)
  for fn in (gan.saturating_generator_loss, gan.non_saturating_generator_loss):
    assert np.all(np.isfinite(fn(jnp.array([-200.0, 200.0]))))
  np.testing.assert_allclose(gan.non_saturating_generator_loss(
      jnp.array([-200.0])), 200.0, rtol=1e-6)


def test_generator_gradients_when_d_rejects_samples():
  # d/dl log(1 - D) = -D -> 0 as D(G(z)) -> 0 (saturation), while
  # d/dl -log D = -(1 - D) -> -1.
  g_sat = jax.vmap(jax.grad(lambda l: gan.saturating_generator_loss(
      l[None])[0]))(LOGITS)
  g_ns = jax.vmap(jax.grad(lambda l: gan.non_saturating_generator_loss(
      l[None])[0]))(LOGITS)
  np.testing.assert_allclose(g_sat, -_sigmoid(LOGITS), atol=1e-6)
  np.testing.assert_allclose(g_ns, -(1 - _sigmoid(LOGITS)), atol=1e-6)
  assert abs(float(g_sat[0])) < 1e-12 and float(g_ns[0]) == pytest.approx(-1)
  # The discriminator's logit gradients: D - 1 on real, D on fake.
  gr, gf = jax.grad(lambda r, f: gan.discriminator_loss(r, f).sum(),
                    argnums=(0, 1))(LOGITS, LOGITS)
  np.testing.assert_allclose(gr, _sigmoid(LOGITS) - 1, atol=1e-6)
  np.testing.assert_allclose(gf, _sigmoid(LOGITS), atol=1e-6)


def test_loss_errors():
  with pytest.raises(ValueError, match="generator_loss"):
    gan.get_generator_loss("wasserstein")
  with pytest.raises(ValueError, match="same"):
    gan.discriminator_loss(jnp.zeros(3), jnp.zeros(4))
  with pytest.raises(ValueError, match="fake_logits"):
    gan.saturating_generator_loss(jnp.zeros((3, 2)))


@functools.cache
def _state(features=4, latent=16):
  """One tiny DCGAN state per session (compiling is the slow part on CPU)."""
  tx = optax.adam(2e-4, b1=0.5)
  return gan.create_gan_state(
      gan.DCGANGenerator(features=features), gan.DCGANDiscriminator(
          features=features), jax.random.key(0), latent_dim=latent,
      image_shape=(28, 28, 1), tx_generator=tx, tx_discriminator=tx)


def test_dcgan_shapes_range_and_architecture():
  state = _state()
  z = jax.random.normal(jax.random.key(1), (5, 16))
  images = jax.jit(gan.sample)(state, z)
  assert images.shape == (5, 28, 28, 1)
  assert float(images.min()) >= -1.0 and float(images.max()) <= 1.0
  px = gan.to_pixels(images)
  assert float(px.min()) >= 0.0 and float(px.max()) <= 1.0
  d = state.discriminator
  logits = jax.jit(d.apply_fn)({"params": d.params,
                               "batch_stats": d.batch_stats}, images)
  assert logits.shape == (5,)
  # Guidelines: BN on G's hidden maps but not its output; not on D's input.
  assert set(state.generator.batch_stats) == {"bn0", "bn1"}
  assert set(state.discriminator.batch_stats) == {"bn2"}
  assert state.generator.params["deconv1"]["kernel"].ndim == 4  # transposed
  with pytest.raises(ValueError, match="z"):
    gan.sample(state, jnp.zeros((2, 4, 4, 1)))


@pytest.mark.slow
def test_gan_step_does_k_discriminator_updates():
  k = 2
  state = _state()
  x = jax.random.uniform(jax.random.key(2), (4 * k, 28, 28, 1))
  step = jax.jit(gan.gan_step(latent_dim=16, k=k))
  new, metrics = step(state, {"x": x}, jax.random.key(3))
  assert int(new.step) == 1
  assert int(new.generator.step) == 1
  assert int(new.discriminator.step) == k
  for name in ("d_loss", "g_loss", "d_real", "d_fake", "g_grad_norm"):
    assert np.isfinite(float(metrics[name]))
  with pytest.raises(ValueError, match="k="):
    jax.jit(gan.gan_step(latent_dim=16, k=3))(state, {"x": x[:4]},
                                               jax.random.key(3))


@pytest.mark.slow
def test_discriminator_update_equals_manual_value_and_grad():
  state = _state()
  x = 2 * jax.random.uniform(jax.random.key(2), (4, 28, 28, 1)) - 1
  z = jax.random.normal(jax.random.key(5), (4, 16))
  new, metrics = jax.jit(gan.discriminator_update)(state, x, z)
  d = state.discriminator
  @jax.jit
  @jax.value_and_grad
  def loss(params):
    fake = gan.sample(state, z)  # D's update does not move G
    real_l, upd = d.apply_fn({"params": params, "batch_stats": d.batch_stats},
                             x, train=True, mutable=["batch_stats"])
    fake_l, _ = d.apply_fn({"params": params, **upd}, fake, train=True,
                           mutable=["batch_stats"])
    return jnp.mean(-jax.nn.log_sigmoid(real_l) - jax.nn.log_sigmoid(-fake_l))
  value, grads = loss(d.params)
  np.testing.assert_allclose(metrics["d_loss"], value, rtol=1e-5)
  update = jax.jit(lambda d, g: d.apply_gradients(grads=g))
  expected = update(d, grads).params
  for u, v in zip(jax.tree.leaves(new.discriminator.params),
                  jax.tree.leaves(expected)):
    np.testing.assert_allclose(u, v, atol=1e-6)
  # The generator is untouched by a discriminator update.
  for u, v in zip(jax.tree.leaves(new.generator.params),
                  jax.tree.leaves(state.generator.params)):
    np.testing.assert_array_equal(u, v)


@pytest.mark.slow
def test_gradient_norms_follow_d_of_g_of_z():
  state = _state()
  z = jax.random.normal(jax.random.key(6), (8, 16))
  out = jax.jit(gan.generator_gradient_norms)(state, z)
  # Mean |d loss / d logit|: D(G(z)) for saturating, 1 - D for non-sat.
  assert 0.0 < float(out["d_fake"]) < 1.0
  np.testing.assert_allclose(out["logit_saturating"], out["d_fake"],
                             rtol=1e-5)
  np.testing.assert_allclose(out["logit_non_saturating"],
                             1.0 - out["d_fake"], rtol=1e-5)
  # The non-saturating norm equals the generator update's own gradient norm.
  step_metrics = jax.jit(gan.generator_update, static_argnums=2)(
      state, z, "non_saturating")[1]
  np.testing.assert_allclose(out["non_saturating"],
                             step_metrics["g_grad_norm"], rtol=1e-4)


def test_entropy_confidence_and_frechet_distance():
  probs = np.eye(4)[[0, 1, 2, 3, 0, 1, 2, 3]] * 0.7 + 0.075
  hist = gan.class_histogram(probs)
  np.testing.assert_allclose(hist, 0.25)
  assert gan.entropy(hist) == pytest.approx(np.log(4))
  assert gan.entropy(np.array([1.0, 0.0])) == 0.0
  assert gan.mean_confidence(probs) == pytest.approx(0.775)
  with pytest.raises(ValueError, match="probability"):
    gan.entropy(np.array([0.5, 0.6]))
  rng = np.random.default_rng(0)
  a = rng.normal(size=(4000, 3))
  assert gan.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
  # N(0, I) vs N(m, s^2 I): |m|^2 + d (1 - s)^2.
  b = 2.0 * rng.normal(size=(4000, 3)) + np.array([1.0, 0.0, 0.0])
  assert gan.frechet_distance(a, b) == pytest.approx(1 + 3 * 1.0, rel=0.1)
  with pytest.raises(ValueError, match="same F"):
    gan.frechet_distance(a, b[:, :2])


@pytest.mark.slow  # ~4 min of compilation on the shared 2-core machine
def test_gan_experiment_test_config_on_real_mnist(tmp_path):
  from experiments import gan as gan_exp
  from experiments.configs import gan as gan_config
  config = gan_config.get_config("mnist,test")
  config.progress = False
  workdir = str(tmp_path / "gan")
  record = gan_exp.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  assert saved.pop("environment")["jax"]
  assert saved == record and tuple(saved) == gan_exp.RESULT_KEYS
  assert len(saved["class_histogram"]) == 10
  assert sum(saved["class_histogram"]) == pytest.approx(1.0)
  assert 0.0 <= saved["class_entropy"] <= saved["max_entropy"] + 1e-9
  assert saved["generator_steps"] == config.steps_per_epoch
  for name in ("samples_epoch00.png", "interpolation.png", "losses.png",
               "generator_gradients.png", "class_histogram.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  with pytest.raises(ValueError, match="unknown config part"):
    gan_config.get_config("cifar10")
