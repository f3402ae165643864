r"""Data-parallel scaling: measured step times and all-reduce bytes, projected.

  XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m \
      experiments.scaling --config=experiments/configs/scaling.py \
      --workdir=/tmp/scaling

Three parts, written to `WORKDIR/results.json` and `WORKDIR/results.md`:

1. **Measured step time** of training steps (the benchmark's modes,
   `common.training.build_mode`) on 1, 2, 4 ... devices of this machine (emulated CPU devices with
   the flag above) at a fixed per-device batch (weak scaling), with
   `jaxadv.parallel.data_parallel`. On emulated CPU devices all devices share
   the same cores, so the per-device throughput does not rise: that is
   expected and measured here only to show the cost of the partitioned step.
2. **All-reduce bytes per optimizer update** of every model of
   `jaxadv.models`: parameter count x 4 bytes (float32 gradients), checked
   against the all-reduce ops of the compiled multi-device step.
3. **Projection** to 8 GPUs (NVLink, PCIe) and a TPU v4-32 (16 chips, ICI)
   with a ring all-reduce, `t_ar = 2 (n - 1) / n * bytes / bandwidth`, and no
   overlap of communication with compute (pessimistic):
   `efficiency = t_step / (t_step + t_ar)`, `speedup = n * efficiency`.
"""

from __future__ import annotations

import os
import re
import time

import jax
import ml_collections
import numpy as np

from experiments import common
from jaxadv import data
from jaxadv import models
from jaxadv import parallel

# Model name -> input shape of one example.
MODEL_INPUTS = {"fast_at_mnist": (28, 28, 1), "madry_cnn": (28, 28, 1),
                "preact_resnet18": (32, 32, 3), "wide_resnet16_4": (32, 32, 3),
                "wide_resnet28_10": (32, 32, 3),
                "wide_resnet34_10": (32, 32, 3)}
_SHAPE = re.compile(r"f32\[([0-9,]*)\]")


def ring_allreduce_seconds(num_bytes: float, n: int, bandwidth: float) -> float:
  """Ring all-reduce time: `2 (n - 1) / n * bytes / bandwidth` (bytes/s)."""
  return 0.0 if n <= 1 else 2.0 * (n - 1) / n * num_bytes / bandwidth


def param_count(name: str) -> int:
  """Trainable parameters of registered model `name` (no computation)."""
  model = models.get_model(name)
  shape = (1,) + MODEL_INPUTS[name]
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), np.zeros(shape, np.float32),
                         train=False))
  return int(sum(np.prod(p.shape) for p in
                 jax.tree.leaves(variables["params"])))


def allreduce_bytes_in_hlo(hlo: str) -> int:
  """Bytes of the float32 results of the all-reduce ops in compiled HLO."""
  total = 0
  for line in hlo.splitlines():
    op = re.search(r"= (.*?) all-reduce(-start)?\(", line)
    if op is None:
      continue
    for dims in _SHAPE.findall(op.group(1)):
      total += 4 * int(np.prod([int(d) for d in dims.split(",") if d]))
  return total


def time_step(model_name: str, mode: str, x: np.ndarray, y: np.ndarray,
              mesh, eps: float, warmup: int, repeats: int,
              kernels: str = "lax") -> dict:
  """Median time of one data-parallel call of `mode` on `mesh`."""
  step_fn, updates, _ = common.training.build_mode(mode)
  batch = parallel.shard_batch({"x": x, "y": y}, mesh)
  model = models.get_model(model_name, kernels=kernels)
  state = parallel.shard_state(
      common.training.mode_state(model, mode, x.shape, eps), mesh)
  key = jax.random.key(0)
  t0 = time.perf_counter()
  compiled = parallel.jit_step(step_fn, state, mesh).lower(state, batch,
                                                           key).compile()
  compile_s = time.perf_counter() - t0
  for _ in range(warmup):
    state, _ = compiled(state, batch, key)
  jax.block_until_ready(state)
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    state, _ = compiled(state, batch, key)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - t0)
  call = float(np.median(times))
  return {"model": model_name, "mode": mode, "devices": mesh.size,
          "global_batch": len(x), "compile_s": compile_s, "call_s": call,
          "per_update_s": call / updates, "updates_per_call": updates,
          "examples_per_s": len(x) * updates / call,
          "examples_per_s_per_device": len(x) * updates / call / mesh.size,
          "hlo_allreduce_bytes_per_call": allreduce_bytes_in_hlo(
              compiled.as_text())}


def project(step_s: float, num_bytes: float, n: int, bandwidth: float) -> dict:
  """Weak-scaling projection with a ring all-reduce and no overlap."""
  t_ar = ring_allreduce_seconds(num_bytes, n, bandwidth)
  eff = step_s / (step_s + t_ar)
  return {"allreduce_ms": 1e3 * t_ar, "efficiency": eff, "speedup": n * eff}


def to_markdown(res: dict) -> str:
  """The results as Markdown tables."""
  env = res.get("environment") or res["machine"]  # older runs: "machine"
  num_devices = env.get("device_count") or len(env["devices"])
  table = common.markdown_table
  ring_ms = lambda m, v: 1e3 * ring_allreduce_seconds(  # noqa: E731
      m["bytes"], v["n"], v["bytes_per_s"])
  links = res["interconnects"]
  return "\n".join([
      f"Machine: {env['cpu_count']} CPU cores (shared), {num_devices} "
      f"emulated devices, jax {env['jax']}.", "",
      f"**Measured** (per-device batch {res['per_device_batch']}, median of "
      f"{res['repeats']} calls)", "",
      table(("model", "mode", "devices", "global batch", "s / update",
             "examples/s", "examples/s per device",
             "all-reduce bytes / call (HLO)"),
            [(r["model"], r["mode"], r["devices"], r["global_batch"],
              f"{r['per_update_s']:.4f}", f"{r['examples_per_s']:.0f}",
              f"{r['examples_per_s_per_device']:.0f}",
              f"{r['hlo_allreduce_bytes_per_call']:,}")
             for r in res["measured"]]), "",
      "**All-reduce per optimizer update** (float32 gradients; ring time "
      "`2(n-1)/n * bytes / bandwidth`)", "",
      table(["model", "parameters", "bytes"] +
            [f"{k} (n={v['n']}) ms" for k, v in links.items()],
            [[m["model"], f"{m['params']:,}", f"{m['bytes']:,}"] +
             [f"{ring_ms(m, v):.3f}" for v in links.values()]
             for m in res["models"]]), "",
      "**Projection** from the measured 1-device step time (no "
      "compute/communication overlap)", "",
      table(["model", "mode", "step s (1 device, measured)"] +
            [f"{k}: efficiency / speedup" for k in links],
            [[p["model"], p["mode"], f"{p['step_s']:.4f}"] +
             [f"{c['efficiency']:.3f} / {c['speedup']:.2f}x"
              for c in p["links"].values()] for p in res["projection"]]), "",
      "**Break-even**: the per-device compute time per update that keeps "
      "90% efficiency is 9 x t_ar.", "",
      table(["model"] + [f"{k} min step ms" for k in links],
            [[m["model"]] + [f"{9 * ring_ms(m, v):.2f}"
                             for v in links.values()]
             for m in res["models"]])])


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Measures, counts and projects; writes results.json and results.md."""
  os.makedirs(workdir, exist_ok=True)
  print(parallel.describe(parallel.make_mesh()))
  x_all, y_all = data.load("mnist", "train", data_dir=config.data_dir,
                           manual_dir=config.manual_dir,
                           limit=config.per_device_batch * max(
                               config.devices))
  measured = []
  for n in config.devices:
    if n > len(jax.devices()):
      print(f"skipping {n} devices: only {len(jax.devices())} available")
      continue
    mesh = parallel.make_mesh(n)
    b = config.per_device_batch * n
    for model_name in config.timed_models:
      for mode in config.modes:
        r = time_step(model_name, mode, x_all[:b], y_all[:b], mesh,
                      config.eps, config.warmup, config.repeats,
                      config.kernels)
        print(f"{model_name} {mode} on {n} device(s): {r['per_update_s']:.4f}"
              f" s/update, {r['examples_per_s_per_device']:.0f} examples/s "
              f"per device, HLO all-reduce {r['hlo_allreduce_bytes_per_call']:,}"
              f" bytes/call")
        measured.append(r)
  counts = [{"model": m, "params": param_count(m)} for m in MODEL_INPUTS]
  for c in counts:
    c["bytes"] = 4 * c["params"]
  links = {k: dict(v) for k, v in config.interconnects.items()}
  projection = []
  for r in measured:
    if r["devices"] != 1:
      continue
    num_bytes = next(c["bytes"] for c in counts if c["model"] == r["model"])
    projection.append({"model": r["model"], "mode": r["mode"],
                       "step_s": r["per_update_s"], "links": {
                           k: project(r["per_update_s"], num_bytes, v["n"],
                                      v["bytes_per_s"])
                           for k, v in links.items()}})
  res = {"environment": common.environment(),
         "per_device_batch": config.per_device_batch,
         "repeats": config.repeats, "measured": measured, "models": counts,
         "interconnects": links, "projection": projection}
  common.write_results(workdir, res, to_markdown(res))
  return res


if __name__ == "__main__":
  common.run(run, config_help="Scaling configuration.")
