"""The training loop: fixed-size batches, progress bar, resumable checkpoints.

The data order is a pure function of (seed, epoch) and every per-step key is
`fold_in(key, state.step)`, so a run killed at any point and resumed from its
last checkpoint continues with exactly the batches and keys it would have
seen. Checkpoints are written with orbax (atomic: a step directory appears
only once it is complete).
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from jaxadv import validation
from jaxadv import data as data_lib
from jaxadv import parallel
from jaxadv.training.state import TrainState
from jaxadv.training.state import apply_model
from jaxadv.training.steps import StepFn

_STATE_FIELDS = ("step", "params", "opt_state", "batch_stats", "delta",
                 "attack_params")


@dataclasses.dataclass
class TrainResult:
  """What `fit` returns.

  Attributes:
    state: the final (or, with `select`, the best) training state.
    history: one dict per finished epoch: mean step metrics plus whatever
      `epoch_fn` returned.
    train_seconds: wall time spent in training steps, compile excluded, summed
      over resumed segments.
    compile_seconds: the first step's extra time (compilation), this segment.
    batches: minibatches processed.
    stopped_early: True when `epoch_fn` asked to stop.
  """
  state: TrainState
  history: list
  train_seconds: float
  compile_seconds: float
  batches: int
  stopped_early: bool = False


class TrainingDivergedError(FloatingPointError):
  """`fit` stopped because the loss or the parameters became NaN or inf."""


@jax.jit
def _finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(tree)
            if jnp.issubdtype(v.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def _all_finite(tree) -> bool:
  """True when every floating leaf of `tree` is free of NaN/inf (host sync)."""
  return bool(_finite(tree))


@jax.jit
def _track_nonfinite(first_bad: jax.Array, metrics: dict,
                     batch: jax.Array) -> jax.Array:
  """On device, no sync: the first batch whose metrics hold NaN/inf, or -1."""
  return jnp.where((first_bad < 0) & ~_finite(metrics), batch, first_bad)


def _check_not_diverged(first_bad: jax.Array, state: TrainState, b: int,
                        workdir: Optional[str],
                        ckpt: Optional["_Checkpointer"]) -> None:
  """Raises `TrainingDivergedError` when a loss or the parameters are NaN/inf.

  Called before every checkpoint (so a diverged state is never written),
  every 50 batches and at the end of `fit`.
  """
  bad = int(first_bad)
  if bad < 0 and _all_finite(state.params):
    return
  what = (f"the loss (or another metric) became NaN/inf at batch {bad}"
          if bad >= 0 else f"the parameters became NaN/inf by batch {b}")
  kept = ckpt.latest_step() if ckpt is not None else None
  where = (f"the last good checkpoint (batch {kept}) in {workdir} is kept"
           if kept is not None else "no checkpoint was written")
  raise TrainingDivergedError(
      f"Training diverged: {what}; stopped at batch {b}, {where}. Lower the "
      f"learning rate, check the inputs for NaN/inf, or clip gradients.")


def _validate_fit_args(state: TrainState, x, y, *, batch_size, num_batches,
                       checkpoint_every, seed) -> None:
  """Checks `fit`'s data and counts once, on the host, before any step."""
  validation.check_images(x, "x")
  num_classes = validation.output_classes(
      lambda v: apply_model(state, state.params, v, train=False)[0], x)
  validation.check_labels(y, np.shape(x)[0], "y", num_classes=num_classes)
  validation.check_count(batch_size, "batch_size", 1)
  validation.check_count(num_batches, "num_batches", 1)
  validation.check_count(checkpoint_every, "checkpoint_every", 1)
  validation.check_count(seed, "seed", 0)


def _state_tree(state: TrainState) -> dict:
  tree = {}
  for name in _STATE_FIELDS:
    value = getattr(state, name)
    if value is None or (isinstance(value, dict) and not value):
      continue
    tree[name] = value
  return tree


def _scalar_int64(v) -> np.ndarray:
  return np.array(v, np.int64)  # 0-d arrays: orbax saves no numpy scalars


def _scalar_float64(v) -> np.ndarray:
  return np.array(v, np.float64)


def _copy_best(state: TrainState) -> dict:
  """A copy (the state's buffers are donated) of what early stopping keeps."""
  best = {"params": state.params}
  if state.batch_stats:
    best["batch_stats"] = state.batch_stats
  return jax.tree.map(jnp.copy, best)


class _Checkpointer:
  """Synchronous orbax checkpoints of the state plus loop progress."""

  def __init__(self, directory: str, keep: int = 2):
    self._dir = os.path.abspath(directory)
    self._mngr = ocp.CheckpointManager(
        self._dir,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=False, create=True))

  def latest_step(self) -> Optional[int]:
    return self._mngr.latest_step()

  def save(self, batches: int, state: TrainState, progress: dict,
           best: Optional[dict]) -> None:
    item = {"state": _state_tree(state), "progress": progress}
    if best is not None:
      item["best"] = best
    self._mngr.save(batches, args=ocp.args.StandardSave(item), force=True)
    self._mngr.wait_until_finished()

  def restore(self, batches: int, state: TrainState, progress: dict,
              best: Optional[dict]) -> tuple[TrainState, dict, Optional[dict]]:
    target = {"state": _state_tree(state), "progress": progress}
    if best is not None:
      target["best"] = best
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    item = self._mngr.restore(batches, args=ocp.args.StandardRestore(abstract))
    state = state.replace(**item["state"])
    return state, item["progress"], item.get("best")

  def restore_latest(self, state: TrainState, progress: dict,
                     best: Optional[dict]) -> Optional[tuple]:
    """Restores the newest checkpoint that reads back whole and finite.

    A checkpoint that fails to restore (truncated or missing files, missing
    metadata) or holds NaN/inf parameters is renamed to `<step>.corrupt`
    (kept for inspection, invisible to orbax) with a warning naming it, and
    the next older one is tried.

    Returns:
      The restored (state, progress, best), or None when no good one exists.
    """
    for step in sorted(self._mngr.all_steps(), reverse=True):
      path = os.path.join(self._dir, str(step))
      try:
        restored = self.restore(step, state, progress, best)
        if not _all_finite(restored[0].params):
          raise ValueError("its parameters hold NaN/inf")
        return restored
      except Exception as e:  # orbax/tensorstore raise many kinds  # pylint: disable=broad-except
        if self._readable(step):  # intact, but not this run's state
          raise ValueError(
              f"Checkpoint {path} does not match the state passed to `fit` "
              f"(another model, optimizer or trainer?): {str(e)[:500]} "
              f"Pass a fresh `workdir` for a different run.") from e
        aside = f"{path}.corrupt"
        if os.path.exists(aside):
          aside = f"{aside}.{int(time.time())}"
        os.replace(path, aside)
        self._mngr.reload()
        warnings.warn(
            f"Checkpoint {path} is corrupt or partial ({type(e).__name__}: "
            f"{str(e)[:300]}); skipped it (moved to {aside}) and falling back "
            f"to the previous checkpoint.", RuntimeWarning, stacklevel=3)
    return None

  def _readable(self, step: int) -> bool:
    """Whether the checkpoint reads back whole, without a target structure."""
    try:
      item = self._mngr.restore(step, args=ocp.args.StandardRestore())
      return _all_finite(item["state"]["params"])
    except Exception:  # pylint: disable=broad-except
      return False

  def close(self) -> None:
    self._mngr.close()


def fit(state: TrainState, step_fn: StepFn, x: np.ndarray, y: np.ndarray, *,
        batch_size: int, num_batches: int, seed: int,
        workdir: Optional[str] = None, checkpoint_every: int = 500,
        epoch_fn: Optional[Callable[[TrainState, int], dict]] = None,
        select: Optional[str] = None, desc: str = "train",
        progress: bool = True, jit: bool = True,
        mesh: Optional[jax.sharding.Mesh] = None) -> TrainResult:
  """Trains `state` with `step_fn` for `num_batches` minibatches.

  Args:
    state: initial state (ignored in favour of the checkpoint when `workdir`
      holds one: the run resumes where it stopped).
    step_fn: `(state, batch, key) -> (state, metrics)`.
    x: float32 [N, H, W, C] training images in [0, 1].
    y: int32 [N] labels.
    batch_size: fixed batch size (the last partial batch is dropped).
    num_batches: total minibatches (passes over the data x batches per pass;
      free AT passes `epochs / replays` passes' worth).
    seed: data-order seed; the step key is `jax.random.key(seed)` folded with
      the step inside the step function.
    workdir: checkpoint folder, or None for no checkpoints.
    checkpoint_every: save every this many minibatches (and at the end).
    epoch_fn: called after each pass as `epoch_fn(state, epoch) -> dict`; the
      dict goes into the history; `{"stop": True}` ends training.
    select: a key of `epoch_fn`'s dict; when given, the returned state holds
      the parameters of the epoch where it was highest (early stopping).
    desc: progress-bar label.
    progress: show a tqdm progress bar.
    jit: jit the step (donating the state).
    mesh: data parallelism (`jaxadv.parallel.make_mesh`): each batch is split
      over the mesh's devices, the state replicated (free AT's `delta` split
      like the batch) and XLA averages the gradients across devices
      (`parallel.data_parallel`; always jitted). None = one device.

  Returns:
    A `TrainResult`.

  Raises:
    ValueError, TypeError: `x` not floating pixels in [0, 1] (integer images:
      divide by 255) or holding NaN/inf; `y` not int [N] in [0, C) for the
      model's C classes; non-positive batch_size / num_batches /
      checkpoint_every, negative seed, fewer examples than one batch, or a
      batch_size not divisible by the mesh's device count.
    TrainingDivergedError: a loss or the parameters became NaN/inf (the
      message names the batch; no non-finite state is checkpointed).
  """
  _validate_fit_args(state, x, y, batch_size=batch_size,
                     num_batches=num_batches,
                     checkpoint_every=checkpoint_every, seed=seed)
  steps_per_epoch = data_lib.num_batches(len(x), batch_size)
  if steps_per_epoch == 0:
    raise ValueError(f"`batch_size` {batch_size} exceeds the {len(x)} examples.")
  key = jax.random.key(seed)
  run_step = jax.jit(step_fn, donate_argnums=(0,)) if jit else step_fn
  if mesh is not None:  # data parallel: the state lives on the mesh
    parallel.check_batch_size(batch_size, mesh)
    state = parallel.shard_state(state, mesh)
    run_step = parallel.data_parallel(step_fn, mesh)

  prog = {"batches": _scalar_int64(0), "train_seconds": _scalar_float64(0.0),
          "best_score": _scalar_float64(-np.inf), "best_epoch": _scalar_int64(-1),
          "stopped": _scalar_int64(0)}
  best = _copy_best(state) if select else None
  ckpt = _Checkpointer(workdir) if workdir else None
  history: list = []
  restored = ckpt.restore_latest(state, prog, best) if ckpt else None
  if restored is not None:
    state, prog, best = restored
    prog = {k: np.asarray(v) for k, v in prog.items()}
    if progress:
      print(f"[{desc}] resumed from {workdir} at batch {int(prog['batches'])}")
  b = int(prog["batches"])
  train_seconds = float(prog["train_seconds"])
  compile_seconds = 0.0
  stopped = bool(prog["stopped"])

  first_bad = jnp.int32(-1)  # first batch with a NaN/inf metric, on device

  def save():
    _check_not_diverged(first_bad, state, b, workdir, ckpt)
    if ckpt is None:
      return
    prog.update(batches=_scalar_int64(b), train_seconds=_scalar_float64(train_seconds),
                stopped=_scalar_int64(stopped))
    ckpt.save(b, state, prog, best)

  bar = tqdm(total=num_batches, initial=b, desc=desc, disable=not progress,
             dynamic_ncols=True, mininterval=1.0)
  first = True
  epoch_end = False
  while b < num_batches and not stopped:
    epoch, start = divmod(b, steps_per_epoch)
    sums: dict = {}
    count = 0
    t0 = time.perf_counter()
    for batch in data_lib.batches(x, y, batch_size, seed=seed, epoch=epoch,
                                  start_batch=start):
      ts = time.perf_counter()
      state, metrics = run_step(state, batch, key)
      if first:
        jax.block_until_ready(state)
        compile_seconds = time.perf_counter() - ts
        t0 += compile_seconds  # compilation is not training time
        first = False
      b += 1
      count += 1
      first_bad = _track_nonfinite(first_bad, metrics, b)
      sums = metrics if not sums else jax.tree.map(jnp.add, sums, metrics)
      if b % 50 == 0:
        _check_not_diverged(first_bad, state, b, workdir, ckpt)
        bar.set_postfix({k: f"{float(v) / count:.3f}" for k, v in sums.items()})
      bar.update(1)
      epoch_end = b % steps_per_epoch == 0 or b == num_batches
      if b % checkpoint_every == 0 and not epoch_end:  # epoch ends save below
        jax.block_until_ready(state)
        train_seconds += time.perf_counter() - t0
        save()
        t0 = time.perf_counter()
      if b == num_batches:
        break
    jax.block_until_ready(state)
    train_seconds += time.perf_counter() - t0
    record = {"epoch": epoch, "batches": b}
    record.update({k: float(v) / max(count, 1) for k, v in sums.items()})
    if epoch_end:
      if epoch_fn is not None:
        extra = epoch_fn(state, epoch)
        record.update(extra)
        stopped = bool(extra.get("stop", False))
        if select is not None and float(extra[select]) > float(prog["best_score"]):
          prog["best_score"] = _scalar_float64(extra[select])
          prog["best_epoch"] = _scalar_int64(epoch)
          best = _copy_best(state)
      save()
    history.append(record)
    if progress:
      bar.write(f"[{desc}] " + ", ".join(
          f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
          for k, v in record.items()))
  _check_not_diverged(first_bad, state, b, workdir, ckpt)
  bar.close()
  if ckpt is not None:
    ckpt.close()
  if select is not None and int(prog["best_epoch"]) >= 0:
    state = state.replace(params=best["params"],
                          batch_stats=best.get("batch_stats", {}))
  return TrainResult(state=state, history=history, train_seconds=train_seconds,
                     compile_seconds=compile_seconds, batches=b,
                     stopped_early=stopped)
