"""Tests of robust-accuracy evaluation on a tiny linear model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import evaluation

D, C = 12, 4


def _apply(variables, x, train=False):
  del train
  return x.reshape(x.shape[0], -1) @ variables["w"] + variables["b"]


@pytest.fixture(scope="module")
def problem():
  kw, kx = jax.random.split(jax.random.key(0))
  variables = {"w": jax.random.normal(kw, (D, C)), "b": jnp.zeros(C)}
  x = np.asarray(jax.random.uniform(kx, (37, D)))  # 37: not a batch multiple
  y = np.asarray(jnp.argmax(_apply(variables, x), -1)).astype(np.int32)
  y[:5] = (y[:5] + 1) % C  # five examples misclassified on purpose
  return variables, x, y


def test_accuracy_and_predict_with_padding(problem):
  variables, x, y = problem
  preds = evaluation.predict(_apply, variables, x, batch_size=8)
  np.testing.assert_array_equal(preds[5:], y[5:])
  assert evaluation.accuracy(_apply, variables, x, y, batch_size=8) == (
      pytest.approx(32 / 37))


@pytest.mark.parametrize("attack", ["fgsm", "fgsm_rs", "bim", "pgd"])
def test_eps_zero_is_clean_accuracy(problem, attack):
  variables, x, y = problem
  correct = evaluation.robust_correct(
      _apply, variables, x, y, jax.random.key(1), attack=attack, eps=0.0,
      step_size=0.01, steps=3, batch_size=8)
  np.testing.assert_array_equal(correct, np.arange(37) >= 5)


def test_robust_implies_clean_and_restarts_only_lower(problem):
  variables, x, y = problem
  kw = dict(attack="pgd", eps=0.15, step_size=0.03, steps=5, batch_size=8)
  one = evaluation.robust_correct(_apply, variables, x, y, jax.random.key(2),
                                  restarts=1, **kw)
  many = evaluation.robust_correct(_apply, variables, x, y,
                                   jax.random.key(2), restarts=5, **kw)
  assert not one[:5].any()  # misclassified clean -> never robust
  assert np.all(many <= one)  # restart 0 is shared; later ones only remove
  assert 0 < many.sum() < 32


def test_pgd_at_most_fgsm_and_large_eps_breaks_everything(problem):
  variables, x, y = problem
  key = jax.random.key(3)
  fgsm = evaluation.robust_accuracy(_apply, variables, x, y, key,
                                    attack="fgsm", eps=0.1, batch_size=8)
  pgd = evaluation.robust_accuracy(_apply, variables, x, y, key, attack="pgd",
                                   eps=0.1, step_size=0.02, steps=10,
                                   restarts=2, batch_size=8)
  assert pgd <= fgsm
  assert evaluation.robust_accuracy(_apply, variables, x, y, key, attack="pgd",
                                    eps=1.0, step_size=0.2, steps=10,
                                    batch_size=8) == 0.0


def test_evaluate_and_sanity_checks_pass(problem):
  variables, x, y = problem
  res = evaluation.evaluate(_apply, variables, x, y, jax.random.key(4),
                            eps=0.1, pgd_steps=10, pgd_step_size=0.02,
                            pgd_restarts=2, batch_size=8)
  assert set(res) >= {"clean_acc", "fgsm_acc", "pgd_acc"}
  checks = evaluation.sanity_checks(_apply, variables, x, y,
                                    jax.random.key(5), res, eps=0.1,
                                    pgd_steps=10, pgd_step_size=0.02,
                                    batch_size=8)
  assert len(checks) == len(evaluation.report.CHECKS)
  assert all(c.passed for c in checks), [str(c) for c in checks]
  # Square needs [N, H, W, C] images: on flat inputs its check is skipped.
  assert "skipped" in checks[4].detail


@pytest.mark.parametrize("kwargs, match", [
    (dict(attack="cw"), "`attack` must be one of"),
    (dict(eps=-1.0), "`eps` must be >= 0"),
    (dict(restarts=0), "`restarts` must be >= 1"),
    (dict(step_size=None), "`step_size` is required"),
    (dict(batch_size=0), "`batch_size` must be >= 1"),
])
def test_bad_arguments(problem, kwargs, match):
  variables, x, y = problem
  args = dict(attack="pgd", eps=0.1, step_size=0.01, steps=2, batch_size=8)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    evaluation.robust_correct(_apply, variables, x, y, jax.random.key(0),
                              **args)


_SHARDED_SCRIPT = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
from jaxadv import evaluation
D, C = 12, 4
def apply(variables, x, train=False):
  return x.reshape(x.shape[0], -1) @ variables["w"] + variables["b"]
kw, kx = jax.random.split(jax.random.key(0))
variables = {"w": jax.random.normal(kw, (D, C)), "b": jnp.zeros(C)}
x = np.asarray(jax.random.uniform(kx, (37, D)))
y = np.asarray(jnp.argmax(apply(variables, x), -1)).astype(np.int32)
correct = evaluation.robust_correct(
    apply, variables, x, y, jax.random.key(2), attack="pgd", eps=0.15,
    step_size=0.03, steps=5, restarts=3, batch_size=8)
print(json.dumps({"devices": jax.local_device_count(),
                  "correct": correct.astype(int).tolist()}))
"""


@pytest.mark.parametrize("devices", [1, 4])
def test_sharded_evaluation_matches_one_device(devices):
  """The batch split over N (emulated) devices gives the same verdicts."""
  import json
  import os
  import subprocess
  import sys
  env = dict(os.environ,
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", _SHARDED_SCRIPT], env=env,
                       capture_output=True, text=True, check=True)
  got = json.loads(out.stdout.strip().splitlines()[-1])
  assert got["devices"] == devices
  kw, kx = jax.random.split(jax.random.key(0))
  variables = {"w": jax.random.normal(kw, (D, C)), "b": jnp.zeros(C)}
  x = np.asarray(jax.random.uniform(kx, (37, D)))
  y = np.asarray(jnp.argmax(_apply(variables, x), -1)).astype(np.int32)
  expected = evaluation.robust_correct(
      _apply, variables, x, y, jax.random.key(2), attack="pgd", eps=0.15,
      step_size=0.03, steps=5, restarts=3, batch_size=8)
  assert got["correct"] == expected.astype(int).tolist()
  assert 0 < sum(got["correct"]) < 37
