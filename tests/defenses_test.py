"""Tests of Mixup Inference, the input-transformation baselines, EOT-PGD and MI metrics."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from jaxadv import attacks
from jaxadv import defenses
from jaxadv.defenses import input_transforms
from jaxadv.defenses import mixup_inference as mi

C = 5
SHAPE = (6, 6, 1)


def _linear_logits_fn(seed=0):
  w = jax.random.normal(jax.random.key(seed), (int(np.prod(SHAPE)), C))
  return lambda x: x.reshape((x.shape[0], -1)) @ w


def _class_coded_pool(per_class=4):
  """Random images whose first pixel codes the class: (class + 1) / 10."""
  values = (jnp.arange(C, dtype=jnp.float32) + 1) / 10
  images = jax.random.uniform(jax.random.key(42), (C, per_class) + SHAPE)
  images = images.at[:, :, 0, 0, 0].set(values[:, None])
  return mi.SamplePool(images)


def _x(batch=8, seed=1):
  return jax.random.uniform(jax.random.key(seed), (batch,) + SHAPE)


# ---------------------------------------------------------------- partners


@pytest.mark.parametrize("partners", ["pl", "ol"])
@pytest.mark.parametrize("jit", [False, True])
def test_partner_classes(partners, jit):
  pool = _class_coded_pool()
  y_hat = jnp.array([0, 1, 2, 3, 4, 0, 4, 2], jnp.int32)
  draw = functools.partial(mi.draw_partners, num_samples=64,
                           partners=partners)
  if jit:
    draw = jax.jit(draw)
  x_s = draw(pool, y_hat, jax.random.key(0))
  chex.assert_shape(x_s, (64, 8) + SHAPE)
  cls = np.rint(np.asarray(x_s[..., 0, 0, 0]) * 10).astype(int) - 1
  if partners == "pl":
    np.testing.assert_array_equal(cls, np.broadcast_to(y_hat, cls.shape))
  else:
    assert not np.any(cls == np.asarray(y_hat)[None])
    # Every other class is drawn for every example (64 draws, 4 classes).
    for b in range(8):
      assert set(cls[:, b]) == set(range(C)) - {int(y_hat[b])}


def test_partners_cover_pool_indices():
  per_class = 3
  images = jnp.arange(C * per_class, dtype=jnp.float32).reshape(
      (C, per_class, 1)) / (C * per_class)
  pool = mi.SamplePool(images)
  x_s = mi.draw_partners(pool, jnp.zeros((4,), jnp.int32), jax.random.key(1),
                         num_samples=50, partners="pl")
  assert set(np.rint(np.asarray(x_s).ravel() * C * per_class).astype(int)) == {
      0, 1, 2}


# ---------------------------------------------------------------- MI outputs


@pytest.mark.parametrize("method", ["mi_pl", "mi_ol", "mi_combined"])
@pytest.mark.parametrize("jit", [False, True])
def test_mi_rows_sum_to_one_and_deterministic(method, jit):
  logits_fn, pool, x = _linear_logits_fn(), _class_coded_pool(), _x()
  fn = functools.partial(getattr(defenses, method), logits_fn)
  if jit:
    fn = jax.jit(fn)
  out = fn(x, pool, jax.random.key(3))
  chex.assert_shape(out.probs, (8, C))
  np.testing.assert_allclose(np.sum(out.probs, -1), 1.0, atol=1e-5)
  again = fn(x, pool, jax.random.key(3))
  np.testing.assert_array_equal(out.probs, again.probs)
  other = fn(x, pool, jax.random.key(4))
  assert not np.array_equal(out.probs, other.probs)


@pytest.mark.parametrize("partners", ["pl", "ol"])
def test_lam_one_is_the_base_model(partners):
  logits_fn, pool, x = _linear_logits_fn(), _class_coded_pool(), _x()
  out = mi.mixup_inference(logits_fn, x, pool, jax.random.key(0),
                                 lam=1.0, num_samples=7, partners=partners)
  base = jax.nn.softmax(logits_fn(x), -1)
  np.testing.assert_allclose(out.probs, base, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(np.argmax(out.probs, -1), np.argmax(base, -1))
  np.testing.assert_allclose(out.gap, 0.0, atol=1e-6)


@pytest.mark.slow  # 6-14 s; CI's slow line
def test_mi_matches_explicit_average():
  """The vmapped MI equals a plain average over the same partners."""
  logits_fn, pool, x = _linear_logits_fn(), _class_coded_pool(), _x()
  key, lam, n = jax.random.key(5), 0.6, 9
  out = defenses.mi_ol(logits_fn, x, pool, key, lam=lam, num_samples=n)
  x_s = mi.draw_partners(pool, out.base_pred, key, num_samples=n, partners="ol")
  expected = np.mean([jax.nn.softmax(logits_fn(lam * x + (1 - lam) * x_s[i]))
                      for i in range(n)], axis=0)
  np.testing.assert_allclose(out.probs, expected, rtol=1e-5, atol=1e-6)
  chunked = defenses.mi_ol(logits_fn, x, pool, key, lam=lam, num_samples=n,
                           chunk_size=4)
  np.testing.assert_allclose(chunked.probs, out.probs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [None, 1, 3, 10, 25])
def test_chunks_with_a_remainder_match_one_forward(chunk_size):
  """Any chunk size (3 copies per step with N = 10: 3 chunks + 1) gives the
  one-forward result, for MI and for the randomized baselines."""
  logits_fn, pool = _linear_logits_fn(), _class_coded_pool()
  x, key = _x(300), jax.random.key(3)
  one = defenses.mi_ol(logits_fn, x, pool, key, num_samples=10)
  out = defenses.mi_ol(logits_fn, x, pool, key, num_samples=10,
                       chunk_size=chunk_size)
  np.testing.assert_allclose(out.probs, one.probs, rtol=1e-5, atol=1e-6)
  r_one = defenses.randomized_inference(logits_fn, x, key, num_samples=7)
  r_out = defenses.randomized_inference(logits_fn, x, key, num_samples=7,
                                        chunk_size=chunk_size)
  np.testing.assert_allclose(r_out, r_one, rtol=1e-5, atol=1e-6)


def test_mi_output_names_what_it_holds():
  """`base_pred` is the base model's argmax, `pred` Mixup Inference's."""
  logits_fn, pool, x = _linear_logits_fn(), _class_coded_pool(), _x(64)
  out = defenses.mi_ol(logits_fn, x, pool, jax.random.key(1), lam=0.3,
                       num_samples=8)
  np.testing.assert_array_equal(out.base_pred,
                                np.argmax(logits_fn(x), -1))
  np.testing.assert_array_equal(out.pred, np.argmax(out.probs, -1))
  assert out.pred.dtype == jnp.int32 and out.pred.shape == (64,)


def test_mi_combined_selects_by_gap():
  logits_fn, pool, x = _linear_logits_fn(), _class_coded_pool(), _x(32)
  key = jax.random.key(2)
  k_pl, k_ol = jax.random.split(key)
  pl = defenses.mi_pl(logits_fn, x, pool, k_pl, num_samples=5)
  ol = defenses.mi_ol(logits_fn, x, pool, k_ol, num_samples=15)
  threshold = float(np.median(pl.gap))
  out = defenses.mi_combined(logits_fn, x, pool, key, threshold=threshold)
  flag = np.asarray(pl.gap) >= threshold
  assert 0 < flag.sum() < 32
  np.testing.assert_array_equal(out.detected, flag)
  np.testing.assert_allclose(out.probs[flag], ol.probs[flag], atol=1e-7)
  np.testing.assert_allclose(out.probs[~flag], pl.probs[~flag], atol=1e-7)


def test_lam_sweep_does_not_retrace():
  logits_fn, pool, x = _linear_logits_fn(), _class_coded_pool(), _x()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(lam):
    return defenses.mi_ol(logits_fn, x, pool, jax.random.key(0), lam=lam,
                          num_samples=4).probs

  for lam in (0.3, 0.5, 0.9):
    run(jnp.float32(lam))


# ---------------------------------------------------------------- bad input


def test_make_pool_missing_class_raises():
  x = np.random.default_rng(0).random((40,) + SHAPE, dtype=np.float32)
  y = np.repeat(np.array([0, 1, 3, 4]), 10)       # class 2 missing
  with pytest.raises(ValueError, match="class 2 .* missing"):
    defenses.make_pool(x, y, size=10, key=jax.random.key(0), num_classes=5)
  pool = defenses.make_pool(x, np.repeat(np.arange(4), 10), size=8,
                            key=jax.random.key(0))
  chex.assert_shape(pool.images, (4, 2) + SHAPE)


@pytest.mark.parametrize("kwargs,match", [
    ({"lam": 1.5}, "lam"),
    ({"lam": -0.1}, "lam"),
    ({"num_samples": 0}, "num_samples"),
    ({"partners": "xx"}, "partners"),
])
def test_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    mi.mixup_inference(_linear_logits_fn(), _x(), _class_coded_pool(),
                             jax.random.key(0), **kwargs)


def test_pool_mismatch_raises():
  bad_classes = mi.SamplePool(jnp.zeros((3, 2) + SHAPE))
  with pytest.raises(ValueError, match="3 classes"):
    defenses.mi_ol(_linear_logits_fn(), _x(), bad_classes, jax.random.key(0))
  bad_shape = mi.SamplePool(jnp.zeros((C, 2, 5, 5, 1)))
  with pytest.raises(ValueError, match="pool"):
    defenses.mi_ol(_linear_logits_fn(), _x(), bad_shape, jax.random.key(0))
  with pytest.raises(TypeError, match="dtype"):
    defenses.mi_ol(_linear_logits_fn(), (_x() * 255).astype(jnp.uint8),
                   _class_coded_pool(), jax.random.key(0))


# ---------------------------------------------------------------- baselines


@pytest.mark.parametrize("name", list(defenses.TRANSFORMS))
def test_transforms_keep_shape_range_and_differ(name):
  x = _x(4)
  x = jnp.pad(x, ((0, 0), (5, 5), (5, 5), (0, 0)))  # 16 x 16
  out = input_transforms.transform_batch(defenses.TRANSFORMS[name], x,
                                         jax.random.key(0), 3)
  chex.assert_shape(out, (3, 4, 16, 16, 1))
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  assert not np.allclose(out[0], out[1])


def test_transform_identities():
  image = jax.random.uniform(jax.random.key(0), (16, 16, 3))
  key = jax.random.key(1)
  np.testing.assert_allclose(
      defenses.random_rotation(image, key, max_degrees=0.0), image, atol=1e-5)
  np.testing.assert_allclose(
      defenses.random_resize_pad(image, key, min_fraction=1.0), image,
      atol=1e-5)
  np.testing.assert_allclose(
      defenses.random_crop_resize(image, key, min_fraction=1.0), image,
      atol=1e-5)
  np.testing.assert_allclose(
      defenses.gaussian_noise(image, key, sigma=0.0), image)


@pytest.mark.parametrize("jit", [False, True])
def test_rotate_direction_and_interpolation(jit):
  image = np.asarray(jax.random.uniform(jax.random.key(2), (16, 16, 2)))
  rotate = jax.jit(input_transforms.rotate) if jit else input_transforms.rotate
  # Counter-clockwise, as displayed (rows down): a quarter turn is rot90.
  np.testing.assert_allclose(rotate(image, np.pi / 2),
                             np.rot90(image, 1, axes=(0, 1)), atol=1e-5)
  # Bilinear: scipy's rotation away from the border (which the two fill
  # differently: partial pixels blend with zeros here).
  ref = scipy.ndimage.rotate(image, 17.0, reshape=False, order=1,
                             mode="constant", cval=0.0)
  out = np.asarray(rotate(image, np.deg2rad(17.0)))
  np.testing.assert_allclose(out[3:-3, 3:-3], ref[3:-3, 3:-3], atol=1e-5)
  assert not np.allclose(out, image, atol=0.05)


def test_resize_pad_leaves_zero_border():
  image = jnp.ones((20, 20, 1))
  out = input_transforms.transform_batch(
      functools.partial(defenses.random_resize_pad, min_fraction=0.5),
      image[None], jax.random.key(3), 20)
  # Each draw is an r x r block of ones (r <= 20) in a zero canvas.
  mass = np.asarray(out.sum(axis=(1, 2, 3, 4)))
  assert np.all(mass <= 400 + 1e-3) and np.any(mass < 399)


@pytest.mark.slow  # ~10 s; CI's slow line
def test_randomized_inference_rows_sum_to_one():
  logits_fn = _linear_logits_fn()
  x = _x()
  for name in defenses.TRANSFORMS:
    probs = defenses.randomized_inference(logits_fn, x, jax.random.key(0),
                                          transform=name, num_samples=6)
    np.testing.assert_allclose(np.sum(probs, -1), 1.0, atol=1e-5)
  with pytest.raises(ValueError, match="transform"):
    defenses.randomized_inference(logits_fn, x, jax.random.key(0),
                                  transform="blur")


# ---------------------------------------------------------------- attacks


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("targeted", [False, True])
def test_eot_pgd_respects_ball_and_box(norm, targeted):
  logits_fn, pool, x = _linear_logits_fn(), _class_coded_pool(), _x()
  y = jnp.arange(8, dtype=jnp.int32) % C
  defense = lambda xx, k: defenses.mi_ol(logits_fn, xx, pool, k,
                                         num_samples=4).probs
  eps = 0.1 if norm == "linf" else 0.5
  x_adv = jax.jit(lambda x, key: attacks.eot_pgd(
      defenses.probs_loss_fn(defense), x, y, key, eps=eps, step_size=eps / 4,
      steps=5, eot_samples=3, norm=norm, targeted=targeted))(x, jax.random.key(0))
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
  d = (x_adv - x).reshape(8, -1)
  size = np.abs(d).max(-1) if norm == "linf" else np.linalg.norm(d, axis=-1)
  assert np.all(size <= eps + 1e-5)
  assert np.any(size > eps / 2)


@pytest.mark.slow  # 6-14 s; CI's slow line
def test_eot_pgd_raises_the_expected_loss():
  logits_fn, pool, x = _linear_logits_fn(), _class_coded_pool(), _x()
  y = jnp.argmax(logits_fn(x), -1)
  defense = lambda xx, k: defenses.mi_ol(logits_fn, xx, pool, k, lam=0.7,
                                         num_samples=8).probs
  loss_fn = defenses.probs_loss_fn(defense)
  attack = jax.jit(lambda xx, yy, k: attacks.eot_pgd(
      loss_fn, xx, yy, k, eps=0.1, step_size=0.02, steps=10, eot_samples=2))
  x_adv = attack(x, y, jax.random.key(0))
  keys = jax.random.split(jax.random.key(9), 16)
  # The expected loss over 16 fresh draws of MI's randomness, in one program.
  mean_loss = jax.jit(lambda z: jnp.mean(jax.vmap(
      lambda k: loss_fn(z, y, k))(keys)))
  assert float(mean_loss(x_adv)) > float(mean_loss(x)) + 0.05


def test_eot_pgd_bad_eot_samples():
  with pytest.raises(ValueError, match="eot_samples"):
    attacks.eot_pgd(lambda x, y, k: jnp.sum(x, (1, 2, 3)), _x(),
                    jnp.zeros(8, jnp.int32), jax.random.key(0), eps=0.1,
                    step_size=0.01, steps=2, eot_samples=0)


def test_average_perturbation_attack_in_ball():
  logits_fn, pool, x = _linear_logits_fn(), _class_coded_pool(), _x()
  y = jnp.argmax(logits_fn(x), -1)
  x_adv = defenses.mi_average_perturbation_pgd(
      logits_fn, x, y, pool, jax.random.key(0), lam=0.5, eps=0.1,
      step_size=0.03, steps=5, num_partners=3)
  assert float(np.abs(x_adv - x).max()) <= 0.1 + 1e-6
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
  # It raises the base model's loss at the mixed inputs on average.
  assert not np.allclose(x_adv, x)


# ---------------------------------------------------------------- metrics


def test_ric_and_detection_auc():
  probs_base = np.array([[0.1, 0.8, 0.1], [0.7, 0.2, 0.1]])
  probs_mi = np.array([[0.3, 0.5, 0.2], [0.8, 0.1, 0.1]])
  y = np.array([0, 1])
  r = defenses.ric(probs_base, probs_mi, y)
  np.testing.assert_array_equal(r.raises_true, [True, False])
  np.testing.assert_array_equal(r.lowers_adv, [True, False])
  assert r.summary()["frac_both"] == 0.5
  np.testing.assert_allclose(defenses.detection_gap(probs_base, probs_mi),
                             [0.3, -0.1])
  assert defenses.detection_auc([0.0, 0.1], [0.2, 0.3]) == 1.0
  assert defenses.detection_auc([0.2, 0.3], [0.0, 0.1]) == 0.0
  with pytest.raises(ValueError, match="probs_base"):
    defenses.ric(probs_base, probs_mi[:, :2], y)
