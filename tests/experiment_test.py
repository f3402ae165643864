"""The experiments' shared toolkit, every script's --help, and a real-MNIST
smoke test of the main job's `:quick` pipeline."""

import json
import os
import subprocess
import sys

import pytest

from experiments import common
from experiments import robust_training
from experiments.configs import robust_mnist

# Every script (`python -m ...`) and flags its --help must list.
SCRIPTS = {
    "experiments.robust_training": ("config", "workdir",
                                    "coordinator_address"),
    "experiments.robust_eval": ("config", "workdir"),
    "experiments.mixup_inference": ("config", "workdir", "num_processes"),
    "experiments.vat": ("config", "workdir"),
    "experiments.gan": ("config", "workdir"),
    "experiments.transferability": ("config", "workdir"),
    "experiments.ensemble_transfer": ("config", "workdir"),
    "experiments.linearity": ("config", "workdir"),
    "experiments.linear_vs_deep_at": ("config", "workdir"),
    "experiments.scaling": ("config", "workdir"),
    "experiments.seed_sweep": ("config", "workdir"),
    "experiments.benchmarks": ("config", "workdir", "probe_memory"),
    "experiments.benchmarks.loop": ("steps", "kernels"),
    "experiments.benchmarks.mi": ("chunk_size", "kernels"),
    "experiments.benchmarks.conv": ("impls", "single_channels"),
}

# Runs each module as `python -m MODULE --help` in one interpreter (one jax
# import for all), removing the flags each defined before the next one.
_HELP_RUNNER = r"""
import contextlib, importlib, io, json, os, runpy, sys
from absl import app, flags
app.define_help_flags()
for mod in sys.argv[1:]:  # library flags get defined once, before
  importlib.import_module(mod)
out = {}
for mod in sys.argv[1:]:
  before, env = set(flags.FLAGS), dict(os.environ)
  buf = io.StringIO()
  sys.argv = [mod, "--help"]
  with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
    try:
      runpy.run_module(mod, run_name="__main__", alter_sys=True)
    except SystemExit:
      pass
  out[mod] = buf.getvalue()
  for name in set(flags.FLAGS) - before:
    delattr(flags.FLAGS, name)
  os.environ.clear()
  os.environ.update(env)
print("HELP_JSON" + json.dumps(out))
"""


def test_every_script_help_lists_its_flags():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", _HELP_RUNNER, *SCRIPTS],
                       cwd=root, capture_output=True, text=True, timeout=300,
                       check=True).stdout
  helps = json.loads(out.split("HELP_JSON", 1)[1])
  for mod, names in SCRIPTS.items():
    for name in names:
      assert f"--{name}" in helps[mod], (mod, name, helps[mod][-800:])


def test_no_script_imports_another_script():
  """Scripts import only the toolkit, the configs and their own package."""
  root = os.path.join(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))), "experiments")
  allowed = ("experiments.common", "experiments.configs")
  for dirpath, _, files in os.walk(root):
    if "results" in dirpath.split(os.sep):
      continue
    package = os.path.relpath(dirpath, os.path.dirname(root)).replace(
        os.sep, ".")
    for f in files:
      if not f.endswith(".py"):
        continue
      with open(os.path.join(dirpath, f)) as fh:
        for line in fh:
          words = line.split()
          if words[:1] not in (["from"], ["import"]) or len(words) < 2:
            continue
          mod = words[1] + ("." + words[3] if words[0] == "from" and
                            len(words) > 3 else "")
          if not mod.startswith("experiments"):
            continue
          ok = (mod.startswith(allowed) or mod == "experiments.common" or
                (package != "experiments" and mod.startswith(package)))
          assert ok, f"{dirpath}/{f} imports {mod}"


def test_markdown_table_and_results_writer(tmp_path):
  table = common.markdown_table(("a", "b"), [(1, "x"), (2.5, "y")])
  assert table == "| a | b |\n|---|---|\n| 1 | x |\n| 2.5 | y |"
  with pytest.raises(ValueError, match="cells"):
    common.markdown_table(("a", "b"), [(1,)])
  obj = common.write_results(str(tmp_path), [{"m": 1}], table, echo=False)
  with open(tmp_path / "results.json") as f:
    saved = json.load(f)
  assert saved == obj and saved["records"] == [{"m": 1}]
  assert (tmp_path / "results.md").read_text() == table + "\n"
  assert common.load_records(str(tmp_path / "results.json")) == [{"m": 1}]
  common.write_results(str(tmp_path), {"acc": 0.5}, name="other")
  with open(tmp_path / "other.json") as f:
    assert json.load(f)["acc"] == 0.5
  # Older runs wrote a bare list of records.
  common.json_dump([{"m": 2}], str(tmp_path / "old.json"))
  assert common.load_records(str(tmp_path / "old.json")) == [{"m": 2}]


def test_environment_record():
  env = common.environment()
  for k in ("jax", "jaxlib", "flax", "optax", "backend", "device_kinds",
            "device_count", "process_count", "git_commit"):
    assert k in env, k
  assert env["device_count"] >= 1 and env["process_count"] >= 1
  json.dumps(env)


@pytest.mark.parametrize("mode, updates, passes", [
    ("natural", 1, 1), ("fgsm_rs", 1, 2), ("free:8", 8, 8), ("pgd:7", 1, 8),
    ("free:4@fori", 4, 4), ("pgd:3@unroll", 1, 4)])
def test_build_mode_counts(mode, updates, passes):
  _, u, p = common.training.build_mode(mode)
  assert (u, p) == (updates, passes)


def test_parse_mode_loop_suffix():
  assert common.training.parse_mode("free:8@fori") == ("free", 8, False)
  assert common.training.parse_mode("pgd:3@unroll") == ("pgd", 3, True)
  assert common.training.parse_mode("natural") == ("natural", 0, None)
  with pytest.raises(ValueError, match="loop"):
    common.training.build_mode("free:2@while")


def test_one_step_table_covers_every_experiment():
  assert set(common.STEPS) == {"natural", "fgsm_rs", "fgsm", "pgd", "free",
                               "n_fgsm", "grad_align", "mixup", "iat", "vat"}
  with pytest.raises(ValueError, match="unknown training step"):
    common.training.get_step("trades")


def test_robust_mnist_keeps_the_committed_kernels_and_loop_forms():
  config = robust_mnist.get_config()
  assert config.kernels == "xla_cpu"
  assert config.free.unroll is True
  assert config.pgd.unroll is False and config.eval.unroll is False
  assert config.natural.unroll is None


def test_standard_autoattack_budget_is_evaluate_robustness_default():
  settings = common.robust.ensemble_settings({})
  assert settings == robust_training._STANDARD_AA
  assert common.robust.ensemble_settings(
      {"square_queries": 1000})["square_queries"] == 1000


@pytest.mark.slow  # ~2 min; .ci/run runs it after the default suite
def test_quick_pipeline_on_real_mnist(tmp_path, capsys):
  config = robust_mnist.get_config("quick")
  config.progress = False
  workdir = str(tmp_path / "run")
  records = robust_training.train_and_evaluate(config, workdir)

  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  assert saved["environment"]["jax"]
  saved = saved["records"]
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

  # The headline: the ensemble's robust accuracy, never above PGD's verdicts
  # by much and never above clean.
  for r in saved:
    assert r["ensemble_examples"] == config.eval.autoattack_examples
    assert r["ensemble"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert 0.0 <= r["ensemble_acc"] <= r["clean_acc"] + 0.05
  md = open(os.path.join(workdir, "results.md")).read()
  assert "robust % (AA-style ensemble, first 200)" in md
  assert "not AutoAttack's standard budget" in md

  # Started again on the same workdir, the job resumes and redoes nothing.
  again = robust_training.train_and_evaluate(config, workdir)
  assert again == records
  assert "already evaluated" in capsys.readouterr().out

  # A changed evaluation protocol re-evaluates from the checkpoints, keeping
  # the training cost (nothing is retrained).
  config.eval.autoattack_examples = 100
  config.methods = ("natural", "pgd")
  redone = robust_training.train_and_evaluate(config, workdir)
  assert "evaluating pgd again from its checkpoints" in capsys.readouterr().out
  for r in redone:
    assert r["ensemble_examples"] == 100
    for k in ("train_seconds", "train_steps", "fwd_bwd_passes"):
      assert r[k] == by[r["method"]][k]
