"""`evaluation.benchmark`, `as_apply_fn`, the "rand" version and EOT-APGD.

A naturally trained MLP on real MNIST (the session fixture `mnist_mlp`);
tiny attack budgets, so each test takes seconds.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import attacks
from jaxadv import evaluation
from jaxadv import models

EPS = 0.1
TINY = dict(apgd_steps=5, num_targets=2, fab_steps=3, square_queries=20)


def _noisy(apply, sigma=0.05):
  """A randomized model: Gaussian noise on the input, `(v, x, key)`."""
  return lambda v, x, key: apply(
      v, jnp.clip(x + sigma * jax.random.normal(key, x.shape), 0.0, 1.0))


@pytest.mark.slow
@pytest.mark.parametrize("jit", [False, True])
def test_eot_apgd_on_a_deterministic_model_equals_apgd(mnist_mlp, jit):
  apply, v, x, y = mnist_mlp
  logits_fn = lambda z: apply(v, z)
  x, y = jnp.asarray(x[:32]), jnp.asarray(y[:32])
  plain = functools.partial(attacks.apgd_logits, logits_fn, eps=EPS, steps=8)
  eot = functools.partial(attacks.apgd_logits, lambda z, k: logits_fn(z),
                          eps=EPS, steps=8, eot_samples=4)
  if jit:
    plain, eot = jax.jit(plain), jax.jit(eot)
  key = jax.random.key(0)
  np.testing.assert_allclose(eot(x, y, key), plain(x, y, key), atol=1e-6)


@pytest.mark.slow
def test_eot_apgd_stays_in_ball_and_box(mnist_mlp):
  apply, v, x, y = mnist_mlp
  x_adv = attacks.apgd_logits(lambda z, k: _noisy(apply)(v, z, k),
                              jnp.asarray(x[:16]), jnp.asarray(y[:16]),
                              jax.random.key(1), eps=EPS, steps=5,
                              loss="dlr", eot_samples=3)
  assert float(jnp.abs(x_adv - x[:16]).max()) <= EPS + 1e-6
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
  with pytest.raises(ValueError, match="eot_samples"):
    attacks.apgd_logits(lambda z, k: apply(v, z), jnp.asarray(x[:4]),
                        jnp.asarray(y[:4]), jax.random.key(1), eps=EPS,
                        steps=2, eot_samples=0)


@pytest.mark.slow
def test_rand_version_chains_apgd_ce_and_dlr_with_eot(mnist_mlp):
  apply, v, x, y = mnist_mlp
  model = _noisy(apply)
  kw = dict(eps=EPS, apgd_steps=5, eot_samples=4, batch_size=100,
            return_adv=True)
  r = evaluation.evaluate_randomized(model, v, x[:100], y[:100],
                                     jax.random.key(2), **kw)
  assert r["attacks"] == ["apgd-ce", "apgd-dlr"] == list(evaluation.RAND)
  assert r["eot_samples"] == 4
  assert 0.5 < r["clean_acc"] <= 1.0
  assert (r["robust_acc"] <= r["per_attack"]["apgd-ce"] <= r["clean_acc"])
  assert r["robust_acc"] == r["robust"].mean()
  assert np.abs(r["x_adv"] - x[:100]).max() <= EPS + 1e-6
  # Unfooled examples keep their clean input.
  np.testing.assert_array_equal(r["x_adv"][r["fooled_by"] <= 0],
                                x[:100][r["fooled_by"] <= 0])
  again = evaluation.evaluate_randomized(model, v, x[:100], y[:100],
                                         jax.random.key(2), **kw)
  np.testing.assert_array_equal(again["robust"], r["robust"])
  with pytest.raises(ValueError, match="attack_names"):
    evaluation.evaluate_randomized(model, v, x[:10], y[:10],
                                   jax.random.key(2), eps=EPS,
                                   attack_names=("square",))
  with pytest.raises(ValueError, match="`y`"):
    evaluation.evaluate_randomized(model, v, x[:10], y[:10] + 10,
                                   jax.random.key(2), eps=EPS)


@pytest.mark.slow
def test_return_adv_gives_the_fooling_points(mnist_mlp):
  apply, v, x, y = mnist_mlp
  r = evaluation.evaluate_robustness(apply, v, x[:100], y[:100],
                                     jax.random.key(3), eps=EPS,
                                     batch_size=100, return_adv=True, **TINY)
  fooled = r["fooled_by"] > 0
  assert fooled.any()
  pred = np.asarray(jnp.argmax(apply(v, r["x_adv"]), -1))
  assert (pred[fooled] != y[:100][fooled]).all()
  np.testing.assert_array_equal(r["x_adv"][~fooled], x[:100][~fooled])


def test_as_apply_fn_keys_compile_once_per_function(mnist_mlp):
  apply, v, _, _ = mnist_mlp
  f = lambda params, x: apply(params, x)
  a1, v1 = evaluation.as_apply_fn(functools.partial(f, v))
  v2 = jax.tree.map(lambda t: t * 1.5, v)
  a2, w2 = evaluation.as_apply_fn(functools.partial(f, v2))
  assert a1 == a2 and hash(a1) == hash(a2)  # one jit key
  assert len(v1) == len(jax.tree.leaves(v))
  z = jnp.zeros((2, 28, 28, 1))
  np.testing.assert_allclose(a2(w2, z, train=False), apply(v2, z), atol=1e-6)
  g = lambda x: apply(v, x)
  assert evaluation.as_apply_fn(g)[0] == evaluation.as_apply_fn(g)[0]
  assert (evaluation.as_apply_fn(lambda x: apply(v, x))[0] !=
          evaluation.as_apply_fn(lambda x: apply(v, x))[0])
  m1, m2 = models.get_model("mlp"), models.get_model("mlp")
  assert evaluation.as_apply_fn(m1, {})[0] == evaluation.as_apply_fn(m2, {})[0]
  with pytest.raises(TypeError, match="`variables` are required"):
    evaluation.as_apply_fn(m1)
  with pytest.raises(TypeError, match="`variables` is only"):
    evaluation.as_apply_fn(g, v)
  with pytest.raises(TypeError, match="`model` must be"):
    evaluation.as_apply_fn(3)


@pytest.mark.slow
def test_benchmark_a_new_partial_does_not_recompile(mnist_mlp, capsys):
  apply, v, x, y = mnist_mlp
  traces = []

  def logits(params, x):
    traces.append(1)  # runs once per trace, not per call
    return apply(params, x)

  kw = dict(dataset=(x[:100], y[:100]), eps=EPS, batch_size=100,
            checks=False, verbose=False, **TINY)
  first = evaluation.benchmark(functools.partial(logits, v), **kw)
  n = len(traces)
  v2 = jax.tree.map(lambda t: t * 1.0001, v)
  evaluation.benchmark(functools.partial(logits, v2), **kw)
  assert len(traces) == n  # new closure over new parameters: no retrace
  assert first["model"].endswith("logits")
  assert list(first["per_attack"]) == list(evaluation.STANDARD)


@pytest.mark.slow
def test_benchmark_reports_everything_on_real_mnist(mnist_mlp, capsys):
  apply, v, _, _ = mnist_mlp
  r = evaluation.benchmark(functools.partial(apply, v), dataset="mnist",
                           n_examples=100, eps=EPS, batch_size=100,
                           sanity_subset=100, model_name="mlp", **TINY)
  text = capsys.readouterr().out
  assert "mlp on mnist (100 test examples), Linf eps = 0.1" in text
  assert f"robust accuracy: {100 * r['robust_acc']:.2f}%" in text
  assert r["n_examples"] == 100 and r["dataset"] == "mnist"
  assert r["robust_acc"] <= r["clean_acc"]
  assert {c["name"] for c in r["sanity_checks"]} >= {
      "eps=0 reproduces clean accuracy", "accuracy ~0 at large eps"}
  assert all(c["passed"] for c in r["sanity_checks"])
  assert r["environment"]["backend"] == jax.default_backend()
  assert r["seconds"]["total"] >= sum(r["seconds"][a]
                                      for a in r["per_attack"])
  rand = evaluation.benchmark(
      functools.partial(_noisy(apply), v), dataset="mnist", n_examples=50,
      eps=EPS, batch_size=50, version="rand", verbose=False, apgd_steps=3,
      eot_samples=2)
  assert list(rand["per_attack"]) == ["apgd-ce", "apgd-dlr"]
  assert rand["sanity_checks"] == []
  l2 = evaluation.benchmark(functools.partial(apply, v), dataset="mnist",
                            n_examples=50, threat_model="L2", batch_size=50,
                            checks=False, verbose=False, **TINY)
  assert l2["eps"] == 2.0 and "square" not in l2["per_attack"]


@pytest.mark.parametrize("kwargs,match", [
    (dict(threat_model="Linfty"), "threat_model"),
    (dict(version="plus"), "version"),
    (dict(dataset=np.zeros(3)), "dataset"),
    (dict(dataset=(np.zeros((2, 28, 28, 1)), np.zeros(2, int)), eps=-1.0),
     "eps"),
    (dict(dataset=(np.zeros((2, 28, 28, 1)), np.zeros(2, int))), "eps"),
    (dict(n_examples=0), "n_examples"),
])
def test_benchmark_bad_arguments_name_the_argument(mnist_mlp, kwargs, match):
  apply, v, _, _ = mnist_mlp
  with pytest.raises((ValueError, TypeError), match=match):
    evaluation.benchmark(functools.partial(apply, v), verbose=False,
                         **kwargs)
