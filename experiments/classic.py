"""Shared pieces of the lecture experiments (transferability, ensemble transfer,
linearity, adversarial training of linear models): data, training one
network from a config section, and the absl entry point.

A network section of a config holds `model` (a `jaxadv.models` name), `seed`,
`epochs`, `learning_rate`, `step` ("natural", "fgsm" or "pgd" adversarial
training), and for the adversarial steps `eps`, `step_size`, `steps`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np
import optax

from experiments.robust_training import _json_dump
from jaxadv import data
from jaxadv import models
from jaxadv import training

# FGSM AT (Goodfellow et al., 2015) is one PGD step of size eps from x.
STEPS = {
    "natural": lambda c: training.natural_step(),
    "fgsm": lambda c: training.pgd_at_step(steps=1, random_start=False),
    "pgd": lambda c: training.pgd_at_step(steps=c.steps),
}


def net(model: str, *, seed: int = 0, epochs: float = 2.0,
        learning_rate: float = 1e-3, step: str = "natural", eps: float = 0.0,
        step_size: float = 0.0, steps: int = 0,
        eps_ramp_epochs: float = 0.0) -> ml_collections.ConfigDict:
  """A network section for a config (see the module docstring)."""
  return ml_collections.ConfigDict(dict(
      model=model, seed=seed, epochs=epochs, learning_rate=learning_rate,
      step=step, eps=eps, step_size=step_size, steps=steps,
      eps_ramp_epochs=eps_ramp_epochs))


def base_config() -> ml_collections.ConfigDict:
  """Data fields every lecture experiment shares."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.dataset = "mnist"
  config.data_dir = ml_collections.config_dict.placeholder(str)
  config.manual_dir = ml_collections.config_dict.placeholder(str)
  config.train_limit = ml_collections.config_dict.placeholder(int)
  config.test_limit = ml_collections.config_dict.placeholder(int)
  config.batch_size = 128
  config.eval_batch_size = 500
  config.checkpoint_every = 500
  config.progress = True
  return config


def load_data(config: ml_collections.ConfigDict):
  """((x_train, y_train), (x_test, y_test)) with the config's limits."""
  kw = dict(data_dir=config.data_dir, manual_dir=config.manual_dir)
  train = data.load(config.dataset, "train", limit=config.train_limit, **kw)
  test = data.load(config.dataset, "test", limit=config.test_limit, **kw)
  return train, test


def train_net(name: str, nc: ml_collections.ConfigDict, x: np.ndarray,
              y: np.ndarray, config: ml_collections.ConfigDict,
              workdir: str) -> tuple[Any, dict, training.TrainResult]:
  """Trains the network of section `nc` with Adam (cyclic lr); resumable.

  Returns:
    (model, variables, TrainResult).
  """
  if nc.step not in STEPS:
    raise ValueError(f"unknown step {nc.step!r} for {name!r}; valid: "
                     f"{sorted(STEPS)}.")
  model = models.get_model(nc.model,
                           num_classes=data.info(config.dataset).num_classes)
  per_epoch = data.num_batches(len(x), config.batch_size)
  num_batches = max(1, int(round(nc.epochs * per_epoch)))
  lr = training.make_schedule("cyclic", total_steps=num_batches,
                              learning_rate=nc.learning_rate)
  state = training.create_train_state(
      model, jax.random.key(nc.seed), (1,) + tuple(x.shape[1:]),
      optax.adam(lr), eps=nc.eps, step_size=nc.step_size,
      eps_ramp_steps=int(round(nc.eps_ramp_epochs * per_epoch)))
  result = training.fit(
      state, STEPS[nc.step](nc), x, y, batch_size=config.batch_size,
      num_batches=num_batches, seed=nc.seed,
      workdir=os.path.join(workdir, "checkpoints", name),
      checkpoint_every=config.checkpoint_every, desc=f"train {name}",
      progress=config.progress)
  return model, training.variables_of(result.state), result


def json_load(path: str, default: Any) -> Any:
  """The JSON at `path`, or `default` when there is none yet."""
  if not os.path.exists(path):
    return default
  with open(path) as f:
    return json.load(f)


def save_results(workdir: str, results: Any, table: str) -> None:
  """Writes `results.json` (atomically) and the Markdown `results.md`."""
  _json_dump(results, os.path.join(workdir, "results.json"))
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(table)
  print(table)


def pyplot():
  """matplotlib.pyplot with the non-interactive Agg backend."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def run_main(train_and_evaluate: Callable[[ml_collections.ConfigDict, str],
                                          Any]) -> None:
  """The absl entry point: `--config=... --workdir=...`."""
  flags.DEFINE_string("workdir", None, "Output directory.")
  config_flags.DEFINE_config_file("config", None, "Experiment configuration.",
                                  lock_config=True)
  flags.mark_flags_as_required(["config", "workdir"])

  def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)

  app.run(main)
