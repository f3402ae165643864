r"""Ensemble transfer on MNIST (Liu et al., ICLR 2017): 4 networks, hold one out.

Two architectures (fast_at_mnist: 2 convs + fc 100; madry_cnn: 2 convs with
max-pooling + fc 1024) x two seeds, each trained naturally for 2 epochs on
20,000 training images (Adam, cyclic lr). 300 test images (the madry_cnn
attacks dominate the cost); FGSM and PGD-10 (step eps / 4) untargeted at eps
0.1, 0.2, 0.3; targeted PGD-10 (a random target != y) at 0.3.

Run:
  python -m experiments.ensemble_transfer \
      --config=experiments/configs/ensemble_transfer.py --workdir=/tmp/ens
Quick (under 5 minutes on 2 CPU cores):
  python -m experiments.ensemble_transfer \
      --config=experiments/configs/ensemble_transfer.py:quick \
      --workdir=/tmp/ens_quick
"""

import ml_collections

from experiments.configs import lecture_common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The default config; `arg="quick"` shrinks data and settings."""
  config = lecture_common.base_config()
  config.train_limit = 20000
  config.test_limit = 300
  config.nets = ml_collections.ConfigDict({
      "fast_s0": lecture_common.net("fast_at_mnist", seed=0, epochs=2.0,
                                    learning_rate=3e-3),
      "fast_s1": lecture_common.net("fast_at_mnist", seed=1, epochs=2.0,
                                    learning_rate=3e-3),
      "madry_s0": lecture_common.net("madry_cnn", seed=0, epochs=2.0,
                                     learning_rate=1e-3),
      "madry_s1": lecture_common.net("madry_cnn", seed=1, epochs=2.0,
                                     learning_rate=1e-3),
  })
  config.attacks = ("fgsm", "pgd")
  config.eps_list = (0.1, 0.2, 0.3)
  config.targeted_eps_list = (0.3,)
  config.pgd_steps = 10
  config.pgd_step_fraction = 0.25  # PGD step = eps * this
  if arg == "quick":
    config.train_limit = 5000
    config.test_limit = 100
    for nc in config.nets.values():
      nc.epochs = 1.0
    config.eps_list = (0.3,)
  elif arg == "tiny":  # the test suite's smoke run
    config.train_limit = 500
    config.test_limit = 40
    config.nets = ml_collections.ConfigDict({
        "fast_s0": lecture_common.net("fast_at_mnist", seed=0, epochs=1.0,
                                      learning_rate=3e-3),
        "fast_s1": lecture_common.net("fast_at_mnist", seed=1, epochs=1.0,
                                      learning_rate=3e-3),
        "linear": lecture_common.net("linear_softmax", seed=0, epochs=1.0,
                                     learning_rate=3e-3)})
    config.attacks = ("fgsm",)
    config.eps_list = (0.3,)
    config.targeted_eps_list = ()
    config.pgd_steps = 2
    config.progress = False
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; valid: 'quick', 'tiny'.")
  return config
