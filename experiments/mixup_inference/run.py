"""`train_and_evaluate`: the whole Mixup Inference job."""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np

from experiments import common
from experiments.mixup_inference import evaluate
from experiments.mixup_inference import plan
from experiments.mixup_inference import report
from experiments.mixup_inference import train
from jaxadv import data
from jaxadv import defenses
from jaxadv import parallel


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> list:
  """Trains the models and evaluates every defence under every attack.

  Args:
    config: see `experiments/configs/mi_common.py` and `mi_mnist.py`.
    workdir: output folder (created): checkpoints, results and plots.

  Returns:
    The result records (also in `workdir/results.json`).
  """
  os.makedirs(workdir, exist_ok=True)
  mesh = parallel.make_mesh(config.num_devices)
  print(f"jax {jax.__version__}, backend {jax.default_backend()}")
  print(parallel.describe(mesh))
  for d in config.defenses:
    if d not in evaluate.DEFENSE_NAMES:
      raise ValueError(f"unknown defense {d!r}; valid: "
                       f"{evaluate.DEFENSE_NAMES}.")
  x, y = data.load(config.dataset, "train", data_dir=config.data_dir,
                   manual_dir=config.manual_dir, limit=config.train_limit)
  x_test, y_test = data.load(config.dataset, "test", data_dir=config.data_dir,
                             manual_dir=config.manual_dir)
  num_classes = data.info(config.dataset).num_classes
  # A fixed random order of the test set, so every subset is class-balanced
  # in expectation (MNIST's test file is not shuffled by writer).
  order = np.random.default_rng(config.seed).permutation(len(x_test))
  test = (x_test[order], y_test[order])
  print(f"{config.dataset}: {len(x)} train, {len(x_test)} test; clean "
        f"accuracy on {min(config.eval.clean_examples, len(x_test))}, attacks "
        f"on {config.eval.num_examples}")
  key = jax.random.key(config.seed)
  pools = {
      "pl": defenses.make_pool(x, y, size=config.mi.pl_pool_size,
                               key=jax.random.fold_in(key, 101),
                               num_classes=num_classes),
      "ol": defenses.make_pool(x, y, size=config.mi.ol_pool_size,
                               key=jax.random.fold_in(key, 102),
                               num_classes=num_classes)}
  shift = np.asarray(jax.random.randint(jax.random.fold_in(key, 103),
                                        (len(test[1]),), 1, num_classes))
  targets = ((test[1] + shift) % num_classes).astype(np.int32)

  results_path = os.path.join(workdir, "results.json")
  details_path = os.path.join(workdir, "details.json")
  records = common.load_records(results_path)
  details = common.json_load(details_path, {"analysis": {}, "timings": {},
                                            "train": {}})

  def save():  # the records, and the details the attacks add (rand version)
    common.write_results(workdir, records)
    common.json_dump(details, details_path)

  per_example = plan.PerExample(os.path.join(workdir, "per_example.npz"))

  for i, name in enumerate(config.models):
    model, variables, result = train.train_model(name, config, x, y, workdir,
                                                 num_classes, mesh)
    details["train"][name] = {"seconds": result.train_seconds,
                              "batches": result.batches,
                              "config": config[name].to_dict()}
    ev = evaluate.Evaluator(config, model, variables, pools,
                            config[name].mi_ol_lam, mesh)
    timings = evaluate.evaluate_model(
        name, ev, config, test, targets, records, save,
        jax.random.fold_in(key, 200 + i), per_example,
        details.setdefault("autoattack_rand", {}).setdefault(name, {}))
    details["timings"].setdefault(name, {}).update(timings)
    if config.get("eot_draws") and config.eot_draws.enabled:
      evaluate.eot_draws_study(
          name, ev, config, test, jax.random.fold_in(key, 400 + i),
          details.setdefault("eot_draws", []), save)
    if name not in details["analysis"]:
      details["analysis"][name] = evaluate.analyse(
          name, ev, config, test, jax.random.fold_in(key, 300))
    common.json_dump(details, details_path)

  table = report.format_tables(records, config)
  analysis_md = report.format_analysis(details, config)
  draws_md = report.format_eot_draws(details, config)
  if draws_md:
    analysis_md += "\n" + draws_md
  if jax.process_index() == 0:  # multi-host: process 0 writes the results
    report.plots(details, records, config, workdir)
  common.write_markdown(os.path.join(workdir, "results.md"),
                        table + "\n\n" + analysis_md)
  print(table)
  print(analysis_md)
  return records
