"""Bad input fails loudly: one table of (function, bad input, expected error).

Every public function is called with each kind of bad input it can get and
must raise the expected `ValueError`/`TypeError` whose message names the
argument. The same table prints the README's markdown table:

    PYTHONPATH=. python tests/bad_input_test.py
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxadv import attacks
from jaxadv import data
from jaxadv import defenses
from jaxadv import evaluation
from jaxadv import losses
from jaxadv import models
from jaxadv import training

B = 16


class _Tiny(nn.Module):
  """A linear classifier: a cheap stand-in for the registered models."""

  @nn.compact
  def __call__(self, x, train=False):
    del train
    return nn.Dense(10, name="fc")(x.reshape((x.shape[0], -1)))


@functools.lru_cache(maxsize=None)
def _env():
  """Real MNIST inputs and a tiny model, built once."""
  x, y = data.load("mnist", "test", limit=200)
  x, y = x[:B * 4], y[:B * 4]
  model = _Tiny()
  state = training.create_train_state(model, jax.random.key(0),
                                      (1, 28, 28, 1), optax.sgd(0.1))
  variables = {"params": jax.tree.map(jnp.copy, state.params)}
  logits_fn = lambda v: model.apply(variables, v)
  pool = defenses.make_pool(x, y, size=10, key=jax.random.key(0),
                            num_classes=10)
  return {"x": x[:B], "y": y[:B], "xs": x, "ys": y, "model": model,
          "state": state, "variables": variables, "apply": model.apply,
          "logits_fn": logits_fn,
          "loss_fn": losses.make_loss_fn(logits_fn, "ce"),
          "keyed_loss_fn": lambda v, t, k: losses.make_loss_fn(
              logits_fn, "ce")(v, t),
          "pool": pool, "key": jax.random.key(0)}


def _nan(x):
  x = np.array(x)
  x[0, 0, 0, 0] = np.nan
  return x


# Bad versions of the image batch `x` (name -> (transform, error type)).
BAD_X = {
    "0-255 float pixels": (lambda x: x * 255.0, ValueError),
    "uint8 pixels": (lambda x: (x * 255).astype(np.uint8), TypeError),
    "NaN pixel": (_nan, ValueError),
    "negative pixels": (lambda x: x - 0.5, ValueError),
    "rank 1 (one flat image)": (lambda x: x[0].ravel(), ValueError),
}
# Bad labels `y` for a batch of B (name -> (transform, error type)).
BAD_Y = {
    "label 10 of 10 classes": (lambda y: np.where(np.arange(len(y)) == 0, 10, y),
                               ValueError),
    "negative label": (lambda y: np.where(np.arange(len(y)) == 0, -1, y),
                       ValueError),
    "float labels": (lambda y: y.astype(np.float32), TypeError),
    "wrong length": (lambda y: y[:-1], ValueError),
}


@dataclasses.dataclass(frozen=True)
class Case:
  function: str      # the public function, as users call it
  bad_input: str     # what is wrong
  call: Callable     # env -> None, expected to raise
  error: type        # ValueError or TypeError
  names: str         # the argument the message must name


def _attack_calls():
  """name -> call(env, **overrides) for every attack in jaxadv.attacks."""
  def kw(e, o):
    base = dict(x=e["x"], y=e["y"])
    base.update(o)
    return base

  return {
      "attacks.fgsm": lambda e, **o: attacks.fgsm(
          e["loss_fn"], **kw(e, {"eps": 0.1, **o})),
      "attacks.fgm": lambda e, **o: attacks.fgm(
          e["loss_fn"], **kw(e, {"eps": 0.1, "norm": "l2", **o})),
      "attacks.fgsm_rs": lambda e, **o: attacks.fgsm_rs(
          e["loss_fn"], key=e["key"], **kw(e, {"eps": 0.1, **o})),
      "attacks.bim": lambda e, **o: attacks.bim(
          e["loss_fn"], **kw(e, {"eps": 0.1, "step_size": 0.01, "steps": 2,
                                 **o})),
      "attacks.pgd": lambda e, **o: attacks.pgd(
          e["loss_fn"], key=e["key"], **kw(e, {"eps": 0.1, "step_size": 0.01,
                                               "steps": 2, **o})),
      "attacks.eot_pgd": lambda e, **o: attacks.eot_pgd(
          e["keyed_loss_fn"], key=e["key"], **kw(e, {
              "eps": 0.1, "step_size": 0.01, "steps": 2, **o})),
  }


def _cases() -> list[Case]:
  cases = []
  add = lambda *a: cases.append(Case(*a))
  # --- attacks: x, y, eps, step_size, steps, restarts, norm --------------
  for name, call in _attack_calls().items():
    for bad, (f, err) in BAD_X.items():
      add(name, f"x: {bad}", lambda e, c=call, f=f: c(e, x=f(e["x"])), err, "x")
    for bad, (f, err) in BAD_Y.items():
      add(name, f"y: {bad}", lambda e, c=call, f=f: c(e, y=f(e["y"])), err, "y")
    add(name, "eps = -0.1", lambda e, c=call: c(e, eps=-0.1), ValueError, "eps")
    add(name, "eps = NaN", lambda e, c=call: c(e, eps=float("nan")),
        ValueError, "eps")
    if name in ("attacks.bim", "attacks.pgd", "attacks.eot_pgd",
                "attacks.fgsm_rs"):
      add(name, "step_size = -0.01", lambda e, c=call: c(e, step_size=-0.01),
          ValueError, "step_size")
    if name in ("attacks.bim", "attacks.pgd", "attacks.eot_pgd"):
      add(name, "steps = -1", lambda e, c=call: c(e, steps=-1), ValueError,
          "steps")
      add(name, "steps = 2.5 (not an int)", lambda e, c=call: c(e, steps=2.5),
          TypeError, "steps")
    if name != "attacks.fgsm":
      add(name, 'norm = "l1"', lambda e, c=call: c(e, norm="l1"), ValueError,
          "norm")
  add("attacks.pgd", "restarts = 0",
      lambda e: _attack_calls()["attacks.pgd"](e, restarts=0), ValueError,
      "restarts")
  add("attacks.eot_pgd", "eot_samples = 0",
      lambda e: _attack_calls()["attacks.eot_pgd"](e, eot_samples=0),
      ValueError, "eot_samples")
  add("attacks.pgd", 'unroll = "while"',
      lambda e: _attack_calls()["attacks.pgd"](e, unroll="while"), TypeError,
      "unroll")
  # --- losses ---------------------------------------------------------------
  logits = lambda e: e["logits_fn"](e["x"])
  add("losses.make_loss_fn", 'loss = "mse"',
      lambda e: losses.make_loss_fn(e["logits_fn"], "mse"), ValueError, "loss")
  add("losses.make_loss_fn(...)(x, y)", "y: label 10 of 10 classes",
      lambda e: e["loss_fn"](e["x"], BAD_Y["label 10 of 10 classes"][0](
          e["y"])), ValueError, "y")
  for fn in ("cross_entropy", "cw_margin"):
    add(f"losses.{fn}", "logits: rank 1",
        lambda e, fn=fn: getattr(losses, fn)(logits(e)[0], e["y"][:1]),
        ValueError, "logits")
    add(f"losses.{fn}", "y: float labels",
        lambda e, fn=fn: getattr(losses, fn)(logits(e), e["y"] * 1.0),
        TypeError, "y")
    add(f"losses.{fn}", "y: label 10 of 10 classes",
        lambda e, fn=fn: getattr(losses, fn)(
            logits(e), BAD_Y["label 10 of 10 classes"][0](e["y"])),
        ValueError, "y")
  add("losses.soft_cross_entropy", "targets: shape [B] instead of [B, C]",
      lambda e: losses.soft_cross_entropy(logits(e), e["y"] * 1.0),
      ValueError, "targets")
  # --- models ---------------------------------------------------------------
  add("models.get_model", 'name = "resnet101"',
      lambda e: models.get_model("resnet101"), ValueError, "name")
  add("models.init_model", "input_shape = (28, 28, 1)",
      lambda e: models.init_model(models.get_model("fast_at_mnist"),
                                  e["key"], (28, 28, 1)),
      ValueError, "input_shape")
  add("models.FastATMNIST.apply", "x: rank 3 [H, W, C]",
      lambda e: models.FastATMNIST().init(e["key"], e["x"][0]), ValueError, "x")
  add("models.FastATMNIST.apply", "x: uint8 pixels",
      lambda e: models.FastATMNIST().init(
          e["key"], (e["x"] * 255).astype(np.uint8)), TypeError, "x")
  # --- training -------------------------------------------------------------
  create = lambda e, **o: training.create_train_state(
      e["model"], e["key"], (1, 28, 28, 1), optax.sgd(0.1), **o)
  add("training.create_train_state", "eps = -0.3",
      lambda e: create(e, eps=-0.3), ValueError, "eps")
  add("training.create_train_state", "step_size = -0.01",
      lambda e: create(e, step_size=-0.01), ValueError, "step_size")
  add("training.create_train_state", "eps_ramp_steps = -5",
      lambda e: create(e, eps_ramp_steps=-5), ValueError, "eps_ramp_steps")
  add("training.pgd_at_step", "steps = -1",
      lambda e: training.pgd_at_step(steps=-1), ValueError, "steps")
  add("training.pgd_at_step", 'norm = "l1"',
      lambda e: training.pgd_at_step(steps=3, norm="l1"), ValueError, "norm")
  add("training.fgsm_rs_step", 'norm = "l1"',
      lambda e: training.fgsm_rs_step(norm="l1"), ValueError, "norm")
  add("training.free_at_step", "replays = 0",
      lambda e: training.free_at_step(replays=0), ValueError, "replays")
  add("training.mixup_step", "alpha = 0",
      lambda e: training.mixup_step(alpha=0.0), ValueError, "alpha")
  add("training.iat_step", "adv_ratio = 1.5",
      lambda e: training.iat_step(adv_ratio=1.5), ValueError, "adv_ratio")
  add("training.iat_step", "steps = -1",
      lambda e: training.iat_step(steps=-1), ValueError, "steps")
  add("training.make_schedule", 'name = "cosine"',
      lambda e: training.make_schedule("cosine", total_steps=10,
                                       learning_rate=0.1), ValueError,
      "schedule")
  add("training.cyclic", "total_steps = 0",
      lambda e: training.cyclic(0, 0.1), ValueError, "total_steps")

  def fit(e, **o):
    kw = dict(x=e["xs"], y=e["ys"], batch_size=8, num_batches=2, seed=0,
              progress=False)
    kw.update(o)
    state = jax.tree.map(jnp.copy, e["state"])  # fit donates its state
    return training.fit(state, training.natural_step(), **kw)

  for bad, (f, err) in BAD_X.items():
    add("training.fit", f"x: {bad}", lambda e, f=f: fit(e, x=f(e["xs"])), err,
        "x")
  for bad, (f, err) in BAD_Y.items():
    add("training.fit", f"y: {bad}", lambda e, f=f: fit(e, y=f(e["ys"])), err,
        "y")
  add("training.fit", "batch_size = 0", lambda e: fit(e, batch_size=0),
      ValueError, "batch_size")
  add("training.fit", "batch_size > len(x)", lambda e: fit(e, batch_size=1000),
      ValueError, "batch_size")
  add("training.fit", "num_batches = -1", lambda e: fit(e, num_batches=-1),
      ValueError, "num_batches")
  add("training.fit", "checkpoint_every = 0",
      lambda e: fit(e, checkpoint_every=0), ValueError, "checkpoint_every")
  add("training.fit", "seed = -1", lambda e: fit(e, seed=-1), ValueError,
      "seed")
  # --- evaluation -----------------------------------------------------------
  ev = lambda fn, e, **o: fn(e["apply"], e["variables"], **{
      "x": e["x"], "y": e["y"], **o})
  rob = lambda e, **o: ev(evaluation.robust_accuracy, e, **{
      "key": e["key"], "attack": "pgd", "eps": 0.1, "step_size": 0.01,
      "steps": 1, "batch_size": 8, **o})
  for bad, (f, err) in BAD_X.items():
    add("evaluation.accuracy", f"x: {bad}",
        lambda e, f=f: ev(evaluation.accuracy, e, x=f(e["x"])), err, "x")
    add("evaluation.robust_accuracy", f"x: {bad}",
        lambda e, f=f: rob(e, x=f(e["x"])), err, "x")
  for bad, (f, err) in BAD_Y.items():
    add("evaluation.accuracy", f"y: {bad}",
        lambda e, f=f: ev(evaluation.accuracy, e, y=f(e["y"])), err, "y")
    add("evaluation.robust_accuracy", f"y: {bad}",
        lambda e, f=f: rob(e, y=f(e["y"])), err, "y")
  add("evaluation.predict", "batch_size = 0",
      lambda e: evaluation.predict(e["apply"], e["variables"], e["x"],
                                   batch_size=0), ValueError, "batch_size")
  add("evaluation.robust_accuracy", 'attack = "cw"',
      lambda e: rob(e, attack="cw"), ValueError, "attack")
  add("evaluation.robust_accuracy", "eps = -0.1", lambda e: rob(e, eps=-0.1),
      ValueError, "eps")
  add("evaluation.robust_accuracy", "steps = -1", lambda e: rob(e, steps=-1),
      ValueError, "steps")
  add("evaluation.robust_accuracy", "restarts = 0",
      lambda e: rob(e, restarts=0), ValueError, "restarts")
  add("evaluation.robust_accuracy", 'norm = "l1"',
      lambda e: rob(e, norm="l1"), ValueError, "norm")
  add("evaluation.robust_accuracy", 'loss = "mse"',
      lambda e: rob(e, loss="mse"), ValueError, "loss")
  add("evaluation.robust_accuracy", "step_size missing for PGD",
      lambda e: rob(e, step_size=None), ValueError, "step_size")
  ev_all = lambda e, **o: evaluation.evaluate(
      e["apply"], e["variables"], e["x"], e["y"], e["key"],
      **{"eps": 0.1, "pgd_steps": 1, "pgd_restarts": 1, **o})
  add("evaluation.evaluate", "eps = -0.1", lambda e: ev_all(e, eps=-0.1),
      ValueError, "eps")
  add("evaluation.evaluate", "pgd_restarts = 0",
      lambda e: ev_all(e, pgd_restarts=0), ValueError, "pgd_restarts")
  add("evaluation.evaluate", "pgd_steps = -1",
      lambda e: ev_all(e, pgd_steps=-1), ValueError, "pgd_steps")
  # --- defenses -------------------------------------------------------------
  pool = lambda e, **o: defenses.make_pool(**{
      "x": e["xs"], "y": e["ys"], "size": 10, "key": e["key"],
      "num_classes": 10, **o})
  add("defenses.make_pool", "a class missing (MI-PL needs every class)",
      lambda e: pool(e, y=np.where(e["ys"] == 3, 4, e["ys"])), ValueError,
      "class 3")
  add("defenses.make_pool", "size < num_classes", lambda e: pool(e, size=5),
      ValueError, "size")
  add("defenses.make_pool", "x: uint8 pixels",
      lambda e: pool(e, x=(e["xs"] * 255).astype(np.uint8)), TypeError, "x")
  add("defenses.make_pool", "y: label 10 of 10 classes",
      lambda e: pool(e, y=BAD_Y["label 10 of 10 classes"][0](e["ys"])),
      ValueError, "y")
  mi = lambda fn, e, **o: fn(e["logits_fn"], **{
      "x": e["x"], "pool": e["pool"], "key": e["key"], "num_samples": 2, **o})
  for fn_name in ("mi_pl", "mi_ol"):
    fn = getattr(defenses, fn_name)
    add(f"defenses.{fn_name}", "x: 0-255 float pixels",
        lambda e, fn=fn: mi(fn, e, x=e["x"] * 255.0), ValueError, "x")
    add(f"defenses.{fn_name}", "lam = 1.5",
        lambda e, fn=fn: mi(fn, e, lam=1.5), ValueError, "lam")
    add(f"defenses.{fn_name}", "num_samples = 0",
        lambda e, fn=fn: mi(fn, e, num_samples=0), ValueError, "num_samples")
    add(f"defenses.{fn_name}", "pool: a plain array",
        lambda e, fn=fn: mi(fn, e, pool=e["pool"].images), TypeError, "pool")
    add(f"defenses.{fn_name}", "pool: 5 classes for a 10-class model",
        lambda e, fn=fn: mi(fn, e, pool=defenses.SamplePool(
            e["pool"].images[:5])), ValueError, "pool")
  add("defenses.mi_combined", "lam_ol = 1.5",
      lambda e: defenses.mi_combined(e["logits_fn"], e["x"], e["pool"],
                                     e["key"], lam_ol=1.5), ValueError,
      "lam_ol")
  add("defenses.randomized_inference", 'transform = "jpeg"',
      lambda e: defenses.randomized_inference(
          e["logits_fn"], e["x"], e["key"], transform="jpeg"), ValueError,
      "transform")
  add("defenses.randomized_inference", "num_samples = 0",
      lambda e: defenses.randomized_inference(
          e["logits_fn"], e["x"], e["key"], transform="gaussian",
          num_samples=0), ValueError, "num_samples")
  add("defenses.gaussian_noise", "sigma = -0.05",
      lambda e: defenses.gaussian_noise(e["x"][0], e["key"], sigma=-0.05),
      ValueError, "sigma")
  add("defenses.random_resize_pad", "min_fraction = 1.5",
      lambda e: defenses.random_resize_pad(e["x"][0], e["key"],
                                           min_fraction=1.5), ValueError,
      "min_fraction")
  add("defenses.random_crop_resize", "image: a batch [B, H, W, C]",
      lambda e: defenses.random_crop_resize(e["x"], e["key"]), ValueError,
      "image")
  add("defenses.probs_loss_fn", 'loss = "mse"',
      lambda e: defenses.probs_loss_fn(lambda v, k: v, loss="mse"),
      ValueError, "loss")
  add("defenses.mi_average_perturbation_pgd", "num_partners = 0",
      lambda e: defenses.mi_average_perturbation_pgd(
          e["logits_fn"], e["x"], e["y"], e["pool"], e["key"], lam=0.5,
          eps=0.1, step_size=0.01, steps=1, num_partners=0), ValueError,
      "num_partners")
  add("defenses.ric", "y: wrong length",
      lambda e: defenses.ric(np.ones((4, 10)) / 10, np.ones((4, 10)) / 10,
                             np.zeros(3, np.int32)), ValueError, "y")
  # --- data -----------------------------------------------------------------
  add("data.load", 'name = "svhn"', lambda e: data.load("svhn", "train"),
      ValueError, "name")
  add("data.load", 'split = "valid"', lambda e: data.load("mnist", "valid"),
      ValueError, "split")
  add("data.load", "limit = -1", lambda e: data.load("mnist", "test", limit=-1),
      ValueError, "limit")
  bat = lambda e, **o: data.batches(**{"x": e["xs"], "y": e["ys"],
                                       "batch_size": 8, "seed": 0, **o})
  # data.batches is a generic array utility: no pixel-range check; its dtype
  # errors are ValueErrors (tests/data_test.py relies on them).
  add("data.batches", "x: uint8 pixels",
      lambda e: bat(e, x=(e["xs"] * 255).astype(np.uint8)), ValueError, "x")
  add("data.batches", "y: float labels",
      lambda e: bat(e, y=e["ys"] * 1.0), ValueError, "y")
  add("data.batches", "y: wrong length", lambda e: bat(e, y=e["ys"][:-1]),
      ValueError, "y")
  add("data.batches", "batch_size = 0", lambda e: bat(e, batch_size=0),
      ValueError, "batch_size")
  add("data.batches", "seed = -1", lambda e: bat(e, seed=-1), ValueError,
      "seed")
  return cases


CASES = _cases()


def _message(case: Case) -> tuple[type, str]:
  """Runs a case; returns (exception type, message) or (None, '')."""
  try:
    case.call(_env())
  except Exception as e:  # pylint: disable=broad-except
    return type(e), str(e)
  return type(None), ""


@pytest.mark.parametrize("case", CASES,
                         ids=[f"{c.function}|{c.bad_input}" for c in CASES])
def test_bad_input_raises_naming_the_argument(case):
  with pytest.raises(case.error) as info:
    case.call(_env())
  message = str(info.value)
  assert case.names in message, message


def markdown_table() -> str:
  """The README table: every bad input tried and the error it gets."""
  rows = ["| function | bad input | error raised: message |",
          "|---|---|---|"]
  for case in CASES:
    err, msg = _message(case)
    msg = " ".join(msg.split()).replace("|", "\\|")
    if len(msg) > 160:
      msg = msg[:157] + "..."
    rows.append(f"| `{case.function}` | {case.bad_input} | "
                f"`{err.__name__}`: {msg} |")
  return "\n".join(rows)


if __name__ == "__main__":
  print(markdown_table())
