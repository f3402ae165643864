r"""Transferability across model kinds (Papernot, McDaniel & Goodfellow, 2016).

  python -m experiments.transferability \
      --config=experiments/configs/transferability.py --workdir=/tmp/transfer

Models, all on MNIST: a CNN (`fast_at_mnist`, "dnn") trained with
`training.fit`; scikit-learn logistic regression ("lr"), linear SVM ("svm"),
decision tree ("dt") and kNN ("knn"); and "ensemble", the majority vote of
those five (ties to the lowest class). Adversarial examples are crafted on
each source with FGSM (cross-entropy) and PGD (L-inf, `pgd_loss`: the CW
margin by default, near-optimal on linear models), at several eps:

* dnn: on the CNN itself (white-box);
* lr, svm: on their JAX forward pass, `LinearSoftmax` with the fitted
  `coef_` / `intercept_` (its agreement with `predict` and
  `decision_function` is checked and recorded);
* dt, knn, ensemble: on a substitute CNN trained on the source's labels of
  a disjoint pool of training images (Papernot et al.'s substitute).

Every target then classifies every source's examples; the matrix holds the
fraction misclassified (over all test images, so a target's clean error is
part of every cell of its column). A control row, "noise", adds random
sign noise of the same eps. Writes `WORKDIR/results.json`, `results.md` and
`transfer_matrix.png`.
"""

from __future__ import annotations

import os
import time

import jax
import ml_collections
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier

from experiments import common
from jaxadv import analysis
from jaxadv import evaluation
from jaxadv import models
from jaxadv import transfer

MODELS = ("dnn", "lr", "svm", "dt", "knn", "ensemble")
# Control row: random sign noise of the same L-inf size (no gradient at all).
SOURCES = MODELS + ("noise",)
DIFFERENTIABLE = ("dnn", "lr", "svm")
SKLEARN = {
    "lr": lambda c: LogisticRegression(C=c.lr_c, max_iter=c.lr_max_iter),
    "svm": lambda c: LinearSVC(C=c.svm_c, max_iter=c.svm_max_iter),
    "dt": lambda c: DecisionTreeClassifier(random_state=c.seed),
    "knn": lambda c: KNeighborsClassifier(n_neighbors=c.knn_k),
}
RESULT_KEYS = ("config", "clean_error", "linear_check", "substitute_agreement",
               "matrices", "bar", "seconds")


def _flat(x: np.ndarray) -> np.ndarray:
  return x.reshape(len(x), -1)


class Zoo:
  """The trained models: predictions of every target, gradients of sources."""

  def __init__(self, dnn_model, dnn_vars, sk: dict, num_classes: int,
               batch_size: int):
    self.dnn_model, self.dnn_vars, self.sk = dnn_model, dnn_vars, sk
    self.num_classes, self.batch_size = num_classes, batch_size
    self.linear = models.LinearSoftmax(num_classes=num_classes)
    self.linear_vars = {k: models.sklearn_variables(sk[k].coef_,
                                                    sk[k].intercept_)
                        for k in ("lr", "svm")}

  def predict_all(self, x: np.ndarray) -> dict:
    """Predictions int [N] of every target (the ensemble votes the five)."""
    out = {"dnn": evaluation.predict(self.dnn_model.apply, self.dnn_vars, x,
                                     batch_size=self.batch_size)}
    for k, m in self.sk.items():
      out[k] = m.predict(_flat(x)).astype(np.int32)
    out["ensemble"] = transfer.majority_vote(
        np.stack([out[k] for k in MODELS[:-1]]), self.num_classes)
    return out

  def gradient_source(self, name: str):
    """(apply_fn, variables) of a differentiable source."""
    if name == "dnn":
      return self.dnn_model.apply, self.dnn_vars
    return self.linear.apply, self.linear_vars[name]


def linear_check(zoo: Zoo, x: np.ndarray) -> dict:
  """The JAX forward of LR / SVM against scikit-learn on `x`."""
  out = {}
  for k in ("lr", "svm"):
    scores = np.asarray(zoo.linear.apply(zoo.linear_vars[k], x))
    ref = zoo.sk[k].decision_function(_flat(x))
    out[k] = {"max_abs_diff": float(np.max(np.abs(scores - ref))),
              "prediction_agreement": float(np.mean(
                  scores.argmax(-1) == zoo.sk[k].predict(_flat(x))))}
  return out


def check_bar(matrices: dict) -> dict:
  """Per attack and eps, for each differentiable model d: is its white-box
  cell strictly above every other cell of its row ("row": d's examples fool
  d more than any other target) and of its column ("column": d is fooled
  more by its own examples than by any other source's)?"""
  out = {}
  for tag, m in matrices.items():
    out[tag] = {
        d: {"row": bool(all(m[d][d] > v for t, v in m[d].items() if t != d)),
            "column": bool(all(m[d][d] > m[s][d] for s in m if s != d))}
        for d in DIFFERENTIABLE}
  return out


def format_tables(results: dict) -> str:
  lines = []
  for tag, m in results["matrices"].items():
    rows = []
    for s in SOURCES:
      via = {"noise": " (random sign)"}.get(
          s, "" if s in DIFFERENTIABLE else " (substitute)")
      rows.append([f"{s}{via}"] + [
          f"**{100 * m[s][t]:.1f}**" if s == t else f"{100 * m[s][t]:.1f}"
          for t in MODELS])
    lines += [f"### {tag}: misclassification rate (%) of target (column) on "
              "examples crafted on source (row)", "",
              common.markdown_table(("source \\ target",) + MODELS, rows),
              ""]
  ce = results["clean_error"]
  lines += ["Clean test error (%): " + ", ".join(
      f"{k} {100 * v:.1f}" for k, v in ce.items()), ""]
  return "\n".join(lines)


def _plot(results: dict, config, path: str) -> None:
  plt = common.pyplot()
  tags = list(results["matrices"])
  cols = len(config.eps_list)
  rows = len(tags) // cols
  fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 4.0 * rows),
                           squeeze=False, layout="constrained")
  labels = [m if m in DIFFERENTIABLE + ("noise",) else m + "*"
            for m in SOURCES]
  for ax, tag in zip(axes.ravel(), tags):
    m = results["matrices"][tag]
    a = np.array([[100 * m[s][t] for t in MODELS] for s in SOURCES])
    im = ax.imshow(a, vmin=0, vmax=100, cmap="viridis")
    for i in range(len(SOURCES)):
      for j in range(len(MODELS)):
        ax.text(j, i, f"{a[i, j]:.0f}", ha="center", va="center", fontsize=8,
                color="white" if a[i, j] < 60 else "black")
    ax.set_xticks(range(len(MODELS)), MODELS, rotation=45, fontsize=8)
    ax.set_yticks(range(len(SOURCES)), labels, fontsize=8)
    ax.set_xlabel("target")
    ax.set_ylabel("source (* = via substitute)")
    ax.set_title(tag, fontsize=9)
  fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6,
               label="misclassification rate (%)")
  fig.suptitle(f"MNIST transferability, {results['config']['test_limit']} "
               "test images (misclassification rate of the target, %)")
  fig.savefig(path, dpi=110)
  plt.close(fig)


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict:
  """Trains the models, crafts on every source, fills the matrix.

  Args:
    config: see `experiments/configs/transferability.py`.
    workdir: output folder (checkpoints of the CNNs, results, the PNG).

  Returns:
    The results dict (also `workdir/results.json`).
  """
  os.makedirs(workdir, exist_ok=True)
  t_start = time.perf_counter()
  (x_all, y_all), (x_test, y_test) = common.load_train_test(config)
  num_classes = int(y_all.max()) + 1
  # Disjoint pools: the classical models and the CNN learn from the first
  # `classic_train_size` images; substitutes from the next `substitute_size`.
  n = config.classic_train_size
  x_tr, y_tr = x_all[:n], y_all[:n]
  x_sub = x_all[n:n + config.substitute_size]
  print(f"train {len(x_tr)}, substitute pool {len(x_sub)}, test {len(x_test)}")

  dnn_model, dnn_vars, _ = common.train_net("dnn", config.dnn, x_tr, y_tr,
                                            config, workdir)
  sk = {}
  for k, build in SKLEARN.items():
    t0 = time.perf_counter()
    sk[k] = build(config).fit(_flat(x_tr), y_tr)
    print(f"[{k}] fitted in {time.perf_counter() - t0:.1f}s")
  zoo = Zoo(dnn_model, dnn_vars, sk, num_classes, config.eval_batch_size)
  clean = zoo.predict_all(x_test)
  clean_error = {k: float(np.mean(p != y_test)) for k, p in clean.items()}
  lin = linear_check(zoo, x_test)
  print("clean error:", clean_error, "\nlinear check:", lin)

  # Substitutes for the non-differentiable sources, on the disjoint pool.
  sub_labels = zoo.predict_all(x_sub)
  sources, agreement = {}, {}
  sub_model = models.get_model(config.substitute.model,
                               kernels=config.kernels,
                               num_classes=num_classes)
  for s in MODELS:
    if s in DIFFERENTIABLE:
      sources[s] = zoo.gradient_source(s)
      continue
    sc = config.substitute
    variables, agreement[s] = transfer.fit_substitute(
        sub_model, jax.random.key(sc.seed), x_sub, sub_labels[s],
        batch_size=config.batch_size, epochs=sc.epochs,
        learning_rate=sc.learning_rate, seed=sc.seed,
        workdir=os.path.join(workdir, "checkpoints", f"substitute_{s}"),
        desc=f"substitute {s}", progress=config.progress)
    sources[s] = (sub_model.apply, variables)
    print(f"[substitute {s}] agreement with {s} on its pool: "
          f"{agreement[s]:.4f}")

  key = jax.random.key(config.seed)
  matrices = {}
  for attack in config.attacks:
    for eps in config.eps_list:
      tag = f"{attack} eps={eps}"
      preds = {}
      for i, s in enumerate(MODELS):
        apply_fn, variables = sources[s]
        x_adv = transfer.craft(
            [apply_fn], [variables], x_test, y_test, jax.random.fold_in(key, i),
            attack=attack, eps=eps, step_size=config.pgd_step_fraction * eps,
            steps=config.pgd_steps if attack == "pgd" else 0,
            loss=config.pgd_loss if attack == "pgd" else "ce",
            batch_size=config.eval_batch_size)
        preds[s] = zoo.predict_all(x_adv)
      noise = eps * np.asarray(analysis.random_sign(
          jax.random.fold_in(key, 1000), x_test.shape))
      preds["noise"] = zoo.predict_all(np.clip(x_test + noise, 0.0, 1.0))
      matrices[tag] = transfer.misclassification_matrix(preds, y_test)
      print(f"[{tag}] diagonal: " + ", ".join(
          f"{s} {matrices[tag][s][s]:.3f}" for s in MODELS))

  results = {"config": config.to_dict(), "clean_error": clean_error,
             "linear_check": lin, "substitute_agreement": agreement,
             "matrices": matrices, "bar": check_bar(matrices),
             "seconds": time.perf_counter() - t_start}
  common.write_results(workdir, results, format_tables(results))
  _plot(results, config, os.path.join(workdir, "transfer_matrix.png"))
  return results


if __name__ == "__main__":
  common.run(train_and_evaluate)
