"""Long evaluations survive a kill: `robust_correct` and the ensemble with a
`workdir` are SIGKILLed mid-run in a subprocess (this file run as a
script), resumed here, and give the verdicts of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest

from jaxadv import data
from jaxadv import evaluation
from jaxadv import models
from jaxadv import training

N_TEST = 600
BATCH = 50
MODEL = models.get_model("fast_at_mnist")


def _variables_like():
  return MODEL.init(jax.random.key(0), np.zeros((1, 28, 28, 1), np.float32),
                    train=False)


def _evaluate(kind: str, variables, workdir):
  x, y = data.load("mnist", "test", limit=N_TEST)
  key = jax.random.key(7)
  if kind == "robust_correct":
    return evaluation.robust_correct(
        MODEL.apply, variables, x, y, key, attack="pgd", eps=0.1,
        step_size=0.01, steps=60, restarts=2, batch_size=BATCH,
        workdir=workdir)
  out = evaluation.evaluate_robustness(
      MODEL.apply, variables, x, y, key, eps=0.1,
      attack_names=("apgd-ce", "apgd-t", "square"), apgd_steps=30,
      num_targets=2, square_queries=150, batch_size=BATCH, workdir=workdir)
  return out["fooled_by"]


def _progress(workdir):
  """(round, next batch) of the verdict file in `workdir`, or None."""
  for name in os.listdir(workdir) if os.path.isdir(workdir) else ():
    if name.endswith(".npz") and ".tmp" not in name:
      try:
        with np.load(os.path.join(workdir, name)) as f:
          return int(f["round"]), int(f["next"])
      except (OSError, ValueError, KeyError):
        return None
  return None


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  x, y = data.load("mnist", "train", limit=2000)
  state = training.create_train_state(MODEL, jax.random.key(0),
                                      (1, 28, 28, 1), optax.adam(2e-3))
  result = training.fit(state, training.natural_step(), x, y, batch_size=50,
                        num_batches=80, seed=0, progress=False)
  variables = training.variables_of(result.state)
  path = str(tmp_path_factory.mktemp("model") / "params.npz")
  np.savez(path, *[np.asarray(v) for v in jax.tree.leaves(variables)])
  return variables, path


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["robust_correct", "ensemble"])
def test_sigkilled_evaluation_resumes_to_identical_verdicts(tmp_path, trained,
                                                            kind):
  variables, params = trained
  workdir = str(tmp_path / "eval")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.Popen([sys.executable, __file__, kind, params, workdir],
                          env=env)
  killed_at = None
  deadline = time.monotonic() + 300
  while proc.poll() is None and time.monotonic() < deadline:
    p = _progress(workdir)
    if p is not None and (p[0] > 0 or p[1] >= 2):  # mid-run, not finished
      proc.send_signal(signal.SIGKILL)
      killed_at = p
      break
    time.sleep(0.005)
  proc.wait()
  assert killed_at is not None, "the evaluation ended before it was killed"
  assert proc.returncode == -signal.SIGKILL
  resumed = _evaluate(kind, variables, workdir)
  fresh = _evaluate(kind, variables, None)
  np.testing.assert_array_equal(resumed, fresh)
  # Robust and fooled examples both occur: the comparison means something.
  if kind == "robust_correct":
    assert 0 < fresh.sum() < len(fresh)
  else:
    assert (fresh == -1).any() and (fresh > 0).any()
  # A finished file answers at once with the same verdicts.
  np.testing.assert_array_equal(_evaluate(kind, variables, workdir), fresh)


def test_verdict_files_are_keyed_by_what_the_verdicts_depend_on(tmp_path,
                                                                trained):
  variables, _ = trained
  x, y = data.load("mnist", "test", limit=100)
  run = lambda eps: evaluation.robust_correct(
      MODEL.apply, variables, x, y, jax.random.key(0), attack="fgsm",
      eps=eps, batch_size=BATCH, workdir=str(tmp_path))
  a, b = run(0.1), run(0.2)
  assert len([n for n in os.listdir(tmp_path) if n.endswith(".npz")]) == 2
  np.testing.assert_array_equal(run(0.1), a)
  assert b.sum() <= a.sum()
  with pytest.raises(ValueError, match="return_adv"):
    evaluation.evaluate_robustness(MODEL.apply, variables, x, y,
                                   jax.random.key(0), eps=0.1,
                                   attack_names=("apgd-ce",), apgd_steps=2,
                                   return_adv=True, workdir=str(tmp_path))


if __name__ == "__main__":
  _kind, _params, _workdir = sys.argv[1:4]
  with np.load(_params) as _f:
    _leaves = [_f[f"arr_{i}"] for i in range(len(_f.files))]
  _vars = jax.tree.unflatten(jax.tree.structure(_variables_like()), _leaves)
  _evaluate(_kind, _vars, _workdir)
