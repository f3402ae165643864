"""PGD throughput: jaxadv (each choice of kernels) vs torchattacks, foolbox."""

from __future__ import annotations

import functools
import time
from typing import Any

import jax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import common
from experiments.benchmarks import peers
from experiments.benchmarks import timing
from jaxadv import attacks
from jaxadv import losses
from jaxadv import models

FOOLBOX = "foolbox 3.3.4 LinfPGD (JAX/EagerPy)"
FOOLBOX_LAX = FOOLBOX + ", model with lax convs (as flax nn.Conv)"
TORCHATTACKS = "torchattacks 3.5 (PyTorch CPU)"
JAXADV = "jaxadv (1 device)"


def _jaxadv_name(kernels: str, first: str, devices: int = 1) -> str:
  """"jaxadv (1 device)" for the first kernels (the benchmark's choice),
  "jaxadv (1 device, lax kernels)" for the others."""
  where = ("1 device" if devices == 1 else
           f"{devices} devices, batch sharded")
  return (f"jaxadv ({where})" if kernels == first else
          f"jaxadv ({where}, {kernels} kernels)")


def attack_throughput(config: ml_collections.ConfigDict, model_name: str,
                      params: Any, x: np.ndarray, y: np.ndarray) -> dict:
  """jaxadv PGD vs torchattacks vs foolbox on the same weights and inputs.

  jaxadv runs with each of `config.attack.kernels` (the first, the
  benchmark's choice, names the plain "jaxadv" rows), on one device and
  with the batch sharded over all local devices, with the loop form
  `config.attack.unroll[kernels]`. Every attack runs over all of `x` once
  untimed (compile, warm-up), then they are timed in
  `config.attack.repeats` interleaved rounds (`timing.interleaved_times`),
  so their ratios compare the same stretch of time. foolbox gets the model
  with the benchmark's kernels (the "same model") and, as a second row, the
  same weights with plain lax convs, the model a flax user would hand it
  (`flax.linen.Conv` computes the same `lax.conv_general_dilated`).
  """
  ac = config.attack
  kernels_list = tuple(ac.kernels)
  first = kernels_list[0]
  variables = {"params": params}
  kw = dict(eps=config.eps, step_size=ac.step_size, steps=ac.steps)
  bs = ac.batch_size
  net = {k: models.get_model(model_name, kernels=k) for k in kernels_list}
  net.setdefault("lax", models.get_model(model_name, kernels="lax"))
  model = net[first]

  def attack_correct(variables, xb, yb, key, random_start=True,
                     kernels=first):
    logits_fn = lambda v: net[kernels].apply(variables, v)  # noqa: E731
    x_adv = attacks.pgd(losses.make_loss_fn(logits_fn), xb, yb, key,
                        random_start=random_start,
                        unroll=ac.unroll.get(kernels), **kw)
    return jnp.argmax(logits_fn(x_adv), -1) == yb

  def jax_call(fn, put):
    def go():
      out = [fn(variables, put(x[i:i + bs]), put(y[i:i + bs]),
                jax.random.fold_in(jax.random.key(0), i))
             for i in range(0, len(x), bs)]
      return np.concatenate([np.asarray(o) for o in out])
    return go

  calls = {}
  devices = jax.local_devices()
  for k in kernels_list:
    fn = functools.partial(attack_correct, kernels=k)
    calls[_jaxadv_name(k, first)] = jax_call(jax.jit(fn), jnp.asarray)
    if len(devices) > 1 and bs % len(devices) == 0:
      mesh = Mesh(np.array(devices), ("batch",))
      sharded = jax.jit(jax.shard_map(
          fn, mesh=mesh, in_specs=(P(), P("batch"), P("batch"), P()),
          out_specs=P("batch")))
      sharding = jax.sharding.NamedSharding(mesh, P("batch"))
      calls[_jaxadv_name(k, first, len(devices))] = jax_call(
          sharded, lambda a, s=sharding: jax.device_put(a, s))
  port_err = None
  if "torchattacks" in ac.peers:
    tmodel = peers.port_to_torch(model_name, params)
    calls[TORCHATTACKS] = lambda: peers.torchattacks_pgd(
        tmodel, x, y, batch_size=bs, **kw)[0]
    # Same weights, same function: logits agree.
    import torch  # pylint: disable=g-import-not-at-top
    with torch.no_grad():
      tl = tmodel(torch.from_numpy(np.ascontiguousarray(
          x[:64].transpose(0, 3, 1, 2)))).numpy()
    port_err = float(np.abs(tl - np.asarray(model.apply(variables,
                                                        x[:64]))).max())
  if "foolbox" in ac.peers:
    logits_fn = jax.jit(lambda v: model.apply(variables, v))
    lax_logits_fn = jax.jit(lambda v: net["lax"].apply(variables, v))
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
  no_start = {JAXADV: np.concatenate([
      np.asarray(deterministic(variables, x[i:i + bs], y[i:i + bs],
                               jax.random.key(0)))
      for i in range(0, len(x), bs)])}
  if "torchattacks" in ac.peers:
    no_start[TORCHATTACKS] = peers.torchattacks_pgd(
        tmodel, x, y, batch_size=bs, random_start=False, **kw)[0]
  if "foolbox" in ac.peers:
    no_start[FOOLBOX] = peers.foolbox_pgd(
        logits_fn, x, y, batch_size=bs, random_start=False, **kw)[0]
  ref = no_start[JAXADV]
  rows = []
  base = results[JAXADV][1]
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
          "kernels": list(kernels_list),
          "unroll": {k: ac.unroll.get(k) for k in kernels_list},
          "num_examples": len(x), "batch_size": bs, **kw}


def to_markdown(a: dict) -> list[str]:
  """The throughput table, the bar and the deterministic check."""
  rounds = len(a["rows"][0]["round_s"])
  forms = a.get("unroll", {})
  loops = "; ".join(
      f"{k} kernels: "
      f"{ {True: 'unrolled', False: 'rolled'}.get(u, 'default')} loop"
      for k, u in forms.items())
  rows = [(r["attack"], f"{r['images_per_s']:.0f}", f"{r['robust_acc']:.4f}",
           f"{r['time_vs_jaxadv_1dev']:.2f}",
           "-" if r["compile_s"] is None else f"{r['compile_s']:.2f}")
          for r in a["rows"]]
  rows.append(("cleverhans 4.0.0 (JAX)", a["cleverhans"], "-", "-", "-"))
  out = [f"**PGD-{a['steps']} throughput** (eps {a['eps']}, step "
         f"{a['step_size']}, batch {a['batch_size']}, {a['num_examples']} "
         f"test images, same weights, median of {rounds} interleaved "
         f"rounds; port max logit error {a['port_max_logit_err']}"
         + (f"; {loops}" if loops else "") + ")", "",
         common.markdown_table(("attack", "images / s", "robust acc",
                                "time vs jaxadv 1-device", "compile s"),
                               rows), ""]
  out += [f"Bar, jaxadv >= 2x each peer (the speedup within each of the "
          f"{rounds} rounds, peer time over jaxadv's: its median, its "
          "range, and the ratio of the two medians):", ""]
  out += [f"- {b['jaxadv']} vs {b['peer']}: **{b['speedup']:.2f}x** "
          f"({b['speedup_range'][0]:.2f}-{b['speedup_range'][1]:.2f}; "
          f"{b['ratio_of_medians']:.2f}), "
          f"{'met' if b['met'] else 'MISSED'}." for b in a.get("bar", [])]
  out += ["", f"Largest robust-accuracy gap between attacks: "
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
  return out
