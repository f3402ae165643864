"""The gradient-masking checks of `evaluation.sanity_checks` on real MNIST.

One naturally trained MLP, and the same network behind `stop_gradient`
(identical forward, zero input gradients: a gradient-masked model). Every
warning must fire on a constructed case and stay quiet on the normal model.
"""

import jax
import jax.numpy as jnp
import pytest

from jaxadv import evaluation

EPS = 0.1
KW = dict(eps=EPS, pgd_steps=10, pgd_step_size=0.025, subset=200,
          batch_size=200, square_queries=300, more_restarts=3, unroll=False)


def _report(apply, variables, x, y, **overrides):
  kw = dict(KW, **overrides)
  res = evaluation.evaluate(apply, variables, x[:200], y[:200],
                            jax.random.key(1), eps=EPS, pgd_steps=10,
                            pgd_step_size=kw["pgd_step_size"],
                            pgd_restarts=1, batch_size=200, unroll=False)
  checks = evaluation.sanity_checks(apply, variables, x[:200], y[:200],
                                    jax.random.key(2), res, **kw)
  return res, {c.name: c for c in checks}


@pytest.fixture(scope="module")
def reports(mnist_mlp):
  apply, variables, x, y = mnist_mlp
  masked = dict(variables, grad=jnp.float32(0.0))
  return {"normal": _report(apply, variables, x, y),
          "masked": _report(apply, masked, x, y)}


def test_quiet_on_a_normal_trained_model(reports):
  res, checks = reports["normal"]
  assert res["clean_acc"] > 0.85 and res["pgd_acc"] < 0.3
  assert len(checks) == len(evaluation.report.CHECKS)
  assert all(c.passed for c in checks.values()), [str(c) for c in
                                                  checks.values()]


@pytest.mark.parametrize("name, symptom", [
    ("accuracy ~0 at large eps", "does not reach ~0 at eps 0.5"),
    ("black-box Square no stronger than white-box",
     "black-box Square attack fools examples the white-box"),
    ("loss increases along the attack", "loss does not increase"),
])
def test_masked_gradients_raise_named_warnings(reports, name, symptom):
  res, checks = reports["masked"]
  assert res["clean_acc"] > 0.85 and res["pgd_acc"] > 0.8  # PGD is blind
  assert not checks[name].passed
  assert symptom in str(checks[name]) and "[WARN]" in str(checks[name])


def test_pgd_above_fgsm_warns(mnist_mlp):
  apply, variables, x, y = mnist_mlp
  results = {"clean_acc": 0.9, "fgsm_acc": 0.5, "pgd_acc": 0.6}
  (check,) = evaluation.sanity_checks(apply, variables, x, y,
                                      jax.random.key(0), results, eps=EPS,
                                      checks=("pgd_vs_fgsm",))
  assert not check.passed and "PGD accuracy above FGSM's" in str(check)
  results["pgd_acc"] = 0.4
  (check,) = evaluation.sanity_checks(apply, variables, x, y,
                                      jax.random.key(0), results, eps=EPS,
                                      checks=("pgd_vs_fgsm",))
  assert check.passed


def test_unconverged_attack_warns_more_iterations_lower_accuracy(mnist_mlp):
  """A step far too small for the step count: PGD-20 beats PGD-10."""
  apply, variables, x, y = mnist_mlp
  kw = dict(KW, pgd_step_size=EPS / 20)
  (check,) = evaluation.sanity_checks(
      apply, variables, x[:200], y[:200], jax.random.key(2), {}, **dict(
          kw, checks=("more_iterations",)))
  assert not check.passed
  assert "more steps or restarts still lower accuracy" in str(check)


def test_more_iterations_starts_from_the_reported_attack(mnist_mlp):
  """With restarts reported, check 6 compares against PGD-K x restarts."""
  apply, variables, x, y = mnist_mlp
  (check,) = evaluation.sanity_checks(
      apply, variables, x[:100], y[:100], jax.random.key(3), {},
      **dict(KW, pgd_restarts=3, more_restarts=2,
             checks=("more_iterations",)))
  assert f"PGD-{KW['pgd_steps']}x3 (reported)" in check.detail
  assert f"PGD-{2 * KW['pgd_steps']}x3" in check.detail
  assert f"PGD-{KW['pgd_steps']}x5" in check.detail
  base, _, more = (float(v.split(": ")[1].split()[0].rstrip(","))
                   for v in check.detail.split(", ")[:3])
  assert more <= base  # further restarts only remove survivors


def test_square_check_reads_an_ensemble_result(mnist_mlp):
  apply, variables, x, y = mnist_mlp
  ensemble = {"clean_acc": 0.9, "per_attack": {"apgd-ce": 0.5,
                                               "square": 0.3}}
  (check,) = evaluation.sanity_checks(apply, variables, x, y,
                                      jax.random.key(0), {}, eps=EPS,
                                      ensemble=ensemble, checks=("square",))
  assert not check.passed and "0.5000 -> after Square 0.3000" in check.detail


def test_unknown_check_is_rejected(mnist_mlp):
  apply, variables, x, y = mnist_mlp
  with pytest.raises(ValueError, match="`checks` must be one of"):
    evaluation.sanity_checks(apply, variables, x, y, jax.random.key(0), {},
                             eps=EPS, checks=("nope",))
