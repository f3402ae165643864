"""Data, the one name -> training-step table, and the train-one-model helper.

A config section that trains one model holds `epochs` (epoch-equivalents of
optimizer updates: free AT with m replays passes over the data `epochs / m`
times; or `total_updates`, optimizer updates, when set), `learning_rate`,
optionally `step` (a key of `STEPS`; default the
section's name), `schedule` ("cyclic" default, "piecewise", "constant";
with `peak_fraction`, default 0.4, and `boundaries`, default (0.5, 0.75)),
`optimizer` ("adam" default, "sgd" with `weight_decay`, `momentum`
(default 0.9) and `weight_decay_on`, "all" (default) or "kernels", see
`jaxadv.training.optimizers`), `eps`, `step_size`, `eps_ramp_epochs`,
`augment` (None default, or "crop_flip" with `augment_padding`, default
4), `attack_bn` ("update" default, "batch", "eval": the BatchNorm mode of
FGSM-RS's and PGD's attack passes, `jaxadv.training.ATTACK_BN`; models
without BatchNorm ignore it),
`compute_dtype` (None = float32, or "bfloat16": mixed precision, float32
master weights) and the step's own fields (`replays`, `steps`, `alpha`,
`adv_ratio`, `xi`, `iterations`, `unroll`). Absent optional fields keep
the defaults, so older sections (MNIST: no augmentation) train as before.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxadv import augment as augment_lib
from jaxadv import data
from jaxadv import models
from jaxadv import training

Section = Mapping[str, Any]  # a ConfigDict section or a plain dict


def _unroll(c: Section) -> Optional[bool]:
  """The section's loop form: True / False, or None = the backend default."""
  return c.get("unroll")


# Training augmentations by name: section -> `(key, x) -> x`.
AUGMENTATIONS: dict[str, Callable[[Section], Callable]] = {
    # Random crop of the zero-padded image + horizontal flip: padding 4 in
    # Wong et al.'s scripts (`RandomCrop(32, padding=4)`), 2 in Madry et
    # al.'s and Shafahi et al.'s TF code (`resize_image_with_crop_or_pad`
    # to 36 x 36).
    "crop_flip": lambda c: functools.partial(
        augment_lib.crop_flip, padding=c.get("augment_padding") or 4),
}


def augmentation(c: Section) -> Optional[Callable]:
  """The section's training augmentation (`augment`), or None (default)."""
  name = c.get("augment")
  if not name:
    return None
  if name not in AUGMENTATIONS:
    raise ValueError(f"unknown augmentation {name!r}; valid: "
                     f"{sorted(AUGMENTATIONS)}.")
  return AUGMENTATIONS[name](c)


def _attack_bn(c: Section) -> str:
  """The section's BatchNorm mode of attack passes; default "update"."""
  return c.get("attack_bn") or "update"


COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class Step:
  """A training step by name: its builder and its cost per minibatch.

  Attributes:
    build: section -> `(state, batch, key) -> (state, metrics)`.
    updates: optimizer updates per minibatch (free AT's replays).
    passes: forward-backward passes per minibatch.
  """
  build: Callable[[Section], training.steps.StepFn]
  updates: Callable[[Section], int]
  passes: Callable[[Section], int]


_ONE = lambda c: 1  # noqa: E731

# The one name -> training-step table of the experiments.
STEPS: dict[str, Step] = {
    "natural": Step(lambda c: training.natural_step(augment=augmentation(c)),
                    _ONE, _ONE),
    "fgsm_rs": Step(lambda c: training.fgsm_rs_step(
        attack_bn=_attack_bn(c), augment=augmentation(c)), _ONE, lambda c: 2),
    # FGSM AT (Goodfellow et al., 2015): one PGD step of size eps from x.
    "fgsm": Step(lambda c: training.pgd_at_step(
        steps=1, random_start=False, attack_bn=_attack_bn(c),
        augment=augmentation(c)), _ONE, lambda c: 2),
    "pgd": Step(lambda c: training.pgd_at_step(
        steps=c["steps"], unroll=_unroll(c), attack_bn=_attack_bn(c),
        augment=augmentation(c)), _ONE, lambda c: c["steps"] + 1),
    "free": Step(lambda c: training.free_at_step(
        replays=c["replays"], unroll=_unroll(c), augment=augmentation(c)),
                 lambda c: c["replays"], lambda c: c["replays"]),
    "mixup": Step(lambda c: training.mixup_step(
        alpha=c["alpha"], augment=augmentation(c)), _ONE, _ONE),
    "iat": Step(lambda c: training.iat_step(
        alpha=c["alpha"], steps=c["steps"], adv_ratio=c["adv_ratio"],
        unroll=_unroll(c), attack_bn=c.get("attack_bn") or "batch",
        augment=augmentation(c)), _ONE,
                lambda c: c["steps"] + 2),
    # N-FGSM (de Jorge et al., 2022): noise U(-k eps, k eps), no projection.
    "n_fgsm": Step(lambda c: training.n_fgsm_step(
        noise=c.get("noise", 2.0), clip=c.get("clip"),
        attack_bn=_attack_bn(c), augment=augmentation(c)), _ONE,
                   lambda c: 2),
    # GradAlign (Andriushchenko & Flammarion, 2020): FGSM + the alignment
    # penalty; its double backprop costs about three more passes.
    "grad_align": Step(lambda c: training.grad_align_step(
        lam=c["grad_align_lambda"], attack_bn=_attack_bn(c),
        augment=augmentation(c)), _ONE, lambda c: 5),
    # VAT's eps comes from `state.attack_params` (traced).
    "vat": Step(lambda c: training.vat_step(
        xi=c["xi"], iterations=c["iterations"], alpha=c["alpha"]), _ONE,
                lambda c: c["iterations"] + 2),
}

OPTIMIZERS = {
    "adam": lambda lr, c: optax.adam(lr),
    # SGD with coupled L2 decay (`jaxadv.training.optimizers.sgd`); the
    # default "all" is `chain(add_decayed_weights(wd), sgd(lr, 0.9))`.
    "sgd": lambda lr, c: training.optimizers.sgd(
        lr, momentum=c.get("momentum", 0.9), weight_decay=c["weight_decay"],
        decay=c.get("weight_decay_on") or "all"),
}


def get_step(name: str) -> Step:
  """`STEPS[name]`, with the valid names in the error."""
  if name not in STEPS:
    raise ValueError(f"unknown training step {name!r}; valid: "
                     f"{sorted(STEPS)}.")
  return STEPS[name]


# --------------------------------------------------------------- data ----

def load_train_test(config: ml_collections.ConfigDict):
  """((x_train, y_train), (x_test, y_test)) with the config's limits."""
  kw = dict(data_dir=config.data_dir, manual_dir=config.manual_dir)
  train = data.load(config.dataset, "train", limit=config.get("train_limit"),
                    **kw)
  test = data.load(config.dataset, "test", limit=config.get("test_limit"),
                   **kw)
  return train, test


def load_train_val_test(config: ml_collections.ConfigDict):
  """Train / validation / test arrays; `config.val_size` validation images
  are held out of train (a permutation seeded with `config.seed`)."""
  (x, y), test = load_train_test(config)
  perm = np.random.default_rng(config.seed).permutation(len(x))
  val, tr = perm[:config.val_size], perm[config.val_size:]
  return (x[tr], y[tr]), (x[val], y[val]), test


# ------------------------------------------------ benchmark modes ----

def parse_mode(mode: str) -> tuple[str, int, Optional[bool]]:
  """"free:8@fori" -> ("free", 8, False); "natural" -> ("natural", 0, None).

  The optional "@unroll" / "@fori" picks the replay / attack loop form
  (`unroll=True` / `False`); without it the backend default is used
  (`jaxadv.loops.default_unroll()`).

  Raises:
    ValueError: an unknown loop suffix.
  """
  mode, _, loop = mode.partition("@")
  forms = {"": None, "unroll": True, "fori": False}
  if loop not in forms:
    raise ValueError(f"unknown loop form {loop!r} in mode; valid: "
                     "'@unroll', '@fori' or none.")
  name, _, arg = mode.partition(":")
  return name, int(arg) if arg else 0, forms[loop]


def mode_section(mode: str) -> dict:
  """The step section of a mode string."""
  name, k, unroll = parse_mode(mode)
  return {"step": name, "replays": k, "steps": k, "unroll": unroll}


def build_mode(mode: str, section: Optional[Section] = None):
  """(step fn, optimizer updates per call, forward-backward passes per call).

  `section` adds step fields to the mode's (e.g. {"augment": "crop_flip",
  "attack_bn": "update"} for the CIFAR-10 recipes); the mode's own step,
  replays, steps and loop form win.
  """
  c = dict(section or {}, **mode_section(mode))
  if c["step"] not in ("natural", "fgsm_rs", "free", "pgd"):
    raise ValueError(f"unknown training mode {mode!r}")
  step = get_step(c["step"])
  return step.build(c), step.updates(c), step.passes(c)


def mode_state(model, mode: str, x_shape, eps: float, *,
               step_sizes: Optional[Mapping[str, float]] = None,
               tx: Optional[optax.GradientTransformation] = None
               ) -> training.TrainState:
  """A fresh training state for timing `mode`: `tx` (default Adam 1e-3),
  the step sizes of `step_sizes` (default FGSM-RS 1.25 eps, PGD 0.01) and
  free AT's delta of the batch shape."""
  name = parse_mode(mode)[0]
  sizes = {"fgsm_rs": 1.25 * eps, "pgd": 0.01, **dict(step_sizes or {})}
  return training.create_train_state(
      model, jax.random.key(0), (1,) + tuple(x_shape[1:]),
      optax.adam(1e-3) if tx is None else tx,
      eps=eps, step_size=sizes.get(name, 0.0),
      delta_shape=tuple(x_shape) if name == "free" else None)


# ----------------------------------------------------- train one model ----

@dataclasses.dataclass
class Trained:
  """What `train_model` returns.

  Attributes:
    result: `training.fit`'s `TrainResult`.
    variables: `training.variables_of(result.state)`, ready to evaluate.
    cost: {"train_steps" (optimizer updates), "fwd_bwd_passes",
      "train_seconds", "compile_seconds"}.
  """
  result: training.TrainResult
  variables: Any
  cost: dict


def run_length(section: Section, n: int, batch_size: int,
               name: Optional[str] = None) -> tuple[int, int, int]:
  """(updates per minibatch, minibatches per pass, minibatches of the run)
  of recipe `section` on `n` examples: `epochs` count updates (free AT
  makes `replays` per minibatch), or `total_updates` gives them outright.
  `name` is the step when the section names none."""
  updates = get_step(section.get("step") or name).updates(section)
  per_epoch = data.num_batches(n, batch_size)
  if section.get("total_updates"):  # the references' 80k-update schedules
    return updates, per_epoch, max(1, int(section["total_updates"]) // updates)
  return updates, per_epoch, max(1, int(round(
      section["epochs"] / updates * per_epoch)))


def train_model(name: str, section: Section, model, x: np.ndarray,
                y: np.ndarray, *, key: jax.Array, batch_size: int, seed: int,
                eps: Optional[float] = None, workdir: Optional[str] = None,
                checkpoint_every: int = 500,
                epoch_fn: Optional[Callable] = None,
                select: Optional[str] = None,
                eval_fn: Optional[Callable] = None,
                eval_every: Optional[int] = None,
                step_fn: Optional[training.steps.StepFn] = None,
                desc: Optional[str] = None, progress: bool = True,
                mesh=None, log_every: int = 10,
                guard: Optional[training.CollapseGuard] = None) -> Trained:
  """Trains `model` on (x, y) with the recipe of `section`; resumable.

  Args:
    name: the model's name (checkpoint folder `workdir/checkpoints/name`,
      and the step when `section` has no `step`).
    section: the recipe (module docstring).
    model: a `jaxadv.models` module.
    x, y: training images and labels.
    key: parameter-initialisation key.
    batch_size: minibatch size (last partial batch dropped).
    seed: data-order seed (`training.fit`).
    eps: attack budget; default `section["eps"]` (0 when absent).
    workdir: the experiment's folder; None = no checkpoints. With it, the
      run also writes its metrics to `workdir/metrics/name`
      (`metrics.jsonl` and TensorBoard event files, `jaxadv.metrics`; a
      "step" line every `log_every` minibatches, with the learning rate).
    checkpoint_every, epoch_fn, select, eval_fn, eval_every, desc, progress,
      mesh: as `training.fit` (`desc` defaults to `name`).
    step_fn: a step to use instead of the table's (e.g. wrapped); its cost
      is still counted from the table.
    guard: a `training.CollapseGuard` for `fit`, or None.

  Returns:
    A `Trained`.
  """
  step = get_step(section.get("step") or name)
  passes = step.passes(section)
  updates, per_epoch, num_batches = run_length(section, len(x), batch_size,
                                               name)
  lr = training.make_schedule(
      section.get("schedule") or "cyclic", total_steps=num_batches * updates,
      learning_rate=section["learning_rate"],
      boundaries=tuple(section.get("boundaries") or (0.5, 0.75)),
      peak_fraction=section.get("peak_fraction") or 0.4)
  optimizer = OPTIMIZERS[section.get("optimizer") or "adam"](lr, section)
  free = (section.get("step") or name) == "free"
  state = training.create_train_state(
      model, key, (1,) + tuple(x.shape[1:]), optimizer,
      eps=section.get("eps", 0.0) if eps is None else eps,
      step_size=section.get("step_size", 0.0),
      eps_ramp_steps=int(round(section.get("eps_ramp_epochs", 0.0) *
                               per_epoch)),
      delta_shape=(batch_size,) + tuple(x.shape[1:]) if free else None,
      compute_dtype=COMPUTE_DTYPES[section.get("compute_dtype") or "float32"])
  fit_kw = {}
  if eval_fn is not None:
    fit_kw = dict(eval_fn=eval_fn, eval_every=eval_every)
  if guard is not None:
    fit_kw["guard"] = guard
  result = training.fit(
      state, step_fn or step.build(section), x, y, batch_size=batch_size,
      num_batches=num_batches, seed=seed,
      workdir=(os.path.join(workdir, "checkpoints", name) if workdir
               else None),
      checkpoint_every=checkpoint_every, epoch_fn=epoch_fn, select=select,
      desc=desc or name, progress=progress, mesh=mesh,
      metrics_dir=(os.path.join(workdir, "metrics", name) if workdir
                   else None),
      log_every=log_every, learning_rate=lr, **fit_kw)
  cost = {"train_steps": result.batches * updates,
          "fwd_bwd_passes": result.batches * passes,
          "train_seconds": result.train_seconds,
          "compile_seconds": result.compile_seconds}
  return Trained(result, training.variables_of(result.state), cost)


def train_net(name: str, section: Section, x: np.ndarray, y: np.ndarray,
              config: ml_collections.ConfigDict, workdir: Optional[str]):
  """Trains the lecture network of `section` (`configs/lecture_common.py`:
  its `model`, `seed` for the weights and the data order, Adam with a
  cyclic learning rate) with `config`'s batch size and kernels.

  Returns:
    (model, variables, TrainResult).
  """
  model = models.get_model(section["model"], kernels=config.kernels,
                           num_classes=data.info(config.dataset).num_classes)
  trained = train_model(
      name, section, model, x, y, key=jax.random.key(section["seed"]),
      batch_size=config.batch_size, seed=section["seed"], workdir=workdir,
      checkpoint_every=config.checkpoint_every, desc=f"train {name}",
      progress=config.progress)
  return model, trained.variables, trained.result
