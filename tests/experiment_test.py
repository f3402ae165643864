"""Real-MNIST smoke test of the main job's `:quick` pipeline."""

import json
import os

import pytest

from experiments import robust_training
from experiments.configs import robust_mnist


@pytest.mark.slow  # ~2 min; .ci/run runs it after the default suite
def test_quick_pipeline_on_real_mnist(tmp_path, capsys):
  config = robust_mnist.get_config("quick")
  config.progress = False
  workdir = str(tmp_path / "run")
  records = robust_training.train_and_evaluate(config, workdir)

  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  assert saved == records
  assert [r["method"] for r in saved] == list(config.methods)
  for r in saved:
    assert tuple(r) == robust_training.RESULT_KEYS
    assert r["dataset"] == "mnist" and r["eps"] == pytest.approx(0.3)
    for k in ("clean_acc", "fgsm_acc", "pgd_acc"):
      assert 0.0 <= r[k] <= 1.0
    assert r["pgd_acc"] <= r["fgsm_acc"] <= r["clean_acc"] + 1e-9
    assert r["train_seconds"] > 0 and r["train_steps"] > 0
  by = {r["method"]: r for r in saved}
  # The attack works: a naturally trained net is broken by PGD.
  assert by["natural"]["clean_acc"] > 0.85
  assert by["natural"]["pgd_acc"] < 0.05
  # Cost bookkeeping: K-PGD costs K + 1 passes per batch, free AT m per batch.
  assert by["pgd"]["fwd_bwd_passes"] == (config.pgd.steps + 1) * by["pgd"][
      "train_steps"]
  assert by["free"]["fwd_bwd_passes"] == by["free"]["train_steps"]
  assert by["fgsm_rs"]["fwd_bwd_passes"] == 2 * by["fgsm_rs"]["train_steps"]
  assert os.path.getsize(os.path.join(workdir, "robust_acc_vs_time.png")) > 0
  out = capsys.readouterr().out
  assert "| method | clean %" in out and "[PASS]" in out

  # Started again on the same workdir, the job resumes and redoes nothing.
  again = robust_training.train_and_evaluate(config, workdir)
  assert again == records
  assert "already evaluated" in capsys.readouterr().out
