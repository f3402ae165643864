r"""Seed sweep of single-step adversarial training (issue #22).

  python -m experiments.seed_sweep \
      --config=experiments/configs/seed_sweep_mnist.py --workdir=/tmp/sweep

Trains every method of `config.methods` for every seed of `config.seeds`
and held-out split of `config.splits` (the reference method only for
`config.reference_runs`), each under a `training.CollapseGuard` on its
held-out split, and evaluates each with PGD-`eval.pgd_steps` x
`eval.pgd_restarts` on the first `test_limit` test images.

Split `s` holds out `val_size` training images chosen by the permutation of
seed `1000 + s` (never trained on); seed `k` sets the parameter
initialisation (`fold_in(key(k), method index)`), the data order and the
step keys.

Writes `WORKDIR/results.json` (one record per run: method, seed, split,
collapsed, collapse_batch, clean_acc, pgd_acc, pgd_steps, pgd_restarts,
eval_examples, train_seconds, train_steps, fwd_bwd_passes, with the
environment), `WORKDIR/summary.md` (per method: runs, collapsed, worst /
median / best PGD accuracy, mean training seconds, its ratio to FGSM-RS)
and `WORKDIR/spread.png`. A killed sweep started again with the same
workdir keeps its finished runs (`WORKDIR/runs/`) and resumes the one it
was in from its last checkpoint. `--config.num_shards=2
--config.shard_index=0` (and 1) split the runs over two processes sharing
the workdir, e.g. one per core.
"""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np

from experiments import common
from jaxadv import evaluation
from jaxadv import training

RESULT_KEYS = ("method", "seed", "split", "collapsed", "collapse_batch",
               "diverged",
               "clean_acc", "pgd_acc", "pgd_steps", "pgd_restarts",
               "eval_examples", "train_seconds", "train_steps",
               "fwd_bwd_passes")


def runs(config: ml_collections.ConfigDict) -> list[tuple[str, int, int]]:
  """Every (method, seed, split) of the sweep, in order."""
  out = []
  for method in config.methods:
    if method == config.reference:
      out += [(method, int(s), int(p)) for s, p in config.reference_runs]
    else:
      out += [(method, s, p) for p in config.splits for s in config.seeds]
  return out


def split_data(x, y, split: int, val_size: int):
  """(train, held-out) of split `split`: a permutation of seed 1000 + split."""
  perm = np.random.default_rng(1000 + split).permutation(len(x))
  val, tr = perm[:val_size], perm[val_size:]
  return (x[tr], y[tr]), (x[val], y[val])


def guard_timing(config, section, n_train: int) -> dict:
  """When the guard of `config.guard` checks a run of recipe `section` on
  `n_train` images, in minibatches: {"every", "start", "total"}.
  A recipe's own `guard_start_epochs` overrides `guard.start_epochs`.

  Recipes count `epochs` in updates (free AT makes `replays` per minibatch,
  as `common.train_model` counts them); the guard counts minibatches, so one
  epoch is `n_train / batch_size / updates` of them. Checks every
  `guard.every_epochs` epochs, judged from `guard.start_epochs` (None: the
  end of the eps ramp); `total` = the run's minibatches.
  """
  g = config.guard
  updates, per_epoch, total = common.training.run_length(
      section, n_train, config.batch_size)
  start_epochs = section.get("guard_start_epochs", g.get("start_epochs"))
  if start_epochs is None:
    start_epochs = section.eps_ramp_epochs
  return {"every": max(1, int(round(g.every_epochs * per_epoch / updates))),
          "start": int(round(start_epochs * per_epoch / updates)),
          "total": total}


def make_guard(config, model, val, *, every: int, start: int
               ) -> training.CollapseGuard:
  """The held-out PGD / FGSM check of `config.guard` on `val`, every
  `every` minibatches, judged from minibatch `start` (`guard_timing`)."""
  g = config.guard
  xv, yv = val[0][:g.check_examples], val[1][:g.check_examples]
  batch = min(500, len(xv))

  def check(state):
    v = training.variables_of(state)
    kw = dict(eps=config.eps, batch_size=batch, unroll=config.eval.unroll)
    pgd = evaluation.robust_accuracy(
        model.apply, v, xv, yv, jax.random.key(1), attack="pgd",
        step_size=config.val_pgd_step_size, steps=config.val_pgd_steps, **kw)
    fgsm = evaluation.robust_accuracy(model.apply, v, xv, yv,
                                      jax.random.key(1), attack="fgsm", **kw)
    return {"pgd_acc": pgd, "fgsm_acc": fgsm}

  return training.CollapseGuard(
      check=check, every=every, drop=g.drop, fgsm_gap=g.fgsm_gap,
      start=start, action=g.action)


def _summary(records: list, config) -> str:
  by = {}
  for r in records:
    by.setdefault(r["method"], []).append(r)
  base = by.get("fgsm_rs")
  base_s = np.mean([r["train_seconds"] for r in base
                    if r["train_seconds"] is not None]) if base else None
  rows = []
  for method in config.methods:
    rs = by.get(method, [])
    if not rs:
      continue
    acc = np.array([100 * r["pgd_acc"] for r in rs])
    secs = float(np.mean([r["train_seconds"] for r in rs
                          if r["train_seconds"] is not None] or [np.nan]))
    rows.append([method, len(rs), sum(bool(r["collapsed"]) for r in rs),
                 sum(bool(r.get("diverged")) for r in rs),
                 f"{acc.min():.2f}", f"{np.median(acc):.2f}",
                 f"{acc.max():.2f}", f"{secs:.1f}",
                 f"{secs / base_s:.2f}x" if base_s else "-"])
  r0 = records[0]
  header = ("method", "runs", "collapsed", "diverged", "worst PGD %",
            "median PGD %",
            "best PGD %", "train s (mean)", "time / FGSM-RS")
  fmt = evaluation.format_eps
  note = (f"\nPGD-{r0['pgd_steps']}x{r0['pgd_restarts']} (step "
          f"{fmt(config.eval.pgd_step_size)}) at eps {fmt(config.eps)} on "
          "the first "
          f"{r0['eval_examples']} test images; collapsed = flagged by the "
          "CollapseGuard (the run then reports its best check's model); "
          "diverged = stopped by fit's NaN check (counted as 0% robust).\n")
  return common.markdown_table(header, rows) + note


def _plot(records: list, config, path: str) -> None:
  plt = common.pyplot()
  fig, ax = plt.subplots(figsize=(6, 3.5))
  methods = [m for m in config.methods if any(r["method"] == m
                                              for r in records)]
  for i, m in enumerate(methods):
    rs = [r for r in records if r["method"] == m]
    xs = i + np.linspace(-0.15, 0.15, len(rs))
    ax.scatter(xs, [100 * r["pgd_acc"] for r in rs],
               c=["tab:red" if r["collapsed"] else "tab:blue" for r in rs])
  ax.set_xticks(range(len(methods)), methods)
  ax.set_ylabel("PGD-50x10 accuracy %")
  ax.set_title(f"{config.dataset}, eps {evaluation.format_eps(config.eps)}: "
               "spread over seeds and "
               "splits (red: collapsed)", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _record(method, seed, split, config, eval_examples, **fields) -> dict:
  """A run's record in `RESULT_KEYS` order; a diverged run (no `fields`
  but `diverged`) is a failed one: not collapsed, accuracy 0, no cost."""
  base = {"collapsed": False, "collapse_batch": None, "clean_acc": 0.0,
          "pgd_acc": 0.0, "train_seconds": None, "train_steps": None,
          "fwd_bwd_passes": None, **fields,
          "method": method, "seed": seed, "split": split,
          "pgd_steps": config.eval.pgd_steps,
          "pgd_restarts": config.eval.pgd_restarts,
          "eval_examples": eval_examples}
  return {k: base[k] for k in RESULT_KEYS}


def _run_name(method: str, seed: int, split: int) -> str:
  return f"{method}-seed{seed}-split{split}"


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> list:
  """Runs the sweep (resumable); returns the records finished so far, in
  `runs(config)` order (all of them unless sharded).

  With `config.num_shards = n > 1` this process runs every n-th run from
  `config.shard_index` (e.g. two processes, one per core, on one workdir);
  each finished run is kept in `WORKDIR/runs/<run>.json`, and the tables are
  written once every run of the sweep is there (started again with the
  default `num_shards = 1`, the sweep only writes them). `config.only_runs`
  (indices into `runs(config)`) restricts a process to those runs, e.g. to
  rebalance the shards of a resumed sweep.
  """
  num_shards = int(config.get("num_shards", 1))
  shard = int(config.get("shard_index", 0))
  if not 0 <= shard < num_shards:
    raise ValueError(f"`shard_index` must be in [0, {num_shards}); got "
                     f"{shard}.")
  os.makedirs(os.path.join(workdir, "runs"), exist_ok=True)
  if num_shards == 1 and not config.get("only_runs"):
    common.results.write_run_info(workdir, config)
  (x, y), (xt, yt) = common.load_train_test(config)
  model = common.robust.get_model(config)
  path = os.path.join(workdir, "results.json")
  all_runs = runs(config)

  def finished() -> dict:
    done = {(r["method"], r["seed"], r["split"]): r
            for r in common.load_records(path)}
    for run in all_runs:
      rec = common.results.json_load(
          os.path.join(workdir, "runs", _run_name(*run) + ".json"), None)
      if rec is not None:  # (older records lack "diverged")
        done[run] = {k: rec.get(k, False if k == "diverged" else None)
                     for k in RESULT_KEYS}
    return done

  for i, (method, seed, split) in enumerate(all_runs):
    only = tuple(config.get("only_runs") or ())
    if (i % num_shards != shard or (only and i not in only)
        or (method, seed, split) in finished()):
      continue
    train, val = split_data(x, y, split, config.val_size)
    section = config[method]
    timing = guard_timing(config, section, len(train[0]))
    guard = make_guard(config, model, val, every=timing["every"],
                       start=timing["start"])
    name = _run_name(method, seed, split)
    try:
      trained = common.train_model(
          name, section, model, *train,
          key=jax.random.fold_in(jax.random.key(seed),
                                 common.robust.method_index(method)),
          batch_size=config.batch_size, seed=seed, eps=config.eps,
          workdir=workdir, checkpoint_every=config.checkpoint_every,
          progress=config.progress, guard=guard)
    except training.TrainingDivergedError as e:
      # A failed run, not a robust one: kept as such (accuracy 0), and the
      # sweep goes on.
      print(f"[{name}] diverged: {e}")
      common.results.json_dump(
          _record(method, seed, split, config, len(xt), diverged=True),
          os.path.join(workdir, "runs", name + ".json"))
      continue
    res = evaluation.evaluate(
        model.apply, trained.variables, xt, yt,
        jax.random.fold_in(jax.random.key(seed), 1000), eps=config.eps,
        pgd_steps=config.eval.pgd_steps,
        pgd_step_size=config.eval.pgd_step_size,
        pgd_restarts=config.eval.pgd_restarts,
        batch_size=min(config.eval.batch_size, len(xt)),
        unroll=config.eval.unroll, progress=config.progress)
    result = trained.result
    record = _record(
        method, seed, split, config, len(xt), diverged=False,
        collapsed=bool(result.collapsed),
        collapse_batch=result.collapse_batch, clean_acc=res["clean_acc"],
        pgd_acc=res["pgd_acc"], **{k: trained.cost[k] for k in (
            "train_seconds", "train_steps", "fwd_bwd_passes")})
    print(f"[{name}] collapsed={record['collapsed']} clean "
          f"{record['clean_acc']:.4f} PGD {record['pgd_acc']:.4f} "
          f"({record['train_seconds']:.0f} s)")
    # Kept after every run: a killed sweep loses only the run it was in.
    common.results.json_dump(record,
                             os.path.join(workdir, "runs", name + ".json"))
  done = finished()
  records = [done[r] for r in all_runs if r in done]
  if len(records) < len(all_runs):
    return records          # another shard is still running
  table = _summary(records, config)
  common.write_results(workdir, records, table)
  common.write_markdown(os.path.join(workdir, "summary.md"), table)
  if jax.process_index() == 0:
    _plot(records, config, os.path.join(workdir, "spread.png"))
  return records


if __name__ == "__main__":
  common.run(train_and_evaluate)
