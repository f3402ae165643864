"""Training metrics on disk: an append-only `metrics.jsonl` and TensorBoard.

`training.fit(..., metrics_dir=d)` writes, while it trains, into `d`:

* `metrics.jsonl`: one JSON object per line, appended and flushed as it
  happens (never rewritten):

  * `{"kind": "start" | "resume", "step": b, "wall_time": t}`: a (re)start
    of training at batch `b`. Lines written before it with a `step` above
    `b` belong to batches that are trained again (a run killed after its last
    checkpoint), so they no longer count.
  * `{"kind": "step", "step": b, "wall_time": t, "scalars": {...}}`: every
    `log_every` minibatches, that minibatch's step metrics ("loss",
    "accuracy", ...), "eps" (the attack budget after the eps ramp),
    "learning_rate" (when `fit` knows the schedule) and "step_seconds"
    (training wall time per minibatch since the previous line).
  * `{"kind": "epoch" | "eval" | "guard" | "collapse", "step": b,
    "wall_time": t, "scalars": {...}, "record": {...}}`: one per history
    record of `fit` (a pass over the data, one `eval_fn` call, one
    `CollapseGuard` check, a detected collapse); `record` is the record
    itself, `scalars` its numbers plus "eps", "learning_rate" and
    "train_seconds". A pass's line is written before the checkpoint that
    ends it.
  * `{"kind": "rollback", "step": b, "wall_time": t}`: a `CollapseGuard`
    rolled training back to batch `b`; like a restart, the lines before it
    with a `step` above `b` (the collapsed stretch) no longer count, and
    the "collapse" line that follows it records what was found.

* `events.out.tfevents.*`: the same scalars as TensorBoard event files
  (written with tensorboardX, no TensorFlow), tag `"<kind>/<name>"` (e.g.
  `"step/loss"`, `"epoch/val_pgd_acc"`) at step `b` (minibatches). Every
  (re)start opens a new file that begins with a session-start event at
  `b + 1`, so TensorBoard drops the stale points of a killed run just as
  `read` does.

`read` gives the lines in effect, `history` the records of a run (what
`fit` puts back into `TrainResult.history` when it resumes) and `scalars`
one kind's series. TensorBoard reads the folder as it is
(`tensorboard --logdir d`; or, without a server,
`tensorboard.backend.event_processing.event_accumulator`).
"""

from __future__ import annotations

import json
import numbers
import os
import time
from typing import Any, Iterable, Mapping, Optional

import numpy as np

#: The JSON-lines file in a metrics folder.
JSONL = "metrics.jsonl"
#: Line kinds that mark a (re)start of training (a `CollapseGuard`'s
#: rollback is one: training goes on from an earlier batch).
RESTARTS = ("start", "resume", "rollback")
#: Line kinds that carry a `fit` history record.
RECORD_KINDS = ("epoch", "eval", "guard", "collapse")


def _to_scalar(v: Any) -> Optional[float]:
  """A float for a real number (Python, numpy or a 0-d/size-1 jax array);
  None for anything else (bools, strings, vectors)."""
  if isinstance(v, (bool, np.bool_)):
    return None
  if isinstance(v, numbers.Real):
    return float(v)
  if hasattr(v, "shape") and hasattr(v, "dtype"):
    a = np.asarray(v)
    if a.size == 1 and (np.issubdtype(a.dtype, np.floating) or
                        np.issubdtype(a.dtype, np.integer)):
      return float(a.reshape(()))
  return None


def jsonable(v: Any) -> Any:
  """`v` as JSON: numpy/jax numbers and arrays to Python numbers and lists,
  mappings and sequences recursively, anything else as its `str`."""
  if v is None or isinstance(v, (str, bool)):
    return v
  if isinstance(v, np.bool_):
    return bool(v)
  if isinstance(v, numbers.Integral):
    return int(v)
  if isinstance(v, numbers.Real):
    return float(v)
  if isinstance(v, Mapping):
    return {str(k): jsonable(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [jsonable(x) for x in v]
  if hasattr(v, "shape") and hasattr(v, "dtype"):
    return jsonable(np.asarray(v).tolist())
  return str(v)


def numeric(record: Mapping[str, Any],
            exclude: Iterable[str] = ()) -> dict[str, float]:
  """The real-valued entries of `record` (bools and others left out)."""
  out = {}
  for k, v in record.items():
    if k in exclude:
      continue
    s = _to_scalar(v)
    if s is not None:
      out[str(k)] = s
  return out


class MetricWriter:
  """Appends to `logdir/metrics.jsonl` and writes TensorBoard event files.

  Opening a writer appends a restart line at `start_step` (see the module
  docstring); `fit` opens one per training segment.

  Args:
    logdir: the metrics folder (created).
    start_step: minibatches already trained (0 for a fresh run; the restored
      checkpoint's batch count when resuming).
    tensorboard: also write event files (tensorboardX); False = only
      `metrics.jsonl`.
  """

  def __init__(self, logdir: str, *, start_step: int = 0,
               tensorboard: bool = True):
    self.logdir = os.fspath(logdir)
    os.makedirs(self.logdir, exist_ok=True)
    self.path = os.path.join(self.logdir, JSONL)
    # A line torn by a kill mid-write: end it, so the next line stands alone.
    torn = False
    if os.path.exists(self.path) and os.path.getsize(self.path):
      with open(self.path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        torn = f.read(1) != b"\n"
    self._file = open(self.path, "a", encoding="utf-8")  # pylint: disable=consider-using-with
    if torn:
      self._file.write("\n")
    self._events = None
    if tensorboard:
      self._events = _EventFile(self.logdir, purge_step=start_step + 1)
    self._line({"kind": "resume" if start_step else "start",
                "step": int(start_step), "wall_time": time.time()})

  def rollback(self, step: int) -> None:
    """Marks that training goes on from batch `step` again (the lines of
    later batches written so far stop counting)."""
    self._line({"kind": "rollback", "step": int(step),
                "wall_time": time.time()})

  def _line(self, obj: dict) -> None:
    self._file.write(json.dumps(obj) + "\n")
    self._file.flush()  # a SIGKILL loses no written line

  def write(self, kind: str, step: int, scalars: Mapping[str, Any],
            record: Optional[Mapping[str, Any]] = None) -> None:
    """One line of `kind` at `step`: its `scalars` (numbers; others are
    dropped) and, for the `RECORD_KINDS`, the history `record`."""
    t = time.time()
    values = numeric(scalars)
    obj = {"kind": kind, "step": int(step), "wall_time": t,
           "scalars": values}
    if record is not None:
      obj["record"] = jsonable(record)
    self._line(obj)
    if self._events is not None and values:
      self._events.scalars(int(step), {f"{kind}/{k}": v
                                       for k, v in values.items()}, t)

  def flush(self) -> None:
    """Flushes the event file to disk (`metrics.jsonl` always is)."""
    if self._events is not None:
      self._events.flush()

  def close(self) -> None:
    if self._events is not None:
      self._events.close()
      self._events = None
    if not self._file.closed:
      self._file.close()

  def __enter__(self) -> "MetricWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


class _EventFile:
  """A synchronous TensorBoard event file (tensorboardX's `EventsWriter`:
  its `SummaryWriter` queues events on a thread, which a kill could lose
  after a checkpoint)."""

  def __init__(self, logdir: str, purge_step: int):
    # pylint: disable=import-outside-toplevel
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto import event_pb2
    from tensorboardX.proto import summary_pb2
    self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
    # The nanoseconds order the files of one second (names sort by time).
    self._writer = EventsWriter(os.path.join(logdir, "events"),
                                filename_suffix=f".{time.time_ns()}")
    self._writer.write_event(event_pb2.Event(
        wall_time=time.time(), step=purge_step,
        session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
    self._writer.flush()

  def scalars(self, step: int, values: Mapping[str, float],
              wall_time: float) -> None:
    summary = self._summary_pb2.Summary(value=[
        self._summary_pb2.Summary.Value(tag=tag, simple_value=v)
        for tag, v in values.items()])
    self._writer.write_event(self._event_pb2.Event(
        wall_time=wall_time, step=step, summary=summary))

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def _jsonl_path(path: str) -> str:
  path = os.fspath(path)
  return os.path.join(path, JSONL) if os.path.isdir(path) else path


def read(path: str, *, restarts: bool = False) -> list[dict]:
  """The lines of a `metrics.jsonl` (or of the one in folder `path`) that
  are in effect: each restart line voids the earlier lines with a larger
  step. Unreadable lines (a write torn by a kill) are skipped.

  Args:
    path: a metrics folder or its `metrics.jsonl`.
    restarts: also return the restart lines.

  Returns:
    The lines, in the order written; [] when there is no file.
  """
  path = _jsonl_path(path)
  if not os.path.exists(path):
    return []
  lines: list[dict] = []
  with open(path, encoding="utf-8") as f:
    for text in f:
      try:
        obj = json.loads(text)
      except ValueError:
        continue
      if not isinstance(obj, dict) or "kind" not in obj:
        continue
      if obj["kind"] in RESTARTS:
        lines = [l for l in lines if l["step"] <= obj["step"]]
      lines.append(obj)
  return lines if restarts else [l for l in lines
                                 if l["kind"] not in RESTARTS]


def history(path: str, upto: Optional[int] = None) -> list[dict]:
  """The `fit` history records (the `RECORD_KINDS` lines) in effect, in
  order; with `upto`, only those of batches `<= upto`."""
  return [dict(l["record"]) for l in read(path)
          if l["kind"] in RECORD_KINDS and "record" in l and
          (upto is None or l["step"] <= upto)]


def scalars(path: str, kind: str = "step") -> dict[str, list[tuple[int, float]]]:
  """One kind's series: `{name: [(step, value), ...]}` from `metrics.jsonl`."""
  out: dict[str, list[tuple[int, float]]] = {}
  for l in read(path):
    if l["kind"] == kind:
      for k, v in l.get("scalars", {}).items():
        out.setdefault(k, []).append((l["step"], v))
  return out

