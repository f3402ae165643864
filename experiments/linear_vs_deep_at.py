r"""Adversarial training of logistic regression vs a CNN, robust accuracy vs eps.

  python -m experiments.linear_vs_deep_at \
      --config=experiments/configs/linear_vs_deep_at.py --workdir=/tmp/lin_at

The lecture's point (Goodfellow, Shlens & Szegedy, 2015): adversarial
training helps a linear model little (for logistic regression it acts like
an L1 penalty on the weights) while a network with capacity gains most.
Logistic regression is `linear_softmax` (a JAX linear-softmax model) trained
with the same `training.natural_step` / `training.pgd_at_step` as the CNN
(`fast_at_mnist`). Every model is evaluated with `evaluation.robust_accuracy`
(PGD, L-inf) at each eps of the sweep.

Writes `WORKDIR/results.json` (one record per model: clean and robust
accuracy per eps, training seconds, and for linear models the L1 norm of
the weights), `results.md` and `robust_acc_vs_eps.png`. A killed run resumes
from the last finished model.
"""

from __future__ import annotations

import os
import time

import jax
import ml_collections
import numpy as np

from experiments import common

from jaxadv import evaluation

RECORD_KEYS = ("model", "arch", "train", "train_eps", "clean_acc", "robust_acc",
               "weight_l1", "train_seconds")


def _l1(variables) -> float | None:
  """L1 norm of a linear model's kernel (None for other models)."""
  params = variables["params"]
  if set(params) != {"dense"}:
    return None
  return float(np.abs(np.asarray(params["dense"]["kernel"])).sum())


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> list:
  """Trains every model of `config.models` and sweeps eps.

  Args:
    config: see `experiments/configs/linear_vs_deep_at.py`.
    workdir: output folder (checkpoints, results, PNG).

  Returns:
    The list of records (also `workdir/results.json`).
  """
  os.makedirs(workdir, exist_ok=True)
  (x, y), (x_test, y_test) = common.load_train_test(config)
  path = os.path.join(workdir, "results.json")
  records = {r["model"]: r for r in common.load_records(path)}
  key = jax.random.key(config.seed)
  ec = config.eval
  for name, nc in config.models.items():
    if name in records:
      print(f"[{name}] already evaluated in {workdir}; skipping.")
      continue
    model, variables, result = common.train_net(name, nc, x, y, config,
                                                workdir)
    t0 = time.perf_counter()
    robust = {}
    for eps in config.eps_list:
      robust[str(eps)] = evaluation.robust_accuracy(
          model.apply, variables, x_test, y_test, jax.random.fold_in(key, 1),
          attack="pgd", eps=eps, step_size=ec.pgd_step_fraction * eps,
          steps=ec.pgd_steps, restarts=ec.pgd_restarts,
          batch_size=config.eval_batch_size)
    records[name] = {
        "model": name, "arch": nc.model, "train": nc.step,
        "train_eps": float(nc.eps),
        "clean_acc": evaluation.accuracy(model.apply, variables, x_test,
                                         y_test,
                                         batch_size=config.eval_batch_size),
        "robust_acc": robust, "weight_l1": _l1(variables),
        "train_seconds": result.train_seconds}
    print(f"[{name}] clean {records[name]['clean_acc']:.4f} robust " +
          ", ".join(f"{e}: {a:.4f}" for e, a in robust.items()) +
          f" (eval {time.perf_counter() - t0:.0f}s)")
    common.write_results(workdir, list(records.values()))
  out = [records[n] for n in config.models]
  common.write_results(workdir, out, format_table(out, config))
  _plot(out, config, os.path.join(workdir, "robust_acc_vs_eps.png"))
  return out


def format_table(records: list, config) -> str:
  ec = config.eval
  eps = [str(e) for e in config.eps_list]
  rows = []
  for r in records:
    l1 = "-" if r["weight_l1"] is None else f"{r['weight_l1']:.0f}"
    rows.append([r["model"], r["arch"], r["train"], r["train_eps"]] +
                [f"{100 * r['robust_acc'][e]:.1f}" for e in eps] +
                [l1, f"{r['train_seconds']:.0f}"])
  return "\n".join([
      f"Robust accuracy (%) under PGD-{ec.pgd_steps} x {ec.pgd_restarts} "
      f"(step eps * {ec.pgd_step_fraction}), {config.test_limit or 10000} "
      "MNIST test images.", "",
      common.markdown_table(
          ["model", "arch", "training", "train eps"] +
          [f"eps {e}" for e in eps] + ["weight L1", "train s"], rows)]) + "\n"


def _plot(records: list, config, path: str) -> None:
  plt = common.pyplot()
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  colors = {"linear_softmax": "C0", "fast_at_mnist": "C3"}
  for r in records:
    eps = [float(e) for e in r["robust_acc"]]
    acc = [100 * v for v in r["robust_acc"].values()]
    ls = "-" if r["train"] == "natural" else "--"
    ax.plot(eps, acc, ls, marker="o", color=colors.get(r["arch"], "C2"),
            alpha=1.0 if r["train_eps"] in (0.0, max(config.eps_list)) else 0.6,
            label=f"{r['model']} ({r['train']}"
            f"{'' if r['train'] == 'natural' else ' eps ' + str(r['train_eps'])})")
  ax.set_xlabel("eps (L-inf), PGD")
  ax.set_ylabel("robust accuracy (%)")
  ax.set_title("MNIST: PGD adversarial training of logistic regression vs a "
               "CNN", fontsize=9)
  ax.set_ylim(-3, 103)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


if __name__ == "__main__":
  common.run(train_and_evaluate)
