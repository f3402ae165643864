"""Runs every part of the benchmark and writes `benchmark.json` / `.md`."""

from __future__ import annotations

import os

import jax
import ml_collections

from experiments import common
from experiments.benchmarks import attack
from experiments.benchmarks import ensemble
from experiments.benchmarks import loop
from experiments.benchmarks import mi
from experiments.benchmarks import torch_reference
from experiments.benchmarks import training
from jaxadv import data
from jaxadv import models
from jaxadv import training as jaxadv_training


def to_markdown(res: dict) -> str:
  """The benchmark as Markdown tables."""
  m = res["machine"]
  out = [f"Machine: {m['processor'] or m['platform']}, {m['cpu_count']} cores, "
         f"jax {m['jax']} ({m['backend']}, {len(m['devices'])} device(s)).", ""]
  if res.get("train"):
    out += training.train_markdown(res)
  if res.get("ensemble"):
    out += ensemble.to_markdown(res["ensemble"], res["ensemble"].get("model"))
  if res.get("torch_reference"):
    tr = res["config"]["torch_reference"]
    out += [""] + torch_reference.to_markdown(
        res["torch_reference"], _natural_s(res["train"], tr["model"]))
  if res.get("memory"):
    out += [""] + training.memory_markdown(res)
  if res.get("tta"):
    out += [""] + training.tta_markdown(res)
  if res.get("attack"):
    out += [""] + attack.to_markdown(res["attack"])
  if res.get("loop"):
    out += ["", loop.to_markdown(res["loop"],
                                 res["config"]["loop_batch_size"])]
  if isinstance(res.get("mixup_inference"), dict):
    out += ["", mi.to_markdown(res["mixup_inference"])]
  return "\n".join(out)


def _natural_s(rows: list[dict], model: str):
  """The natural step's median seconds of `model` among `rows`, or None."""
  return next((r["call_s"] for r in rows
               if r["model"] == model and r["mode"] == "natural"), None)


def group_setup(g: ml_collections.ConfigDict) -> dict:
  """`time_train_modes` keywords of a `train` group's optional fields.

  `model_kwargs` (to `models.get_model`), `normalize` ("cifar10": inside
  `models.Normalized`), `section` (step fields such as `augment` and
  `attack_bn`), `step_sizes` (mode name -> step size) and `optimizer`
  ("sgd": the CIFAR recipes' SGD, momentum 0.9, weight decay 5e-4);
  absent, the MNIST rows are set up as before.
  """
  out = {"rewarm": g.get("rewarm", 1)}
  if g.get("model_kwargs") or g.get("normalize"):
    model = models.get_model(g.model, kernels=g.kernels,
                             **dict(g.get("model_kwargs") or {}))
    if g.get("normalize"):
      mean, std = common.robust.NORMALIZATIONS[g.normalize]
      model = models.Normalized(model, mean=mean, std=std)
    out["model"] = model
  if g.get("section"):
    out["section"] = dict(g.section)
  if g.get("step_sizes"):
    out["step_sizes"] = dict(g.step_sizes)
  if g.get("optimizer") == "sgd":
    out["tx"] = jaxadv_training.sgd(0.1, weight_decay=5e-4)
  return out


def machine() -> dict:
  """The machine line's fields (older benchmark.json files have only it)."""
  env = common.environment()
  return {"platform": env["platform"], "processor": env["processor"],
          "cpu_count": env["cpu_count"], "python": env["python"],
          "jax": env["jax"], "backend": env["backend"],
          "devices": [str(d) for d in jax.devices()]}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs every part of the benchmark and writes the results."""
  os.makedirs(workdir, exist_ok=True)
  res = {"environment": common.environment(), "machine": machine(),
         "config": config.to_dict()}
  print(res["environment"])
  if config.get("ensemble"):  # configs/benchmark_ensemble.py: that alone
    res["ensemble"] = ensemble.run_section(config)
    common.write_results(workdir, res, to_markdown(res), name="benchmark")
    return res
  x, y = data.load(config.dataset, "train", data_dir=config.data_dir,
                   manual_dir=config.manual_dir)
  batch = {"x": x[:config.batch_size], "y": y[:config.batch_size]}
  nb = data.num_batches(len(x), config.batch_size)

  res["train"] = []
  for g in config.train.values():
    rows = training.time_train_modes(g.model, tuple(g.modes), batch,
                                     config.eps, g.get("warmup",
                                                       config.warmup),
                                     g.get("repeats", config.repeats),
                                     kernels=g.kernels, **group_setup(g))
    training.add_ratios(rows, nb)
    for r in rows:
      print(f"[train] {g.model} ({g.kernels}) {r['mode']}: "
            f"{1e3 * r['call_s']:.2f} ms/call, ratio "
            f"{r['ratio_to_natural']:.2f} {r['bar']}")
    res["train"] += rows

  tr = config.get("torch_reference")
  if tr:
    res["torch_reference"] = torch_reference.natural_step_seconds(
        batch["x"], batch["y"], warmup=tr.warmup, repeats=tr.repeats)
    print(torch_reference.to_markdown(
        res["torch_reference"], _natural_s(res["train"], tr.model))[0])

  if not config.get("tta"):  # the CIFAR-10 benchmark: training rows only
    common.write_results(workdir, res, to_markdown(res), name="benchmark")
    return res

  x_test, y_test = data.load(config.dataset, "test", data_dir=config.data_dir,
                             manual_dir=config.manual_dir)
  if config.get("memory_groups"):
    res["memory"] = training.memory_table(config)

  res["tta"], states = training.time_to_accuracy(config)

  if "fgsm_rs" in states:
    model_name, state = states["fgsm_rs"]
    n = config.attack.num_examples
    res["attack"] = attack.attack_throughput(config, model_name, state.params,
                                             x_test[:n], y_test[:n])
    for r in res["attack"]["rows"]:
      print(f"[attack] {r['attack']}: {r['images_per_s']:.0f} img/s, "
            f"robust acc {r['robust_acc']:.4f}")

  res["loop"] = [{"steps": k, **loop.measure_pair(
      k, config.loop_batch_size, config.repeats, kernels)}
                 for k in config.loop_steps for kernels in config.loop_kernels]
  mc = config.mixup_inference
  res["mixup_inference"] = mi.measure(
      mc.model, mc.batch_size, mc.num_samples, config.repeats, config.dataset,
      kernels=config.kernels, chunk_size=mc.chunk_size)
  print(mi.to_markdown(res["mixup_inference"]))
  common.write_results(workdir, res, to_markdown(res), name="benchmark")
  return res
