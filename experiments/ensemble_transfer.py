r"""Ensemble transfer (Liu, Chen, Liu & Song, ICLR 2017) on MNIST.

  python -m experiments.ensemble_transfer \
      --config=experiments/configs/ensemble_transfer.py --workdir=/tmp/ens

Several networks (two architectures from `jaxadv.models` x two seeds) are
trained naturally. For each held-out network h, FGSM and PGD examples are
crafted on the averaged logits of all the others (`jaxadv.transfer.craft`
with several models) and on each other network alone; the score is the
error rate of h on them (untargeted), and for targeted PGD (a random target
class != y per example) the fraction h classifies as the target. The
white-box rate (each network attacked on itself) is recorded for reference.

Writes `WORKDIR/results.json`, `results.md` and `ensemble_transfer.png`.
"""

from __future__ import annotations

import os
import time

import jax
import ml_collections
import numpy as np

from experiments import common
from jaxadv import evaluation
from jaxadv import transfer

RESULT_KEYS = ("config", "clean_acc", "settings", "seconds")


def _settings(config) -> list[tuple[str, bool, float]]:
  """(attack, targeted, eps) triples, in table order."""
  out = [(a, False, e) for a in config.attacks for e in config.eps_list]
  out += [("pgd", True, e) for e in config.targeted_eps_list]
  return out


def _tag(attack: str, targeted: bool, eps: float) -> str:
  return f"{attack}{' targeted' if targeted else ''} eps={eps}"


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict:
  """Trains the networks and measures single-model vs ensemble transfer.

  Args:
    config: see `experiments/configs/ensemble_transfer.py`.
    workdir: output folder.

  Returns:
    The results dict (also `workdir/results.json`).
  """
  os.makedirs(workdir, exist_ok=True)
  t_start = time.perf_counter()
  (x, y), (x_test, y_test) = common.load_train_test(config)
  names = list(config.nets)
  nets = {}
  for name in names:
    model, variables, _ = common.train_net(name, config.nets[name], x, y,
                                           config, workdir)
    nets[name] = (model.apply, variables)
  predict = {n: (lambda v, f=f, w=w: evaluation.predict(
      f, w, v, batch_size=config.eval_batch_size)) for n, (f, w) in nets.items()}
  clean_acc = {n: float(np.mean(predict[n](x_test) == y_test)) for n in names}
  print("clean accuracy:", clean_acc)
  num_classes = int(y.max()) + 1
  key = jax.random.key(config.seed)
  shift = np.asarray(jax.random.randint(jax.random.fold_in(key, 99),
                                        y_test.shape, 1, num_classes))
  y_target = ((y_test + shift) % num_classes).astype(np.int32)

  def score(n, x_adv, targeted):
    p = predict[n](x_adv)
    return float(np.mean(p == y_target) if targeted else np.mean(p != y_test))

  settings = {}
  for i, (attack, targeted, eps) in enumerate(_settings(config)):
    tag = _tag(attack, targeted, eps)
    labels = y_target if targeted else y_test
    kw = dict(attack=attack, eps=eps, targeted=targeted,
              step_size=config.pgd_step_fraction * eps,
              steps=config.pgd_steps if attack == "pgd" else 0,
              batch_size=config.eval_batch_size)
    k = jax.random.fold_in(key, i)
    single = {s: transfer.craft([nets[s][0]], [nets[s][1]], x_test, labels,
                                jax.random.fold_in(k, j), **kw)
              for j, s in enumerate(names)}
    rec = {"white_box": {s: score(s, single[s], targeted) for s in names},
           "single": {h: {s: score(h, single[s], targeted) for s in names
                          if s != h} for h in names},
           "ensemble": {}}
    for j, h in enumerate(names):
      others = [s for s in names if s != h]
      x_adv = transfer.craft([nets[s][0] for s in others],
                             [nets[s][1] for s in others], x_test, labels,
                             jax.random.fold_in(k, 100 + j), **kw)
      rec["ensemble"][h] = score(h, x_adv, targeted)
    settings[tag] = rec
    print(f"[{tag}] ensemble -> held-out: " + ", ".join(
        f"{h} {v:.3f}" for h, v in rec["ensemble"].items()) +
          " | mean single -> held-out: " + ", ".join(
              f"{h} {np.mean(list(r.values())):.3f}"
              for h, r in rec["single"].items()))

  results = {"config": config.to_dict(), "clean_acc": clean_acc,
             "settings": settings, "seconds": time.perf_counter() - t_start}
  common.write_results(workdir, results, format_table(results))
  _plot(results, config, os.path.join(workdir, "ensemble_transfer.png"))
  return results


def format_table(results: dict) -> str:
  names = list(results["clean_acc"])
  rows = []
  for tag, rec in results["settings"].items():
    for h in names:
      single = list(rec["single"][h].values())
      rows.append((tag, h, f"{100 * results['clean_acc'][h]:.1f}",
                   f"**{100 * rec['ensemble'][h]:.1f}**",
                   f"{100 * np.mean(single):.1f}",
                   f"{100 * np.max(single):.1f}",
                   f"{100 * rec['white_box'][h]:.1f}"))
  return "\n".join([
      "Untargeted: error rate (%) of the held-out network. Targeted: "
      "fraction (%) it classifies as the target. 'ensemble' = crafted on the "
      "averaged logits of the other networks; 'single mean / max' = over the "
      "other networks attacked one at a time; 'white-box' = the held-out "
      "network attacked itself.", "",
      common.markdown_table(("setting", "held-out", "clean acc %",
                             "ensemble", "single mean", "single max",
                             "white-box"), rows)]) + "\n"


def _plot(results: dict, config, path: str) -> None:
  plt = common.pyplot()
  names = list(results["clean_acc"])
  settings = results["settings"]
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
  ax = axes[0]
  styles = {"fgsm": "-", "pgd": "--"}
  for attack in config.attacks:
    tags = [_tag(attack, False, e) for e in config.eps_list]
    for kind, color in (("ensemble", "C3"), ("single", "C0")):
      vals = [100 * np.mean([settings[t]["ensemble"][h] if kind == "ensemble"
                             else np.mean(list(settings[t]["single"][h].values()))
                             for h in names]) for t in tags]
      ax.plot(config.eps_list, vals, styles.get(attack, ":"), color=color,
              marker="o", label=f"{attack}, {kind}")
  ax.set_xlabel("eps (L-inf)")
  ax.set_ylabel("held-out error rate (%), mean over held-outs")
  ax.set_title("Untargeted transfer to the held-out network")
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  ax = axes[1]
  tags = list(settings)
  width = 0.8 / 2
  idx = np.arange(len(tags))
  ens = [100 * np.mean(list(settings[t]["ensemble"].values())) for t in tags]
  sing = [100 * np.mean([np.mean(list(settings[t]["single"][h].values()))
                         for h in names]) for t in tags]
  ax.bar(idx - width / 2, ens, width, color="C3", label="ensemble of the others")
  ax.bar(idx + width / 2, sing, width, color="C0", label="single other network")
  ax.set_xticks(idx, tags, rotation=35, ha="right", fontsize=7)
  ax.set_ylabel("held-out error / target rate (%)")
  ax.set_title("Mean over held-out networks, every setting")
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3, axis="y")
  fig.suptitle(f"MNIST ensemble transfer ({', '.join(names)}; "
               f"{results['config']['test_limit']} test images)", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


if __name__ == "__main__":
  common.run(train_and_evaluate)
