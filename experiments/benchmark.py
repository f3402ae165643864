r"""Speed benchmark: jaxadv's training modes, attacks and loop forms vs peers.

  python -m experiments.benchmark \
      --config=experiments/configs/benchmark.py --workdir=/tmp/bench

Writes `WORKDIR/benchmark.json` and `WORKDIR/benchmark.md`. Every time is a
median over repeated runs after a warm-up call, compile time is reported
separately, and every ratio compares numbers measured in this same process.

On CPU the host is split into one XLA device per core
(`--xla_force_host_platform_device_count`, set below before jax is imported
unless XLA_FLAGS already sets it): single-device work runs as before, and the
"sharded" jaxadv attack spreads its batch over all of them, which is how JAX
uses more than one core for a network this small. It affects the CPU backend
only; on GPU/TPU the accelerators are used as they are.
"""

from __future__ import annotations

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS",
                                                                ""):
  os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "") +
      f" --xla_force_host_platform_device_count={os.cpu_count() or 1}").strip()

# pylint: disable=g-import-not-at-top,wrong-import-position
import functools
import json
import platform
import resource
import subprocess
import sys
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from experiments import benchmark_loop
from experiments import benchmark_mi
from experiments import robust_training
from experiments import timing
from experiments.configs import robust_mnist
from jaxadv import attacks
from jaxadv import data
from jaxadv import evaluation
from jaxadv import losses
from jaxadv import models
from jaxadv import training


def parse_mode(mode: str) -> tuple[str, int, str | None]:
  """"free:8@fori" -> ("free", 8, "fori"); "natural" -> ("natural", 0, None).

  The optional "@unroll" / "@fori" picks the replay / attack loop form;
  without it the default is used (`attacks.default_loop`: on CPU it
  follows the body, "unroll" with a non-canonical convolution, "fori"
  otherwise).
  """
  mode, _, loop = mode.partition("@")
  name, _, arg = mode.partition(":")
  return name, int(arg) if arg else 0, loop or None


def build_mode(mode: str):
  """(step fn, optimizer updates per call, forward-backward passes per call)."""
  name, k, loop = parse_mode(mode)
  if name == "natural":
    return training.natural_step(), 1, 1
  if name == "fgsm_rs":
    return training.fgsm_rs_step(), 1, 2
  if name == "free":
    return training.free_at_step(replays=k, loop=loop), k, k
  if name == "pgd":
    return training.pgd_at_step(steps=k, loop=loop), 1, k + 1
  raise ValueError(f"unknown training mode {mode!r}")


def _state_for(model_name: str, mode: str, x_shape, eps: float):
  import optax
  name, _, _ = parse_mode(mode)
  model = models.get_model(model_name)
  step_size = {"fgsm_rs": 1.25 * eps, "pgd": 0.01}.get(name, 0.0)
  return training.create_train_state(
      model, jax.random.key(0), (1,) + x_shape[1:], optax.adam(1e-3),
      eps=eps, step_size=step_size,
      delta_shape=x_shape if name == "free" else None)


def time_train_modes(model_name: str, modes: tuple[str, ...], batch: dict,
                     eps: float, warmup: int, repeats: int) -> list[dict]:
  """Compile time, median call time and XLA's memory estimate of each mode.

  All modes are compiled first, then timed in alternation
  (`timing.interleaved_times`: every round calls each mode once, after
  an untimed call of the same mode), so a ratio to the natural step
  compares calls made in the same stretch of time even when the machine
  drifts during the run. Each row keeps its per-round times (`round_s`)
  for paired ratios.
  """
  key = jax.random.key(0)
  setups, rows = {}, {}
  for mode in modes:
    step, updates, passes = build_mode(mode)
    state = _state_for(model_name, mode, batch["x"].shape, eps)
    compiled, compile_s = timing.compile_timed(step, state, batch, key,
                                               donate_argnums=(0,))
    mem = compiled.memory_analysis()
    setups[mode] = {"compiled": compiled, "state": state}
    rows[mode] = {"model": model_name, "mode": mode, "compile_s": compile_s,
                  "updates_per_call": updates, "passes_per_call": passes,
                  "xla_temp_bytes": getattr(mem, "temp_size_in_bytes", None)}

  def call(mode):
    setup = setups[mode]

    def run():  # the state is donated, so carry the new one
      setup["state"], _ = setup["compiled"](setup["state"], batch, key)
      return setup["state"]
    return run

  times = timing.interleaved_times({m: call(m) for m in modes}, repeats,
                                   warmup=warmup)
  for mode, row in rows.items():
    row["round_s"] = times[mode]
    row["call_s"] = float(np.median(times[mode]))
    row["per_update_s"] = row["call_s"] / row["updates_per_call"]
  return [rows[m] for m in modes]


def probe_memory(model_name: str, mode: str, batch_size: int,
                 steps: int) -> dict:
  """Runs `steps` training steps here and reports this process's peak RSS."""
  x, y = data.load("mnist", "train", limit=batch_size)
  batch = {"x": x, "y": y}
  step, _, _ = build_mode(mode)
  state = _state_for(model_name, mode, x.shape, 0.3)
  fn = jax.jit(step, donate_argnums=(0,))
  for _ in range(steps):
    state, _ = fn(state, batch, jax.random.key(0))
  jax.block_until_ready(state)
  return {"model": model_name, "mode": mode, "batch_size": batch_size,
          "peak_rss_mib": peak_rss_mib()}


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


def memory_table(config) -> list:
  """Peak RSS of each mode, each in a fresh process (so peaks do not mix)."""
  rows = []
  for model_name in config.memory_models:
    for mode in ("baseline",) + tuple(config.modes):
      cmd = [sys.executable, "-m", "experiments.benchmark",
             f"--probe_memory={model_name},{mode},{config.batch_size},"
             f"{config.memory_steps}"]
      out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                           env=dict(os.environ))
      rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
  return rows


def time_to_accuracy(config) -> tuple[list, dict]:
  """Wall time (training only) until held-out PGD accuracy reaches target.

  Trains exactly as the main job does (its recipes, seed and train /
  validation split) and checks PGD accuracy on the first `tta.heldout`
  validation images every `tta.check_every` minibatches.
  """
  tc = config.tta
  recipes = robust_mnist.get_config()
  recipes.data_dir, recipes.manual_dir = config.data_dir, config.manual_dir
  (x, y), (xh, yh), _ = robust_training.load_data(recipes)
  xh, yh = xh[:tc.heldout], yh[:tc.heldout]
  rows, states = [], {}
  per_epoch = data.num_batches(len(x), recipes.batch_size)
  for name in tc.methods:
    setup = robust_training.setup_method(name, recipes, len(x), x.shape[1:])
    model, state, num_batches = setup.model, setup.state, setup.num_batches
    step = jax.jit(setup.step_fn, donate_argnums=(0,))
    key = jax.random.key(recipes.seed)
    seconds, b, curve, reached = 0.0, 0, [], None
    first = True
    while b < num_batches and reached is None and seconds < tc.max_seconds:
      epoch, start = divmod(b, per_epoch)
      t0 = time.perf_counter()
      for batch in data.batches(x, y, recipes.batch_size, seed=recipes.seed,
                                epoch=epoch, start_batch=start):
        state, _ = step(state, batch, key)
        if first:  # exclude compilation
          jax.block_until_ready(state)
          t0 = time.perf_counter()
          first = False
        b += 1
        if b % tc.check_every == 0 or b == num_batches:
          jax.block_until_ready(state)
          seconds += time.perf_counter() - t0
          acc = evaluation.robust_accuracy(
              model.apply, training.variables_of(state), xh, yh,
              jax.random.key(1), attack="pgd", eps=config.eps,
              step_size=tc.pgd_step_size, steps=tc.pgd_steps,
              batch_size=len(xh))
          curve.append((seconds, b, acc))
          if acc >= tc.target:
            reached = seconds
          t0 = time.perf_counter()
          if reached is not None or seconds >= tc.max_seconds:
            break
        if b == num_batches:
          break
      if b % tc.check_every and b != num_batches:  # epoch ended between checks
        jax.block_until_ready(state)
        seconds += time.perf_counter() - t0
    rows.append({"method": name, "target": tc.target,
                 "seconds_to_target": reached, "batches": b,
                 "fwd_bwd_passes": b * setup.passes_per_batch,
                 "final_acc": curve[-1][2] if curve else None,
                 "curve": curve})
    states[name] = (recipes.model, state)
    print(f"[tta] {name}: "
          + (f"{reached:.1f}s" if reached is not None else "not reached")
          + f" ({b} batches, last acc {curve[-1][2] if curve else 'n/a'})")
  return rows, states


FOOLBOX = "foolbox 3.3.4 LinfPGD (JAX/EagerPy)"
FOOLBOX_LAX = FOOLBOX + ", model with lax convs (as flax nn.Conv)"
TORCHATTACKS = "torchattacks 3.5 (PyTorch CPU)"


def attack_throughput(config, model_name: str, params: Any, x: np.ndarray,
                      y: np.ndarray) -> dict:
  """jaxadv PGD vs torchattacks vs foolbox on the same weights and inputs.

  Every attack runs over all of `x` once untimed (compile, warm-up), then
  they are timed in `config.attack.repeats` interleaved rounds
  (`timing.interleaved_medians`), so their ratios compare the same stretch
  of time. foolbox gets jaxadv's model (its CPU conv layers, the "same
  model") and, as a second row, the same weights with plain lax convs, the
  model a flax user would hand it (`flax.linen.Conv` computes the same
  `lax.conv_general_dilated`).
  """
  ac = config.attack
  model = models.get_model(model_name)
  variables = {"params": params}
  kw = dict(eps=config.eps, step_size=ac.step_size, steps=ac.steps)
  bs = ac.batch_size

  def attack_correct(variables, xb, yb, key, random_start=True):
    logits_fn = lambda v: model.apply(variables, v)
    x_adv = attacks.pgd(losses.make_loss_fn(logits_fn), xb, yb, key,
                        random_start=random_start, **kw)
    return jnp.argmax(logits_fn(x_adv), -1) == yb

  def jax_call(fn, put):
    def go():
      out = [fn(variables, put(x[i:i + bs]), put(y[i:i + bs]),
                jax.random.fold_in(jax.random.key(0), i))
             for i in range(0, len(x), bs)]
      return np.concatenate([np.asarray(o) for o in out])
    return go

  calls = {"jaxadv (1 device)": jax_call(jax.jit(attack_correct),
                                         jnp.asarray)}
  devices = jax.local_devices()
  if len(devices) > 1 and bs % len(devices) == 0:
    mesh = Mesh(np.array(devices), ("batch",))
    sharded = jax.jit(jax.shard_map(
        attack_correct, mesh=mesh, in_specs=(P(), P("batch"), P("batch"), P()),
        out_specs=P("batch")))
    sharding = jax.sharding.NamedSharding(mesh, P("batch"))
    calls[f"jaxadv ({len(devices)} devices, batch sharded)"] = jax_call(
        sharded, lambda a: jax.device_put(a, sharding))
  from experiments import peers
  port_err = None
  if "torchattacks" in ac.peers:
    tmodel = peers.port_to_torch(model_name, params)
    calls[TORCHATTACKS] = lambda: peers.torchattacks_pgd(
        tmodel, x, y, batch_size=bs, **kw)[0]
    # Same weights, same function: logits agree.
    import torch
    with torch.no_grad():
      tl = tmodel(torch.from_numpy(np.ascontiguousarray(
          x[:64].transpose(0, 3, 1, 2)))).numpy()
    port_err = float(np.abs(tl - np.asarray(model.apply(variables,
                                                        x[:64]))).max())
  if "foolbox" in ac.peers:
    logits_fn = jax.jit(lambda v: model.apply(variables, v))
    lax_model = models.get_model(model_name, conv_impl="lax")
    lax_logits_fn = jax.jit(lambda v: lax_model.apply(variables, v))
    calls[FOOLBOX] = lambda: peers.foolbox_pgd(
        logits_fn, x, y, batch_size=bs, **kw)[0]
    calls[FOOLBOX_LAX] = lambda: peers.foolbox_pgd(
        lax_logits_fn, x, y, batch_size=bs, **kw)[0]
  results, compile_s = {}, {}
  for name, call in calls.items():
    t0 = time.perf_counter()
    results[name] = call()
    compile_s[name] = time.perf_counter() - t0  # minus a run, below
  times = timing.interleaved_times(calls, ac.repeats, warmup=0, rewarm=0)
  medians = {name: float(np.median(t)) for name, t in times.items()}
  results = {name: (correct, medians[name],
                    compile_s[name] - medians[name]
                    if name.startswith("jaxadv") else None)
             for name, correct in results.items()}
  # The same attack without a random start is deterministic: the three
  # libraries should then compute the same iterates, up to float rounding.
  deterministic = jax.jit(functools.partial(attack_correct,
                                            random_start=False))
  no_start = {"jaxadv (1 device)": np.concatenate([
      np.asarray(deterministic(variables, x[i:i + bs], y[i:i + bs],
                               jax.random.key(0)))
      for i in range(0, len(x), bs)])}
  if "torchattacks" in ac.peers:
    no_start[TORCHATTACKS] = peers.torchattacks_pgd(
        tmodel, x, y, batch_size=bs, random_start=False, **kw)[0]
  if "foolbox" in ac.peers:
    no_start[FOOLBOX] = peers.foolbox_pgd(
        logits_fn, x, y, batch_size=bs, random_start=False, **kw)[0]
  ref = no_start["jaxadv (1 device)"]
  rows = []
  base = results["jaxadv (1 device)"][1]
  for name, (correct, secs, comp) in results.items():
    rows.append({"attack": name, "images_per_s": len(x) / secs,
                 "seconds": secs, "round_s": times[name], "compile_s": comp,
                 "robust_acc": float(np.mean(correct)),
                 "time_vs_jaxadv_1dev": secs / base})
    if name in no_start:
      rows[-1]["robust_acc_no_random_start"] = float(np.mean(no_start[name]))
      rows[-1]["verdicts_differing_from_jaxadv_no_random_start"] = int(
          np.sum(no_start[name] != ref))
  accs = [r["robust_acc"] for r in rows]
  accs0 = [float(np.mean(c)) for c in no_start.values()]
  # The bar: jaxadv's fastest configuration against each peer, >= 2x, as
  # the median over rounds of the speedup within each round (the peer's
  # time over jaxadv's, measured back to back).
  best = max((r for r in rows if r["attack"].startswith("jaxadv")),
             key=lambda r: r["images_per_s"])
  bar = []
  for r in rows:
    if r["attack"].startswith("jaxadv"):
      continue
    speedup = timing.paired_ratio(r["round_s"], best["round_s"])
    bar.append({"jaxadv": best["attack"], "peer": r["attack"],
                "speedup": speedup["median"],
                "speedup_range": [speedup["min"], speedup["max"]],
                "ratio_of_medians": best["images_per_s"] / r["images_per_s"],
                "met": speedup["median"] >= 2.0})
  return {"rows": rows, "bar": bar, "max_acc_gap": max(accs) - min(accs),
          "max_acc_gap_no_random_start": max(accs0) - min(accs0),
          "port_max_logit_err": port_err,
          "cleverhans": peers.cleverhans_status(),
          "num_examples": len(x), "batch_size": bs, **kw}


def machine() -> dict:
  return {"platform": platform.platform(), "processor": platform.processor(),
          "cpu_count": os.cpu_count(), "python": platform.python_version(),
          "jax": jax.__version__, "backend": jax.default_backend(),
          "devices": [str(d) for d in jax.devices()]}


def default_loops(model_names) -> dict:
  """The default loop form of a PGD step body on each model, and of a body
  without convolutions."""
  out = {}
  for name in model_names:
    model = models.get_model(name)
    x = jnp.zeros((2, 28, 28, 1))
    variables = model.init(jax.random.key(0), x)
    grad = jax.grad(lambda a: jnp.sum(model.apply(variables, a)))
    out[f"PGD on {name}"] = attacks.default_loop(
        body=lambda i, a: a + 0.01 * jnp.sign(grad(a)), init=x)
  out["a body without convolutions"] = attacks.default_loop(
      body=lambda i, c: c * 2.0, init=jnp.ones(()))
  return out


def to_markdown(res: dict) -> str:
  """The benchmark as Markdown tables."""
  m = res["machine"]
  out = [f"Machine: {m['processor'] or m['platform']}, {m['cpu_count']} cores, "
         f"jax {m['jax']} ({m['backend']}, {len(m['devices'])} device(s)).", ""]
  out += ["**Training step cost** (batch {}, median of {} interleaved rounds "
          "after warm-up, each round timing every mode of the model once, "
          "right after an untimed call of it; "
          "ratio per optimizer update vs natural on the same model: the "
          "median over rounds of the ratio within each round, with its "
          "range)".format(
              res["config"]["batch_size"], res["config"]["repeats"]), "",
          "| model | mode | ms / call | updates / call | ms / update | "
          "s / epoch-equiv. | ratio to natural | bar | compile s |",
          "|---|---|---|---|---|---|---|---|---|"]
  for r in res["train"]:
    out.append(
        f"| {r['model']} | {r['mode']} | {1e3 * r['call_s']:.2f} | "
        f"{r['updates_per_call']} | {1e3 * r['per_update_s']:.2f} | "
        f"{r['epoch_equiv_s']:.1f} | {r['ratio_to_natural']:.2f} "
        f"({r['ratio_to_natural_range'][0]:.2f}-"
        f"{r['ratio_to_natural_range'][1]:.2f}) | "
        f"{r['bar']} | {r['compile_s']:.2f} |")
  if res.get("memory"):
    out += ["", "**Peak resident memory** (fresh process per mode, batch "
            f"{res['config']['batch_size']}; 'baseline' = jax + data, no step)",
            "", "| model | mode | peak RSS MiB |", "|---|---|---|"]
    for r in res["memory"]:
      out.append(f"| {r['model']} | {r['mode']} | {r['peak_rss_mib']:.0f} |")
  if res.get("tta"):
    out += ["", "**Time to accuracy**: training seconds (compile and checks "
            "excluded) until PGD-{} accuracy on {} held-out images first "
            "reaches {:.0%} at eps {}".format(
                res["config"]["tta"]["pgd_steps"],
                res["config"]["tta"]["heldout"],
                res["config"]["tta"]["target"], res["config"]["eps"]), "",
            "| method | seconds | batches | fwd-bwd passes | last acc |",
            "|---|---|---|---|---|"]
    for r in res["tta"]:
      s = (f"{r['seconds_to_target']:.1f}"
           if r["seconds_to_target"] is not None else "not reached")
      out.append(f"| {r['method']} | {s} | {r['batches']} | "
                 f"{r['fwd_bwd_passes']} | {r['final_acc']:.3f} |")
  if res.get("attack"):
    a = res["attack"]
    rounds = len(a["rows"][0]["round_s"])
    out += ["", f"**PGD-{a['steps']} throughput** (eps {a['eps']}, step "
            f"{a['step_size']}, batch {a['batch_size']}, {a['num_examples']} "
            f"test images, same weights, median of {rounds} interleaved "
            f"rounds; port max logit error "
            f"{a['port_max_logit_err']})", "",
            "| attack | images / s | robust acc | time vs jaxadv 1-device |"
            " compile s |", "|---|---|---|---|---|"]
    for r in a["rows"]:
      comp = f"{r['compile_s']:.2f}" if r["compile_s"] is not None else "-"
      out.append(f"| {r['attack']} | {r['images_per_s']:.0f} | "
                 f"{r['robust_acc']:.4f} | {r['time_vs_jaxadv_1dev']:.2f} | "
                 f"{comp} |")
    out += [f"| cleverhans 4.0.0 (JAX) | {a['cleverhans']} | - | - | - |", ""]
    out += [f"Bar, jaxadv >= 2x each peer (the speedup within each of the "
            f"{rounds} rounds, peer time over jaxadv's: its median, its "
            "range, and the ratio of the two medians):", ""]
    out += [f"- {b['jaxadv']} vs {b['peer']}: **{b['speedup']:.2f}x** "
            f"({b['speedup_range'][0]:.2f}-{b['speedup_range'][1]:.2f}; "
            f"{b['ratio_of_medians']:.2f}), "
            f"{'met' if b['met'] else 'MISSED'}."
            for b in a.get("bar", [])]
    out += ["",
            f"Largest robust-accuracy gap between attacks: "
            f"{100 * a['max_acc_gap']:.2f} points (each draws its own random "
            "start)."]
    if "max_acc_gap_no_random_start" in a:
      out += ["", "Without the random start (deterministic; not timed): "
              + "; ".join(
                  f"{r['attack']} {r['robust_acc_no_random_start']:.4f} "
                  f"({r['verdicts_differing_from_jaxadv_no_random_start']} "
                  "verdicts differ from jaxadv's)" for r in a["rows"]
                  if "robust_acc_no_random_start" in r)
              + f"; largest gap {100 * a['max_acc_gap_no_random_start']:.2f}"
              " points."]
  if res.get("loop"):
    out += ["", "**Attack loop form** (PGD-K, batch "
            f"{res['config']['loop_batch_size']}; both forms timed in "
            "alternation, the ratio the median of the per-round ratios, with "
            "its range)", "",
            "| K | unroll ms | fori ms | fori / unroll | unroll compile s | "
            "fori compile s |", "|---|---|---|---|---|---|"]
    for r in res["loop"]:
      out.append(f"| {r['steps']} | {1e3 * r['unroll']['median_s']:.1f} | "
                 f"{1e3 * r['fori']['median_s']:.1f} | "
                 f"{r['fori_over_unroll']['median']:.2f} "
                 f"({r['fori_over_unroll']['min']:.2f}-"
                 f"{r['fori_over_unroll']['max']:.2f}) | "
                 f"{r['unroll']['compile_s']:.2f} | "
                 f"{r['fori']['compile_s']:.2f} |")
    out.append("\nDefault loop on this backend (`attacks.default_loop`, "
               "which on CPU follows the body): " + ", ".join(
                   f"{what}: {form}"
                   for what, form in res["default_loop"].items()) + ".")
  if isinstance(res.get("mixup_inference"), dict):
    out += ["", benchmark_mi.to_markdown(res["mixup_inference"])]
  return "\n".join(out)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs every part of the benchmark and writes the results."""
  os.makedirs(workdir, exist_ok=True)
  res = {"machine": machine(), "config": config.to_dict()}
  print(res["machine"])
  x, y = data.load(config.dataset, "train", data_dir=config.data_dir,
                   manual_dir=config.manual_dir)
  x_test, y_test = data.load(config.dataset, "test", data_dir=config.data_dir,
                             manual_dir=config.manual_dir)
  batch = {"x": x[:config.batch_size], "y": y[:config.batch_size]}
  nb = data.num_batches(len(x), config.batch_size)

  res["train"] = []
  for model_name in config.models:
    modes = tuple(config.modes) + tuple(config.extra_modes.get(model_name, ()))
    rows = time_train_modes(model_name, modes, batch, config.eps,
                            config.warmup, config.repeats)
    nat = next((r for r in rows if r["mode"] == "natural"), None)
    for r in rows:
      name, k, _ = parse_mode(r["mode"])
      r["epoch_equiv_s"] = r["per_update_s"] * nb
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
                  f"<= {limit:g}: {'met' if r['ratio_to_natural'] <= limit else 'MISSED'}")
      print(f"[train] {model_name} {r['mode']}: {1e3 * r['call_s']:.2f} "
            f"ms/call, ratio {r['ratio_to_natural']:.2f} {r['bar']}")
      res["train"].append(r)

  if config.memory_models:
    res["memory"] = memory_table(config)

  res["tta"], states = time_to_accuracy(config)

  if "fgsm_rs" in states:
    model_name, state = states["fgsm_rs"]
    n = config.attack.num_examples
    res["attack"] = attack_throughput(config, model_name, state.params,
                                      x_test[:n], y_test[:n])
    for r in res["attack"]["rows"]:
      print(f"[attack] {r['attack']}: {r['images_per_s']:.0f} img/s, "
            f"robust acc {r['robust_acc']:.4f}")

  res["loop"] = []
  for k in config.loop_steps:
    res["loop"].append({"steps": k, **benchmark_loop.measure_pair(
        k, config.loop_batch_size, config.repeats)})
  res["default_loop"] = default_loops(config.models)
  mc = config.mixup_inference
  res["mixup_inference"] = benchmark_mi.measure(
      mc.model, mc.batch_size, mc.num_samples, config.repeats, config.dataset)
  print(benchmark_mi.to_markdown(res["mixup_inference"]))
  with open(os.path.join(workdir, "benchmark.json"), "w") as f:
    json.dump(res, f, indent=2)
  md = to_markdown(res)
  with open(os.path.join(workdir, "benchmark.md"), "w") as f:
    f.write(md + "\n")
  print(md)
  return res


FLAGS = flags.FLAGS


def _define_flags() -> None:
  # Defined only when run as a script, so other scripts can import this one.
  flags.DEFINE_string("workdir", None, "Output directory.")
  flags.DEFINE_string("probe_memory", None,
                      "Internal: 'model,mode,batch,steps' to measure peak RSS.")
  config_flags.DEFINE_config_file("config", None, "Benchmark configuration.",
                                  lock_config=True)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if FLAGS.probe_memory:
    model_name, mode, bs, steps = FLAGS.probe_memory.split(",")
    if mode == "baseline":
      x, _ = data.load("mnist", "train", limit=int(bs))
      jax.block_until_ready(jnp.asarray(x))
      print(json.dumps({"model": model_name, "mode": mode,
                        "batch_size": int(bs), "peak_rss_mib": peak_rss_mib()}))
    else:
      print(json.dumps(probe_memory(model_name, mode, int(bs), int(steps))))
    return
  if FLAGS.config is None or FLAGS.workdir is None:
    raise app.UsageError("--config and --workdir are required.")
  run(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
