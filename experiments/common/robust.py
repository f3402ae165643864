"""The robust-training recipes of `configs/robust_{mnist,cifar10}.py`, trained once.

`experiments.robust_training` trains and evaluates them,
`experiments.robust_eval` restores them from its checkpoints (training what
is missing exactly as the main job would), and the benchmark's time to
accuracy trains them again without checkpoints or validation.

Beyond MNIST's fields a config may hold `model_kwargs` (passed to
`jaxadv.models.get_model`), `normalize` ("cifar10": the network sees
`(x - mean) / std` through `jaxadv.models.Normalized`, attacks stay in
pixels), methods other than `METHODS` (any config section with a `step`,
e.g. "free_m2"), `best_of` (group name -> candidate methods: train each,
keep the best on the held-out PGD check) and, in `eval`, `pgd_examples`,
`autoattack_examples` and `autoattack` (`evaluate_method`). Absent, they
change nothing: MNIST trains and evaluates as before.
"""

from __future__ import annotations

import inspect
import time
import zlib
from typing import Callable, Optional

import jax
import ml_collections

from experiments.common import training as training_lib
from jaxadv import data
from jaxadv import evaluation
from jaxadv import models
from jaxadv import training

# The methods in the order that seeds them: method i initialises its model
# with `fold_in(key(config.seed), i)`; other methods with
# `fold_in(key(config.seed), crc32(name))`.
METHODS = ("natural", "fgsm_rs", "free", "pgd")

# Input normalisations by name: (mean, std) in pixel units.
NORMALIZATIONS = {
    "cifar10": (models.normalize.CIFAR10_MEAN, models.normalize.CIFAR10_STD),
    # [0, 1] -> [-1, 1] (torchvision Normalize(0.5, 0.5)), as Pang et al.'s
    # Mixup Inference code feeds its networks.
    "symmetric": ((0.5,), (0.5,)),
}


def get_model(config: ml_collections.ConfigDict):
  """The config's model with its kernels (`config.kernels`), its
  `model_kwargs` and, with `config.normalize`, inside `Normalized`."""
  model = models.get_model(config.model, kernels=config.kernels,
                           num_classes=data.info(config.dataset).num_classes,
                           **dict(config.get("model_kwargs") or {}))
  norm = config.get("normalize")
  if norm:
    mean, std = NORMALIZATIONS[norm]
    model = models.Normalized(model, mean=mean, std=std)
  return model


def method_index(name: str) -> int:
  """The init-key index of a method: its place in `METHODS`, else crc32."""
  return METHODS.index(name) if name in METHODS else zlib.crc32(
      name.encode()) % (2**31)


def train_method(name: str, config: ml_collections.ConfigDict, train, val,
                 workdir: Optional[str], mesh=None, *, validate: bool = True,
                 eval_fn: Optional[Callable] = None,
                 eval_every: Optional[int] = None,
                 progress: Optional[bool] = None
                 ) -> training_lib.Trained:
  """Trains method `name` with its recipe `config[name]`.

  Args:
    name: one of `METHODS`, or another section of `config` (its `step`
      names the trainer).
    config: a `configs/robust_mnist.py` or `robust_cifar10.py` config.
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
  if name not in METHODS and not (name in config and "step" in config[name]):
    raise ValueError(f"unknown method {name!r}; valid: {sorted(METHODS)} or "
                     "a config section with a `step`.")
  mc = config[name]
  model = get_model(config)
  best = {"pgd": -1.0}

  def epoch_fn(state, epoch):
    acc = held_out_pgd(config, model, training.variables_of(state), val, mesh)
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
                             method_index(name)),
      batch_size=config.batch_size, seed=config.seed, eps=config.eps,
      workdir=workdir, checkpoint_every=config.checkpoint_every,
      epoch_fn=epoch_fn if validate else None,
      select="val_pgd_acc" if validate and mc.select_best else None,
      eval_fn=eval_fn, eval_every=eval_every,
      progress=config.progress if progress is None else progress, mesh=mesh)


def held_out_pgd(config: ml_collections.ConfigDict, model, variables, val,
                 mesh=None) -> float:
  """PGD-`val_pgd_steps` accuracy on the held-out split (`train_method`'s
  per-pass check, with its key)."""
  x_val, y_val = val
  return evaluation.robust_accuracy(
      model.apply, variables, x_val, y_val, jax.random.key(config.seed + 1),
      attack="pgd", eps=config.eps, step_size=config.val_pgd_step_size,
      steps=config.val_pgd_steps, batch_size=min(500, len(x_val)),
      unroll=config.eval.unroll, mesh=mesh)


def train_best_of(group: str, config: ml_collections.ConfigDict, train, val,
                  workdir: Optional[str], mesh=None
                  ) -> tuple[str, training_lib.Trained, dict]:
  """Trains every candidate of `config.best_of[group]`, keeps the best.

  "Best" is the held-out PGD check (`held_out_pgd`, the per-pass check's
  measure) of the parameters each run kept (the best epoch's with
  `select_best`, else the last), measured again here so a resumed run
  chooses the same. Ties go to the first candidate.

  Returns:
    (the chosen method's name, its `Trained`, a selection record
    {"candidates", "val_pgd_acc" per candidate, "chosen"}).
  """
  candidates = tuple(config.best_of[group])
  scores, kept = {}, {}
  model = get_model(config)
  for name in candidates:
    trained = train_method(name, config, train, val, workdir, mesh)
    scores[name] = held_out_pgd(config, model, trained.variables, val, mesh)
    kept[name] = trained
  chosen = max(candidates, key=lambda n: scores[n])
  print(f"[{group}] held-out PGD " + ", ".join(
      f"{n} {scores[n]:.4f}" for n in candidates) + f": chose {chosen}")
  return chosen, kept[chosen], {"candidates": list(candidates),
                                "val_pgd_acc": scores, "chosen": chosen,
                                "train_cost": {n: kept[n].cost
                                               for n in candidates}}


_ENSEMBLE_BUDGETS = ("attack_names", "apgd_steps", "apgd_restarts",
                     "num_targets", "fab_steps", "fab_restarts",
                     "square_queries", "square_p_init")


def ensemble_settings(overrides: dict) -> dict:
  """The ensemble's budgets: `evaluate_robustness`'s defaults + overrides."""
  params = inspect.signature(evaluation.evaluate_robustness).parameters
  out = {k: params[k].default for k in _ENSEMBLE_BUDGETS}
  out.update({k: v for k, v in overrides.items() if k in out})
  out["attack_names"] = list(out["attack_names"])
  return out


def evaluate_method(config: ml_collections.ConfigDict, model, variables,
                    test, key: jax.Array, mesh=None):
  """The test-set evaluation of one trained model, by `config.eval`.

  Clean, FGSM and PGD-`pgd_steps` x `pgd_restarts` (`evaluation.evaluate`)
  on the first `eval.pgd_examples` test images (all when absent), clean
  accuracy on the whole test set, the sanity checks on the first
  `eval.sanity_subset` of those, and with `eval.autoattack_examples` the
  AutoAttack-style ensemble (`evaluation.evaluate_robustness`, options in
  `eval.autoattack`) on the first that many. Keys: PGD and FGSM
  `fold_in(key, 1000)`, checks `fold_in(key, 2000)`, ensemble
  `fold_in(key, 3000)`.

  Returns:
    (results {"clean_acc" (whole test set), "fgsm_acc", "pgd_acc",
    "pgd_steps", "pgd_restarts"}, the `SanityCheck`s, extra {"clean_examples",
    "pgd_examples", "eval_seconds", and with the ensemble "autoattack_acc",
    "autoattack_examples", "autoattack"}).
  """
  ec = config.eval
  x, y = test
  n_pgd = min(ec.get("pgd_examples") or len(x), len(x))
  xs, ys = x[:n_pgd], y[:n_pgd]
  t0 = time.perf_counter()
  res = evaluation.evaluate(
      model.apply, variables, xs, ys, jax.random.fold_in(key, 1000),
      eps=config.eps, pgd_steps=ec.pgd_steps, pgd_step_size=ec.pgd_step_size,
      pgd_restarts=ec.pgd_restarts, batch_size=ec.batch_size,
      unroll=ec.unroll, progress=config.progress, mesh=mesh)
  extra = {"clean_examples": len(x), "pgd_examples": n_pgd}
  n_aa = min(ec.get("autoattack_examples") or 0, len(x))
  ensemble = None
  if n_aa:
    ak = dict(ec.get("autoattack") or {})
    ensemble = evaluation.evaluate_robustness(
        model.apply, variables, x[:n_aa], y[:n_aa],
        jax.random.fold_in(key, 3000), eps=config.eps,
        batch_size=ec.batch_size, unroll=ec.unroll,
        progress=config.progress, **ak)
    extra.update(autoattack_acc=ensemble["robust_acc"],
                 autoattack_examples=n_aa,
                 autoattack={k: ensemble[k] for k in (
                     "per_attack", "attacked", "seconds", "attacks")})
    extra["autoattack"]["settings"] = ensemble_settings(ak)
  extra["eval_seconds"] = time.perf_counter() - t0
  checks = evaluation.sanity_checks(
      model.apply, variables, xs, ys, jax.random.fold_in(key, 2000), res,
      eps=config.eps, pgd_steps=ec.pgd_steps, pgd_step_size=ec.pgd_step_size,
      pgd_restarts=ec.pgd_restarts, subset=ec.sanity_subset, batch_size=ec.batch_size, unroll=ec.unroll,
      ensemble=(ensemble if ensemble is not None and
                n_aa == min(ec.sanity_subset, n_pgd) else None))
  if n_pgd < len(x):
    res = dict(res, clean_acc=evaluation.accuracy(
        model.apply, variables, x, y, batch_size=ec.batch_size, mesh=mesh))
  return res, checks, extra
