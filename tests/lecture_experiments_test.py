"""Tiny real-MNIST runs of the lecture experiments (their `:tiny` configs)."""

import json
import os

import numpy as np
import pytest

from experiments import ensemble_transfer
from experiments import linear_vs_deep_at
from experiments import linearity
from experiments import transferability
from experiments.configs import ensemble_transfer as ensemble_transfer_config
from experiments.configs import linear_vs_deep_at as linear_vs_deep_at_config
from experiments.configs import linearity as linearity_config
from experiments.configs import transferability as transferability_config


def _saved(workdir):
  """results.json without its environment record (which it must carry)."""
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  env = saved.pop("environment")
  assert env["jax"] and env["backend"]
  return saved["records"] if list(saved) == ["records"] else saved


def _png(workdir, name):
  return os.path.getsize(os.path.join(workdir, name)) > 1000


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_transferability_tiny(tmp_path):
  config = transferability_config.get_config("tiny")
  workdir = str(tmp_path)
  results = transferability.train_and_evaluate(config, workdir)
  saved = _saved(workdir)
  assert tuple(saved) == transferability.RESULT_KEYS
  m = saved["matrices"]["fgsm eps=0.3"]
  models = list(transferability.MODELS)
  assert list(m) == models + ["noise"]  # sources: the models + a noise control
  assert all(list(r) == models for r in m.values())
  assert all(0.0 <= v <= 1.0 for r in m.values() for v in r.values())
  # The JAX forward of LR / SVM is scikit-learn's decision_function.
  for k in ("lr", "svm"):
    assert saved["linear_check"][k]["prediction_agreement"] == 1.0
    assert saved["linear_check"][k]["max_abs_diff"] < 1e-3
  assert set(saved["substitute_agreement"]) == {"dt", "knn", "ensemble"}
  # White-box FGSM at eps 0.3 fools the linear models on almost everything.
  assert m["lr"]["lr"] > 0.9 and m["svm"]["svm"] > 0.9
  assert results["matrices"] == saved["matrices"]
  assert _png(workdir, "transfer_matrix.png")


@pytest.mark.slow  # ~8 s; CI's slow line
def test_ensemble_transfer_tiny(tmp_path):
  config = ensemble_transfer_config.get_config("tiny")
  workdir = str(tmp_path)
  ensemble_transfer.train_and_evaluate(config, workdir)
  saved = _saved(workdir)
  assert tuple(saved) == ensemble_transfer.RESULT_KEYS
  names = list(config.nets)
  assert list(saved["clean_acc"]) == names
  assert list(saved["settings"]) == ["fgsm eps=0.3"]
  for rec in saved["settings"].values():
    assert list(rec["ensemble"]) == names
    for h in names:
      assert sorted(rec["single"][h]) == sorted(set(names) - {h})
    values = [rec["ensemble"][h] for h in names] + [
        v for r in rec["single"].values() for v in r.values()]
    assert all(0.0 <= v <= 1.0 for v in values)
  assert _png(workdir, "ensemble_transfer.png")


@pytest.mark.slow  # ~8 s; CI's slow line
def test_linearity_tiny(tmp_path):
  config = linearity_config.get_config("tiny")
  workdir = str(tmp_path)
  linearity.train_and_evaluate(config, workdir)
  saved = _saved(workdir)
  assert tuple(saved) == linearity.RESULT_KEYS
  assert len(saved["scan"]["r2_per_image"]) == config.scan_images
  assert set(saved["cross_sections"]) == {"adv_rand", "rand_rand"}
  for sec in saved["cross_sections"].values():
    assert 0.0 < sec["clean_class_fraction"] <= 1.0
  for name in ("logit_scan.png", "cross_sections_adv_rand.png",
               "cross_sections_rand_rand.png"):
    assert _png(workdir, name)


def test_linear_vs_deep_at_tiny(tmp_path, capsys):
  config = linear_vs_deep_at_config.get_config("tiny")
  workdir = str(tmp_path)
  records = linear_vs_deep_at.train_and_evaluate(config, workdir)
  saved = _saved(workdir)
  assert saved == records
  assert [r["model"] for r in saved] == list(config.models)
  for r in saved:
    assert tuple(r) == linear_vs_deep_at.RECORD_KEYS
    acc = [r["robust_acc"][str(e)] for e in config.eps_list]
    assert all(0.0 <= a <= 1.0 for a in acc)
    assert acc[0] == r["clean_acc"]  # eps 0: PGD changes nothing
    assert np.all(np.diff(acc) <= 1e-9)
    assert (r["weight_l1"] is None) == (r["arch"] != "linear_softmax")
  assert _png(workdir, "robust_acc_vs_eps.png")
  # Resumes: a second call re-evaluates nothing.
  assert linear_vs_deep_at.train_and_evaluate(config, workdir) == records
  assert "already evaluated" in capsys.readouterr().out
