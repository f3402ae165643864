"""Training-step cost, peak memory and time to accuracy.

Modes are `common.training.parse_mode` strings ("natural", "fgsm_rs",
"free:8@fori", "pgd:10@unroll"); a group of the config's `train` section
times its modes of one model with one choice of convolution kernels.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import common
from experiments.benchmarks import timing
from experiments.configs import robust_mnist
from jaxadv import data
from jaxadv import evaluation
from jaxadv import models
from jaxadv import training


def time_train_modes(model_name: str, modes: tuple[str, ...], batch: dict,
                     eps: float, warmup: int, repeats: int,
                     kernels: str = "xla_cpu", *, model=None,
                     section: Optional[dict] = None,
                     step_sizes: Optional[dict] = None, tx=None,
                     rewarm: int = 1) -> list[dict]:
  """Compile time, median call time and XLA's memory estimate of each mode.

  All modes are compiled first, then timed in alternation
  (`timing.interleaved_times`: every round calls each mode once, after
  `rewarm` untimed calls of the same mode), so a ratio to the natural step
  compares calls made in the same stretch of time even when the machine
  drifts during the run. Each row keeps its per-round times (`round_s`)
  for paired ratios. `model` (default `get_model(model_name, kernels)`),
  `section` (extra step fields, `common.training.build_mode`),
  `step_sizes` and `tx` (`common.training.mode_state`) set up the CIFAR-10
  recipes.
  """
  key = jax.random.key(0)
  if model is None:
    model = models.get_model(model_name, kernels=kernels)
  setups, rows = {}, {}
  for mode in modes:
    step, updates, passes = common.training.build_mode(mode, section)
    state = common.training.mode_state(model, mode, batch["x"].shape, eps,
                                       step_sizes=step_sizes, tx=tx)
    compiled, compile_s = timing.compile_timed(step, state, batch, key,
                                               donate_argnums=(0,))
    mem = compiled.memory_analysis()
    setups[mode] = {"compiled": compiled, "state": state}
    rows[mode] = {"model": model_name, "kernels": kernels, "mode": mode,
                  "batch_size": int(batch["x"].shape[0]),
                  "compile_s": compile_s, "updates_per_call": updates,
                  "passes_per_call": passes,
                  "xla_temp_bytes": getattr(mem, "temp_size_in_bytes", None)}

  def call(mode):
    setup = setups[mode]

    def run():  # the state is donated, so carry the new one
      setup["state"], _ = setup["compiled"](setup["state"], batch, key)
      return setup["state"]
    return run

  times = timing.interleaved_times({m: call(m) for m in modes}, repeats,
                                   warmup=warmup, rewarm=rewarm)
  for mode, row in rows.items():
    row["round_s"] = times[mode]
    row["call_s"] = float(np.median(times[mode]))
    row["per_update_s"] = row["call_s"] / row["updates_per_call"]
  return [rows[m] for m in modes]


def add_ratios(rows: list[dict], batches_per_epoch: int) -> None:
  """Adds each row's epoch-equivalent time, its paired ratio per update to
  the natural step of the same group, and its bar, in place."""
  nat = next((r for r in rows if r["mode"] == "natural"), None)
  for r in rows:
    name, k, _ = common.training.parse_mode(r["mode"])
    r["epoch_equiv_s"] = r["per_update_s"] * batches_per_epoch
    # Paired: per round, this mode's time per update over the natural
    # step's in the same round; the median of those (and their range).
    if nat:
      ratio = timing.paired_ratio(
          np.asarray(r["round_s"]) / r["updates_per_call"], nat["round_s"])
      r["ratio_of_medians"] = r["per_update_s"] / nat["per_update_s"]
    else:
      ratio = dict.fromkeys(("median", "min", "max"), float("nan"))
      r["ratio_of_medians"] = float("nan")
    r["ratio_to_natural"] = ratio["median"]
    r["ratio_to_natural_range"] = [ratio["min"], ratio["max"]]
    limit = {"free": 1.05, "pgd": k + 1}.get(name)
    r["bar"] = ("-" if limit is None else
                f"<= {limit:g}: "
                f"{'met' if r['ratio_to_natural'] <= limit else 'MISSED'}")


def train_markdown(res: dict) -> list[str]:
  """The training-cost table."""
  c = res["config"]
  rows = [(r["model"], r.get("kernels", "-"), r["mode"],
           r.get("batch_size", c["batch_size"]), len(r["round_s"]),
           f"{1e3 * r['call_s']:.2f}", r["updates_per_call"],
           f"{1e3 * r['per_update_s']:.2f}", f"{r['epoch_equiv_s']:.1f}",
           f"{r['ratio_to_natural']:.2f} "
           f"({r['ratio_to_natural_range'][0]:.2f}-"
           f"{r['ratio_to_natural_range'][1]:.2f})", r["bar"],
           f"{r['compile_s']:.2f}") for r in res["train"]]
  return [
      "**Training step cost** (median of the interleaved rounds after "
      "warm-up, each round timing every mode of the model once, by default "
      "right after an untimed call of it; ratio per optimizer update vs "
      "natural on the same model and kernels: the median over rounds of the "
      "ratio within each round, with its range; `@fori` / `@unroll`: the "
      "replay or attack loop rolled / unrolled, no suffix: the backend "
      "default, `jaxadv.loops.default_unroll()`)", "",
      common.markdown_table(
          ("model", "kernels", "mode", "batch", "rounds", "ms / call",
           "updates / call", "ms / update", "s / epoch-equiv.",
           "ratio to natural", "bar", "compile s"), rows)]


# -------------------------------------------------------------- memory ----

def peak_rss_mib() -> float:
  """This process's peak resident memory (VmHWM; ru_maxrss survives exec)."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024.0
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def probe_memory(model_name: str, kernels: str, mode: str, batch_size: int,
                 steps: int) -> dict:
  """Runs `steps` training steps here and reports this process's peak RSS
  ("baseline": only jax and the data)."""
  x, y = data.load("mnist", "train", limit=batch_size)
  if mode != "baseline":
    batch = {"x": x, "y": y}
    step, _, _ = common.training.build_mode(mode)
    model = models.get_model(model_name, kernels=kernels)
    state = common.training.mode_state(model, mode, x.shape, 0.3)
    fn = jax.jit(step, donate_argnums=(0,))
    for _ in range(steps):
      state, _ = fn(state, batch, jax.random.key(0))
    jax.block_until_ready(state)
  else:
    jax.block_until_ready(jnp.asarray(x))
  return {"model": model_name, "kernels": kernels, "mode": mode,
          "batch_size": batch_size, "peak_rss_mib": peak_rss_mib()}


def memory_table(config: ml_collections.ConfigDict) -> list:
  """Peak RSS of each mode of the `config.memory_groups`, each in a fresh
  process (so peaks do not mix)."""
  rows = []
  for group in config.memory_groups:
    g = config.train[group]
    for mode in ("baseline",) + tuple(g.modes):
      cmd = [sys.executable, "-m", "experiments.benchmarks",
             f"--probe_memory={g.model},{g.kernels},{mode},"
             f"{config.batch_size},{config.memory_steps}"]
      out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                           env=dict(os.environ))
      rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
  return rows


def memory_markdown(res: dict) -> list[str]:
  return [
      "**Peak resident memory** (fresh process per mode, batch "
      f"{res['config']['batch_size']}; 'baseline' = jax + data, no step)", "",
      common.markdown_table(
          ("model", "kernels", "mode", "peak RSS MiB"),
          [(r["model"], r.get("kernels", "-"), r["mode"],
            f"{r['peak_rss_mib']:.0f}") for r in res["memory"]])]


# ---------------------------------------------------- time to accuracy ----

def time_to_accuracy(config: ml_collections.ConfigDict) -> tuple[list, dict]:
  """Wall time (training only) until held-out PGD accuracy reaches target.

  Trains exactly as the main job does (`configs/robust_mnist.py`: its
  recipes, kernels, loop forms, seed and train / validation split, with
  `common.robust.train_method`), without checkpoints or the per-epoch
  validation, and checks PGD accuracy on the first `tta.heldout`
  validation images every `tta.check_every` minibatches through
  `training.fit`'s `eval_fn` hook; training stops at the target or once
  about `tta.max_seconds` of training have passed.

  Returns:
    (rows, {method: (model name, final state)}).
  """
  tc = config.tta
  recipes = robust_mnist.get_config()
  recipes.data_dir, recipes.manual_dir = config.data_dir, config.manual_dir
  train, val, _ = common.load_train_val_test(recipes)
  xh, yh = val[0][:tc.heldout], val[1][:tc.heldout]
  model = common.robust.get_model(recipes)
  rows, states = [], {}
  for name in tc.methods:
    # Wall time between checks: the cap's clock (compile of the first step
    # included; the reported seconds are `fit`'s, compile excluded).
    clock = {"since": time.perf_counter(), "seconds": 0.0}

    def eval_fn(state, batches):
      del batches
      clock["seconds"] += time.perf_counter() - clock["since"]
      acc = evaluation.robust_accuracy(
          model.apply, training.variables_of(state), xh, yh,
          jax.random.key(1), attack="pgd", eps=config.eps,
          step_size=tc.pgd_step_size, steps=tc.pgd_steps,
          batch_size=len(xh), unroll=recipes.eval.unroll)
      out = {"heldout_pgd_acc": acc}
      if acc >= tc.target or clock["seconds"] >= tc.max_seconds:
        out["stop"] = True
      clock["since"] = time.perf_counter()
      return out

    trained = common.robust.train_method(
        name, recipes, train, val, None, validate=False, eval_fn=eval_fn,
        eval_every=tc.check_every, progress=False)
    result = trained.result
    curve = [(h["train_seconds"], h["batches"], h["heldout_pgd_acc"])
             for h in result.history if "heldout_pgd_acc" in h]
    reached = next((s for s, _, a in curve if a >= tc.target), None)
    rows.append({"method": name, "target": tc.target,
                 "seconds_to_target": reached, "batches": result.batches,
                 "fwd_bwd_passes": trained.cost["fwd_bwd_passes"],
                 "final_acc": curve[-1][2] if curve else None,
                 "curve": curve})
    states[name] = (recipes.model, result.state)
    print(f"[tta] {name}: "
          + (f"{reached:.1f}s" if reached is not None else "not reached")
          + f" ({result.batches} batches, last acc "
          f"{curve[-1][2] if curve else 'n/a'})")
  return rows, states


def tta_markdown(res: dict) -> list[str]:
  c = res["config"]
  rows = [(r["method"], "not reached" if r["seconds_to_target"] is None
           else f"{r['seconds_to_target']:.1f}", r["batches"],
           r["fwd_bwd_passes"], f"{r['final_acc']:.3f}") for r in res["tta"]]
  return [
      "**Time to accuracy**: training seconds (compile and checks excluded) "
      "until PGD-{} accuracy on {} held-out images first reaches {:.0%} at "
      "eps {} (the main job's recipes and kernels)".format(
          c["tta"]["pgd_steps"], c["tta"]["heldout"], c["tta"]["target"],
          c["eps"]), "",
      common.markdown_table(("method", "seconds", "batches",
                             "fwd-bwd passes", "last acc"), rows)]
