"""AutoAttack's standard ensemble: jaxadv vs the same attacks in torchattacks.

jaxadv runs `jaxadv.evaluation.evaluate_robustness(...,
attack_names=evaluation.STANDARD)`: APGD-CE, APGD-T (9 targets), FAB-T
(9 targets), Square (5,000 queries), each on the points still robust.
torchattacks (3.5.1) runs its `APGD`, `APGDT`, `FAB` and `Square`
configured as AutoAttack's `set_version("standard")` configures its own
(`TORCH_ATTACKS` spells out every argument), chained as AutoAttack's
`run_standard_evaluation` chains them: clean-correct points first, then
each attack on the survivors of the ones before, in batches of the same
size as jaxadv's. Not torchattacks' own `AutoAttack` preset, which leaves
APGD, APGD-T and FAB at their 10-step defaults
(Harry24k/adversarial-attacks-pytorch issue #196) and runs its
`MultiAttack` also on points misclassified clean.

Both libraries attack the same model (the fast-AT MNIST net, adversarially
trained here with FGSM-RS, `train_model`; its PyTorch twin gets the same
weights, `peers.port_to_torch`) on the same test images on the same CPU, in
one process. jaxadv's chain is its first call in the process: its wall time
includes every compilation (what a user's first call costs), and the
seconds spent compiling are read from `jax.monitoring` (`jaxadv_chain`);
the config may time the same call again ("jaxadv_warm"). The bar compares
the whole chain's wall time, compile included, with torchattacks'.

What cannot be matched (`DIFFERENCES`) is named in the results.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any, Optional

import jax
import ml_collections
import numpy as np

from experiments import common
from experiments.benchmarks import peers
from experiments.configs import robust_mnist
from jaxadv import evaluation
from jaxadv import training

JAXADV = "jaxadv evaluate_robustness(attack_names=STANDARD)"
TORCHATTACKS = "torchattacks 3.5.1, AutoAttack-standard chain"

# The four torchattacks attacks as constructed (`torchattacks_chain`), in
# AutoAttack's standard order, with every argument that AutoAttack sets.
TORCH_ATTACKS = {
    "apgd-ce": "APGD(model, norm='Linf', eps={eps}, steps={apgd_steps}, "
               "n_restarts=1, seed={seed}, loss='ce', eot_iter=1, rho=0.75)",
    "apgd-t": "APGDT(model, norm='Linf', eps={eps}, steps={apgd_steps}, "
              "n_restarts=1, seed={seed}, eot_iter=1, rho=0.75, "
              "n_classes={n_classes})  # {num_targets} targets",
    "fab-t": "FAB(model, norm='Linf', eps={eps}, steps={fab_steps}, "
             "n_restarts=1, alpha_max=0.1, eta=1.05, beta=0.9, seed={seed}, "
             "multi_targeted=True, n_classes={n_classes})  "
             "# {num_targets} targets",
    "square": "Square(model, norm='Linf', eps={eps}, "
              "n_queries={square_queries}, n_restarts=1, p_init={p_init}, "
              "loss='margin', resc_schedule=False, seed={seed})",
}

# Where the two chains are not the same algorithm (each checked against
# fra31/auto-attack's `autoattack.py`, `square.py`, `fab_base.py`,
# torchattacks 3.5.1 and jaxadv's `jaxadv.attacks`).
DIFFERENCES = (
    "Square's p schedule: AutoAttack's standard version builds its "
    "SquareAttack with resc_schedule=False (p halves at fixed query counts "
    "10, 50, 200, 500, 1000, 2000, 4000 of its 10,000-query table; with "
    "5,000 queries p stops at p_init/128), and torchattacks is run so; "
    "jaxadv's `attacks.square` always rescales the table to the budget "
    "(torchattacks' resc_schedule=True: p reaches p_init/512 after 4,000 "
    "queries) and has no switch for it.",
    "Square's windows: AutoAttack and torchattacks draw one square window "
    "(top-left corner in [0, H - s), H - s excluded) and one sign per "
    "channel per query for the whole batch, and spend the query when the "
    "window already has those signs; jaxadv draws window (corner in "
    "[0, H - s]) and signs per example, as the Square Attack paper's own "
    "code does, and flips the signs of a proposal that would change "
    "nothing.",
    "Random streams: torchattacks reseeds torch with seed 0 in every "
    "attack call (per batch); jaxadv folds its key per attack, target and "
    "batch. The two chains draw different random starts, so their robust "
    "accuracies differ by sampling as well as by algorithm.",
    "Batching: jaxadv splits each attack's (and each target's) survivors "
    "into the fewest batches of at most the batch size, each padded to one "
    "of 16 sizes (`parallel.fitted_batch_size`; 625 survivors run as two "
    "batches of 314), and spreads each batch over the host's XLA devices; "
    "torchattacks runs full batches and the ragged last one as it is.",
    "APGD: torchattacks' APGD/APGDT are the first AutoAttack release's "
    "autopgd_pt.py (same schedule: 2 eps first step, checkpoints at "
    "0.22/0.06/0.03 of the steps, momentum 0.75, rho 0.75); fra31's current "
    "autopgd_base.py adds options (use_largereps, L1) that the standard "
    "L-inf version leaves off.",
)


def train_model(config: ml_collections.ConfigDict) -> tuple[Any, Any, dict]:
  """The benchmark's model: `config.model.method` AT with the main job's
  recipe (`configs/robust_mnist.py`) shortened to `config.model.epochs`.

  Returns:
    (flax model, variables, {"method", "epochs", "train_s", "val_pgd_acc"}).
  """
  mc = config.model
  recipes = robust_mnist.get_config()
  recipes.data_dir, recipes.manual_dir = config.data_dir, config.manual_dir
  recipes.seed = config.seed
  recipes.kernels = config.kernels
  recipes.progress = False
  if mc.get("train_limit"):
    recipes.train_limit = mc.train_limit
  if mc.get("val_size"):
    recipes.val_size = mc.val_size
  section = recipes[mc.method]
  section.epochs = mc.epochs
  section.eps_ramp_epochs = mc.eps_ramp_epochs
  train, val, _ = common.load_train_val_test(recipes)
  t0 = time.perf_counter()
  trained = common.robust.train_method(mc.method, recipes, train, val, None)
  train_s = time.perf_counter() - t0
  hist = [h for h in trained.result.history if "val_pgd_acc" in h]
  model = common.robust.get_model(recipes)
  return model, training.variables_of(trained.result.state), {
      "method": mc.method, "epochs": mc.epochs,
      "eps_ramp_epochs": mc.eps_ramp_epochs, "train_s": train_s,
      "val_pgd_acc": hist[-1]["val_pgd_acc"] if hist else None}


def _torch_inputs(x: np.ndarray, y: np.ndarray):
  torch = peers._torch()  # pylint: disable=protected-access
  return (torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))),
          torch.from_numpy(np.asarray(y).astype(np.int64)))


def torch_logits(tmodel, x: np.ndarray, batch_size: int) -> np.ndarray:
  """The PyTorch twin's logits of NHWC `x`."""
  torch = peers._torch()  # pylint: disable=protected-access
  xt, _ = _torch_inputs(x, np.zeros(len(x)))
  with torch.no_grad():
    return np.concatenate([tmodel(xt[i:i + batch_size]).numpy()
                           for i in range(0, len(x), batch_size)])


def torchattacks_chain(tmodel, x: np.ndarray, y: np.ndarray, *, eps: float,
                       batch_size: int, apgd_steps: int = 100,
                       num_targets: int = 9, fab_steps: int = 100,
                       square_queries: int = 5000, p_init: float = 0.8,
                       n_classes: int = 10, seed: int = 0,
                       attack_names=evaluation.STANDARD) -> dict:
  """torchattacks' APGD-CE, APGD-T, FAB-T, Square chained as AutoAttack.

  AutoAttack's `run_standard_evaluation`: the robust set starts as the
  points classified correctly clean; each attack then runs, in batches of
  `batch_size`, on the points still robust, and a point leaves the set when
  the attack's output is misclassified. APGDT and FAB (multi-targeted) loop
  over their `num_targets` targets inside each call, each target on the
  points of the batch still robust, as AutoAttack's do.

  Returns:
    The fields of `evaluate_robustness` that the benchmark reads:
    "clean_acc", "robust_acc", "per_attack" (cumulative), "attacked",
    "seconds" (wall per attack), "robust" (bool [N]), "attacks".
  """
  torch = peers._torch()  # pylint: disable=protected-access
  import torchattacks  # pylint: disable=g-import-not-at-top
  built = {
      "apgd-ce": lambda: torchattacks.APGD(
          tmodel, norm="Linf", eps=eps, steps=apgd_steps, n_restarts=1,
          seed=seed, loss="ce", eot_iter=1, rho=0.75),
      "apgd-t": lambda: torchattacks.APGDT(
          tmodel, norm="Linf", eps=eps, steps=apgd_steps, n_restarts=1,
          seed=seed, eot_iter=1, rho=0.75, n_classes=n_classes),
      "fab-t": lambda: torchattacks.FAB(
          tmodel, norm="Linf", eps=eps, steps=fab_steps, n_restarts=1,
          alpha_max=0.1, eta=1.05, beta=0.9, seed=seed, multi_targeted=True,
          n_classes=n_classes),
      "square": lambda: torchattacks.Square(
          tmodel, norm="Linf", eps=eps, n_queries=square_queries,
          n_restarts=1, p_init=p_init, loss="margin", resc_schedule=False,
          seed=seed),
  }
  xt, yt = _torch_inputs(x, y)
  robust = torch_logits(tmodel, x, batch_size).argmax(1) == np.asarray(y)
  out = {"clean_acc": float(robust.mean()), "per_attack": {}, "attacked": {},
         "seconds": {}, "attacks": list(attack_names)}
  for name in attack_names:
    t0 = time.perf_counter()
    atk = built[name]()
    if name in ("apgd-t", "fab-t"):
      # n_classes - 1 targets by default; set explicitly for small tests.
      atk.n_target_classes = min(num_targets, n_classes - 1)
    idx = np.nonzero(robust)[0]
    for i in range(0, len(idx), batch_size):
      ii = idx[i:i + batch_size]
      it = torch.from_numpy(ii)
      adv = atk(xt[it], yt[it])
      with torch.no_grad():
        ok = (tmodel(adv).argmax(1) == yt[it]).numpy()
      robust[ii[~ok]] = False
    out["attacked"][name] = int(len(idx))
    out["per_attack"][name] = float(robust.mean())
    out["seconds"][name] = time.perf_counter() - t0
  out["robust_acc"] = float(robust.mean())
  out["robust"] = robust
  return out


# Compilation events of `jax.monitoring` (tracing, lowering, XLA compile):
# their durations sum to the compile time inside a cold call.
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_recording: list = []
_listening = []


def _listen(event: str, duration: float, **_) -> None:
  if _recording and event in _COMPILE_EVENTS:
    _recording[-1].append((time.perf_counter(), duration))


def jaxadv_chain(apply_fn, variables, x: np.ndarray, y: np.ndarray,
                 key: jax.Array, ec: ml_collections.ConfigDict,
                 eps: float) -> dict:
  """`evaluation.evaluate_robustness` with the section's budget.

  Adds its wall time ("total_s") and the seconds spent compiling inside it
  (`jax.monitoring`'s tracing, lowering and XLA compile events): in all
  ("compile_s"), per attack ("compile_per_attack": events within the
  attack's stretch of the call, from its per-attack seconds) and before the
  first attack ("compile_clean_s": the clean prediction).
  """
  if not _listening:
    jax.monitoring.register_event_duration_secs_listener(_listen)
    _listening.append(True)
  _recording.append([])
  t0 = time.perf_counter()
  try:
    res = evaluation.evaluate_robustness(
        apply_fn, variables, x, y, key, eps=eps,
        attack_names=tuple(ec.attacks), apgd_steps=ec.apgd_steps,
        num_targets=ec.num_targets, fab_steps=ec.fab_steps,
        square_queries=ec.square_queries, square_p_init=ec.p_init,
        batch_size=ec.batch_size, unroll=ec.get("unroll"))
  finally:
    t_end = time.perf_counter()
    events = _recording.pop()
  keep = ("clean_acc", "robust_acc", "per_attack", "attacked", "seconds",
          "robust", "attacks")
  out = {k: res[k] for k in keep}
  out["total_s"] = t_end - t0
  # The attacks ran one after the other, the last ending just before t_end.
  ends, t = {}, t_end
  for a in reversed(out["attacks"]):
    ends[a] = t
    t -= out["seconds"][a]
  out["compile_s"] = float(sum(d for _, d in events))
  out["compile_clean_s"] = float(sum(d for at, d in events if at < t))
  out["compile_per_attack"] = {
      a: float(sum(d for at, d in events
                   if ends[a] - out["seconds"][a] <= at < ends[a]))
      for a in out["attacks"]}
  return out


def _other_load() -> dict:
  """What else ran on the machine: load average, processes that averaged
  >= 5% of a core over their lifetime (`ps` pcpu), pytest processes."""
  load = os.getloadavg() if hasattr(os, "getloadavg") else None
  busy = []
  try:
    ps = subprocess.run(["ps", "-eo", "pid,pcpu,etime,comm", "--sort=-pcpu"],
                        capture_output=True, text=True, check=True).stdout
    me = os.getpid()
    for line in ps.splitlines()[1:]:
      pid, pcpu, etime, comm = line.split(None, 3)
      if int(pid) != me and float(pcpu) >= 5.0:
        busy.append(f"{comm} (pid {pid}, {pcpu}% CPU over its {etime})")
  except (OSError, ValueError, subprocess.SubprocessError):
    busy = None
  try:
    pytest = subprocess.run(["pgrep", "-fc", "pytest"], capture_output=True,
                            text=True).stdout.strip()
  except OSError:
    pytest = None
  return {"loadavg": list(load) if load else None,
          "busy_processes": busy, "pytest_processes": pytest}


def _cpu_seconds() -> Optional[tuple[float, float]]:
  """(busy CPU seconds of the whole machine, of this process) so far."""
  try:
    with open("/proc/stat") as f:
      fields = [float(v) for v in f.readline().split()[1:]]
  except (OSError, ValueError):
    return None
  tick = os.sysconf("SC_CLK_TCK")
  idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle, iowait
  t = os.times()
  return (sum(fields[:8]) - idle) / tick, t.user + t.system


def _others_share(start, end, wall_s: float) -> Optional[float]:
  """The fraction of the machine's cores that other processes kept busy."""
  if start is None or end is None or wall_s <= 0:
    return None
  others = (end[0] - start[0]) - (end[1] - start[1])
  return max(others, 0.0) / (wall_s * (os.cpu_count() or 1))


def measure(config: ml_collections.ConfigDict, model, variables,
            x: np.ndarray, y: np.ndarray) -> dict:
  """Both chains on the same weights and images; the section's results."""
  ec = config.ensemble
  torch = peers._torch()  # pylint: disable=protected-access
  model_name = config.model.name
  tmodel = peers.port_to_torch(model_name, variables["params"])
  jl = _jax_logits(model, variables, x, ec.batch_size)
  tl = torch_logits(tmodel, x, ec.batch_size)
  port = {"max_logit_diff": float(np.abs(tl - jl).max()),
          "argmax_disagreements": int(np.sum(tl.argmax(1) != jl.argmax(1))),
          "num_images": len(x)}
  print(f"[ensemble] port: max |logit diff| {port['max_logit_diff']:.2e}, "
        f"{port['argmax_disagreements']} of {len(x)} predictions differ")
  apply_fn = model.apply
  key = jax.random.key(config.seed)
  load = {"before": _other_load()}
  runs = {}
  budget = dict(eps=config.eps, batch_size=ec.batch_size,
                apgd_steps=ec.apgd_steps, num_targets=ec.num_targets,
                fab_steps=ec.fab_steps, square_queries=ec.square_queries,
                p_init=ec.p_init, seed=config.seed,
                attack_names=tuple(ec.attacks))
  for run_name in ec.order:
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    if run_name == "torchattacks":
      r = torchattacks_chain(tmodel, x, y, **budget)
      r["total_s"] = time.perf_counter() - t0
    else:  # "jaxadv" / "jaxadv_warm": the same call, first and again
      r = jaxadv_chain(apply_fn, variables, x, y, key, ec, config.eps)
    r["others_cpu_share"] = _others_share(cpu0, _cpu_seconds(),
                                          time.perf_counter() - t0)
    runs[run_name] = r
    print(f"[ensemble] {run_name}: {r['total_s']:.1f} s, robust acc "
          f"{r['robust_acc']:.4f} " + ", ".join(
              f"{a} {r['per_attack'][a]:.4f} ({r['seconds'][a]:.1f} s)"
              for a in r["attacks"]))
  load["after"] = _other_load()
  return summarize(runs, port, config, load,
                   torch_threads=torch.get_num_threads())


def _jax_logits(model, variables, x, batch_size):
  fn = jax.jit(lambda v, xb: model.apply(v, xb, train=False))
  return np.concatenate([np.asarray(fn(variables, x[i:i + batch_size]))
                         for i in range(0, len(x), batch_size)])


def summarize(runs: dict, port: dict, config: ml_collections.ConfigDict,
              load: dict, torch_threads: Optional[int] = None) -> dict:
  """Per-attack rows, totals, agreement and the bar from the chains' runs
  ("jaxadv": the first, cold call; "torchattacks"; optionally
  "jaxadv_warm": the same jaxadv call again, compiled)."""
  ec = config.ensemble
  attacks = list(ec.attacks)
  jx, tor = runs["jaxadv"], runs["torchattacks"]
  warm = runs.get("jaxadv_warm")
  n = len(np.asarray(jx["robust"]))
  per_attack = []
  before = {"jaxadv": jx["clean_acc"], "torchattacks": tor["clean_acc"]}
  for a in attacks:
    row = {"attack": a,
           "jaxadv_robust_acc": jx["per_attack"][a],
           "torchattacks_robust_acc": tor["per_attack"][a],
           # Points still robust when the attack starts; jaxadv's count of
           # attacked points sums its targets' runs.
           "jaxadv_entering": round(n * before["jaxadv"]),
           "torchattacks_entering": round(n * before["torchattacks"]),
           "jaxadv_attacked_over_targets": jx["attacked"][a],
           "jaxadv_s": jx["seconds"][a],
           "jaxadv_compile_s": jx["compile_per_attack"][a],
           "torchattacks_s": tor["seconds"][a],
           # (An attack left with no survivors takes no time.)
           "speedup": tor["seconds"][a] / max(jx["seconds"][a], 1e-9),
           "speedup_without_compile": tor["seconds"][a] / max(
               jx["seconds"][a] - jx["compile_per_attack"][a], 1e-9)}
    if warm:
      row["jaxadv_warm_s"] = warm["seconds"][a]
    per_attack.append(row)
    before = {"jaxadv": jx["per_attack"][a],
              "torchattacks": tor["per_attack"][a]}
  jr, tr_ = np.asarray(jx["robust"]), np.asarray(tor["robust"])
  gap = jx["robust_acc"] - tor["robust_acc"]
  speedup = tor["total_s"] / jx["total_s"]
  out = {
      "per_attack": per_attack,
      "clean_acc": {"jaxadv": jx["clean_acc"],
                    "torchattacks": tor["clean_acc"]},
      "robust_acc": {"jaxadv": jx["robust_acc"],
                     "torchattacks": tor["robust_acc"]},
      "total_s": {name: r["total_s"] for name, r in runs.items()},
      "others_cpu_share": {name: r["others_cpu_share"]
                           for name, r in runs.items()},
      "jaxadv_compile_s": jx["compile_s"],
      "jaxadv_compile_clean_s": jx["compile_clean_s"],
      "speedup": speedup,
      "speedup_without_compile": tor["total_s"] / (jx["total_s"]
                                                   - jx["compile_s"]),
      "robust_in_both": int(np.sum(jr & tr_)),
      "robust_only_jaxadv": int(np.sum(jr & ~tr_)),
      "robust_only_torchattacks": int(np.sum(~jr & tr_)),
      "bar": {"speedup_min": 2.0, "max_acc_gap_points": 0.5,
              "speedup": speedup, "acc_gap_points": 100 * gap,
              "fast_enough": bool(speedup >= 2.0),
              "accurate_enough": bool(100 * gap <= 0.5 + 1e-9)},
      "port": port,
      "torch_threads": torch_threads,
      "jax_devices": [str(d) for d in jax.local_devices()],
      "order": list(ec.order),
      "load": load,
      "jaxadv_call": JAXADV,
      "torchattacks_attacks": [
          TORCH_ATTACKS[a].format(
              eps=config.eps, apgd_steps=ec.apgd_steps, seed=config.seed,
              fab_steps=ec.fab_steps, square_queries=ec.square_queries,
              p_init=ec.p_init, n_classes=10, num_targets=ec.num_targets)
          for a in attacks],
      "differences": list(DIFFERENCES),
      "budget": {k: ec.get(k) for k in ("apgd_steps", "num_targets",
                                          "fab_steps", "square_queries",
                                          "p_init", "batch_size", "unroll")},
      "num_examples": len(jr), "eps": config.eps,
  }
  if warm:
    out["speedup_warm"] = tor["total_s"] / warm["total_s"]
    out["warm_matches_cold"] = bool(np.array_equal(
        np.asarray(warm["robust"]), jr))
  out["bar"]["met"] = (out["bar"]["fast_enough"]
                       and out["bar"]["accurate_enough"])
  return out


def _pct(v: float) -> str:
  return f"{100 * v:.1f}"


def to_markdown(e: dict, model: Optional[dict] = None) -> list[str]:
  """The per-attack table, the totals, the bar and what differs."""
  warm = "jaxadv_warm_s" in e["per_attack"][0]
  header = ["attack (cumulative)", "jaxadv robust acc %",
            "torchattacks robust acc %", "jaxadv s", "of which compile s",
            "torchattacks s", "speedup", "speedup w/o compile"]
  header += ["jaxadv s, 2nd call"] if warm else []
  rows = [("clean", _pct(e["clean_acc"]["jaxadv"]),
           _pct(e["clean_acc"]["torchattacks"]), "-",
           f"{e['jaxadv_compile_clean_s']:.1f}", "-", "-", "-")
          + (("-",) if warm else ())]
  for i, r in enumerate(e["per_attack"]):
    cells = [("+ " if i else "") + r["attack"], _pct(r["jaxadv_robust_acc"]),
             _pct(r["torchattacks_robust_acc"]), f"{r['jaxadv_s']:.1f}",
             f"{r['jaxadv_compile_s']:.1f}", f"{r['torchattacks_s']:.1f}",
             f"{r['speedup']:.2f}x", f"{r['speedup_without_compile']:.2f}x"]
    if warm:
      cells += [f"{r['jaxadv_warm_s']:.1f}"]
    rows.append(tuple(cells))
  t = e["total_s"]
  total = ["**whole chain**", f"**{_pct(e['robust_acc']['jaxadv'])}**",
           f"**{_pct(e['robust_acc']['torchattacks'])}**",
           f"**{t['jaxadv']:.1f}**", f"{e['jaxadv_compile_s']:.1f}",
           f"**{t['torchattacks']:.1f}**", f"**{e['speedup']:.2f}x**",
           f"{e['speedup_without_compile']:.2f}x"]
  if warm:
    total += [f"{t['jaxadv_warm']:.1f}"]
  rows.append(tuple(total))
  b, bud = e["bar"], e["budget"]
  m = ""
  if model:
    m = (f"fast_at_mnist trained here with {model['method']} for "
         f"{model['epochs']:g} epochs in {model['train_s']:.0f} s, PGD-"
         f"{model['pgd_steps']} accuracy {_pct(model['test_pgd_acc'])}% on "
         "these images; ")
  port = e["port"]
  missed = [w for w, ok in (("speed", b["fast_enough"]),
                            ("accuracy", b["accurate_enough"])) if not ok]
  out = [
      f"**AutoAttack standard ensemble, jaxadv vs torchattacks** ({m}"
      f"{e['num_examples']} MNIST test images, eps {e['eps']}, L-inf; "
      f"APGD {bud['apgd_steps']} steps, {bud['num_targets']} targets, FAB-T "
      f"{bud['fab_steps']} steps, Square {bud['square_queries']} queries "
      f"p_init {bud['p_init']}; batch {bud['batch_size']} in both; robust "
      "accuracy cumulative after each attack; jaxadv's seconds include its "
      "compilation (first call in the process; compile seconds from "
      "`jax.monitoring`); torch twin's max |logit difference| "
      f"{port['max_logit_diff']:.1e}, {port['argmax_disagreements']} of "
      f"{port['num_images']} predictions differ; run order "
      f"{', '.join(e['order'])})", "",
      common.markdown_table(header, rows), "",
      "Bar: jaxadv's whole chain, compile included, >= 2x faster than "
      "torchattacks' at a robust accuracy at most 0.5 points above: "
      f"**{b['speedup']:.2f}x**, robust accuracy "
      f"{b['acc_gap_points']:+.1f} points: "
      f"**{'met' if b['met'] else 'MISSED'}**"
      + (f" ({' and '.join(missed)})" if missed else "") + ".", "",
      f"Robust under both: {e['robust_in_both']}; only under jaxadv: "
      f"{e['robust_only_jaxadv']}; only under torchattacks: "
      f"{e['robust_only_torchattacks']}. torch threads "
      f"{e['torch_threads']}; JAX devices {len(e['jax_devices'])}.", "",
      f"jaxadv: `{e['jaxadv_call']}`. torchattacks, each on the survivors "
      "(AutoAttack's `run_standard_evaluation` loop, not torchattacks' "
      "`AutoAttack` preset):", ""]
  out += [f"- `{s}`" for s in e["torchattacks_attacks"]]
  out += ["", "Not the same algorithm in both:", ""]
  out += [f"- {d}" for d in e["differences"]]
  lb, la = e["load"]["before"], e["load"]["after"]
  shares = "; ".join(
      f"{name} {100 * v:.0f}%" for name, v in e["others_cpu_share"].items()
      if v is not None)
  out += ["", "Other processes on the machine: share of its cores they kept "
          f"busy during each run: {shares or 'unknown'}; before the runs "
          f"{_load_line(lb)}; after {_load_line(la)}."]
  return out


def _load_line(load: dict) -> str:
  avg = load.get("loadavg")
  busy = load.get("busy_processes")
  s = ("load average " + "/".join(f"{v:.2f}" for v in avg)) if avg else \
      "load average unknown"
  s += f", {load.get('pytest_processes')} pytest process(es)"
  if busy:
    s += ", busy: " + "; ".join(busy[:5])
  return s


def run_section(config: ml_collections.ConfigDict) -> dict:
  """Trains the model, loads the test images, measures both chains."""
  from jaxadv import data  # pylint: disable=g-import-not-at-top
  model, variables, info = train_model(config)
  x, y = data.load(config.dataset, "test", data_dir=config.data_dir,
                   manual_dir=config.manual_dir,
                   limit=config.ensemble.num_examples)
  print(f"[ensemble] model: {info}")
  res = measure(config, model, variables, x, y)
  # PGD accuracy for the record, after the timed chains (its compilation
  # must not warm theirs).
  pc = config.model
  info["test_pgd_acc"] = evaluation.robust_accuracy(
      model.apply, variables, x, y, jax.random.key(config.seed + 1),
      attack="pgd", eps=config.eps, step_size=pc.pgd_step_size,
      steps=pc.pgd_steps, batch_size=config.ensemble.batch_size,
      unroll=False)
  info["pgd_steps"], info["pgd_step_size"] = pc.pgd_steps, pc.pgd_step_size
  print(f"[ensemble] PGD-{pc.pgd_steps} accuracy {info['test_pgd_acc']:.4f}")
  res["model"] = info
  return res
