"""Real-MNIST smoke test of experiments.robust_eval's `:quick` pipeline."""

import json
import os

import pytest

from experiments import robust_eval
from experiments.configs import robust_eval as robust_eval_config


@pytest.mark.slow
def test_quick_robust_eval_trains_restores_and_reports(tmp_path, capsys):
  config = robust_eval_config.get_config("quick")
  config.progress = False
  config.train_workdir = str(tmp_path / "train")
  workdir = str(tmp_path / "eval")
  records = robust_eval.run(config, workdir)
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["records"] == records
  assert [r["method"] for r in records] == list(config.methods)
  for r in records:
    assert r["num_examples"] == config.num_examples
    assert r["ensemble_acc"] <= r["apgd_ce_acc"] <= r["clean_acc"]
    assert r["pgd_or_ensemble_acc"] <= min(r["pgd_acc"], r["ensemble_acc"])
    assert list(r["ensemble_cumulative"]) == ["apgd-ce", "apgd-t", "fab-t",
                                                "square"]
  assert os.path.getsize(os.path.join(workdir,
                                      "robust_acc_by_attack.png")) > 0
  # A second run restores from the finished workdir instead of re-evaluating.
  assert robust_eval.run(config, workdir) == records
  assert "already evaluated" in capsys.readouterr().out
