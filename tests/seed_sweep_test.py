"""The seed-sweep experiment end to end on real MNIST (:quick config)."""

import json
import os

import pytest

from experiments import seed_sweep
from experiments.configs import seed_sweep_mnist


def test_runs_cover_methods_seeds_and_splits():
  c = seed_sweep_mnist.get_config()
  runs = seed_sweep.runs(c)
  assert len(runs) == 4 * 5 * 2 + 2
  assert sum(m == "pgd" for m, _, _ in runs) == 2
  assert len(set(runs)) == len(runs)


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
