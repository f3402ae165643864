"""Nothing lost: SIGKILL-and-resume, corrupt checkpoints, divergence, seeds.

The kill test runs `training.fit` in a subprocess (this file run as a
script), SIGKILLs it once a checkpoint exists mid-run, resumes in this
process and requires parameters bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxadv import attacks
from jaxadv import data
from jaxadv import losses
from jaxadv import models
from jaxadv import training

BATCH = 50
N_TRAIN = 400          # 8 batches per pass
NUM_BATCHES = 24       # 3 passes
CHECKPOINT_EVERY = 5   # saves at 5, 8, 10, 15, 16, 20, 24 (and pass ends)
REPLAYS = 2
# One step function and optimizer per method for the whole module: the state's
# static fields and the jitted function are then equal across `fit` calls,
# so the compiled step is reused.
STEPS = {"natural": training.natural_step(),
         "free": training.free_at_step(replays=REPLAYS)}
MODEL = models.get_model("fast_at_mnist")
TXS = {"natural": optax.adam(training.cyclic(NUM_BATCHES, 2e-3)),
       "free": optax.adam(training.cyclic(NUM_BATCHES * REPLAYS, 2e-3))}


def _mnist():
  return data.load("mnist", "train", limit=N_TRAIN)


def _state(method: str, tx=None) -> training.TrainState:
  free = method == "free"
  tx = tx or TXS[method]
  return training.create_train_state(
      MODEL, jax.random.key(0), (1, 28, 28, 1), tx, eps=0.3, delta_shape=(BATCH, 28, 28, 1) if free else None)


def _fit(method, x, y, workdir=None, num_batches=NUM_BATCHES, seed=3,
         epoch_fn=None, tx=None):
  return training.fit(_state(method, tx), STEPS[method], x, y,
                      batch_size=BATCH, num_batches=num_batches, seed=seed,
                      workdir=workdir, checkpoint_every=CHECKPOINT_EVERY,
                      epoch_fn=epoch_fn, progress=False)


def _steps_on_disk(workdir) -> list[int]:
  if not os.path.isdir(workdir):
    return []
  return sorted(int(d) for d in os.listdir(workdir) if d.isdigit())


def _kill_mid_run(proc: subprocess.Popen, workdir: str,
                  timeout: float = 300.0) -> None:
  """SIGKILLs `proc` once a checkpoint inside its second pass exists."""
  deadline = time.monotonic() + timeout
  while proc.poll() is None and time.monotonic() < deadline:
    if any(s > 8 for s in _steps_on_disk(workdir)):
      proc.send_signal(signal.SIGKILL)
      return
    time.sleep(0.01)


def _assert_same(a: training.TrainState, b: training.TrainState) -> None:
  for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params),
                  strict=True):
    np.testing.assert_array_equal(u, v)
  if a.delta is not None:
    np.testing.assert_array_equal(a.delta, b.delta)
  assert int(a.step) == int(b.step)


@pytest.fixture(scope="module")
def mnist():
  return _mnist()


class _Uninterrupted(dict):
  """method -> the reference run, trained start to end on first use."""

  def __init__(self, x, y):
    super().__init__()
    self._data = (x, y)

  def __missing__(self, method):
    self[method] = _fit(method, *self._data)
    return self[method]


@pytest.fixture(scope="module")
def uninterrupted(mnist):
  return _Uninterrupted(*mnist)


@pytest.mark.parametrize("methods", [
    # Both SIGKILL subprocess runs are slow (~10 s and more); CI's slow line.
    pytest.param(("natural",), marks=pytest.mark.slow),
    pytest.param(("natural", "free"), marks=pytest.mark.slow)],
                         ids=["natural", "natural_and_free_at"])
def test_sigkilled_runs_resume_bit_identical(tmp_path, mnist, uninterrupted,
                                             methods):
  """Each method SIGKILLed mid-run in its own subprocess, then resumed here.

  The default suite kills natural training; the slow variant also kills free
  AT (its delta persists across batches and must come back bit-identical).
  """
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root + os.pathsep +
             os.environ.get("PYTHONPATH", ""))
  workdirs = {m: str(tmp_path / m) for m in methods}
  # All start at once: their start-up (imports, compilation) overlaps.
  logs = {m: tmp_path / f"{m}.log" for m in methods}
  procs = {}
  for m in methods:
    with open(logs[m], "wb") as log:
      procs[m] = subprocess.Popen(
          [sys.executable, os.path.abspath(__file__), m, workdirs[m]],
          env=env, stdout=log, stderr=subprocess.STDOUT)
  watchers = [threading.Thread(target=_kill_mid_run,
                               args=(procs[m], workdirs[m]), daemon=True)
              for m in methods]
  try:
    for w in watchers:
      w.start()
    for m in methods:  # the references train while the children run
      uninterrupted[m]  # pylint: disable=pointless-statement
    for w in watchers:
      w.join(timeout=300)
  finally:
    for p in procs.values():
      p.kill()
      p.wait()
  x, y = mnist
  for m, p in procs.items():
    assert p.returncode == -signal.SIGKILL, (m, logs[m].read_text()[-2000:])
    killed_at = max(_steps_on_disk(workdirs[m]))
    assert 8 < killed_at < NUM_BATCHES, (m, killed_at)
    resumed = _fit(m, x, y, workdir=workdirs[m])
    assert resumed.batches == NUM_BATCHES
    _assert_same(resumed.state, uninterrupted[m].state)


def _corrupt_truncate(step_dir):
  files = glob.glob(os.path.join(step_dir, "default", "ocdbt.process_0", "d",
                                 "*"))
  assert files
  for f in files:
    with open(f, "r+b") as fh:
      fh.truncate(os.path.getsize(f) // 2)


def _corrupt_metadata(step_dir):
  os.remove(os.path.join(step_dir, "default", "_METADATA"))


@pytest.mark.parametrize("corrupt", [_corrupt_truncate, _corrupt_metadata],
                         ids=["truncated_data", "missing_metadata"])
def test_corrupt_checkpoint_is_skipped(tmp_path, mnist, uninterrupted,
                                       corrupt):
  x, y = mnist
  workdir = str(tmp_path / "run")
  _fit("natural", x, y, workdir=workdir, num_batches=16)
  steps = _steps_on_disk(workdir)
  assert steps == [15, 16]  # the manager keeps the newest two
  corrupt(os.path.join(workdir, "16"))
  with pytest.warns(RuntimeWarning, match=r"16 is corrupt or partial"):
    resumed = _fit("natural", x, y, workdir=workdir)
  assert os.path.isdir(os.path.join(workdir, "16.corrupt"))  # kept aside
  # It fell back to batch 15 and still ends where the uninterrupted run ends.
  _assert_same(resumed.state, uninterrupted["natural"].state)


def test_diverging_run_stops_and_keeps_last_good_checkpoint(tmp_path, mnist):
  x, y = mnist
  workdir = str(tmp_path / "run")
  # The learning rate explodes at optimizer step 6 (batch 7's update): the
  # loss of batch 8 is NaN/inf; the checkpoint at batch 5 is the last good one.
  schedule = lambda count: jnp.where(count >= 6, 1e38, 1e-2)
  tx = optax.sgd(schedule)
  with pytest.raises(training.TrainingDivergedError,
                     match=r"NaN/inf at batch (\d+)") as info:
    _fit("natural", x, y, workdir=workdir, tx=tx)
  bad = int(re.search(r"at batch (\d+)", str(info.value)).group(1))
  assert bad == 8
  assert "last good checkpoint (batch 5)" in str(info.value)
  assert _steps_on_disk(workdir) == [5]
  # The kept checkpoint is finite and resumes; a wrong optimizer structure is
  # refused without touching it.
  # (run.json sees the other initial optimizer state first.)
  with pytest.raises(ValueError, match="another run; it differs in "
                     "initial_state"):
    _fit("natural", x, y, workdir=workdir, num_batches=6, tx=optax.sgd(1e-2))
  resumed = _fit("natural", x, y, workdir=workdir, num_batches=6,
                 tx=optax.sgd(lambda count: 1e-2 + 0.0 * count))
  assert resumed.batches == 6
  assert all(np.isfinite(v).all()
             for v in jax.tree.leaves(resumed.state.params))


def test_same_seed_same_numbers(mnist, uninterrupted):
  x, y = mnist
  again = _fit("natural", x, y)
  _assert_same(again.state, uninterrupted["natural"].state)
  other = _fit("natural", x, y, seed=4)
  assert not np.array_equal(jax.tree.leaves(other.state.params)[0],
                            jax.tree.leaves(again.state.params)[0])
  # Attacks: the same key gives the same x_adv, another key another one.
  state = again.state
  loss_fn = losses.make_loss_fn(
      lambda v: state.apply_fn({"params": state.params}, v), "ce")
  pgd = jax.jit(lambda k: attacks.pgd(loss_fn, x[:20], y[:20], k, eps=0.3,
                                      step_size=0.05, steps=5, restarts=2))
  a, b = pgd(jax.random.key(1)), pgd(jax.random.key(1))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, pgd(jax.random.key(2)))


def _main(method: str, workdir: str) -> None:
  """Subprocess entry: trains slowly enough (a pause per pass) to be killed."""
  x, y = _mnist()
  _fit(method, x, y, workdir=workdir,
       epoch_fn=lambda state, epoch: (time.sleep(0.3), {})[1])


if __name__ == "__main__":
  _main(sys.argv[1], sys.argv[2])
