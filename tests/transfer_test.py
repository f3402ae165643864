"""Tests of jaxadv.transfer and the LinearSoftmax / scikit-learn bridge."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import LinearSVC

from jaxadv import data
from jaxadv import losses
from jaxadv import models
from jaxadv import transfer


@functools.lru_cache(maxsize=None)
def _mnist(split, limit):
  return data.load("mnist", split, limit=limit)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("kind", ["lr", "svm"])
def test_jax_linear_forward_equals_sklearn(kind):
  x, y = _mnist("train", 600)
  xt, _ = _mnist("test", 300)
  flat = lambda a: a.reshape(len(a), -1)
  clf = (LogisticRegression(C=0.1, max_iter=50) if kind == "lr"
         else LinearSVC(C=0.01, max_iter=2000)).fit(flat(x), y)
  variables = models.sklearn_variables(clf.coef_, clf.intercept_)
  scores = np.asarray(models.LinearSoftmax().apply(variables, xt))
  ref = clf.decision_function(flat(xt))
  np.testing.assert_allclose(scores, ref, atol=1e-4, rtol=1e-4)
  np.testing.assert_array_equal(scores.argmax(-1), clf.predict(flat(xt)))
  # A wrong bridge (the untransposed kernel, the bias dropped) would fail.
  assert np.abs(scores - ref).max() < 1e-3 < np.abs(ref).mean()


def test_sklearn_variables_rejects_bad_shapes():
  with pytest.raises(ValueError, match="coef"):
    models.sklearn_variables(np.zeros((1, 784)), np.zeros(1))
  with pytest.raises(ValueError, match="intercept"):
    models.sklearn_variables(np.zeros((10, 784)), np.zeros(3))


def test_substitute_agrees_with_knn_source():
  x, y = _mnist("train", 1800)
  knn = KNeighborsClassifier(3).fit(x[:1000].reshape(1000, -1), y[:1000])
  pool = x[1000:1800]
  labels = knn.predict(pool.reshape(len(pool), -1)).astype(np.int32)
  model = models.get_model("fast_at_mnist")
  variables, agreement = transfer.fit_substitute(
      model, jax.random.key(0), pool, labels, epochs=6.0,
      learning_rate=3e-3, progress=False)
  assert agreement > 0.85
  # It imitates the source, not the truth: kNN's labels differ from the true
  # ones on some points, and the substitute is closer to kNN's.
  preds = np.asarray(jnp.argmax(model.apply(variables, pool), -1))
  assert np.mean(preds == labels) == pytest.approx(agreement)
  assert agreement > np.mean(preds == y[1000:1800])


def test_majority_vote_and_ties():
  preds = np.array([[0, 1, 2, 3],
                    [0, 2, 2, 1],
                    [1, 2, 0, 2]])
  np.testing.assert_array_equal(transfer.majority_vote(preds, 4),
                                [0, 2, 2, 1])  # last column: 3-way tie -> 1
  with pytest.raises(ValueError, match="preds"):
    transfer.majority_vote(preds, 3)
  with pytest.raises(ValueError, match="preds"):
    transfer.majority_vote(preds[0], 4)


def test_misclassification_matrix_values_and_keys():
  y = np.array([0, 1, 2, 3])
  preds = {"a": {"a": np.array([1, 1, 2, 3]), "b": np.array([1, 0, 0, 0])},
           "b": {"a": y.copy(), "b": np.array([3, 2, 1, 0])}}
  m = transfer.misclassification_matrix(preds, y)
  assert list(m) == ["a", "b"] and all(list(r) == ["a", "b"] for r in m.values())
  assert m == {"a": {"a": 0.25, "b": 1.0}, "b": {"a": 0.0, "b": 1.0}}
  assert all(0.0 <= v <= 1.0 for r in m.values() for v in r.values())
  with pytest.raises(ValueError, match="targets"):
    transfer.misclassification_matrix({"a": {"a": y}, "b": {"c": y}}, y)
  with pytest.raises(ValueError, match="shape"):
    transfer.misclassification_matrix({"a": {"a": y[:2]}}, y)


@functools.lru_cache(maxsize=None)
def _two_nets():
  nets = []
  for name, seed in (("fast_at_mnist", 0), ("linear_softmax", 1)):
    model = models.get_model(name)
    variables = models.init_model(model, jax.random.key(seed), (1, 28, 28, 1))
    if name == "linear_softmax":  # zero init: give it a real gradient
      variables = jax.tree.map(
          lambda v: 0.05 * jax.random.normal(jax.random.key(2), v.shape),
          variables)
    nets.append((model.apply, variables))
  return tuple(nets)


def test_ensemble_logits_are_the_weighted_mean():
  (fa, va), (fb, vb) = _two_nets()
  x, _ = _mnist("test", 8)
  la, lb = fa(va, x), fb(vb, x)
  fn = transfer.ensemble_logits_fn([lambda z: fa(va, z), lambda z: fb(vb, z)],
                                   weights=[3.0, 1.0])
  np.testing.assert_allclose(fn(x), 0.75 * la + 0.25 * lb, atol=1e-5)
  with pytest.raises(ValueError, match="weights"):
    transfer.ensemble_logits_fn([lambda z: z], weights=[1.0, 2.0])
  with pytest.raises(ValueError, match="logits_fns"):
    transfer.ensemble_logits_fn([])


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_ensemble_attack_stays_in_ball_and_box_and_raises_loss(attack):
  nets = _two_nets()
  x, y = _mnist("test", 40)
  eps = 0.1
  x_adv = transfer.craft([f for f, _ in nets], [v for _, v in nets], x, y,
                         jax.random.key(0), attack=attack, eps=eps,
                         step_size=0.04, steps=3, batch_size=32)
  assert x_adv.shape == x.shape and x_adv.dtype == np.float32
  assert np.abs(x_adv - x).max() <= eps + 1e-6
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  loss_fn = losses.make_loss_fn(transfer.ensemble_logits_fn(
      [lambda z, f=f, v=v: f(v, z) for f, v in nets]))
  assert np.mean(loss_fn(x_adv, y)) > np.mean(loss_fn(x, y)) + 0.01


def test_craft_rejects_bad_arguments():
  nets = _two_nets()
  x, y = _mnist("test", 4)
  with pytest.raises(ValueError, match="same length"):
    transfer.craft([nets[0][0]], [], x, y, jax.random.key(0), eps=0.1)
  with pytest.raises(ValueError, match="attack"):
    transfer.craft([nets[0][0]], [nets[0][1]], x, y, jax.random.key(0),
                   attack="cw", eps=0.1)
  with pytest.raises(ValueError, match="eps"):
    transfer.craft([nets[0][0]], [nets[0][1]], x, y, jax.random.key(0),
                   attack="fgsm", eps=-0.1)
