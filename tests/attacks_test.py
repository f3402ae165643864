"""Unit tests of the gradient attacks on tiny models and random tensors."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import attacks
from jaxadv import losses
from jaxadv import loops
from jaxadv import projections

TOL = 1e-6
SHAPES = [(4, 6, 6, 1), (3, 5, 5, 3), (5, 12)]


def _linear(shape, num_classes=5, seed=0):
  """A linear classifier over flattened inputs: logits = x W + b."""
  d = int(np.prod(shape[1:]))
  kw, kb = jax.random.split(jax.random.key(seed))
  w = jax.random.normal(kw, (d, num_classes))
  b = jax.random.normal(kb, (num_classes,))
  logits_fn = lambda x: x.reshape(x.shape[0], -1) @ w + b
  return logits_fn, w, b


def _mlp(shape, num_classes=5, seed=0):
  d = int(np.prod(shape[1:]))
  k1, k2 = jax.random.split(jax.random.key(seed))
  w1 = jax.random.normal(k1, (d, 16)) / np.sqrt(d)
  w2 = jax.random.normal(k2, (16, num_classes))
  return lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ w1) @ w2


def _inputs(shape, num_classes=5, seed=1):
  kx, ky = jax.random.split(jax.random.key(seed))
  x = jax.random.uniform(kx, shape)
  y = jax.random.randint(ky, (shape[0],), 0, num_classes)
  return x, y


def _norms(d, norm):
  flat = np.asarray(d).reshape(d.shape[0], -1)
  if norm == "linf":
    return np.abs(flat).max(axis=1)
  return np.linalg.norm(flat, axis=1)


def _run(name, loss_fn, x, y, key, eps, norm, jit, targeted=False):
  def f(x, y, key, eps):
    if name == "fgm":
      return attacks.fgm(loss_fn, x, y, eps=eps, norm=norm, targeted=targeted)
    if name == "fgsm_rs":
      return attacks.fgsm_rs(loss_fn, x, y, key, eps=eps, norm=norm,
                             targeted=targeted)
    if name == "bim":
      return attacks.bim(loss_fn, x, y, eps=eps, step_size=eps / 4, steps=6,
                         norm=norm, targeted=targeted)
    return attacks.pgd(loss_fn, x, y, key, eps=eps, step_size=eps / 4,
                       steps=6, norm=norm, restarts=2, targeted=targeted)
  return (jax.jit(f) if jit else f)(x, y, key, eps)


@pytest.mark.parametrize("jit", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", ["fgm", "fgsm_rs", "bim", "pgd"])
def test_ball_and_box(name, norm, shape, jit):
  x, y = _inputs(shape)
  loss_fn = losses.make_loss_fn(_mlp(shape), "ce")
  eps = 0.1 if norm == "linf" else 0.8
  x_adv = _run(name, loss_fn, x, y, jax.random.key(3), eps, norm, jit)
  assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
  assert np.all(_norms(x_adv - x, norm) <= eps + TOL)
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", ["fgm", "fgsm_rs", "bim", "pgd"])
def test_untargeted_raises_loss(name, norm):
  shape = (16, 8, 8, 1)
  x, y = _inputs(shape)
  x = 0.25 + 0.5 * x  # away from the box so the box does not block steps
  loss_fn = losses.make_loss_fn(_linear(shape)[0], "ce")
  eps = 0.05 if norm == "linf" else 0.3
  x_adv = _run(name, loss_fn, x, y, jax.random.key(3), eps, norm, jit=True)
  assert np.all(np.asarray(loss_fn(x_adv, y)) > np.asarray(loss_fn(x, y)))


@pytest.mark.parametrize("loss", ["ce", "cw"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_targeted_moves_toward_target(norm, loss):
  shape = (32, 8, 8, 1)
  x, _ = _inputs(shape)
  logits_fn = _linear(shape)[0]
  target = (jnp.argmax(logits_fn(x), -1) + 1) % 5
  loss_fn = losses.make_loss_fn(logits_fn, loss)
  eps = 0.3 if norm == "linf" else 3.0
  x_adv = attacks.pgd(loss_fn, x, target, jax.random.key(0), eps=eps,
                      step_size=eps / 5, steps=20, norm=norm, targeted=True)
  before = np.asarray(loss_fn(x, target))
  after = np.asarray(loss_fn(x_adv, target))
  assert np.all(after < before)
  # With this budget a linear model is pushed to the target almost always.
  assert np.mean(np.asarray(jnp.argmax(logits_fn(x_adv), -1)) ==
                 np.asarray(target)) > 0.9


@pytest.mark.parametrize("jit", [True, False])
def test_fgsm_linear_model_analytic(jit):
  """For logits = xW + b, grad_x CE = W (softmax - onehot): FGSM is exact."""
  shape = (6, 4, 4, 1)
  x, y = _inputs(shape)
  x = 0.3 + 0.4 * x
  logits_fn, w, _ = _linear(shape)
  loss_fn = losses.make_loss_fn(logits_fn, "ce")
  eps = 0.1
  f = lambda x, y: attacks.fgsm(loss_fn, x, y, eps=eps)
  x_adv = (jax.jit(f) if jit else f)(x, y)
  p = jax.nn.softmax(logits_fn(x))
  grad = (p - jax.nn.one_hot(y, 5)) @ w.T
  expected = jnp.clip(x + eps * jnp.sign(grad).reshape(shape), 0, 1)
  np.testing.assert_allclose(x_adv, expected, atol=1e-6)
  # Targeted FGSM descends the target's loss: x - eps * sign(grad).
  t = (y + 1) % 5
  x_t = attacks.fgsm(loss_fn, x, t, eps=eps, targeted=True)
  grad_t = (p - jax.nn.one_hot(t, 5)) @ w.T
  np.testing.assert_allclose(
      x_t, jnp.clip(x - eps * jnp.sign(grad_t).reshape(shape), 0, 1),
      atol=1e-6)


def test_fgm_l2_analytic():
  shape = (4, 10)
  x, y = _inputs(shape)
  x = 0.3 + 0.4 * x
  logits_fn, w, _ = _linear(shape)
  eps = 0.2
  x_adv = attacks.fgm(losses.make_loss_fn(logits_fn), x, y, eps=eps, norm="l2")
  g = (jax.nn.softmax(logits_fn(x)) - jax.nn.one_hot(y, 5)) @ w.T
  expected = x + eps * g / jnp.linalg.norm(g, axis=1, keepdims=True)
  np.testing.assert_allclose(x_adv, expected, atol=1e-5)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_restarts_never_lower_loss(norm):
  shape = (32, 6, 6, 1)
  x, y = _inputs(shape)
  loss_fn = losses.make_loss_fn(_mlp(shape), "ce")
  kw = dict(eps=0.1 if norm == "linf" else 0.5, step_size=0.02, steps=3,
            norm=norm)
  key = jax.random.key(5)
  one = attacks.pgd(loss_fn, x, y, key, restarts=1, **kw)
  many = attacks.pgd(loss_fn, x, y, key, restarts=6, **kw)
  l1, lm = np.asarray(loss_fn(one, y)), np.asarray(loss_fn(many, y))
  assert np.all(lm >= l1 - 1e-6)
  assert np.any(lm > l1 + 1e-6)  # some example found a better restart


def test_same_key_same_output_and_keys_matter():
  shape = (8, 6, 6, 1)
  x, y = _inputs(shape)
  loss_fn = losses.make_loss_fn(_mlp(shape))
  kw = dict(eps=0.1, step_size=0.02, steps=3)
  a = attacks.pgd(loss_fn, x, y, jax.random.key(1), **kw)
  b = attacks.pgd(loss_fn, x, y, jax.random.key(1), **kw)
  c = attacks.pgd(loss_fn, x, y, jax.random.key(2), **kw)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_eps_zero_is_identity():
  shape = (4, 6, 6, 1)
  x, y = _inputs(shape)
  loss_fn = losses.make_loss_fn(_mlp(shape))
  for norm in ("linf", "l2"):
    x_adv = attacks.pgd(loss_fn, x, y, jax.random.key(0), eps=0.0,
                        step_size=0.1, steps=3, norm=norm)
    np.testing.assert_allclose(x_adv, x, atol=1e-7)


def test_eps_sweep_does_not_retrace():
  shape = (4, 6, 6, 1)
  x, y = _inputs(shape)
  loss_fn = losses.make_loss_fn(_mlp(shape))

  @jax.jit
  @chex.assert_max_traces(n=1)
  def attack(x, y, key, eps, step_size):
    return attacks.pgd(loss_fn, x, y, key, eps=eps, step_size=step_size,
                       steps=2)

  for eps in (0.05, 0.1, 0.2, 0.3):
    x_adv = attack(x, y, jax.random.key(0), eps, eps / 4)
    assert _norms(x_adv - x, "linf").max() <= eps + TOL


def test_per_example_eps():
  shape = (3, 6, 6, 1)
  x, y = _inputs(shape)
  eps = jnp.array([0.0, 0.05, 0.2])
  x_adv = attacks.pgd(losses.make_loss_fn(_mlp(shape)), x, y,
                      jax.random.key(0), eps=eps, step_size=0.05, steps=3)
  assert np.all(_norms(x_adv - x, "linf") <= np.asarray(eps) + TOL)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_loop_forms_agree(norm):
  shape = (8, 6, 6, 1)
  x, y = _inputs(shape)
  loss_fn = losses.make_loss_fn(_mlp(shape))
  kw = dict(eps=0.1, step_size=0.03, steps=5, norm=norm)
  a = attacks.pgd(loss_fn, x, y, jax.random.key(0), unroll=True, **kw)
  b = attacks.pgd(loss_fn, x, y, jax.random.key(0), unroll=False, **kw)
  np.testing.assert_allclose(a, b, atol=1e-6)


def test_default_unroll_per_backend():
  assert loops.default_unroll("cpu") is True
  assert loops.default_unroll("gpu") is False
  assert loops.default_unroll("tpu") is False
  assert loops.default_unroll() is (jax.default_backend() == "cpu")


@pytest.mark.parametrize("unroll", [True, False])
def test_run_loop_is_fori_loop(unroll):
  body = lambda i, c: c * 2.0 + i
  out = loops.run_loop(4, body, jnp.ones(()), unroll=unroll)
  assert float(out) == float(jax.lax.fori_loop(0, 4, body, jnp.ones(())))
  assert float(loops.run_loop(0, body, jnp.ones(()), unroll=unroll)) == 1.0
  text = jax.jit(lambda c: loops.run_loop(4, body, c, unroll=unroll)).lower(
      jnp.ones(())).as_text()
  assert ("while" in text) is (not unroll)


def test_run_loop_rejects_bad_unroll():
  with pytest.raises(TypeError, match="unroll"):
    loops.run_loop(2, lambda i, c: c, jnp.zeros(()), unroll="fori")


@pytest.mark.parametrize("name", sorted(attacks.ATTACKS))
def test_registry_has_one_signature(name):
  shape = (4, 6, 6, 1)
  x, y = _inputs(shape)
  loss_fn = losses.make_loss_fn(_mlp(shape))
  kw = dict(eps=0.1)
  if name in ("bim", "pgd"):
    kw.update(step_size=0.03, steps=2)
  elif name == "apgd":
    kw.update(steps=3)
  elif name == "fgsm_rs":
    kw.update(step_size=0.1)
  attack = attacks.get_attack(name)
  x_adv = attack(loss_fn, x, y, jax.random.key(0), **kw)
  assert x_adv.shape == x.shape
  assert np.all(_norms(x_adv - x, "linf") <= 0.1 + TOL)
  with pytest.raises(ValueError, match="name"):
    attacks.get_attack("cw_l2")


@pytest.mark.parametrize("name", ["fgsm", "fgm", "fgsm_rs", "bim", "pgd",
                                  "apgd", "eot_pgd", "apgd_logits", "fab",
                                  "square"])
def test_every_attack_takes_fn_x_y_key_then_keywords(name):
  """The uniform API: `partial(attack, **budget)(fn, x, y, key)`."""
  shape = (4, 6, 6, 1)
  x, y = _inputs(shape)
  logits_fn = _mlp(shape)
  loss_fn = losses.make_loss_fn(logits_fn)
  fn = {"eot_pgd": lambda v, t, k: loss_fn(v, t), "apgd_logits": logits_fn,
        "fab": logits_fn, "square": logits_fn}.get(name, loss_fn)
  budget = {"apgd": dict(steps=3), "apgd_logits": dict(steps=3),
            "fab": dict(steps=3), "square": dict(queries=5),
            "bim": dict(steps=3), "pgd": dict(steps=3),
            "eot_pgd": dict(steps=3)}.get(name, {})
  attack = functools.partial(getattr(attacks, name), eps=0.1, **budget)
  x_adv = attack(fn, x, y, jax.random.key(0))
  assert x_adv.shape == x.shape
  assert np.all(_norms(x_adv - x, "linf") <= 0.1 + TOL)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_default_step_sizes(norm):
  shape = (4, 6, 6, 1)
  x, y = _inputs(shape)
  loss_fn = losses.make_loss_fn(_mlp(shape))
  key = jax.random.key(0)
  kw = dict(eps=0.2, steps=4, norm=norm)
  np.testing.assert_array_equal(
      attacks.pgd(loss_fn, x, y, key, **kw),
      attacks.pgd(loss_fn, x, y, key, step_size=2.5 * 0.2 / 4, **kw))
  np.testing.assert_array_equal(
      attacks.bim(loss_fn, x, y, **kw),
      attacks.bim(loss_fn, x, y, step_size=0.2 / 4, **kw))
  np.testing.assert_array_equal(
      attacks.fgsm_rs(loss_fn, x, y, key, eps=0.2, norm=norm),
      attacks.fgsm_rs(loss_fn, x, y, key, eps=0.2, step_size=1.25 * 0.2,
                      norm=norm))


def test_cw_margin():
  logits = jnp.array([[1.0, 3.0, 2.0], [5.0, 1.0, 0.0]])
  np.testing.assert_allclose(losses.cw_margin(logits, jnp.array([0, 0])),
                             [2.0, -4.0])


def test_custom_loss_is_used():
  """A user loss that rewards pushing pixel 0 up: PGD must follow it."""
  shape = (4, 5)
  x = jnp.full(shape, 0.5)
  y = jnp.zeros(4, jnp.int32)
  loss_fn = lambda x, y: x[:, 0]
  x_adv = attacks.pgd(loss_fn, x, y, jax.random.key(0), eps=0.1,
                      step_size=0.05, steps=4)
  np.testing.assert_allclose(x_adv[:, 0], 0.6, atol=1e-6)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(x=np.full((2, 4), 200.0, np.float32)), ValueError, "divide by 255"),
    (dict(x=np.full((2, 4), 3, np.int32)), TypeError, "floating-point"),
    (dict(x=np.array([[np.nan] * 4] * 2, np.float32)), ValueError, "NaN"),
    (dict(x=np.zeros((4,), np.float32)), ValueError, "rank"),
    (dict(y=np.array([0, 9])), ValueError, r"labels must lie in \[0, 5\)"),
    (dict(y=np.array([0, -1])), ValueError, "labels must lie"),
    (dict(y=np.array([0, 1, 2])), ValueError, "shape"),
    (dict(eps=-0.1), ValueError, "`eps` must be >= 0"),
    (dict(step_size=-1.0), ValueError, "`step_size` must be >= 0"),
    (dict(steps=-2), ValueError, "`steps` must be >= 0"),
    (dict(restarts=0), ValueError, "`restarts` must be >= 1"),
    (dict(norm="l1"), ValueError, "`norm` must be one of"),
])
def test_bad_input_errors(kwargs, exc, match):
  shape = (2, 4)
  args = dict(x=np.full(shape, 0.5, np.float32), y=np.array([0, 1]), eps=0.1,
              step_size=0.01, steps=2, restarts=1, norm="linf")
  args.update(kwargs)
  loss_fn = losses.make_loss_fn(_linear(shape)[0])
  with pytest.raises(exc, match=match):
    attacks.pgd(loss_fn, args["x"], args["y"], jax.random.key(0),
                eps=args["eps"], step_size=args["step_size"],
                steps=args["steps"], restarts=args["restarts"],
                norm=args["norm"])


def test_apply_delta_meets_a_strict_linf_check():
  """float32 `x + eps` can overshoot the ball by one ulp; apply_delta not."""
  x = jax.random.uniform(jax.random.key(0), (64, 28, 28, 1), minval=0.3,
                         maxval=0.7)
  eps = jnp.float32(0.3)
  overshoots = 0
  for sign in (1.0, -1.0):
    delta = sign * eps * jnp.ones_like(x)
    naive = x + delta
    overshoots += int(jnp.sum(jnp.abs(naive - x) > eps))  # the pitfall
    x_adv = projections.apply_delta(x, delta, eps, "linf")
    assert bool(jnp.all(jnp.abs(x_adv - x) <= eps))
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    np.testing.assert_allclose(x_adv, naive, atol=1e-6)
  assert overshoots > 0  # float32 x + eps does leave the ball


@pytest.mark.parametrize("name", ["fgsm", "fgsm_rs", "bim", "pgd", "apgd",
                                  "eot_pgd", "square"])
def test_attacks_meet_a_strict_linf_check(name):
  shape = (64, 28, 28, 1)
  x, y = _inputs(shape)
  logits_fn = _mlp(shape)
  loss_fn = losses.make_loss_fn(logits_fn)
  fn = {"eot_pgd": lambda v, t, k: loss_fn(v, t),
        "square": logits_fn}.get(name, loss_fn)
  budget = {"bim": dict(steps=4), "pgd": dict(steps=4),
            "apgd": dict(steps=4), "eot_pgd": dict(steps=4),
            "square": dict(queries=10)}.get(name, {})
  eps = np.float32(0.3)
  x_adv = getattr(attacks, name)(fn, x, y, jax.random.key(0), eps=eps,
                                 **budget)
  assert bool(jnp.all(jnp.abs(x_adv - x) <= eps))
