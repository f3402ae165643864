"""Training of the Mixup Inference experiment's models (mixup, IAT)."""

from __future__ import annotations

import jax
import ml_collections

from experiments import common
from jaxadv import models


def train_model(name: str, config: ml_collections.ConfigDict, x, y,
                workdir: str, num_classes: int, mesh=None):
  """Trains model `name` (config section `config[name]`); resumable; data
  parallel over `mesh` when given.

  Returns:
    (model, variables, TrainResult).
  """
  model = models.get_model(config.model, kernels=config.kernels,
                           num_classes=num_classes)
  trained = common.train_model(
      name, config[name], model, x, y,
      key=jax.random.fold_in(jax.random.key(config.seed),
                             list(config.models).index(name)),
      batch_size=config.batch_size, seed=config.seed, workdir=workdir,
      checkpoint_every=config.checkpoint_every, desc=f"train {name}",
      progress=config.progress, mesh=mesh)
  return model, trained.variables, trained.result
