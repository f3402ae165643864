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

from experiments import classic
from experiments.robust_training import _json_dump
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
  (x, y), (x_test, y_test) = classic.load_data(config)
  path = os.path.join(workdir, "results.json")
  records = {r["model"]: r for r in classic.json_load(path, [])}
  key = jax.random.key(config.seed)
  ec = config.eval
  for name, nc in config.models.items():
    if name in records:
      print(f"[{name}] already evaluated in {workdir}; skipping.")
      continue
    model, variables, result = classic.train_net(name, nc, x, y, config,
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
    _json_dump(list(records.values()), path)
  out = [records[n] for n in config.models]
  classic.save_results(workdir, out, format_table(out, config))
  _plot(out, config, os.path.join(workdir, "robust_acc_vs_eps.png"))
  return out


def format_table(records: list, config) -> str:
  ec = config.eval
  eps = [str(e) for e in config.eps_list]
  lines = [f"Robust accuracy (%) under PGD-{ec.pgd_steps} x "
           f"{ec.pgd_restarts} (step eps * {ec.pgd_step_fraction}), "
           f"{config.test_limit or 10000} MNIST test images.", "",
           "| model | arch | training | train eps | " +
           " | ".join(f"eps {e}" for e in eps) + " | weight L1 | train s |",
           "|---" * (6 + len(eps)) + "|"]
  for r in records:
    l1 = "-" if r["weight_l1"] is None else f"{r['weight_l1']:.0f}"
    lines.append(
        f"| {r['model']} | {r['arch']} | {r['train']} | {r['train_eps']} | " +
        " | ".join(f"{100 * r['robust_acc'][e]:.1f}" for e in eps) +
        f" | {l1} | {r['train_seconds']:.0f} |")
  return "\n".join(lines) + "\n"


def _plot(records: list, config, path: str) -> None:
  plt = classic.pyplot()
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
  classic.run_main(train_and_evaluate)
