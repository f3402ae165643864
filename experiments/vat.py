r"""Semi-supervised MNIST with 100 labels: labels-only vs VAT (Miyato et al.).

  python -m experiments.vat --config=experiments/configs/vat.py \
      --workdir=/tmp/vat

Writes `WORKDIR/results.json` (one record per method with keys method,
dataset, num_labels, eps, xi, iterations, alpha, steps, test_error,
val_error, train_seconds), `WORKDIR/details.json` (validation curves, the
labelled indices) and `WORKDIR/val_error.png`. A killed run started again
with the same workdir resumes: training from the last checkpoint,
evaluation from the last finished method.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import common
from jaxadv import data
from jaxadv import evaluation
from jaxadv import models
from jaxadv import training

RESULT_KEYS = ("method", "dataset", "num_labels", "eps", "xi", "iterations",
               "alpha", "steps", "test_error", "val_error", "train_seconds")


def split_labels(y: np.ndarray, num_labels: int, num_classes: int,
                 seed: int) -> np.ndarray:
  """Indices of `num_labels / num_classes` examples per class, seeded.

  Raises:
    ValueError: `num_labels` not a multiple of `num_classes`, or a class
      with too few examples.
  """
  if num_labels % num_classes:
    raise ValueError(f"`num_labels` ({num_labels}) must be a multiple of "
                     f"the {num_classes} classes.")
  rng = np.random.default_rng([seed, 1])
  per = num_labels // num_classes
  idx = []
  for c in range(num_classes):
    members = np.flatnonzero(y == c)
    if len(members) < per:
      raise ValueError(f"class {c} has {len(members)} < {per} examples.")
    idx.append(rng.choice(members, per, replace=False))
  return np.sort(np.concatenate(idx))


def load_data(config: ml_collections.ConfigDict):
  """(labelled, unlabelled, validation, test) arrays."""
  x, y = data.load(config.dataset, "train", data_dir=config.data_dir,
                   manual_dir=config.manual_dir, limit=config.train_limit)
  x_test, y_test = data.load(config.dataset, "test", data_dir=config.data_dir,
                             manual_dir=config.manual_dir,
                             limit=config.test_limit)
  perm = np.random.default_rng(config.seed).permutation(len(x))
  val, tr = perm[:config.val_size], np.sort(perm[config.val_size:])
  x_tr, y_tr = x[tr], y[tr]
  lab = split_labels(y_tr, config.num_labels,
                     data.info(config.dataset).num_classes, config.seed)
  # The unlabelled set is the whole training part (labelled images included).
  return ((x_tr[lab], y_tr[lab]), x_tr, (x[val], y[val]), (x_test, y_test),
          tr[lab])


def with_labelled(step_fn: training.steps.StepFn, x_l: np.ndarray,
                  y_l: np.ndarray, batch_size: int, *, semi_supervised: bool
                  ) -> training.steps.StepFn:
  """Feeds `step_fn` a labelled batch drawn from the (small) labelled set.

  The loop's batch is unlabelled: its "x" becomes the step's "x_ul" (when
  `semi_supervised`), and the labelled "x"/"y" are `batch_size` of the
  labelled examples (all of them when `batch_size == len(x_l)`), drawn
  without replacement with `fold_in(key, step)`.
  """
  x_l, y_l = jnp.asarray(x_l), jnp.asarray(y_l)
  n = len(x_l)

  def step(state, batch, key):
    if batch_size >= n:
      xb, yb = x_l, y_l
    else:
      k = jax.random.fold_in(jax.random.fold_in(key, -1), state.step)
      idx = jax.random.choice(k, n, (batch_size,), replace=False)
      xb, yb = x_l[idx], y_l[idx]
    inner = {"x": xb, "y": yb}
    if semi_supervised:
      inner["x_ul"] = batch["x"]
    return step_fn(state, inner, key)

  return step


def _optimizer(config: ml_collections.ConfigDict
               ) -> optax.GradientTransformation:
  decay = max(1, int(round(config.steps * config.decay_fraction)))
  hold = config.steps - decay
  lr = optax.join_schedules(
      [optax.constant_schedule(config.learning_rate),
       optax.linear_schedule(config.learning_rate, 0.0, decay)], [hold])
  return optax.adam(lr)


# method -> (step of `common.STEPS`, built from the config's xi /
# iterations / alpha; uses the unlabelled batch). VAT's eps comes from
# `state.attack_params` (traced).
METHODS = {
    "labels_only": ("natural", False),
    "vat_supervised": ("vat", False),
    "vat": ("vat", True),
}


def _plot(details: dict, methods, path: str) -> None:
  plt = common.pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  for m in methods:
    hist = [h for h in details[m]["history"] if "val_error" in h]
    ax.plot([h["batches"] for h in hist], [100 * h["val_error"] for h in hist],
            marker="o", label=f"{m} (test "
            f"{100 * details[m]['record']['test_error']:.2f}%)")
  ax.set_xlabel("updates")
  ax.set_ylabel("validation error (%)")
  ax.set_ylim(bottom=0)
  ax.set_title(f"MNIST, {details[methods[0]]['record']['num_labels']} labels")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def format_table(records: list) -> str:
  """The results as a Markdown table."""
  rows = []
  for r in records:
    eps = "-" if r["method"] == "labels_only" else f"{r['eps']:g}"
    rows.append((r["method"], r["num_labels"], eps, r["steps"],
                 f"{100 * r['test_error']:.2f}", f"{100 * r['val_error']:.2f}",
                 f"{r['train_seconds']:.0f}"))
  return common.markdown_table(("method", "labels", "eps (L2)", "updates",
                                "test error %", "val error %", "train s"),
                               rows)


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> list:
  """Trains every method of `config.methods`; evaluates on the test set.

  Args:
    config: see `experiments/configs/vat.py`.
    workdir: output folder (created); holds checkpoints and results.

  Returns:
    The result records (also written to `workdir/results.json`).
  """
  os.makedirs(workdir, exist_ok=True)
  (x_l, y_l), x_u, (x_val, y_val), (x_test, y_test), lab_idx = load_data(config)
  print(f"{config.dataset}: {len(x_l)} labelled, {len(x_u)} unlabelled, "
        f"{len(x_val)} validation, {len(x_test)} test; labelled classes "
        f"{np.bincount(y_l).tolist()}")
  details_path = os.path.join(workdir, "details.json")
  details: dict[str, Any] = common.json_load(details_path, {})
  details["labelled_train_indices"] = lab_idx.tolist()
  num_classes = data.info(config.dataset).num_classes
  model = models.get_model(config.model, kernels=config.kernels,
                           num_classes=num_classes, **config.model_kwargs)
  records = []
  for i, name in enumerate(config.methods):
    if name in details and "record" in details[name]:
      print(f"[{name}] already evaluated in {workdir}; skipping.")
      records.append(details[name]["record"])
      continue
    step, semi = METHODS[name]
    state = training.create_train_state(
        model, jax.random.fold_in(jax.random.key(config.seed), i),
        (1,) + x_l.shape[1:], _optimizer(config), eps=config.eps)
    step_fn = with_labelled(common.STEPS[step].build(config), x_l, y_l,
                            config.labelled_batch_size, semi_supervised=semi)
    def epoch_fn(state, epoch):
      del epoch
      acc = evaluation.accuracy(model.apply, training.variables_of(state),
                                x_val, y_val)
      return {"val_error": round(1.0 - acc, 6)}

    # One pass of the loop is one pass over the unlabelled images.
    result = training.fit(
        state, step_fn, x_u, np.zeros(len(x_u), np.int32),
        batch_size=config.batch_size, num_batches=config.steps,
        seed=config.seed, workdir=os.path.join(workdir, "checkpoints", name),
        checkpoint_every=config.checkpoint_every, epoch_fn=epoch_fn,
        desc=name, progress=config.progress,
        metrics_dir=os.path.join(workdir, "metrics", name))
    variables = training.variables_of(result.state)
    test_error = 1.0 - evaluation.accuracy(model.apply, variables, x_test,
                                           y_test)
    val_error = 1.0 - evaluation.accuracy(model.apply, variables, x_val, y_val)
    record = {"method": name, "dataset": config.dataset,
              "num_labels": int(config.num_labels), "eps": float(config.eps),
              "xi": float(config.xi), "iterations": int(config.iterations),
              "alpha": float(config.alpha), "steps": int(result.batches),
              "test_error": round(float(test_error), 6),
              "val_error": round(float(val_error), 6),
              "train_seconds": float(result.train_seconds)}
    print(f"[{name}] test error {100 * test_error:.2f}% (val "
          f"{100 * val_error:.2f}%), {result.train_seconds:.0f}s")
    details[name] = {"record": record, "history": result.history,
                     "compile_seconds": result.compile_seconds}
    common.json_dump(details, details_path)
    records.append(record)
  common.write_results(workdir, records, format_table(records))
  _plot(details, list(config.methods), os.path.join(workdir, "val_error.png"))
  return records


if __name__ == "__main__":
  common.run(train_and_evaluate)
