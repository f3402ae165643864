"""Data parallelism: 1 vs 4 devices and 2 processes x 2 devices agree.

The device count of XLA:CPU is fixed when jax starts, so the comparisons run
in subprocesses (tests/parallel_worker.py) with
`XLA_FLAGS=--xla_force_host_platform_device_count=N`; the checks of bad
arguments run here, on this process's devices.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxadv import parallel

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKER = str(ROOT / "tests" / "parallel_worker.py")
REL_TOL = 1e-4


def _env(devices: int) -> dict:
  # -O0: the runs are tiny, so compilation dominates; it cuts XLA:CPU compile
  # time by ~30% here. Both sides of every comparison use the same flags.
  env = dict(os.environ)
  env["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={devices} "
                      "--xla_backend_optimization_level=0 "
                      "--xla_llvm_disable_expensive_passes=true")
  env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
  env["JAX_PLATFORMS"] = "cpu"
  return env


def _run(args, devices, timeout=600):
  proc = subprocess.run([sys.executable, WORKER, *args], env=_env(devices),
                        cwd=ROOT, capture_output=True, text=True,
                        timeout=timeout, check=False)
  assert proc.returncode == 0, proc.stderr[-4000:]


def _single(out, trainers=None) -> dict:
  args = ["single", str(out)] + ([",".join(trainers)] if trainers else [])
  _run(args, devices=4)
  with open(out / "single.json") as f:
    return json.load(f)


def _assert_same_training(report: dict, names) -> None:
  for name in names:
    r = report["train"][name]
    print(f"{name}: max abs diff {r['max_abs_diff']:.3g} (relative to max "
          f"|param| {r['max_rel_diff']:.3g}; worst leaf {r['worst_leaf']} "
          f"{r['max_leaf_rel_diff']:.3g}) after {r['updates']} updates")
    assert r["updates"] == 50
    assert r["max_rel_diff"] < REL_TOL, (name, r)
    if not name.endswith("_resume"):  # its history has the 2nd half only
      assert r["loss_1"] == pytest.approx(r["loss_4"], rel=1e-4)


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("single")
  return out, _single(out)


@pytest.mark.slow  # 4-device runs: ~20 s with the fixture; CI's slow line
def test_one_vs_four_devices_training(single_run):
  _, report = single_run
  assert report["devices"] == 4
  _assert_same_training(report, ("natural", "free_at"))
  # Free AT keeps one delta shard per device.
  assert report["train"]["free_at"]["delta_shards"] == [[16, 28, 28, 1]] * 4
  # A batch that does not split over the 4 devices is refused by name.
  assert "`batch_size` (66)" in report["bad_batch_error"]


@pytest.mark.slow  # shares the 4-device fixture; CI's slow line
def test_one_vs_four_devices_robust_accuracy_and_mixup_inference(single_run):
  _, report = single_run
  robust = report["robust"]
  assert 0.0 < robust["acc_1"] < 1.0  # a test that can see a difference
  assert robust["disagreements"] == 0
  assert robust["acc_1"] == robust["acc_4"]
  mi = report["mi"]
  assert mi["max_abs_diff"] < 1e-5 and mi["same_prediction"]
  # MI's N x B forward is split along B with no communication.
  assert report["mi_probs_shards"] == [[32, 10]] * 4
  assert report["mi_collectives"] == []


@pytest.mark.slow
def test_one_vs_four_devices_other_trainers(tmp_path):
  names = ("pgd_at", "fgsm_rs", "mixup", "iat", "natural_bn",
           "free_at_resume")
  report = _single(tmp_path, names)
  _assert_same_training(report, names)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process(single_run, tmp_path):
  out, _ = single_run
  port = str(_free_port())
  procs = [subprocess.Popen(
      [sys.executable, WORKER, "multihost", str(tmp_path), str(i), port],
      env=_env(2), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-4000:]
  with open(tmp_path / "multihost.json") as f:
    report = json.load(f)
  assert report["process_count"] == 2 and report["local_devices"] == 2
  one = np.load(out / "single.npz")
  two = np.load(tmp_path / "multihost.npz")
  assert sorted(one.files) == sorted(two.files)
  for name in ("natural", "free_at"):
    keys = [k for k in one.files if k.startswith(name + "/")]
    diff = max(float(np.max(np.abs(one[k] - two[k]))) for k in keys)
    scale = max(float(np.max(np.abs(one[k]))) for k in keys)
    print(f"{name}: 2 processes x 2 vs 1 x 4 devices, max abs diff {diff:.3g}")
    assert diff <= REL_TOL * scale, (name, diff)


def test_make_mesh_and_shard_batch_checks():
  n = len(jax.devices())
  mesh = parallel.make_mesh()
  assert mesh.size == n and mesh.axis_names == ("data",)
  assert "data" in parallel.describe(mesh)
  with pytest.raises(ValueError, match="num_devices"):
    parallel.make_mesh(n + 1)
  with pytest.raises(ValueError, match="num_devices"):
    parallel.make_mesh(-1)
  batch = {"x": np.zeros((4 * n, 3), np.float32), "y": np.arange(4 * n)}
  placed = parallel.shard_batch(batch, mesh)
  np.testing.assert_array_equal(parallel.to_host(placed)["y"], batch["y"])
  assert placed["x"].sharding == parallel.batch_sharding(mesh)


@pytest.mark.parametrize("batch_size, multiple", [(500, 1), (500, 2),
                                                   (64, 4), (7, 2), (1, 1)])
def test_fitted_batch_size_fits_with_the_fewest_batches(batch_size, multiple):
  sizes = set()
  for n in range(1, 3 * batch_size + 2):
    size = parallel.fitted_batch_size(n, batch_size, multiple=multiple)
    sizes.add(size)
    assert 1 <= size <= batch_size
    assert -(-n // size) == -(-n // batch_size)  # no extra batch
    if -(-size // multiple) * multiple <= batch_size:
      assert size % multiple == 0 or size == batch_size
  assert len(sizes) <= 16
  # 620 survivors at batch 500: two batches of 314, not two of 500.
  assert parallel.fitted_batch_size(620, 500, multiple=2) == 314
  assert parallel.fitted_batch_size(620, 500, buckets=1) == 500
  with pytest.raises(ValueError, match="`n`"):
    parallel.fitted_batch_size(0, 500)


def test_ring_allreduce_formula_and_hlo_byte_count():
  from experiments import scaling
  # 2 (n - 1) / n * bytes / bandwidth: 8 devices, 1 GB at 1 GB/s = 1.75 s.
  assert scaling.ring_allreduce_seconds(1e9, 8, 1e9) == pytest.approx(1.75)
  assert scaling.ring_allreduce_seconds(1e9, 1, 1e9) == 0.0
  hlo = ("  %all-reduce.3 = (f32[16]{0}, f32[4,4,1,16]{3,2,1,0}) "
         "all-reduce(%a, %b), channel_id=1\n"
         "  %ars = f32[10]{0} all-reduce-start(%c)\n"
         "  %add.1 = f32[99]{0} add(%d, %e)\n")
  assert scaling.allreduce_bytes_in_hlo(hlo) == 4 * (16 + 256 + 10)


@pytest.mark.slow
def test_robust_training_script_two_processes_match_one(tmp_path):
  """experiments/robust_training.py as 2 processes x 2 devices = 1 x 4."""
  args = ["-m", "experiments.robust_training",
          "--config=experiments/configs/robust_mnist.py:quick",
          "--config.methods=('natural','free')", "--config.train_limit=1400",
          "--config.val_size=200", "--config.test_limit=200",
          "--config.eval.batch_size=100", "--config.eval.sanity_subset=100",
          "--config.checkpoint_every=5", "--config.progress=False"]
  one = subprocess.run([sys.executable, *args, f"--workdir={tmp_path / 'one'}"],
                       env=_env(4), cwd=ROOT, capture_output=True, text=True,
                       timeout=900, check=False)
  assert one.returncode == 0, one.stderr[-4000:]
  assert "4 device(s) in 1 process(es)" in one.stdout
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, *args, f"--workdir={tmp_path / 'two'}",
       f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
       f"--process_id={i}"], env=_env(2), cwd=ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=900) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-4000:]
  assert "4 device(s) in 2 process(es)" in outs[0][0]
  with open(tmp_path / "one" / "results.json") as f:
    ref = json.load(f)["records"]
  with open(tmp_path / "two" / "results.json") as f:
    got = json.load(f)["records"]
  for r, g in zip(ref, got, strict=True):
    for k in ("clean_acc", "fgsm_acc", "pgd_acc", "train_steps"):
      assert r[k] == g[k], (r["method"], k, r[k], g[k])
