"""Metrics on disk: `metrics.jsonl`, TensorBoard event files, resumed history.

`training.fit(..., metrics_dir=)` streams step / epoch / eval lines while it
trains; TensorBoard's own reader (`tensorboard.backend.event_processing`,
no TensorFlow) reads the event files back. The kill test runs `fit` in a
subprocess (this file run as a script), SIGKILLs it once a checkpoint
exists mid-run, resumes here and requires the history to cover every pass
and the logged losses to equal an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest
from tensorboard.backend.event_processing import event_accumulator

from jaxadv import data
from jaxadv import metrics
from jaxadv import models
from jaxadv import training

BATCH = 50
N_TRAIN = 400          # 8 batches per pass
NUM_BATCHES = 24       # 3 passes
CHECKPOINT_EVERY = 5
LOG_EVERY = 4
MODEL = models.get_model("mlp", hidden=(32,), batch_norm=False)
STEP = training.natural_step()
SCHEDULE = training.cyclic(NUM_BATCHES, 2e-3)
TX = optax.adam(SCHEDULE)


def _state() -> training.TrainState:
  return training.create_train_state(
      MODEL, jax.random.key(0), (1, 28, 28, 1), TX, eps=0.3,
      eps_ramp_steps=10)


def _epoch_fn(state, epoch):
  del state
  return {"val_metric": 0.5 + 0.1 * epoch, "stop": False}


def _fit(x, y, *, workdir=None, metrics_dir=None, num_batches=NUM_BATCHES,
         epoch_fn=_epoch_fn, eval_fn=None, eval_every=None):
  return training.fit(
      _state(), STEP, x, y, batch_size=BATCH, num_batches=num_batches,
      seed=3, workdir=workdir, checkpoint_every=CHECKPOINT_EVERY,
      epoch_fn=epoch_fn, eval_fn=eval_fn, eval_every=eval_every,
      progress=False, metrics_dir=metrics_dir, log_every=LOG_EVERY,
      learning_rate=SCHEDULE)


@pytest.fixture(scope="module")
def mnist():
  return data.load("mnist", "train", limit=N_TRAIN)


def _tensorboard(logdir) -> dict:
  """{tag: [(step, value)]} as TensorBoard reads the folder."""
  acc = event_accumulator.EventAccumulator(
      str(logdir), size_guidance={event_accumulator.SCALARS: 0})
  acc.Reload()
  return {tag: [(e.step, e.value) for e in acc.Scalars(tag)]
          for tag in acc.Tags()["scalars"]}


# ------------------------------------------------------------ the writer ----

def test_writer_lines_restarts_and_torn_line(tmp_path):
  d = str(tmp_path)
  with metrics.MetricWriter(d) as w:
    for b in (1, 2, 3, 4):
      w.write("step", b, {"loss": 1.0 / b, "flag": True, "name": "x"})
    w.write("epoch", 4, {"loss": 0.5}, record={"epoch": 0, "batches": 4,
                                               "loss": np.float32(0.5)})
  with open(os.path.join(d, metrics.JSONL), "a") as f:
    f.write('{"kind": "step", "step": 5, "sca')  # torn by a kill
  with metrics.MetricWriter(d, start_step=2) as w:  # resumed at batch 2
    w.write("step", 3, {"loss": 30.0})
  lines = metrics.read(d)
  assert [(l["kind"], l["step"]) for l in lines] == [
      ("step", 1), ("step", 2), ("step", 3)]
  assert lines[2]["scalars"] == {"loss": 30.0}
  assert lines[0]["scalars"] == {"loss": 1.0}  # bools and strings dropped
  assert metrics.history(d) == []  # the epoch at batch 4 was voided
  kinds = [l["kind"] for l in metrics.read(d, restarts=True)]
  assert kinds == ["start", "step", "step", "resume", "step"]
  # Every raw line but the torn one parses; the file was only appended to.
  with open(os.path.join(d, metrics.JSONL)) as f:
    raw = f.read().splitlines()
  assert len(raw) == 9 and raw[6].endswith('"sca')
  # TensorBoard drops the voided points the same way.
  tb = _tensorboard(d)
  assert tb["step/loss"] == [(1, 1.0), (2, 0.5), (3, 30.0)]
  assert "epoch/loss" not in tb or tb["epoch/loss"] == []
  assert metrics.scalars(d)["loss"] == [(1, 1.0), (2, 0.5), (3, 30.0)]


def test_jsonable_and_numeric():
  rec = {"a": np.float32(0.25), "b": jax.numpy.int32(3), "c": True,
         "d": np.arange(3), "e": None, "f": {"g": np.float64(1.5)}}
  assert metrics.jsonable(rec) == {"a": 0.25, "b": 3, "c": True,
                                   "d": [0, 1, 2], "e": None,
                                   "f": {"g": 1.5}}
  assert metrics.numeric(rec, exclude=("b",)) == {"a": 0.25}


# --------------------------------------------------------------- in fit ----

def test_fit_writes_step_epoch_and_eval_lines(tmp_path, mnist):
  x, y = mnist
  d = str(tmp_path / "metrics")
  res = _fit(x, y, metrics_dir=d, num_batches=16,
             eval_fn=lambda state, b: {"held_out": float(b)}, eval_every=5)
  lines = metrics.read(d)
  steps = [l for l in lines if l["kind"] == "step"]
  assert [l["step"] for l in steps] == [4, 8, 12, 16]
  for l in steps:
    assert set(l["scalars"]) == {"loss", "accuracy", "eps", "learning_rate",
                                 "step_seconds"}
    assert l["scalars"]["step_seconds"] > 0
  # The eps ramp (10 updates) and the cyclic schedule, at the state's step.
  assert steps[0]["scalars"]["eps"] == pytest.approx(0.3 * 4 / 10)
  assert steps[-1]["scalars"]["eps"] == pytest.approx(0.3)
  for l in steps:
    assert l["scalars"]["learning_rate"] == pytest.approx(
        float(SCHEDULE(l["step"])))
  epochs = [l for l in lines if l["kind"] == "epoch"]
  assert [l["step"] for l in epochs] == [8, 16]
  assert {"loss", "accuracy", "val_metric", "eps", "learning_rate",
          "train_seconds"} <= set(epochs[0]["scalars"])
  evals = [l for l in lines if l["kind"] == "eval"]
  assert [l["step"] for l in evals] == [5, 10, 15, 16]
  # The records are the history, in order.
  assert metrics.history(d) == json.loads(json.dumps(res.history))
  # TensorBoard reads the same scalars back.
  tb = _tensorboard(d)
  assert {"step/loss", "step/accuracy", "step/eps", "step/learning_rate",
          "step/step_seconds", "epoch/loss", "epoch/val_metric",
          "eval/held_out", "eval/train_seconds"} <= set(tb)
  assert [s for s, _ in tb["step/loss"]] == [4, 8, 12, 16]
  np.testing.assert_allclose([v for _, v in tb["step/loss"]],
                             [l["scalars"]["loss"] for l in steps],
                             rtol=1e-6)
  assert tb["epoch/val_metric"] == [(8, pytest.approx(0.5)),
                                    (16, pytest.approx(0.6))]


def test_metrics_do_not_change_training(tmp_path, mnist):
  x, y = mnist
  a = _fit(x, y, num_batches=8)
  b = _fit(x, y, num_batches=8, metrics_dir=str(tmp_path))
  assert a.history == b.history
  for u, v in zip(jax.tree.leaves(a.state.params),
                  jax.tree.leaves(b.state.params), strict=True):
    np.testing.assert_array_equal(u, v)


def test_finished_run_reads_its_history_back(tmp_path, mnist):
  """Calling `fit` again on a finished workdir trains nothing, writes
  nothing and returns the whole history."""
  x, y = mnist
  work, d = str(tmp_path / "ckpt"), str(tmp_path / "metrics")
  first = _fit(x, y, workdir=work, metrics_dir=d, num_batches=16)
  size = os.path.getsize(os.path.join(d, metrics.JSONL))
  again = _fit(x, y, workdir=work, metrics_dir=d, num_batches=16)
  assert again.batches == 16
  assert again.history == json.loads(json.dumps(first.history))
  assert os.path.getsize(os.path.join(d, metrics.JSONL)) == size


# ------------------------------------------------- SIGKILL and resume ----

def _steps_on_disk(workdir) -> list[int]:
  if not os.path.isdir(workdir):
    return []
  return sorted(int(d) for d in os.listdir(workdir) if d.isdigit())


@pytest.mark.slow  # SIGKILL subprocesses, ~9 s; CI's slow line
def test_sigkilled_run_keeps_its_whole_history(tmp_path, mnist):
  x, y = mnist
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root + os.pathsep +
             os.environ.get("PYTHONPATH", ""))
  work, d = str(tmp_path / "ckpt"), str(tmp_path / "metrics")
  log = tmp_path / "child.log"
  with open(log, "wb") as f:
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), work, d], env=env,
        stdout=f, stderr=subprocess.STDOUT)
  try:
    reference = _fit(x, y, metrics_dir=str(tmp_path / "reference"))
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
      if any(s > 8 for s in _steps_on_disk(work)):
        proc.send_signal(signal.SIGKILL)
        break
      time.sleep(0.01)
  finally:
    proc.kill()
    proc.wait()
  assert proc.returncode == -signal.SIGKILL, log.read_text()[-2000:]
  killed_at = max(_steps_on_disk(work))
  assert 8 < killed_at < NUM_BATCHES

  resumed = _fit(x, y, workdir=work, metrics_dir=d)
  assert resumed.batches == NUM_BATCHES
  # Every pass is in the history, once, with its epoch_fn record.
  passes = [r for r in resumed.history if "epoch" in r]
  assert [(r["epoch"], r["batches"]) for r in passes] == [
      (0, 8), (1, 16), (2, 24)]
  assert [r["val_metric"] for r in passes] == pytest.approx([0.5, 0.6, 0.7])
  assert metrics.history(d) == json.loads(json.dumps(resumed.history))
  # One step line per logged step, and the losses of the uninterrupted run
  # (training resumes bit-identically).
  got = metrics.scalars(d)["loss"]
  want = metrics.scalars(str(tmp_path / "reference"))["loss"]
  assert [s for s, _ in got] == list(range(LOG_EVERY, NUM_BATCHES + 1,
                                           LOG_EVERY))
  assert got == want
  # TensorBoard sees the same series: stale points purged, none twice.
  tb = _tensorboard(d)
  assert [s for s, _ in tb["step/loss"]] == [s for s, _ in got]
  np.testing.assert_allclose([v for _, v in tb["step/loss"]],
                             [v for _, v in got], rtol=1e-6)
  assert [s for s, _ in tb["epoch/loss"]] == [8, 16, 24]
  assert len(reference.history) == 3


def _main(workdir: str, metrics_dir: str) -> None:
  """Subprocess entry: trains slowly enough (a pause per pass) to be killed."""
  x, y = data.load("mnist", "train", limit=N_TRAIN)
  _fit(x, y, workdir=workdir, metrics_dir=metrics_dir,
       epoch_fn=lambda state, epoch: (time.sleep(0.5), _epoch_fn(state,
                                                                 epoch))[1])


if __name__ == "__main__":
  _main(sys.argv[1], sys.argv[2])
