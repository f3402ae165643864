r"""PGD-50x10 vs APGD-CE, APGD-T, Square and their ensemble on trained models.

  python -m experiments.robust_eval --config=experiments/configs/robust_eval.py \
      --config.train_workdir=/tmp/robust_mnist --workdir=/tmp/robust_eval

Restores each method of `config.methods` from the checkpoints of an
`experiments.robust_training` workdir (training it there first if they are
missing or unfinished), then on the first `num_examples` MNIST test images
measures clean, FGSM and PGD-50x10 accuracy, the AutoAttack-style ensemble
(APGD-CE -> APGD-T over the top-9 classes -> Square, each on the survivors),
optionally APGD-T and Square alone, and the sanity / gradient-masking checks.
Writes `WORKDIR/results.json` (one record per method), `WORKDIR/details.json`
(per-attack seconds, checks, config), `WORKDIR/results.md` and
`WORKDIR/robust_acc_by_attack.png`. A run started again with the same
workdir skips the methods it has finished.
"""

from __future__ import annotations

import os
import time

import jax
import ml_collections
import numpy as np

from experiments import common
from experiments.configs import robust_mnist
from jaxadv import data
from jaxadv import evaluation

ATTACK_COLUMNS = ("clean_acc", "fgsm_acc", "pgd_acc", "apgd_ce_acc",
                  "apgd_t_acc", "square_acc", "ensemble_acc",
                  "pgd_or_ensemble_acc")


def _evaluate_method(name: str, model, variables, x, y, key,
                     config: ml_collections.ConfigDict, eps: float,
                     unroll) -> dict:
  """All attacks and checks on one model; returns its details record."""
  kw = dict(batch_size=config.batch_size)
  prog = config.progress
  seconds = {}
  t0 = time.perf_counter()
  clean = evaluation.accuracy(model.apply, variables, x, y, **kw)
  fgsm = evaluation.robust_accuracy(model.apply, variables, x, y, key,
                                    attack="fgsm", eps=eps, **kw)
  pc = config.pgd
  pgd_flags = evaluation.robust_correct(
      model.apply, variables, x, y, jax.random.fold_in(key, 1), attack="pgd",
      eps=eps, step_size=pc.step_size, steps=pc.steps, restarts=pc.restarts,
      unroll=unroll, progress=prog, **kw)
  seconds["clean+fgsm+pgd"] = time.perf_counter() - t0
  ak = dict(eps=eps, apgd_steps=config.apgd.steps,
            apgd_restarts=config.apgd.restarts,
            num_targets=config.apgd.num_targets,
            fab_steps=config.fab.steps, fab_restarts=config.fab.restarts,
            square_queries=config.square.queries,
            square_p_init=config.square.p_init, unroll=unroll, progress=prog,
            **kw)
  ens = evaluation.evaluate_robustness(model.apply, variables, x, y,
                                       jax.random.fold_in(key, 2), **ak)
  seconds.update({f"ensemble/{k}": v for k, v in ens["seconds"].items()})
  alone = {}
  if config.individual:
    for i, attack in enumerate(("apgd-t", "square")):
      r = evaluation.evaluate_robustness(
          model.apply, variables, x, y, jax.random.fold_in(key, 3 + i),
          attack_names=(attack,), **ak)
      alone[attack] = r["robust_acc"]
      seconds[f"alone/{attack}"] = r["seconds"][attack]
  res = {"clean_acc": clean, "fgsm_acc": fgsm,
         "pgd_acc": float(pgd_flags.mean())}
  sc = config.sanity
  t0 = time.perf_counter()
  checks = evaluation.sanity_checks(
      model.apply, variables, x, y, jax.random.fold_in(key, 5), res, eps=eps,
      pgd_steps=pc.steps, pgd_step_size=pc.step_size, subset=sc.subset,
      batch_size=config.batch_size, large_eps=sc.large_eps,
      large_eps_max_acc=sc.large_eps_max_acc, ensemble=ens,
      square_queries=sc.square_queries,
      more_steps_factor=sc.more_steps_factor,
      more_restarts=sc.more_restarts, material=sc.material, unroll=unroll)
  seconds["sanity_checks"] = time.perf_counter() - t0
  for c in checks:
    print(f"[{name}] {c}")
  record = {
      "method": name, "eps": eps, "num_examples": len(x), **res,
      "apgd_ce_acc": ens["per_attack"]["apgd-ce"],
      "apgd_t_acc": alone.get("apgd-t"), "square_acc": alone.get("square"),
      "ensemble_acc": ens["robust_acc"],
      "pgd_or_ensemble_acc": float((pgd_flags & ens["robust"]).mean()),
      "ensemble_cumulative": ens["per_attack"],
      "gap_pgd_minus_ensemble": res["pgd_acc"] - ens["robust_acc"],
      "pgd": f"PGD-{pc.steps}x{pc.restarts}, step {pc.step_size}",
      "pgd_steps": pc.steps, "pgd_restarts": pc.restarts,
      "apgd_steps": config.apgd.steps, "square_queries": config.square.queries}
  return {"record": record, "seconds": seconds,
          "attacked": ens["attacked"],
          "sanity_checks": [vars(c) for c in checks],
          "fooled_by_counts": {str(k): int(v) for k, v in zip(
              *np.unique(ens["fooled_by"], return_counts=True))}}


def format_table(records: list) -> str:
  """The results as a Markdown table (percentages)."""
  pct = lambda v: "-" if v is None else f"{100 * v:.2f}"
  rows = []
  for r in records:
    cum = r["ensemble_cumulative"]
    chain = " -> ".join(pct(cum[k]) for k in cum)
    rows.append((r["method"], pct(r["clean_acc"]), pct(r["fgsm_acc"]),
                 pct(r["pgd_acc"]), pct(r["apgd_ce_acc"]),
                 pct(r["apgd_t_acc"]), pct(r["square_acc"]), chain,
                 pct(r["pgd_or_ensemble_acc"]),
                 f"{100 * r['gap_pgd_minus_ensemble']:+.2f}"))
  r0 = records[0]
  return "\n".join([
      f"N = {r0['num_examples']} MNIST test images, eps = {r0['eps']}; "
      f"{r0['pgd']}.", "",
      common.markdown_table(
          ("method", "clean", "FGSM",
           f"PGD-{r0['pgd_steps']}x{r0['pgd_restarts']}", "APGD-CE",
           "APGD-T alone", "Square alone", "ensemble (CE -> T -> Square)",
           "PGD or ensemble", "gap PGD - ensemble"), rows)])


def _plot(records: list, path: str) -> None:
  plt = common.pyplot()
  cols = [c for c in ATTACK_COLUMNS
          if any(r[c] is not None for r in records)]
  value = lambda r, c: np.nan if r[c] is None else 100 * r[c]
  pgd = f"PGD-{records[0]['pgd_steps']}x{records[0]['pgd_restarts']}"
  labels = {"clean_acc": "clean", "fgsm_acc": "FGSM", "pgd_acc": pgd,
            "apgd_ce_acc": "APGD-CE", "apgd_t_acc": "APGD-T",
            "square_acc": "Square", "ensemble_acc": "ensemble",
            "pgd_or_ensemble_acc": "PGD or ens."}
  fig, ax = plt.subplots(figsize=(8, 4))
  width = 0.8 / len(records)
  for i, r in enumerate(records):
    xs = np.arange(len(cols)) + i * width
    ax.bar(xs, [value(r, c) for c in cols], width, label=r["method"])
  ax.set_xticks(np.arange(len(cols)) + width * (len(records) - 1) / 2)
  ax.set_xticklabels([labels[c] for c in cols], rotation=20)
  lo = np.nanmin([value(r, c) for r in records for c in cols])
  ax.set_ylim(max(0, lo - 10), 100)
  ax.set_ylabel("accuracy (%)")
  ax.set_title(f"MNIST, eps={records[0]['eps']}, "
               f"{records[0]['num_examples']} test images")
  ax.legend()
  ax.grid(alpha=0.3, axis="y")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def run(config: ml_collections.ConfigDict, workdir: str) -> list:
  """Evaluates every method of `config.methods`.

  Args:
    config: see `experiments/configs/robust_eval.py`.
    workdir: output folder (created).

  Returns:
    The list of result records (also in `workdir/results.json`).

  Raises:
    ValueError: `config.train_workdir` is unset.
  """
  if not config.train_workdir:
    raise ValueError("`config.train_workdir` must name an "
                     "experiments.robust_training workdir.")
  os.makedirs(workdir, exist_ok=True)
  tc = robust_mnist.get_config(config.train_variant)
  tc.progress = config.progress
  train, val, _ = common.load_train_val_test(tc)
  x, y = data.load(tc.dataset, "test", data_dir=tc.data_dir,
                   manual_dir=tc.manual_dir, limit=config.num_examples)
  print(f"jax {jax.__version__}, backend {jax.default_backend()}; "
        f"{tc.dataset}: {len(x)} test images, eps {tc.eps}")
  model = common.robust.get_model(tc)
  details_path = os.path.join(workdir, "details.json")
  details = common.json_load(details_path, {})
  key = jax.random.key(config.seed)
  for name in config.methods:
    if name in details:
      print(f"[{name}] already evaluated in {workdir}; skipping.")
      continue
    trained = common.robust.train_method(name, tc, train, val,
                                         config.train_workdir)
    print(f"[{name}] restored after {trained.result.batches} training "
          "batches")
    details[name] = _evaluate_method(name, model, trained.variables, x, y,
                                     key, config, float(tc.eps),
                                     tc.eval.unroll)
    details[name]["config"] = config.to_dict()
    common.json_dump(details, details_path)
    r = details[name]["record"]
    print(f"[{name}] PGD {r['pgd_acc']:.4f} ensemble {r['ensemble_acc']:.4f} "
          f"gap {r['gap_pgd_minus_ensemble']:+.4f}")
  records = [details[m]["record"] for m in config.methods]
  common.write_results(workdir, records, format_table(records))
  _plot(records, os.path.join(workdir, "robust_acc_by_attack.png"))
  return records


if __name__ == "__main__":
  common.run(run)
