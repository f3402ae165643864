"""Virtual adversarial training on MNIST with 100 labels (Miyato et al., 2018).

100 labelled training images (10 per class, drawn with `seed`), the rest of
the training split unlabelled (a 1000-image validation split held out and
never trained on); the 784-1200-1200-10 BatchNorm MLP; Adam 2e-3 decayed
linearly to 0 over the last third of the updates. Each update sees all 100
labelled images and `batch_size` unlabelled ones. Test error on the full
10k MNIST test set.

Run (about 15 min on 2 shared CPU cores):
  python -m experiments.vat --config=experiments/configs/vat.py \
      --workdir=/tmp/vat
Smoke run (same pipeline, short training, < 5 minutes on 2 CPU cores):
  python -m experiments.vat --config=experiments/configs/vat.py:quick \
      --workdir=/tmp/vat_quick
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The default config; `arg="quick"` trains much shorter; "test" is tiny."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.dataset = "mnist"
  config.data_dir = ml_collections.config_dict.placeholder(str)
  config.manual_dir = ml_collections.config_dict.placeholder(str)
  config.model = "vat_mlp"
  config.model_kwargs = ml_collections.ConfigDict()  # e.g. hidden=(32,)
  config.kernels = "lax"  # `jaxadv.models.get_model` (the MLP has no convs)
  config.num_labels = 100          # 10 per class
  config.labelled_batch_size = 100  # all the labels in every update
  config.batch_size = 128          # unlabelled images per update
  config.val_size = 1000
  config.train_limit = ml_collections.config_dict.placeholder(int)
  config.test_limit = ml_collections.config_dict.placeholder(int)
  config.methods = ("labels_only", "vat")
  config.steps = 3000
  config.learning_rate = 2e-3
  config.decay_fraction = 1 / 3    # linear decay to 0 over the last third
  # L2 radius on raw 784-vectors in [0, 1] (||x||_2 is about 9.3 for MNIST).
  config.eps = 3.5
  config.xi = 1e-6
  config.iterations = 1
  config.alpha = 1.0
  config.checkpoint_every = 500
  config.progress = True

  if arg == "quick":
    config.steps = 600
  elif arg == "test":
    config.train_limit = 3000
    config.test_limit = 500
    config.val_size = 200
    config.batch_size = 32
    config.steps = 20
    config.model_kwargs = ml_collections.ConfigDict({"hidden": (32,)})
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; valid: 'quick', "
                     f"'test'.")
  return config
