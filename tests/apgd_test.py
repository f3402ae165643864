"""Tests of APGD, the DLR losses, Square and the AutoAttack-style ensemble."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import attacks
from jaxadv import evaluation
from jaxadv import losses

TOL = 1e-6
# Shared with masking_test.py's settings, so jitted attacks compile once.
ENSEMBLE_KW = dict(eps=0.1, apgd_steps=10, num_targets=3, fab_steps=10,
                   square_queries=300, batch_size=200, unroll=False)


def _mlp(shape, num_classes=5, seed=0):
  rng = np.random.default_rng(seed)
  d = int(np.prod(shape[1:]))
  w1 = rng.normal(size=(d, 16)).astype(np.float32) / np.sqrt(d)
  w2 = rng.normal(size=(16, num_classes)).astype(np.float32)
  return lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ w1) @ w2


def _inputs(shape, num_classes=5, seed=1):
  rng = np.random.default_rng(seed)
  return (rng.uniform(size=shape).astype(np.float32),
          rng.integers(0, num_classes, shape[0]).astype(np.int32))


def _norms(d, norm):
  flat = np.asarray(d).reshape(d.shape[0], -1)
  return (np.abs(flat).max(axis=1) if norm == "linf" else
          np.linalg.norm(flat, axis=1))


def test_checkpoint_schedule():
  # p = 0, .22, .41, .57, .70, .80, .87, .93, .99 (Croce & Hein, 2020).
  assert attacks.apgd_checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
  assert attacks.apgd_checkpoints(1000) == [0, 220, 410, 570, 700, 800, 870,
                                            930, 990]
  assert attacks.apgd_checkpoints(10) == [0, 3, 5, 6, 7, 8, 9, 10]
  with pytest.raises(ValueError, match="`steps` must be >= 0"):
    attacks.apgd_checkpoints(-1)


def test_dlr_losses_match_a_hand_computation():
  logits = np.array([[1.0, 4.0, 2.0, 3.0], [5.0, 0.0, 1.0, 2.0]], np.float32)
  y = np.array([1, 2])
  # Row 0: y is top, -(4 - 3) / (4 - 2); row 1: -(1 - 5) / (5 - 1).
  np.testing.assert_allclose(losses.dlr(logits, y), [-0.5, 1.0], rtol=1e-6)
  # Targeted: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2).
  np.testing.assert_allclose(
      losses.dlr_targeted(logits, y, np.array([3, 0])),
      [-1.0 / 2.5, 4.0 / 4.5], rtol=1e-6)
  # Invariant to shifting and scaling the logits.
  np.testing.assert_allclose(losses.dlr(3.0 * logits + 7.0, y),
                             losses.dlr(logits, y), rtol=1e-5)
  assert losses.get_loss("dlr") is losses.dlr
  with pytest.raises(ValueError, match="at least 3 classes"):
    losses.dlr(logits[:, :2], np.array([0, 1]))


@pytest.mark.parametrize("norm, eps", [
    ("linf", 0.1), pytest.param("l2", 0.8, marks=pytest.mark.slow)])
def test_apgd_in_ball_and_box(norm, eps):
  shape = (6, 6, 6, 1)
  x, y = _inputs(shape)
  logits_fn = _mlp(shape)

  t = (y + 1) % 5

  @jax.jit
  def run(x, y, key, eps):
    x_adv = attacks.apgd_logits(logits_fn, x, y, key, eps=eps, steps=6,
                                norm=norm, loss="dlr_targeted", restarts=2,
                                target=t, unroll=False)
    dlr_t = lambda v: losses.dlr_targeted(logits_fn(v), y, t).mean()
    return x_adv, dlr_t(x), dlr_t(x_adv)

  x_adv, before, after = run(x, y, jax.random.key(3), eps)
  x_adv = np.asarray(x_adv)
  assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
  assert np.all(_norms(x_adv - x, norm) <= eps + TOL)
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  assert float(after) > float(before)


@pytest.mark.slow
def test_apgd_unjitted_matches_jitted_and_raises_loss():
  shape = (6, 6, 6, 1)
  x, y = _inputs(shape)
  loss_fn = losses.make_loss_fn(_mlp(shape), "ce")
  one = lambda k, unroll: attacks.apgd(loss_fn, x, y, k, eps=0.1, steps=2,
                                       unroll=unroll)
  eager = one(jax.random.key(4), True)
  np.testing.assert_allclose(eager, jax.jit(one, static_argnums=1)(
      jax.random.key(4), False), atol=1e-5)
  assert float(loss_fn(eager, y).mean()) > float(loss_fn(x, y).mean())


def test_apgd_rejects_bad_options():
  x, y = np.full((2, 4, 4, 1), 0.5, np.float32), np.array([0, 1])
  logits_fn = lambda v: v.reshape(2, -1)[:, :5]
  with pytest.raises(ValueError, match="`target` must be given"):
    attacks.apgd_logits(logits_fn, x, y, jax.random.key(0), eps=0.1,
                        steps=2, loss="dlr_targeted")
  with pytest.raises(ValueError, match="`rho` must lie in"):
    attacks.apgd(losses.make_loss_fn(logits_fn), x, y, jax.random.key(0),
                 eps=0.1, steps=2, rho=0.0)
  with pytest.raises(ValueError, match="`eps` must be >= 0"):
    attacks.apgd(losses.make_loss_fn(logits_fn), x, y, jax.random.key(0),
                 eps=-0.1, steps=2)


def test_apgd_beats_or_ties_pgd_with_the_same_budget(mnist_mlp):
  """APGD-CE-10 vs PGD-10 (tuned step eps / 4): 10 gradients each."""
  apply, variables, x, y = mnist_mlp
  x, y = x[:200], y[:200]
  eps = 0.05
  clean = evaluation.accuracy(apply, variables, x, y)
  apgd_acc = evaluation.evaluate_robustness(
      apply, variables, x, y, jax.random.key(0), attack_names=("apgd-ce",),
      **dict(ENSEMBLE_KW, eps=eps))["robust_acc"]
  pgd_acc = evaluation.robust_accuracy(
      apply, variables, x, y, jax.random.key(0), attack="pgd", eps=eps,
      step_size=eps / 4, steps=10, batch_size=200, unroll=False)
  assert clean > 0.85
  assert apgd_acc < clean - 0.3
  assert apgd_acc <= pgd_acc + 1 / 200, (apgd_acc, pgd_acc)


def test_square_p_schedule():
  i = np.array([0, 10, 11, 50, 51, 200, 201, 501, 1001, 2001, 4001, 6001,
                8001, 9999])
  p = attacks.square_p_schedule(i, 10000, 0.8)
  np.testing.assert_allclose(p, 0.8 / 2.0 ** np.array(
      [0, 0, 1, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9, 9]))
  # Rescaled to the budget: 1% of 500 iterations = 5 -> p_init / 4.
  assert attacks.square_p_schedule(np.array([5]), 500, 0.8)[0] == 0.2


def test_square_uses_no_gradient_stays_in_ball_and_fools(mnist_mlp):
  apply, variables, x, y = mnist_mlp
  x, y = jnp.asarray(x[:100]), jnp.asarray(y[:100])

  @jax.custom_jvp
  def no_grad(v):
    return v

  @no_grad.defjvp
  def _no_grad_jvp(primals, tangents):
    raise AssertionError("a gradient was taken")

  logits_fn = lambda v: apply(variables, no_grad(v))
  with pytest.raises(AssertionError, match="a gradient was taken"):
    jax.grad(lambda v: logits_fn(v).sum())(x)
  eps = 0.1
  x_adv = jax.jit(lambda x, y, k, e: attacks.square(
      logits_fn, x, y, k, eps=e, queries=300))(x, y, jax.random.key(0), eps)
  assert x_adv.shape == x.shape
  assert np.all(_norms(x_adv - x, "linf") <= eps + TOL)
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
  acc = lambda v: float(jnp.mean(jnp.argmax(logits_fn(v), -1) == y))
  assert acc(x) > 0.85 and acc(x_adv) < acc(x) - 0.3, (acc(x), acc(x_adv))


def test_evaluate_robustness_attacks_only_survivors_and_is_seeded(mnist_mlp):
  apply, variables, x, y = mnist_mlp
  x, y = x[:200], y[:200].copy()
  y[:4] = (y[:4] + 1) % 10  # four examples wrong on purpose
  res = evaluation.evaluate_robustness(apply, variables, x, y,
                                       jax.random.key(5), **ENSEMBLE_KW)
  n = len(x)
  clean_ok = evaluation.predict(apply, variables, x) == y
  assert res["clean_acc"] == pytest.approx(clean_ok.mean())
  assert np.all(res["fooled_by"][~clean_ok] == 0)
  assert not res["robust"][~clean_ok].any()
  accs = [res["clean_acc"]] + [res["per_attack"][a] for a in
                               ("apgd-ce", "apgd-t", "fab-t", "square")]
  assert all(b <= a for a, b in zip(accs, accs[1:]))
  assert accs[1] < accs[0] - 0.3  # APGD-CE breaks a natural model
  # Each attack ran on exactly the examples the ones before left standing.
  assert res["attacked"]["apgd-ce"] == clean_ok.sum()
  survivors_ce = round(accs[1] * n)
  assert survivors_ce <= res["attacked"]["apgd-t"] <= 3 * survivors_ce
  survivors_t = round(accs[2] * n)
  assert survivors_t <= res["attacked"]["fab-t"] <= 3 * survivors_t
  assert res["attacked"]["square"] == round(accs[3] * n)
  for a, name in enumerate(res["attacks"]):
    assert (res["fooled_by"] == a + 1).sum() == round(
        (accs[a] - accs[a + 1]) * n)
  assert res["robust_acc"] == pytest.approx(res["robust"].mean())
  again = evaluation.evaluate_robustness(apply, variables, x, y,
                                         jax.random.key(5), **ENSEMBLE_KW)
  np.testing.assert_array_equal(again["fooled_by"], res["fooled_by"])
  assert again["per_attack"] == res["per_attack"]


def test_fitted_batches_give_the_same_verdicts_for_a_deterministic_attack(
    mnist_mlp):
  # FAB-T from the clean image draws nothing at random, so how the survivors
  # are batched must not change any verdict.
  apply, variables, x, y = mnist_mlp
  x, y = x[:150], y[:150]
  kw = dict(eps=0.05, attack_names=("fab-t",), num_targets=2, fab_steps=5,
            batch_size=64)
  fitted = evaluation.evaluate_robustness(apply, variables, x, y,
                                          jax.random.key(0), **kw)
  fixed = evaluation.evaluate_robustness(apply, variables, x, y,
                                         jax.random.key(0), fit_batches=False,
                                         **kw)
  np.testing.assert_array_equal(fitted["fooled_by"], fixed["fooled_by"])
  assert 0.0 < fitted["robust_acc"] < fitted["clean_acc"]


def test_evaluate_robustness_rejects_bad_options(mnist_mlp):
  apply, variables, x, y = mnist_mlp
  with pytest.raises(ValueError, match="`attack_names` must be one of"):
    evaluation.evaluate_robustness(apply, variables, x, y, jax.random.key(0),
                                   eps=0.1, attack_names=("deepfool",))
  with pytest.raises(ValueError, match="L-inf only"):
    evaluation.evaluate_robustness(apply, variables, x, y, jax.random.key(0),
                                   eps=0.1, norm="l2")
