"""The robust-training recipes of `configs/robust_mnist.py`, trained once.

`experiments.robust_training` trains and evaluates them,
`experiments.robust_eval` restores them from its checkpoints (training what
is missing exactly as the main job would), and the benchmark's time to
accuracy trains them again without checkpoints or validation.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import ml_collections

from experiments.common import training as training_lib
from jaxadv import data
from jaxadv import evaluation
from jaxadv import models
from jaxadv import training

# The methods in the order that seeds them: method i initialises its model
# with `fold_in(key(config.seed), i)`.
METHODS = ("natural", "fgsm_rs", "free", "pgd")


def get_model(config: ml_collections.ConfigDict):
  """The config's model with its kernels (`config.kernels`)."""
  return models.get_model(config.model, kernels=config.kernels,
                          num_classes=data.info(config.dataset).num_classes)


def train_method(name: str, config: ml_collections.ConfigDict, train, val,
                 workdir: Optional[str], mesh=None, *, validate: bool = True,
                 eval_fn: Optional[Callable] = None,
                 eval_every: Optional[int] = None,
                 progress: Optional[bool] = None
                 ) -> training_lib.Trained:
  """Trains method `name` with its recipe `config[name]`.

  Args:
    name: one of `METHODS`.
    config: a `configs/robust_mnist.py` config.
    train, val: (x, y) arrays (`common.load_train_val_test`).
    workdir: the experiment's folder (checkpoints in
      `workdir/checkpoints/name`), or None.
    mesh: data parallelism over its devices, or None.
    validate: after every pass, PGD-`val_pgd_steps` accuracy on `val`; with
      the recipe's `select_best`, stops on catastrophic overfitting (Wong et
      al., 2020) and keeps the best epoch's parameters.
    eval_fn, eval_every: `training.fit`'s hook, passed on.
    progress: the progress bar; default `config.progress`.

  Returns:
    A `common.Trained`.
  """
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; valid: {sorted(METHODS)}.")
  mc = config[name]
  model = get_model(config)
  x_val, y_val = val
  val_key = jax.random.key(config.seed + 1)
  best = {"pgd": -1.0}

  def epoch_fn(state, epoch):
    variables = training.variables_of(state)
    acc = evaluation.robust_accuracy(
        model.apply, variables, x_val, y_val, val_key, attack="pgd",
        eps=config.eps, step_size=config.val_pgd_step_size,
        steps=config.val_pgd_steps, batch_size=min(500, len(x_val)),
        unroll=config.eval.unroll, mesh=mesh)
    out = {"val_pgd_acc": acc}
    # Catastrophic overfitting (Wong et al., 2020): PGD accuracy collapses.
    # Judged only at full eps (after the ramp): while eps grows, the check's
    # accuracy swings widely and a drop means nothing.
    if epoch + 1 > mc.eps_ramp_epochs:
      if mc.select_best and acc < best["pgd"] - 0.2:
        print(f"[{name}] catastrophic overfitting at epoch {epoch}: val PGD "
              f"acc {acc:.3f} < best {best['pgd']:.3f} - 0.2; stopping.")
        out["stop"] = True
      best["pgd"] = max(best["pgd"], acc)
    return out

  x, y = train
  return training_lib.train_model(
      name, mc, model, x, y,
      key=jax.random.fold_in(jax.random.key(config.seed),
                             METHODS.index(name)),
      batch_size=config.batch_size, seed=config.seed, eps=config.eps,
      workdir=workdir, checkpoint_every=config.checkpoint_every,
      epoch_fn=epoch_fn if validate else None,
      select="val_pgd_acc" if validate and mc.select_best else None,
      eval_fn=eval_fn, eval_every=eval_every,
      progress=config.progress if progress is None else progress, mesh=mesh)
