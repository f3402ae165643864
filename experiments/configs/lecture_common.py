"""Shared fields of the lecture experiments' configs (transferability,
ensemble transfer, linearity, adversarial training of linear models).

Not a runnable config by itself. A network section (`net`) holds `model` (a
`jaxadv.models` name), `seed` (weights and data order), `epochs`,
`learning_rate`, `step` ("natural", "fgsm" or "pgd" adversarial training,
`experiments.common.STEPS`), and for the adversarial steps `eps`,
`step_size`, `steps`; it trains with Adam and a cyclic learning rate.
"""

import ml_collections


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
  # Convolution kernels (`jaxadv.models.get_model(kernels=...)`): these
  # are CPU-scale MNIST configs, so the XLA:CPU kernels (the ones the
  # committed results were computed with); "lax" on GPU/TPU.
  config.kernels = "xla_cpu"
  config.batch_size = 128
  config.eval_batch_size = 500
  config.checkpoint_every = 500
  config.progress = True
  return config
