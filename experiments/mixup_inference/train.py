"""Training of the Mixup Inference experiment's models (mixup, IAT)."""

from __future__ import annotations

import jax
import ml_collections

from experiments import common


def train_model(name: str, config: ml_collections.ConfigDict, x, y,
                workdir: str, num_classes: int, mesh=None):
  """Trains model `name` (config section `config[name]`); resumable; data
  parallel over `mesh` when given.

  Returns:
    (model, variables, TrainResult).
  """
  del num_classes  # the dataset's, as `get_model` reads it
  # The config's model, `model_kwargs` and input normalisation.
  model = common.robust.get_model(config)
  trained = common.train_model(
      name, config[name], model, x, y,
      key=jax.random.fold_in(jax.random.key(config.seed),
                             list(config.models).index(name)),
      batch_size=config.batch_size, seed=config.seed, workdir=workdir,
      checkpoint_every=config.checkpoint_every, desc=f"train {name}",
      progress=config.progress, mesh=mesh)
  return model, trained.variables, trained.result
