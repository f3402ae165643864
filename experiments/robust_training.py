r"""Natural, FGSM-RS, free and PGD adversarial training, evaluated side by side.

  python -m experiments.robust_training \
      --config=experiments/configs/robust_mnist.py --workdir=/tmp/robust_mnist

Several hosts: start the same command in every process with
`--coordinator_address=HOST:PORT --num_processes=P --process_id=i` (each
process sees the same data; process 0 writes the results).

Writes `WORKDIR/results.json` (one record per method with keys method,
dataset, eps, clean_acc, fgsm_acc, pgd_acc, pgd_steps, pgd_restarts,
train_seconds, train_steps, fwd_bwd_passes), `WORKDIR/details.json` (training
curves, sanity checks, compile times) and `WORKDIR/robust_acc_vs_time.png`.
A killed run started again with the same workdir resumes: training from the
last checkpoint, evaluation from the last finished method.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np
import optax

from jaxadv import data
from jaxadv import evaluation
from jaxadv import models
from jaxadv import parallel
from jaxadv import training

RESULT_KEYS = ("method", "dataset", "eps", "clean_acc", "fgsm_acc", "pgd_acc",
               "pgd_steps", "pgd_restarts", "train_seconds", "train_steps",
               "fwd_bwd_passes")

# method -> (step builder, forward-backward passes per minibatch)
METHODS = {
    "natural": (lambda c: training.natural_step(), lambda c: 1),
    "fgsm_rs": (lambda c: training.fgsm_rs_step(), lambda c: 2),
    "free": (lambda c: training.free_at_step(replays=c.replays,
                                             loop=c.get("loop")),
             lambda c: c.replays),
    "pgd": (lambda c: training.pgd_at_step(steps=c.steps),
            lambda c: c.steps + 1),
}
OPTIMIZERS = {
    "adam": lambda lr, c: optax.adam(lr),
    "sgd": lambda lr, c: optax.chain(
        optax.add_decayed_weights(c.weight_decay),
        optax.sgd(lr, momentum=0.9)),
}


def _json_dump(obj: Any, path: str) -> None:
  if jax.process_index() != 0:  # multi-host: process 0 writes the results
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def load_data(config: ml_collections.ConfigDict):
  """Train / validation / test arrays; validation is held out of train."""
  x, y = data.load(config.dataset, "train", data_dir=config.data_dir,
                   manual_dir=config.manual_dir, limit=config.train_limit)
  x_test, y_test = data.load(config.dataset, "test", data_dir=config.data_dir,
                             manual_dir=config.manual_dir,
                             limit=config.test_limit)
  perm = np.random.default_rng(config.seed).permutation(len(x))
  val, tr = perm[:config.val_size], perm[config.val_size:]
  return (x[tr], y[tr]), (x[val], y[val]), (x_test, y_test)


@dataclasses.dataclass
class MethodSetup:
  """Everything needed to train one method with its recipe."""
  model: Any
  state: training.TrainState
  step_fn: training.steps.StepFn
  num_batches: int
  replays: int
  passes_per_batch: int


def setup_method(name: str, config: ml_collections.ConfigDict,
                 num_train: int, image_shape: tuple) -> MethodSetup:
  """Builds the model, initial state and step of `name` from `config[name]`.

  `config[name].epochs` counts epoch-equivalents of optimizer updates, so
  free AT with m replays makes `epochs / m` passes over the data.
  """
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; valid: {sorted(METHODS)}.")
  mc = config[name]
  build_step, passes_fn = METHODS[name]
  per_epoch = data.num_batches(num_train, config.batch_size)
  replays = mc.replays if name == "free" else 1
  num_batches = max(1, int(round(mc.epochs / replays * per_epoch)))
  lr = training.make_schedule(mc.schedule, total_steps=num_batches * replays,
                              learning_rate=mc.learning_rate)
  model = models.get_model(config.model, num_classes=data.info(
      config.dataset).num_classes)
  key = jax.random.fold_in(jax.random.key(config.seed),
                           list(METHODS).index(name))
  state = training.create_train_state(
      model, key, (1,) + tuple(image_shape), OPTIMIZERS[mc.optimizer](lr, mc),
      eps=config.eps, step_size=mc.step_size,
      eps_ramp_steps=int(round(mc.eps_ramp_epochs * per_epoch)),
      delta_shape=((config.batch_size,) + tuple(image_shape)
                   if name == "free" else None))
  return MethodSetup(model, state, build_step(mc), num_batches, replays,
                     passes_fn(mc))


def train_method(name: str, config: ml_collections.ConfigDict, train, val,
                 workdir: str, mesh=None) -> tuple[training.TrainResult, dict]:
  """Trains one method (data parallel over `mesh`, when given); returns the
  result and its cost bookkeeping."""
  mc = config[name]
  x, y = train
  setup = setup_method(name, config, len(x), x.shape[1:])
  model = setup.model

  x_val, y_val = val
  val_key = jax.random.key(config.seed + 1)
  best = {"pgd": -1.0}

  def epoch_fn(state, epoch):
    variables = training.variables_of(state)
    acc = evaluation.robust_accuracy(
        model.apply, variables, x_val, y_val, val_key, attack="pgd",
        eps=config.eps, step_size=config.val_pgd_step_size,
        steps=config.val_pgd_steps, batch_size=min(500, len(x_val)),
        mesh=mesh)
    out = {"val_pgd_acc": acc}
    # Catastrophic overfitting (Wong et al., 2020): PGD accuracy collapses.
    # Judged only at full eps (after the ramp): while eps grows, the check's
    # accuracy swings widely and a drop means nothing.
    if epoch + 1 > mc.eps_ramp_epochs:
      if mc.select_best and acc < best["pgd"] - 0.2:
        print(f"[{name}] catastrophic overfitting at epoch {epoch}: val PGD "
              f"acc {acc:.3f} < best {best['pgd']:.3f} - 0.2; stopping.")
        out["stop"] = True
      best["pgd"] = max(best["pgd"], acc)
    return out

  result = training.fit(
      setup.state, setup.step_fn, x, y, batch_size=config.batch_size,
      num_batches=setup.num_batches, seed=config.seed,
      workdir=os.path.join(workdir, "checkpoints", name),
      checkpoint_every=config.checkpoint_every, epoch_fn=epoch_fn,
      select="val_pgd_acc" if mc.select_best else None, desc=name,
      progress=config.progress, mesh=mesh)
  cost = {"train_steps": result.batches * setup.replays,
          "fwd_bwd_passes": result.batches * setup.passes_per_batch,
          "train_seconds": result.train_seconds,
          "compile_seconds": result.compile_seconds}
  return result, cost


def _plot(records: list, path: str) -> None:
  import matplotlib
  import matplotlib.ticker
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for i, r in enumerate(records):
    ax.scatter(r["train_seconds"], 100 * r["pgd_acc"], s=60)
    ax.annotate(f"{r['method']} ({100 * r['clean_acc']:.1f}% clean)",
                (r["train_seconds"], 100 * r["pgd_acc"]),
                textcoords="offset points",
                xytext=(6, 6 if i % 2 else -14), fontsize=8)
  ax.set_xscale("log")
  secs = [r["train_seconds"] for r in records]
  ax.set_xticks([t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000,
                             5000, 10000) if min(secs) / 2 <= t <= 2 * max(secs)])
  ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
  ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  ax.set_ylim(-15, 105)
  ax.set_xlabel("training time (s, log scale)")
  r0 = records[0]
  ax.set_ylabel(f"PGD-{r0['pgd_steps']}x{r0['pgd_restarts']} accuracy (%)")
  ax.set_title(f"{r0['dataset']}, eps={r0['eps']}: robustness vs training cost")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def format_table(records: list) -> str:
  """The results as a Markdown table."""
  nat = next((r for r in records if r["method"] == "natural"), None)
  lines = ["| method | clean % | FGSM % | PGD-{}x{} % | train s | train steps "
           "| fwd-bwd passes | time / natural | s per 1k passes |".format(
               records[0]["pgd_steps"], records[0]["pgd_restarts"]),
           "|---|---|---|---|---|---|---|---|---|"]
  for r in records:
    ratio = (f"{r['train_seconds'] / nat['train_seconds']:.2f}x"
             if nat else "-")
    per_k = 1000 * r["train_seconds"] / max(r["fwd_bwd_passes"], 1)
    lines.append(
        f"| {r['method']} | {100 * r['clean_acc']:.2f} | "
        f"{100 * r['fgsm_acc']:.2f} | {100 * r['pgd_acc']:.2f} | "
        f"{r['train_seconds']:.1f} | {r['train_steps']} | "
        f"{r['fwd_bwd_passes']} | {ratio} | {per_k:.3f} |")
  return "\n".join(lines)


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> list:
  """Trains and evaluates every method in `config.methods`.

  Args:
    config: see `experiments/configs/robust_mnist.py`.
    workdir: output folder (created); holds checkpoints and results.

  Returns:
    The list of result records (also written to `workdir/results.json`).
  """
  os.makedirs(workdir, exist_ok=True)
  mesh = parallel.make_mesh(config.num_devices)
  print(f"jax {jax.__version__}, backend {jax.default_backend()}")
  print(parallel.describe(mesh))
  train, val, test = load_data(config)
  print(f"{config.dataset}: {len(train[0])} train, {len(val[0])} validation, "
        f"{len(test[0])} test examples")
  details_path = os.path.join(workdir, "details.json")
  details = {}
  if os.path.exists(details_path):
    with open(details_path) as f:
      details = json.load(f)
  records = [details[m]["record"] for m in config.methods
             if m in details and "record" in details[m]]
  key = jax.random.key(config.seed)
  model = models.get_model(config.model, num_classes=data.info(
      config.dataset).num_classes)
  for name in config.methods:
    if name in details and "record" in details[name]:
      print(f"[{name}] already evaluated in {workdir}; skipping.")
      continue
    result, cost = train_method(name, config, train, val, workdir, mesh)
    variables = training.variables_of(result.state)
    ec = config.eval
    t0 = time.perf_counter()
    res = evaluation.evaluate(
        model.apply, variables, test[0], test[1],
        jax.random.fold_in(key, 1000), eps=config.eps,
        pgd_steps=ec.pgd_steps, pgd_step_size=ec.pgd_step_size,
        pgd_restarts=ec.pgd_restarts, batch_size=ec.batch_size,
        progress=config.progress, mesh=mesh)
    eval_seconds = time.perf_counter() - t0
    checks = evaluation.sanity_checks(
        model.apply, variables, test[0], test[1],
        jax.random.fold_in(key, 2000), res, eps=config.eps,
        pgd_steps=ec.pgd_steps, pgd_step_size=ec.pgd_step_size,
        subset=ec.sanity_subset, batch_size=ec.batch_size)
    for c in checks:
      print(f"[{name}] {c}")
    record = {"method": name, "dataset": config.dataset,
              "eps": float(config.eps), **res, **{
                  k: cost[k] for k in ("train_seconds", "train_steps",
                                       "fwd_bwd_passes")}}
    record = {k: record[k] for k in RESULT_KEYS}
    print(f"[{name}] clean {record['clean_acc']:.4f} fgsm "
          f"{record['fgsm_acc']:.4f} pgd {record['pgd_acc']:.4f} "
          f"(eval {eval_seconds:.0f}s)")
    details[name] = {
        "record": record, "history": result.history,
        "compile_seconds": cost["compile_seconds"],
        "eval_seconds": eval_seconds,
        "stopped_early": result.stopped_early,
        "sanity_checks": [vars(c) for c in checks],
        "config": config[name].to_dict()}
    _json_dump(details, details_path)
    records.append(record)
  _json_dump(records, os.path.join(workdir, "results.json"))
  table = format_table(records)
  if jax.process_index() == 0:
    _plot(records, os.path.join(workdir, "robust_acc_vs_time.png"))
    with open(os.path.join(workdir, "results.md"), "w") as f:
      f.write(table + "\n")
  print(table)
  return records


FLAGS = flags.FLAGS


def define_multihost_flags() -> None:
  """--coordinator_address / --num_processes / --process_id (multi-host)."""
  flags.DEFINE_string("coordinator_address", None,
                      "Multi-host: host:port of process 0 for "
                      "jax.distributed.initialize; unset = one process.")
  flags.DEFINE_integer("num_processes", 1, "Multi-host: number of processes.")
  flags.DEFINE_integer("process_id", 0, "Multi-host: index of this process.")


def maybe_initialize_distributed() -> None:
  """Joins the other processes when --coordinator_address is given."""
  if FLAGS.coordinator_address:
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes,
                               process_id=FLAGS.process_id)


def _define_flags() -> None:
  # Defined only when run as a script, so other scripts can import this one.
  flags.DEFINE_string("workdir", None, "Output directory.")
  define_multihost_flags()
  config_flags.DEFINE_config_file(
      "config", None, "Training configuration file.", lock_config=True)
  flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  maybe_initialize_distributed()
  train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
