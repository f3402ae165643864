"""The seed-sweep experiment end to end on real MNIST (:quick config)."""

import json
import os

import pytest

from experiments import seed_sweep
from experiments.configs import seed_sweep_cifar10
from experiments.configs import seed_sweep_mnist


def test_runs_cover_methods_seeds_and_splits():
  c = seed_sweep_mnist.get_config()
  runs = seed_sweep.runs(c)
  assert len(runs) == 4 * 5 * 2 + 2
  assert sum(m == "pgd" for m, _, _ in runs) == 2
  assert len(set(runs)) == len(runs)


@pytest.mark.parametrize("module,variant", [
    (seed_sweep_mnist, None), (seed_sweep_mnist, "quick"),
    (seed_sweep_cifar10, None), (seed_sweep_cifar10, "quick")])
def test_the_guard_judges_every_run_before_it_ends(module, variant):
  """At least two judged checks per run (the first judged one is the first
  best): a guard that starts after the run's last minibatch flags nothing.
  Free AT's epochs count updates (`replays` per minibatch), the guard
  minibatches."""
  c = module.get_config(variant)
  n_train = (c.train_limit or 50000 + 10000 * (c.dataset == "mnist")
             ) - c.val_size
  for method in c.methods:
    t = seed_sweep.guard_timing(c, c[method], n_train)
    assert t["start"] + t["every"] <= t["total"], (method, t)
  free = seed_sweep.guard_timing(c, c.free, n_train) if "free" in c.methods \
      else None
  if free is not None:  # epochs of updates: epochs / m passes
    passes = c.free.epochs / c.free.replays
    assert free["total"] == round(passes * (n_train // c.batch_size))
    assert free["every"] == round(
        c.guard.every_epochs * (n_train // c.batch_size) / c.free.replays)


@pytest.mark.slow  # about a minute
def test_quick_sweep_writes_flagged_records_and_resumes(tmp_path):
  config = seed_sweep_mnist.get_config("quick")
  workdir = str(tmp_path)
  records = seed_sweep.train_and_evaluate(config, workdir)
  assert [(r["method"], r["seed"], r["split"]) for r in records] == (
      seed_sweep.runs(config))
  for r in records:
    assert tuple(r) == seed_sweep.RESULT_KEYS
    assert isinstance(r["collapsed"], bool)
    assert 0.0 <= r["pgd_acc"] <= r["clean_acc"] <= 1.0
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  assert saved["records"] == records and "environment" in saved
  assert os.path.exists(os.path.join(workdir, "spread.png"))
  # Started again: the finished runs are kept, nothing is retrained.
  again = seed_sweep.train_and_evaluate(config, workdir)
  assert again == records
