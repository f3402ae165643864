"""The training loop: fixed-size batches, progress bar, resumable checkpoints.

The data order is a pure function of (seed, epoch) and every per-step key is
`step_key(key, state) = fold_in(key, state.step)`, so a run killed at any
point and resumed from its last checkpoint continues with exactly the batches
and keys it would have seen. Checkpoints are written with orbax (atomic: a
step directory appears only once it is complete).

With `metrics_dir`, `fit` also streams its metrics to disk while it trains
(`jaxadv.metrics`: an append-only `metrics.jsonl` and TensorBoard event
files), and a resumed run reads the records of the batches before its
checkpoint back into its history.

`fit` is built from small parts: `_validate_fit_args`, `_prepare_step`
(jit / data-parallel placement), `_Checkpointer` (save, restore, skip
corrupt checkpoints), `_Clock` (training wall time without compilation,
checkpoints and hooks), `_check_not_diverged`, and `_Fit`, which runs the
passes (`run_pass`), the hooks (`evaluate`, `end_pass`), the metric lines
(`log_step`, `log_record`) and keeps the history.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from jaxadv import digests
from jaxadv import validation
from jaxadv import data as data_lib
from jaxadv import metrics as metrics_lib
from jaxadv import parallel
from jaxadv.training.state import TrainState
from jaxadv.training.state import apply_model
from jaxadv.training.state import current_attack_params
from jaxadv.training.steps import StepFn

_STATE_FIELDS = ("step", "params", "opt_state", "batch_stats", "delta",
                 "attack_params")


@dataclasses.dataclass
class TrainResult:
  """What `fit` returns.

  Attributes:
    state: the final (or, with `select`, the best) training state.
    history: one dict per finished epoch ("epoch", "batches", the mean step
      metrics and whatever `epoch_fn` returned) and, with `eval_fn`, one per
      evaluation ("batches", "train_seconds" and what `eval_fn` returned),
      in the order they happened. With `metrics_dir`, a resumed run's
      history starts with the records of the batches before its checkpoint
      (read back from `metrics.jsonl`), so it covers the whole run.
    train_seconds: wall time spent in training steps, summed over resumed
      segments; excludes the first step of each segment (compilation),
      checkpointing, `epoch_fn` and `eval_fn`.
    compile_seconds: the first step's extra time (compilation), this segment.
    batches: minibatches processed.
    stopped_early: True when `epoch_fn` or `eval_fn` asked to stop, or a
      `CollapseGuard` stopped the run.
    collapsed: True when a `CollapseGuard` detected catastrophic
      overfitting; `state` is then the rolled-back (best check's) state,
      or what recovery trained from it, never the collapsed one.
    collapse_batch: the batch count of the (first) check that found the
      collapse, or None.
  """
  state: TrainState
  history: list
  train_seconds: float
  compile_seconds: float
  batches: int
  stopped_early: bool = False
  collapsed: bool = False
  collapse_batch: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class CollapseGuard:
  """Catastrophic-overfitting detection and recovery for `fit`.

  Single-step adversarial training (FGSM-RS, free AT) can collapse: within
  an epoch its PGD accuracy falls to about zero while its FGSM accuracy
  stays high (Wong, Rice & Kolter, ICLR 2020). Every `every` minibatches
  `fit` calls `check(state)` (the clock stopped), which returns the
  held-out robust accuracy as {"pgd_acc": float} and, optionally,
  {"fgsm_acc": float}. From batch `start` on (after an eps ramp, when a
  drop means something) a check is a collapse when

      pgd_acc < best_pgd_acc - drop    or    fgsm_acc - pgd_acc > fgsm_gap,

  `best_pgd_acc` being the highest `pgd_acc` of the checks since `start`.
  On a collapse `fit` rolls the whole state back to that best check's
  (parameters, optimizer, BatchNorm, free AT's delta, step) and then
  either stops (`action="stop"`) or trains on from there with
  `recovery_step` (`action="continue"`, e.g. `n_fgsm_step()` or
  `pgd_at_step(...)`; the batches after the best check are trained again,
  so `num_batches` still counts the batches of the result). A second
  collapse (during recovery) rolls back and stops. The `TrainResult`
  carries `collapsed` and `collapse_batch`; the history a record per check
  ({"batches", "guard_pgd_acc", ...}) and one per collapse.

  Attributes:
    check: `state -> {"pgd_acc": float, "fgsm_acc"?: float}` (fractions).
    every: minibatches between checks (>= 1); also checked after the last.
    drop: the tolerated fall below the best check (0.2, as Wong et al.'s
      early stopping on a held-out PGD check).
    fgsm_gap: the tolerated FGSM - PGD accuracy gap (0.3), or None.
    start: the first batch at which checks are judged (and count as best).
    action: "stop" or "continue".
    recovery_step: the step to continue with (required by "continue").
  """
  check: Callable[[TrainState], dict]
  every: int
  drop: float = 0.2
  fgsm_gap: Optional[float] = 0.3
  start: int = 0
  action: str = "stop"
  recovery_step: Optional[StepFn] = None

  def __post_init__(self):
    if not callable(self.check):
      raise TypeError(f"`check` must be callable; got {self.check!r}.")
    validation.check_count(self.every, "every", 1)
    validation.check_interval(self.drop, "drop", 0.0, 1.0)
    if self.fgsm_gap is not None:
      validation.check_interval(self.fgsm_gap, "fgsm_gap", 0.0, 1.0)
    validation.check_count(self.start, "start", 0)
    validation.check_choice(self.action, "action", ("stop", "continue"))
    if self.action == "continue" and self.recovery_step is None:
      raise ValueError('`action="continue"` needs a `recovery_step`.')

  def collapsed(self, result: dict, best: float) -> Optional[str]:
    """Why `result` is a collapse against the best PGD accuracy, or None."""
    pgd = float(result["pgd_acc"])
    if pgd < best - self.drop:
      return (f"held-out PGD accuracy {pgd:.3f} fell below the best check's "
              f"{best:.3f} by more than {self.drop}")
    fgsm = result.get("fgsm_acc")
    if (self.fgsm_gap is not None and fgsm is not None and
        float(fgsm) - pgd > self.fgsm_gap):
      return (f"FGSM accuracy {float(fgsm):.3f} exceeds PGD accuracy "
              f"{pgd:.3f} by more than {self.fgsm_gap}")
    return None


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


def _warn_natural(state: TrainState, step_fn: StepFn) -> None:
  """Warns when an adversarial step would silently train naturally."""
  for name in getattr(step_fn, "requires", ()):
    value = float(np.asarray(state.attack_params.get(name, 0.0)))
    if value == 0.0:
      what = ("trains on clean inputs (natural training)" if name == "eps"
              else "never moves from its random start")
      warnings.warn(
          f"`state.attack_params[{name!r}]` is 0, so this adversarial "
          f"training step {what}. Pass {name}=... (pixel units) to "
          "training.create_train_state, or use training.natural_step().",
          RuntimeWarning, stacklevel=3)


def _validate_fit_args(state: TrainState, x, y, *, batch_size, num_batches,
                       checkpoint_every, seed, eval_fn=None,
                       eval_every=None, log_every=1) -> None:
  """Checks `fit`'s data and counts once, on the host, before any step."""
  validation.check_images(x, "x")
  num_classes = validation.output_classes(
      lambda v: apply_model(state, state.params, v, train=False)[0], x)
  validation.check_labels(y, np.shape(x)[0], "y", num_classes=num_classes)
  validation.check_count(batch_size, "batch_size", 1)
  validation.check_count(num_batches, "num_batches", 1)
  validation.check_count(checkpoint_every, "checkpoint_every", 1)
  validation.check_count(seed, "seed", 0)
  validation.check_count(log_every, "log_every", 1)
  if eval_every is not None:
    validation.check_count(eval_every, "eval_every", 1)
    if eval_fn is None:
      raise ValueError("`eval_every` needs an `eval_fn`.")


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
           best: Optional[dict], guard_best: Optional[dict] = None) -> None:
    item = {"state": _state_tree(state), "progress": progress}
    if best is not None:
      item["best"] = best
    if guard_best is not None:
      item["guard_best"] = guard_best
    self._mngr.save(batches, args=ocp.args.StandardSave(item), force=True)
    self._mngr.wait_until_finished()

  def restore(self, batches: int, state: TrainState, progress: dict,
              best: Optional[dict], guard_best: Optional[dict] = None
              ) -> tuple[TrainState, dict, Optional[dict], Optional[dict]]:
    target = {"state": _state_tree(state), "progress": progress}
    if best is not None:
      target["best"] = best
    if guard_best is not None:
      target["guard_best"] = guard_best
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    item = self._mngr.restore(batches, args=ocp.args.StandardRestore(abstract))
    state = state.replace(**item["state"])
    return (state, item["progress"], item.get("best"),
            item.get("guard_best"))

  def delete_from(self, batches: int) -> None:
    """Deletes the checkpoints at `batches` and later (an abandoned,
    collapsed stretch of training)."""
    for step in self._mngr.all_steps():
      if step >= batches:
        self._mngr.delete(step)
    self._mngr.reload()

  def restore_latest(self, state: TrainState, progress: dict,
                     best: Optional[dict], guard_best: Optional[dict] = None
                     ) -> Optional[tuple]:
    """Restores the newest checkpoint that reads back whole and finite.

    A checkpoint that fails to restore (truncated or missing files, missing
    metadata) or holds NaN/inf parameters is renamed to `<step>.corrupt`
    (kept for inspection, invisible to orbax) with a warning naming it, and
    the next older one is tried.

    Returns:
      The restored (state, progress, best, guard_best), or None when no
      good one exists.
    """
    for step in sorted(self._mngr.all_steps(), reverse=True):
      path = os.path.join(self._dir, str(step))
      try:
        restored = self.restore(step, state, progress, best, guard_best)
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


_RUN_FILE = "run.json"


def _run_record(state: TrainState, x, y, *, batch_size: int, seed: int,
                run_config: Optional[dict]) -> dict:
  """What a run was started with: `fit`'s arguments that change its result."""
  return {"seed": int(seed), "batch_size": int(batch_size),
          "examples": int(np.shape(x)[0]), "data": digests.tree_digest(x, y),
          "initial_state": digests.tree_digest(_state_tree(state)),
          "run_config": json.loads(json.dumps(run_config or {}, default=str,
                                              sort_keys=True))}


def _check_run(workdir: str, record: dict, num_batches: int,
               on_mismatch: str) -> None:
  """Refuses (or sets aside) a workdir whose checkpoints belong to another run.

  A fresh workdir gets `run.json`; a workdir with checkpoints and a
  `run.json` must match `record`, and its checkpoints must not be past
  `num_batches`. Checkpoints without `run.json` (written before it existed)
  are resumed unchecked.
  """
  path = os.path.join(workdir, _RUN_FILE)
  steps = ([int(d) for d in os.listdir(workdir) if d.isdigit()]
           if os.path.isdir(workdir) else [])
  problems = []
  if steps and os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      old = json.load(f)
    problems = [f"{k} (checkpointed run: {old.get(k)!r}, this call: "
                f"{record[k]!r})" for k in record if old.get(k) != record[k]]
    if max(steps) > num_batches:
      problems.append(f"num_batches (the checkpoints reach batch "
                      f"{max(steps)}, this call asks for {num_batches})")
  elif steps:
    return  # a run from before run.json: nothing to compare
  if problems:
    if on_mismatch == "raise":
      raise ValueError(
          f"`workdir` {workdir} holds checkpoints of another run; it differs "
          "in " + "; ".join(problems) + ". Pass a fresh `workdir`, or "
          "on_mismatch='restart' to set the old checkpoints aside and start "
          "again.")
    aside = f"{workdir.rstrip(os.sep)}.stale-{int(time.time())}"
    os.replace(workdir, aside)
    warnings.warn(f"`workdir` {workdir} held another run ({'; '.join(problems)}"
                  f"); moved it to {aside} and starting fresh.",
                  RuntimeWarning, stacklevel=3)
  if problems or not steps:
    os.makedirs(workdir, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(record, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _runnable(step_fn: StepFn, *, jit: bool,
              mesh: Optional[jax.sharding.Mesh]) -> StepFn:
  """The step to run: jitted (donating the state), sharded, or as it is."""
  if mesh is not None:
    return parallel.data_parallel(step_fn, mesh)
  return jax.jit(step_fn, donate_argnums=(0,)) if jit else step_fn


def _prepare_step(state: TrainState, step_fn: StepFn, *, batch_size: int,
                  jit: bool, mesh: Optional[jax.sharding.Mesh]
                  ) -> tuple[TrainState, StepFn]:
  """The state placed for the step, and the step to run (jitted or sharded).

  Raises:
    ValueError: `batch_size` (or free AT's delta) not divisible by the mesh.
  """
  if jit and mesh is None:
    # The jitted step donates its input state: train on a copy, so the
    # caller's `state` stays usable (e.g. for a second `fit`).
    state = jax.tree.map(jnp.copy, state)
  if mesh is not None:  # data parallel: the state lives on the mesh
    parallel.check_batch_size(batch_size, mesh)
    state = parallel.shard_state(state, mesh)
  return state, _runnable(step_fn, jit=jit, mesh=mesh)


def _initial_progress(guard: bool = False) -> dict:
  """The loop progress a checkpoint stores next to the state (0-d arrays);
  with a `CollapseGuard`, also its best check and collapse record."""
  prog = {"batches": _scalar_int64(0), "train_seconds": _scalar_float64(0.0),
          "best_score": _scalar_float64(-np.inf),
          "best_epoch": _scalar_int64(-1), "stopped": _scalar_int64(0)}
  if guard:
    prog.update(guard_best_score=_scalar_float64(-np.inf),
                guard_best_batch=_scalar_int64(-1),
                collapsed=_scalar_int64(0), collapse_batch=_scalar_int64(-1),
                recovering=_scalar_int64(0))
  return prog


def _copy_state_tree(state: TrainState) -> dict:
  """A copy of the state's arrays (its buffers are donated to the step)."""
  return jax.tree.map(jnp.copy, _state_tree(state))


class _Clock:
  """Training wall time: runs only while steps do (blocks before reading)."""

  def __init__(self, seconds: float):
    self.seconds = seconds
    self._t0: Optional[float] = None

  def start(self) -> None:
    self._t0 = time.perf_counter()

  def exclude(self, seconds: float) -> None:
    """Takes `seconds` (the first step's compilation) off the running lap."""
    self._t0 += seconds

  def elapsed(self) -> float:
    """`seconds` plus the running lap (no wait for the device)."""
    if self._t0 is None:
      return self.seconds
    return self.seconds + time.perf_counter() - self._t0

  def stop(self, state: TrainState) -> None:
    """Waits for `state` and adds the lap to `seconds`."""
    jax.block_until_ready(state)
    self.seconds += time.perf_counter() - self._t0
    self._t0 = None


class _Fit:
  """One `fit` call: its state, progress, checkpoints, hooks and history."""

  def __init__(self, state, run_step, x, y, *, batch_size, num_batches, seed,
               workdir, checkpoint_every, epoch_fn, select, eval_fn,
               eval_every, desc, progress, metrics_dir=None, log_every=50,
               learning_rate=None, guard: Optional[CollapseGuard] = None,
               recovery_step: Optional[StepFn] = None):
    self.state, self.run_step = state, run_step
    self.guard, self.recovery_step = guard, recovery_step
    self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
    self.num_batches, self.checkpoint_every = num_batches, checkpoint_every
    self.epoch_fn, self.select = epoch_fn, select
    self.eval_fn, self.eval_every = eval_fn, eval_every
    self.workdir, self.desc, self.progress = workdir, desc, progress
    self.steps_per_epoch = data_lib.num_batches(len(x), batch_size)
    self.key = jax.random.key(seed)
    self.prog = _initial_progress(guard is not None)
    self.best = _copy_best(state) if select else None
    # The state at the best guard check (a placeholder until the first).
    self.guard_best = _copy_state_tree(state) if guard else None
    self.ckpt = _Checkpointer(workdir) if workdir else None
    self.history: list = []
    self.compile_seconds = 0.0
    self.compiled = False
    self.evaluated = 0  # the last batch count `eval_fn` saw
    self.evaluated_guard = -1  # ... and the guard's check
    self.first_bad = jnp.int32(-1)  # first batch with a NaN/inf metric
    self.restore()
    self.b = int(self.prog["batches"])
    self.stopped = bool(self.prog["stopped"])
    self.clock = _Clock(float(self.prog["train_seconds"]))
    self.bar = tqdm(total=num_batches, initial=self.b, desc=desc,
                    disable=not progress, dynamic_ncols=True, mininterval=1.0)
    self.log_every, self.learning_rate = log_every, learning_rate
    self.writer: Optional[metrics_lib.MetricWriter] = None
    self.last_log = (self.b, self.clock.seconds)  # (batches, train seconds)
    if metrics_dir:
      self.open_metrics(os.fspath(metrics_dir))

  # -- metrics ---------------------------------------------------------------

  def open_metrics(self, metrics_dir: str) -> None:
    """The history before the checkpoint, and a writer for this segment
    (process 0; none when nothing is left to train)."""
    self.history = metrics_lib.history(metrics_dir, upto=self.b)
    if (self.b < self.num_batches and not self.stopped and
        jax.process_index() == 0):
      self.writer = metrics_lib.MetricWriter(metrics_dir, start_step=self.b)

  def schedules(self) -> dict:
    """"eps" (after the ramp) and "learning_rate" at the state's step."""
    out = {}
    if self.state.attack_params and "eps" in self.state.attack_params:
      out["eps"] = float(current_attack_params(self.state)[0])
    lr = self.learning_rate
    if lr is not None:
      out["learning_rate"] = float(lr(int(self.state.step)) if callable(lr)
                                   else lr)
    return out

  def log_step(self, metrics: dict) -> None:
    """A "step" line: this minibatch's metrics, the schedules and the
    training time per minibatch since the last line (clock stopped)."""
    b0, s0 = self.last_log
    scalars = {k: float(v) for k, v in metrics.items()}
    scalars.update(self.schedules())
    if self.b > b0:
      scalars["step_seconds"] = (self.clock.seconds - s0) / (self.b - b0)
    self.last_log = (self.b, self.clock.seconds)
    self.writer.write("step", self.b, scalars)

  def log_record(self, kind: str, record: dict) -> None:
    """An "epoch" or "eval" line for a history record."""
    if self.writer is None:
      return
    scalars = metrics_lib.numeric(record, exclude=("epoch", "batches"))
    scalars.update(self.schedules())
    scalars["train_seconds"] = self.clock.seconds
    self.writer.write(kind, self.b, scalars, record)

  # -- checkpoints -----------------------------------------------------------

  def restore(self) -> None:
    """Resumes from the newest good checkpoint in `workdir`, if any."""
    if self.ckpt is None:
      return
    restored = self.ckpt.restore_latest(self.state, self.prog, self.best,
                                        self.guard_best)
    if restored is None:
      return
    self.state, prog, self.best, self.guard_best = restored
    self.prog = {k: np.asarray(v) for k, v in prog.items()}
    if self.guard is not None and int(self.prog["recovering"]):
      self.run_step = self.recovery_step
    if self.progress:
      print(f"[{self.desc}] resumed from {self.workdir} at batch "
            f"{int(self.prog['batches'])}")

  def check(self) -> None:
    _check_not_diverged(self.first_bad, self.state, self.b, self.workdir,
                        self.ckpt)

  def save(self) -> None:
    """Checkpoints the state and progress (never a diverged state)."""
    self.check()
    if self.writer is not None:
      self.writer.flush()  # the lines up to this checkpoint are on disk
    if self.ckpt is None:
      return
    self.prog.update(batches=_scalar_int64(self.b),
                     train_seconds=_scalar_float64(self.clock.seconds),
                     stopped=_scalar_int64(self.stopped))
    self.ckpt.save(self.b, self.state, self.prog, self.best, self.guard_best)

  # -- steps -----------------------------------------------------------------

  def train_step(self, batch) -> dict:
    """One step; the first one of the segment is timed as compilation."""
    ts = time.perf_counter()
    self.state, metrics = self.run_step(self.state, batch, self.key)
    if not self.compiled:
      jax.block_until_ready(self.state)
      first = time.perf_counter() - ts
      self.compile_seconds += first
      self.clock.exclude(first)  # not training time
      self.compiled = True
      # Step times are measured from the end of the first (compiling) step.
      self.last_log = (self.b + 1, self.clock.elapsed())
    self.b += 1
    self.first_bad = _track_nonfinite(self.first_bad, metrics, self.b)
    return metrics

  def run_pass(self) -> None:
    """The rest of the current pass over the data (or up to `num_batches`)."""
    epoch, start = divmod(self.b, self.steps_per_epoch)
    sums: dict = {}
    count = 0
    epoch_end = False
    self.clock.start()
    for batch in data_lib.batches(self.x, self.y, self.batch_size,
                                  seed=self.seed, epoch=epoch,
                                  start_batch=start):
      metrics = self.train_step(batch)
      count += 1
      sums = metrics if not sums else jax.tree.map(jnp.add, sums, metrics)
      b = self.b
      if b % 50 == 0:
        self.check()
        self.bar.set_postfix({k: f"{float(v) / count:.3f}"
                              for k, v in sums.items()})
      self.bar.update(1)
      if self.writer is not None and b % self.log_every == 0:
        self.paused(lambda: self.log_step(metrics))  # pylint: disable=cell-var-from-loop
      epoch_end = b % self.steps_per_epoch == 0 or b == self.num_batches
      if self.eval_every and b % self.eval_every == 0:
        self.paused(self.evaluate)
      if self.guard is not None and (b % self.guard.every == 0 or
                                     b == self.num_batches):
        if self.paused(self.guard_check):  # rolled back: a new pass
          self.clock.stop(self.state)
          return
      if b % self.checkpoint_every == 0 and not epoch_end and not self.stopped:
        self.paused(self.save)  # epoch ends save below
      if b == self.num_batches or self.stopped:
        break
    if self.eval_fn is not None and self.b == self.num_batches:
      self.paused(self.evaluate)  # after the last batch (once)
    self.clock.stop(self.state)
    record = {"epoch": epoch, "batches": self.b}
    record.update({k: float(v) / max(count, 1) for k, v in sums.items()})
    if epoch_end:
      self.end_pass(epoch, record)
    self.log_record("epoch", record)  # before the checkpoint
    if epoch_end or self.stopped:
      self.save()
    self.history.append(record)
    self.log(record)

  def paused(self, fn: Callable[[], Any]) -> Any:
    """Runs `fn` with the training clock stopped; returns what it returns."""
    self.clock.stop(self.state)
    out = fn()
    self.clock.start()
    return out

  # -- hooks -----------------------------------------------------------------

  def evaluate(self) -> None:
    """`eval_fn(state, batches)` into the history; `{"stop": True}` stops."""
    if self.eval_fn is None or self.evaluated == self.b:
      return
    self.check()  # never evaluate a diverged model
    self.evaluated = self.b
    extra = dict(self.eval_fn(self.state, self.b))
    record = {"batches": self.b, "train_seconds": self.clock.seconds, **extra}
    self.history.append(record)
    self.stopped = self.stopped or bool(extra.get("stop", False))
    self.log_record("eval", record)
    self.log(record)

  def guard_check(self) -> bool:
    """The `CollapseGuard` check; True when it rolled the state back."""
    guard = self.guard
    if self.evaluated_guard == self.b:
      return False
    self.check()  # never judge a diverged model
    self.evaluated_guard = self.b
    result = dict(guard.check(self.state))
    if "pgd_acc" not in result:
      raise KeyError("`CollapseGuard.check` must return {'pgd_acc': ...}; "
                     f"got keys {sorted(result)}.")
    record = {"batches": self.b, "train_seconds": self.clock.seconds,
              **{f"guard_{k}": float(v) for k, v in result.items()}}
    self.history.append(record)
    self.log_record("guard", record)
    self.log(record)
    if self.b < guard.start:
      return False
    best = float(self.prog["guard_best_score"])
    why = guard.collapsed(result, best) if np.isfinite(best) else None
    if why is None:
      if float(result["pgd_acc"]) > best:
        self.prog["guard_best_score"] = _scalar_float64(result["pgd_acc"])
        self.prog["guard_best_batch"] = _scalar_int64(self.b)
        self.guard_best = _copy_state_tree(self.state)
      return False
    back = int(self.prog["guard_best_batch"])
    recovering = bool(int(self.prog["recovering"]))
    go_on = guard.action == "continue" and not recovering
    if not int(self.prog["collapsed"]):
      self.prog["collapse_batch"] = _scalar_int64(self.b)
    self.prog["collapsed"] = _scalar_int64(1)
    event = {**record, "batches": back, "collapsed": True,
             "detected_at": self.b, "rolled_back_to": back, "reason": why,
             "then": "continue with recovery_step" if go_on else "stop"}
    warnings.warn(f"[{self.desc}] catastrophic overfitting at batch "
                  f"{self.b}: {why}; rolled back to batch {back} and "
                  f"{event['then']}.", RuntimeWarning, stacklevel=2)
    self.state = self.state.replace(**jax.tree.map(jnp.copy, self.guard_best))
    self.b = back
    self.bar.n = back
    self.evaluated = self.evaluated_guard = -1  # batch counts come again
    # The collapsed stretch's records stop counting, as on disk.
    self.history = [r for r in self.history if r["batches"] <= back]
    self.history.append(event)
    if self.writer is not None:
      self.writer.rollback(back)
    self.log_record("collapse", event)
    self.log(event)
    if go_on:
      self.prog["recovering"] = _scalar_int64(1)
      self.run_step = self.recovery_step
      self.compiled = False  # its first step compiles
    else:
      self.stopped = True
    if self.ckpt is not None:
      self.ckpt.delete_from(back)  # the collapsed stretch's checkpoints
    self.save()
    return True

  def end_pass(self, epoch: int, record: dict) -> None:
    """`epoch_fn` at the end of a pass; early-stopping selection."""
    if self.epoch_fn is None:
      return
    extra = self.epoch_fn(self.state, epoch)
    record.update(extra)
    self.stopped = self.stopped or bool(extra.get("stop", False))
    if (self.select is not None and
        float(extra[self.select]) > float(self.prog["best_score"])):
      self.prog["best_score"] = _scalar_float64(extra[self.select])
      self.prog["best_epoch"] = _scalar_int64(epoch)
      self.best = _copy_best(self.state)

  def log(self, record: dict) -> None:
    if self.progress:
      self.bar.write(f"[{self.desc}] " + ", ".join(
          f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
          for k, v in record.items()))

  # -- the run ---------------------------------------------------------------

  def run(self) -> TrainResult:
    try:
      while self.b < self.num_batches and not self.stopped:
        self.run_pass()
      self.check()
    finally:
      if self.writer is not None:
        self.writer.close()
    self.bar.close()
    if self.ckpt is not None:
      self.ckpt.close()
    state = self.state
    if self.select is not None and int(self.prog["best_epoch"]) >= 0:
      state = state.replace(params=self.best["params"],
                            batch_stats=self.best.get("batch_stats", {}))
    collapsed = self.guard is not None and bool(int(self.prog["collapsed"]))
    return TrainResult(state=state, history=self.history,
                       train_seconds=self.clock.seconds,
                       compile_seconds=self.compile_seconds, batches=self.b,
                       stopped_early=self.stopped, collapsed=collapsed,
                       collapse_batch=(int(self.prog["collapse_batch"])
                                       if collapsed else None))


def fit(state: TrainState, step_fn: StepFn, x: np.ndarray, y: np.ndarray, *,
        batch_size: int, num_batches: int, seed: int,
        workdir: Optional[str] = None, checkpoint_every: int = 500,
        epoch_fn: Optional[Callable[[TrainState, int], dict]] = None,
        select: Optional[str] = None,
        eval_fn: Optional[Callable[[TrainState, int], dict]] = None,
        eval_every: Optional[int] = None, desc: str = "train",
        progress: bool = True, jit: bool = True,
        mesh: Optional[jax.sharding.Mesh] = None,
        metrics_dir: Optional[str] = None, log_every: int = 50,
        learning_rate: Optional[Callable[[int], float] | float] = None,
        guard: Optional[CollapseGuard] = None,
        run_config: Optional[dict] = None,
        on_mismatch: str = "raise") -> TrainResult:
  """Trains `state` with `step_fn` for `num_batches` minibatches.

  Args:
    state: initial state (ignored in favour of the checkpoint when `workdir`
      holds one of the same run: it resumes where it stopped).
    step_fn: `(state, batch, key) -> (state, metrics)`.
    x: float32 [N, H, W, C] training images in [0, 1].
    y: int32 [N] labels.
    batch_size: fixed batch size (the last partial batch is dropped).
    num_batches: total minibatches (passes over the data x batches per pass;
      free AT passes `epochs / replays` passes' worth).
    seed: data-order seed; the step key is `jax.random.key(seed)` folded with
      the step inside the step function.
    workdir: checkpoint folder, or None for no checkpoints. It also keeps
      `run.json`, what the run was started with (`seed`, `batch_size`, a
      digest of `x`, `y` and of the initial `state`, and `run_config`):
      resuming it with any of these changed, or with `num_batches` below
      the batches already checkpointed, is refused (`on_mismatch`). A larger
      `num_batches` continues the run.
    checkpoint_every: save every this many minibatches (and at the end).
    epoch_fn: called after each pass as `epoch_fn(state, epoch) -> dict`; the
      dict goes into the pass's history record; `{"stop": True}` ends
      training.
    select: a key of `epoch_fn`'s dict; when given, the returned state holds
      the parameters of the epoch where it was highest (early stopping).
    eval_fn: called as `eval_fn(state, batches_done) -> dict` every
      `eval_every` minibatches and after the last one (once per batch
      count); each dict goes into the history with "batches" and
      "train_seconds" (training time so far, see `TrainResult`);
      `{"stop": True}` ends training (the state is checkpointed first).
      Its time is not training time.
    eval_every: minibatches between `eval_fn` calls; None = only after the
      last one.
    desc: progress-bar label.
    progress: show a tqdm progress bar.
    jit: jit the step (donating the state).
    mesh: data parallelism (`jaxadv.parallel.make_mesh`): each batch is split
      over the mesh's devices, the state replicated (free AT's `delta` split
      like the batch) and XLA averages the gradients across devices
      (`parallel.data_parallel`; always jitted). None = one device.
    metrics_dir: a folder for the metrics written while training
      (`jaxadv.metrics`: `metrics.jsonl` and TensorBoard event files; process
      0 writes): a "step" line every `log_every` minibatches, an "epoch" line
      per pass (before its checkpoint) and an "eval" line per `eval_fn`
      call. Resuming, the history restarts with the records up to the
      checkpoint. None = no metrics on disk.
    log_every: minibatches between "step" lines (each waits for the
      device; the progress bar already does every 50).
    learning_rate: the optimizer's schedule (`count -> lr`, e.g. the optax
      schedule given to the optimizer) or a constant, logged as
      "learning_rate" at the state's step; None = not logged.
    guard: a `CollapseGuard`: periodic held-out robust checks that detect
      catastrophic overfitting, roll back to the best check's state and
      stop or continue with a safer step; the result's `collapsed` and
      `collapse_batch` say whether and when. Its best check's state is
      checkpointed too, so a resumed run rolls back the same way. None =
      no detection.
    run_config: the run's other settings (hyper-parameters, the trainer's
      name: anything JSON-able), recorded in `run.json` and compared when
      the workdir is resumed. None = {}.
    on_mismatch: "raise" (default): a `workdir` holding another run raises
      ValueError naming what differs; "restart": its folder is moved aside
      (`<workdir>.stale-<time>`, with a warning) and training starts fresh.

  Returns:
    A `TrainResult`.

  Raises:
    ValueError, TypeError: `x` not floating pixels in [0, 1] (integer images:
      divide by 255) or holding NaN/inf; `y` not int [N] in [0, C) for the
      model's C classes; non-positive batch_size / num_batches /
      checkpoint_every / eval_every / log_every, `eval_every` without
      `eval_fn`,
      negative seed, fewer examples than one batch, or a batch_size not
      divisible by the mesh's device count.
    TrainingDivergedError: a loss or the parameters became NaN/inf (the
      message names the batch; no non-finite state is checkpointed).
  """
  _validate_fit_args(state, x, y, batch_size=batch_size,
                     num_batches=num_batches,
                     checkpoint_every=checkpoint_every, seed=seed,
                     eval_fn=eval_fn, eval_every=eval_every,
                     log_every=log_every)
  _warn_natural(state, step_fn)
  validation.check_choice(on_mismatch, "on_mismatch", ("raise", "restart"))
  if workdir:
    _check_run(os.path.abspath(workdir), _run_record(
        state, x, y, batch_size=batch_size, seed=seed, run_config=run_config),
               num_batches, on_mismatch)
  if guard is not None and not isinstance(guard, CollapseGuard):
    raise TypeError(f"`guard` must be a CollapseGuard or None; got {guard!r}.")
  if data_lib.num_batches(len(x), batch_size) == 0:
    raise ValueError(f"`batch_size` {batch_size} exceeds the {len(x)} examples.")
  recovery = None
  if guard is not None and guard.recovery_step is not None:
    _warn_natural(state, guard.recovery_step)
    recovery = _runnable(guard.recovery_step, jit=jit, mesh=mesh)
  state, run_step = _prepare_step(state, step_fn, batch_size=batch_size,
                                  jit=jit, mesh=mesh)
  return _Fit(state, run_step, x, y, batch_size=batch_size,
              num_batches=num_batches, seed=seed, workdir=workdir,
              checkpoint_every=checkpoint_every, epoch_fn=epoch_fn,
              select=select, eval_fn=eval_fn, eval_every=eval_every,
              desc=desc, progress=progress, metrics_dir=metrics_dir,
              log_every=log_every, learning_rate=learning_rate, guard=guard,
              recovery_step=recovery).run()
