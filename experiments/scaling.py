r"""Data-parallel scaling: measured step times and all-reduce bytes, projected.

  XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m \
      experiments.scaling --config=experiments/configs/scaling.py \
      --workdir=/tmp/scaling

Three parts, written to `WORKDIR/results.json` and `WORKDIR/results.md`:

1. **Measured step time** of training steps (`experiments.benchmark`'s
   modes) on 1, 2, 4 ... devices of this machine (emulated CPU devices with
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

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from experiments.benchmark import _state_for
from experiments.benchmark import build_mode
from experiments.benchmark import machine
from experiments.robust_training import _json_dump
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
              mesh, eps: float, warmup: int, repeats: int) -> dict:
  """Median time of one data-parallel call of `mode` on `mesh`."""
  step_fn, updates, _ = build_mode(mode)
  batch = parallel.shard_batch({"x": x, "y": y}, mesh)
  state = parallel.shard_state(_state_for(model_name, mode, x.shape, eps),
                               mesh)
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
  lines = [f"Machine: {res['machine']['cpu_count']} CPU cores (shared), "
           f"{len(res['machine']['devices'])} emulated devices, jax "
           f"{res['machine']['jax']}.", "",
           "**Measured** (per-device batch "
           f"{res['per_device_batch']}, median of {res['repeats']} calls)", "",
           "| model | mode | devices | global batch | s / update | examples/s "
           "| examples/s per device | all-reduce bytes / call (HLO) |",
           "|---|---|---|---|---|---|---|---|"]
  for r in res["measured"]:
    lines.append(
        f"| {r['model']} | {r['mode']} | {r['devices']} | {r['global_batch']} "
        f"| {r['per_update_s']:.4f} | {r['examples_per_s']:.0f} | "
        f"{r['examples_per_s_per_device']:.0f} | "
        f"{r['hlo_allreduce_bytes_per_call']:,} |")
  links = res["interconnects"]
  lines += ["", "**All-reduce per optimizer update** (float32 gradients; "
            "ring time `2(n-1)/n * bytes / bandwidth`)", "",
            "| model | parameters | bytes | " + " | ".join(
                f"{k} (n={v['n']}) ms" for k, v in links.items()) + " |",
            "|---|---|---|" + "---|" * len(links)]
  for m in res["models"]:
    lines.append(f"| {m['model']} | {m['params']:,} | {m['bytes']:,} | " +
                 " | ".join(f"{1e3 * ring_allreduce_seconds(m['bytes'], v['n'], v['bytes_per_s']):.3f}"
                            for v in links.values()) + " |")
  lines += ["", "**Projection** from the measured 1-device step time "
            "(no compute/communication overlap)", "",
            "| model | mode | step s (1 device, measured) | " + " | ".join(
                f"{k}: efficiency / speedup" for k in links) + " |",
            "|---|---|---|" + "---|" * len(links)]
  for p in res["projection"]:
    cells = [f"{c['efficiency']:.3f} / {c['speedup']:.2f}x"
             for c in p["links"].values()]
    lines.append(f"| {p['model']} | {p['mode']} | {p['step_s']:.4f} | " +
                 " | ".join(cells) + " |")
  lines += ["", "**Break-even**: the per-device compute time per update that "
            "keeps 90% efficiency is 9 x t_ar.", "",
            "| model | " + " | ".join(f"{k} min step ms" for k in links) +
            " |", "|---|" + "---|" * len(links)]
  for m in res["models"]:
    lines.append(f"| {m['model']} | " + " | ".join(
        f"{9e3 * ring_allreduce_seconds(m['bytes'], v['n'], v['bytes_per_s']):.2f}"
        for v in links.values()) + " |")
  return "\n".join(lines)


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
                      config.eps, config.warmup, config.repeats)
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
  res = {"machine": machine(), "per_device_batch": config.per_device_batch,
         "repeats": config.repeats, "measured": measured, "models": counts,
         "interconnects": links, "projection": projection}
  _json_dump(res, os.path.join(workdir, "results.json"))
  md = to_markdown(res)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(md + "\n")
  print(md)
  return res


FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Output directory.")
  config_flags.DEFINE_config_file("config", None, "Scaling configuration.",
                                  lock_config=True)
  flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  run(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
