r"""Natural, FGSM-RS, free and PGD adversarial training, evaluated side by side.

  python -m experiments.robust_training \
      --config=experiments/configs/robust_mnist.py --workdir=/tmp/robust_mnist
  python -m experiments.robust_training \
      --config=experiments/configs/robust_cifar10.py --workdir=/tmp/robust_c10

The CIFAR-10 config adds what `experiments.common.robust` documents:
augmentation, normalisation inside the model, SGD, a best-of group (free
AT's m chosen on the held-out PGD check) and PGD / AutoAttack-style
evaluation on the first N test images (clean accuracy on all).

Several hosts: start the same command in every process with
`--coordinator_address=HOST:PORT --num_processes=P --process_id=i` (each
process sees the same data; process 0 writes the results).

Writes `WORKDIR/results.json` (one record per method with keys method,
dataset, eps, clean_acc, ensemble_acc (the headline: robust accuracy under
the AutoAttack ensemble `ensemble` on the first `ensemble_examples` test
images; None when the config runs none), fgsm_acc, pgd_acc, pgd_steps,
pgd_restarts, train_seconds, train_steps, fwd_bwd_passes),
`WORKDIR/details.json` (training curves, sanity checks, compile times),
`WORKDIR/robust_acc_vs_time.png` and `WORKDIR/heldout_pgd.png` (the held-out
PGD curve per pass).
A killed run started again with the same workdir resumes: training from the
last checkpoint, evaluation from the last finished method. A method whose
evaluation protocol (`config.eval`) changed since it was evaluated is
evaluated again from its finished checkpoints (never retrained: without
them it keeps its old record and says so), keeping its training cost.
"""

from __future__ import annotations

import os

import jax
import ml_collections

from experiments import common
from jaxadv import parallel

RESULT_KEYS = ("method", "dataset", "eps", "clean_acc", "ensemble_acc",
               "ensemble_examples", "ensemble", "fgsm_acc", "pgd_acc",
               "pgd_steps", "pgd_restarts", "train_seconds", "train_steps",
               "fwd_bwd_passes")
# AutoAttack's standard version (`common.robust.ensemble_settings({})`).
_STANDARD_AA = {"attack_names": ["apgd-ce", "apgd-t", "fab-t", "square"],
                "apgd_steps": 100, "apgd_restarts": 1, "num_targets": 9,
                "fab_steps": 100, "fab_restarts": 1, "square_queries": 5000,
                "square_p_init": 0.8}
# The record's fields that come from training (kept on re-evaluation).
_TRAIN_KEYS = ("train_seconds", "train_steps", "fwd_bwd_passes")


def _plot(records: list, path: str) -> None:
  plt = common.pyplot()
  import matplotlib.ticker  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 4))
  for i, r in enumerate(records):
    ax.scatter(r["train_seconds"], 100 * r["pgd_acc"], s=60)
    ax.annotate(f"{r['method']} ({100 * r['clean_acc']:.1f}% clean)",
                (r["train_seconds"], 100 * r["pgd_acc"]),
                textcoords="offset points",
                xytext=(6, 6 if i % 2 else -14), fontsize=8)
  ax.set_xscale("log")
  secs = [r["train_seconds"] for r in records]
  ax.set_xticks([t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000,
                             5000, 10000) if min(secs) / 2 <= t <= 2 * max(secs)])
  ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
  ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  ax.set_ylim(-15, 105)
  ax.set_xlabel("training time (s, log scale)")
  r0 = records[0]
  ax.set_ylabel(f"PGD-{r0['pgd_steps']}x{r0['pgd_restarts']} accuracy (%)")
  ax.set_title(f"{r0['dataset']}, eps={r0['eps']}: robustness vs training cost")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def format_table(records: list, extras: list | None = None) -> str:
  """The results as a Markdown table.

  The headline column, right after clean accuracy, is the robust accuracy
  under the AutoAttack ensemble when it ran (as RobustBench reports it);
  PGD sits beside it. `extras` (one `common.robust.evaluate_method` extra
  dict per record) adds the example counts to the headers.
  """
  nat = next((r for r in records if r["method"] == "natural"), None)
  extras = extras or [{} for _ in records]
  with_aa = any(r.get("ensemble_acc") is not None for r in records)
  rows = []
  for r, e in zip(records, extras):
    ratio = (f"{r['train_seconds'] / nat['train_seconds']:.2f}x"
             if nat else "-")
    per_k = 1000 * r["train_seconds"] / max(r["fwd_bwd_passes"], 1)
    aa = ((f"**{100 * r['ensemble_acc']:.2f}**"
           if r.get("ensemble_acc") is not None else "-"),) if with_aa else ()
    rows.append((r["method"], f"{100 * r['clean_acc']:.2f}") + aa +
                (f"{100 * r['fgsm_acc']:.2f}", f"{100 * r['pgd_acc']:.2f}",
                 f"{r['train_seconds']:.1f}", r["train_steps"],
                 r["fwd_bwd_passes"], ratio, f"{per_k:.3f}"))
  pgd = "PGD-{}x{} %".format(records[0]["pgd_steps"],
                             records[0]["pgd_restarts"])
  e0 = extras[0]
  clean = "clean %"
  fgsm = "FGSM %"
  if e0.get("pgd_examples", 0) < e0.get("clean_examples", 0):
    first = f"(first {e0['pgd_examples']})"
    clean, fgsm, pgd = (f"clean % ({e0['clean_examples']})",
                        f"FGSM % {first}", f"{pgd} {first}")
  header = ("method", clean)
  note = ""
  if with_aa:
    i0 = next(i for i, r in enumerate(records)
              if r.get("ensemble_acc") is not None)
    r0 = records[i0]
    settings = extras[i0].get("autoattack", {}).get("settings")
    name = ("standard AutoAttack" if settings == _STANDARD_AA
            else "AA-style ensemble")
    header += (f"robust % ({name}, first {r0['ensemble_examples']})",)
    if settings:
      note = ("\nRobust accuracy (the headline column): " +
              " -> ".join(settings["attack_names"]) +
              f", each on the survivors; APGD {settings['apgd_steps']} steps "
              f"x {settings['apgd_restarts']} restart(s), "
              f"{settings['num_targets']} targets for APGD-T / FAB-T, FAB-T "
              f"{settings['fab_steps']} steps, Square "
              f"{settings['square_queries']} queries"
              + ("" if name == "standard AutoAttack" else
                 " (not AutoAttack's standard budget)") + ".\n")
  return common.markdown_table(
      header + (fgsm, pgd, "train s", "train steps", "fwd-bwd passes",
                "time / natural", "s per 1k passes"), rows) + note


def heldout_curves(details: dict, methods) -> dict:
  """Method -> [(epoch, held-out PGD accuracy)] from the training histories
  (the per-epoch / per-pass check against catastrophic overfitting)."""
  return {m: [(h["epoch"], h["val_pgd_acc"]) for h in details[m]["history"]
              if "val_pgd_acc" in h]
          for m in methods if m in details and details[m].get("history")}


def _plot_heldout(curves: dict, title: str, path: str) -> None:
  plt = common.pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, curve in curves.items():
    if curve:
      ax.plot([e + 1 for e, _ in curve], [100 * a for _, a in curve],
              marker="o", label=name)
  ax.set_xlabel("pass over the training data")
  ax.set_ylabel("held-out PGD accuracy (%)")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def heldout_markdown(curves: dict) -> str:
  """The held-out curves as one line per method."""
  lines = ["Held-out PGD accuracy after each pass (%), the check against "
           "catastrophic overfitting:", ""]
  for name, curve in curves.items():
    lines.append(f"- {name}: " + ", ".join(f"{100 * a:.1f}"
                                           for _, a in curve))
  return "\n".join(lines) + "\n"


def _record(name: str, config: ml_collections.ConfigDict, res: dict,
            extra: dict, cost: dict) -> dict:
  """One results.json record (`RESULT_KEYS`)."""
  aa = extra.get("autoattack")
  record = {"method": name, "dataset": config.dataset,
            "eps": float(config.eps), **res,
            "ensemble_acc": extra.get("autoattack_acc"),
            "ensemble_examples": extra.get("autoattack_examples"),
            "ensemble": aa["attacks"] if aa else None, **cost}
  return {k: record[k] for k in RESULT_KEYS}


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> list:
  """Trains and evaluates every method in `config.methods`.

  Args:
    config: see `experiments/configs/robust_mnist.py`.
    workdir: output folder (created); holds checkpoints and results.

  Returns:
    The list of result records (also written to `workdir/results.json`).
  """
  os.makedirs(workdir, exist_ok=True)
  mesh = parallel.make_mesh(config.num_devices)
  print(f"jax {jax.__version__}, backend {jax.default_backend()}")
  print(parallel.describe(mesh))
  train, val, test = common.load_train_val_test(config)
  print(f"{config.dataset}: {len(train[0])} train, {len(val[0])} validation, "
        f"{len(test[0])} test examples")
  details_path = os.path.join(workdir, "details.json")
  details = common.json_load(details_path, {})
  records = [details[m]["record"] for m in config.methods
             if m in details and "record" in details[m]]
  key = jax.random.key(config.seed)
  model = common.robust.get_model(config)
  eval_config = config.eval.to_dict()
  for name in config.methods:
    old = details.get(name, {})
    if "record" in old:
      if old.get("eval_config") == eval_config:
        print(f"[{name}] already evaluated in {workdir}; skipping.")
        continue
      chosen = old.get("selection", {}).get("chosen", name)
      if not os.path.isdir(os.path.join(workdir, "checkpoints", chosen)):
        print(f"[{name}] evaluated with another `config.eval`, but its "
              f"checkpoints are not in {workdir}: keeping the old record.")
        continue
      print(f"[{name}] `config.eval` changed since it was evaluated: "
            f"evaluating {chosen} again from its checkpoints.")
      trained = common.robust.train_method(chosen, config, train, val,
                                           workdir, mesh)
      res, checks, extra = common.robust.evaluate_method(
          config, model, trained.variables, test, key, mesh)
      for c in checks:
        print(f"[{name}] {c}")
      record = _record(name, config, res, extra,
                       {k: old["record"][k] for k in _TRAIN_KEYS})
      old.update(record=record, eval_seconds=extra["eval_seconds"],
                 sanity_checks=[vars(c) for c in checks], evaluation=extra,
                 eval_config=eval_config,
                 previous_evaluation=old.get("evaluation"))
      details[name] = old
      common.json_dump(details, details_path)
      records = [details[m]["record"] for m in config.methods
                 if m in details and "record" in details[m]]
      continue
    selection = None
    if name in (config.get("best_of") or {}):
      chosen, trained, selection = common.robust.train_best_of(
          name, config, train, val, workdir, mesh)
    else:
      chosen = name
      trained = common.robust.train_method(name, config, train, val, workdir,
                                           mesh)
    result, cost, variables = trained.result, trained.cost, trained.variables
    res, checks, extra = common.robust.evaluate_method(
        config, model, variables, test, key, mesh)
    eval_seconds = extra["eval_seconds"]
    for c in checks:
      print(f"[{name}] {c}")
    record = _record(name, config, res, extra,
                     {k: cost[k] for k in _TRAIN_KEYS})
    print(f"[{name}] clean {record['clean_acc']:.4f} fgsm "
          f"{record['fgsm_acc']:.4f} pgd {record['pgd_acc']:.4f} "
          f"(eval {eval_seconds:.0f}s)")
    details[name] = {
        "record": record, "history": result.history,
        "compile_seconds": cost["compile_seconds"],
        "eval_seconds": eval_seconds,
        "stopped_early": result.stopped_early,
        "sanity_checks": [vars(c) for c in checks],
        "evaluation": extra, "eval_config": eval_config,
        "config": config[chosen].to_dict()}
    if selection is not None:
      details[name]["selection"] = selection
    common.json_dump(details, details_path)
    records.append(record)
  records = [details[m]["record"] for m in config.methods
             if m in details and "record" in details[m]]
  extras = [details[m].get("evaluation", {}) for m in config.methods
            if m in details and "record" in details[m]]
  table = format_table(records, extras)
  selections = {m: details[m]["selection"] for m in config.methods
                if "selection" in details.get(m, {})}
  for group, sel in selections.items():
    table += (f"\n{group}: {sel['chosen']} chosen on held-out PGD (" +
              ", ".join(f"{n} {100 * a:.2f}%"
                        for n, a in sel["val_pgd_acc"].items()) + ")\n")
  curves = heldout_curves(details, config.methods)
  if curves:
    table += "\n" + heldout_markdown(curves)
  common.write_results(workdir, records, table)
  if jax.process_index() == 0:
    _plot(records, os.path.join(workdir, "robust_acc_vs_time.png"))
    if curves:
      _plot_heldout(curves, f"{config.dataset}, eps={config.eps:.4g}: "
                    "held-out PGD per pass",
                    os.path.join(workdir, "heldout_pgd.png"))
  return records


if __name__ == "__main__":
  common.run(train_and_evaluate, multihost=True)
