"""DCGAN on MNIST / Fashion-MNIST (Goodfellow et al. 2014; Radford et al. 2016).

Non-saturating generator loss, k = 1 discriminator update per generator
update, Adam 2e-4 (b1 0.5) for both, batch 64, z ~ N(0, I_100). Sample
quality is judged by a classifier trained on the real images (the fast-AT
MNIST CNN, naturally trained); the saturating and non-saturating generator
gradients are compared early in training.

Run (about 15 min each on 2 shared CPU cores):
  python -m experiments.gan --config=experiments/configs/gan.py:mnist \
      --workdir=/tmp/gan_mnist
  python -m experiments.gan --config=experiments/configs/gan.py:fashion_mnist \
      --workdir=/tmp/gan_fashion_mnist
Smoke run (same pipeline, short training, < 5 minutes on 2 CPU cores):
  python -m experiments.gan --config=experiments/configs/gan.py:mnist,quick \
      --workdir=/tmp/gan_quick
"""

import ml_collections

_DATASETS = ("mnist", "fashion_mnist")
_VARIANTS = ("quick", "test")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: comma-separated dataset ("mnist" default, "fashion_mnist") and
  variant ("quick": short training; "test": tiny, for the test suite)."""
  parts = [p for p in (arg or "").split(",") if p]
  for p in parts:
    if p not in _DATASETS + _VARIANTS:
      raise ValueError(f"unknown config part {p!r}; valid: datasets "
                       f"{_DATASETS}, variants {_VARIANTS}.")
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.dataset = next((p for p in parts if p in _DATASETS), "mnist")
  config.data_dir = ml_collections.config_dict.placeholder(str)
  config.manual_dir = ml_collections.config_dict.placeholder(str)
  config.train_limit = ml_collections.config_dict.placeholder(int)
  config.test_limit = ml_collections.config_dict.placeholder(int)
  # The judge's convolution kernels (`jaxadv.models.get_model`).
  config.kernels = "lax"
  config.latent_dim = 100
  config.features = 32         # G: 2F=64 -> F=32 maps; D: F=32 -> 2F=64
  config.batch_size = 64
  config.k = 1
  config.generator_loss = "non_saturating"
  config.learning_rate = 2e-4
  config.b1 = 0.5
  config.epochs = 2
  config.steps_per_epoch = ml_collections.config_dict.placeholder(int)
  # Generator gradient norms under both losses, every `grad_probe_every`
  # steps of the first `grad_probe_steps`, along the trained (non-saturating)
  # run and along a second run from the same init trained with the
  # saturating loss for `grad_probe_steps` steps.
  config.grad_probe_steps = 200
  config.grad_probe_every = 5
  config.grad_probe_batch = 64
  # The judge: a classifier of the real data.
  config.classifier = ml_collections.ConfigDict(dict(
      model="fast_at_mnist", epochs=2, batch_size=100, learning_rate=1e-3))
  config.num_samples = 10000
  config.epoch_samples = 2000  # per-epoch sample-quality check
  config.sample_batch = 500
  config.grid = 8              # grid x grid samples per epoch
  config.interp_rows = 8
  config.interp_steps = 10
  config.progress = True

  if "quick" in parts:
    config.epochs = 2
    config.steps_per_epoch = 200
    config.grad_probe_steps = 100
    config.classifier.epochs = 1
    config.num_samples = 5000
    config.epoch_samples = 1000
  if "test" in parts:
    config.train_limit = 2000
    config.test_limit = 500
    config.epochs = 1
    config.steps_per_epoch = 4
    config.batch_size = 16
    config.features = 8
    config.grad_probe_steps = 4
    config.grad_probe_every = 2
    config.grad_probe_batch = 16
    config.classifier.epochs = 1
    config.num_samples = 200
    config.epoch_samples = 100
    config.sample_batch = 100
    config.interp_rows = 2
    config.interp_steps = 4
  return config
