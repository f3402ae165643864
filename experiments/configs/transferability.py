r"""Transferability across model kinds on MNIST (Papernot et al., 2016).

The classical models and the CNN learn from the first 10,000 training images,
the substitutes (for dt, knn, ensemble) from the next 10,000 relabelled by
their source; 2,000 test images are attacked with FGSM (cross-entropy) and PGD-20 (CW
margin loss, step eps / 10) at eps 0.05, 0.1, 0.2, 0.3 (Papernot et al. use FGSM at 0.3).

Run:
  python -m experiments.transferability \
      --config=experiments/configs/transferability.py --workdir=/tmp/transfer
Quick (same pipeline, smaller pools, under 5 minutes on 2 CPU cores):
  python -m experiments.transferability \
      --config=experiments/configs/transferability.py:quick \
      --workdir=/tmp/transfer_quick
"""

import ml_collections

from experiments.configs import lecture_common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The default config; `arg="quick"` shrinks data and epochs."""
  config = lecture_common.base_config()
  config.classic_train_size = 10000
  config.substitute_size = 10000
  config.train_limit = 20000
  config.test_limit = 2000
  config.dnn = lecture_common.net("fast_at_mnist", epochs=4.0,
                                  learning_rate=3e-3)
  config.substitute = lecture_common.net("fast_at_mnist", seed=1, epochs=4.0,
                                         learning_rate=3e-3)
  config.lr_c = 0.1        # inverse L2 strength of LogisticRegression
  config.lr_max_iter = 200
  config.svm_c = 0.01      # LinearSVC (one-vs-rest, squared hinge)
  config.svm_max_iter = 2000
  config.knn_k = 3
  config.attacks = ("fgsm", "pgd")
  config.eps_list = (0.05, 0.1, 0.2, 0.3)
  config.pgd_steps = 20
  config.pgd_step_fraction = 0.1  # PGD step = eps * this
  config.pgd_loss = "cw"          # CW margin; FGSM uses cross-entropy
  if arg == "quick":
    config.classic_train_size = 3000
    config.substitute_size = 3000
    config.train_limit = 6000
    config.test_limit = 500
    config.dnn.epochs = 3.0
    config.substitute.epochs = 3.0
    config.eps_list = (0.1, 0.3)
    config.pgd_steps = 10
    config.pgd_step_fraction = 0.2
  elif arg == "tiny":  # the test suite's smoke run
    config.classic_train_size = 600
    config.substitute_size = 600
    config.train_limit = 1200
    config.test_limit = 100
    # Linear "dnn" and substitutes: the smoke test checks the pipeline, and
    # the small model compiles fastest.
    config.dnn = lecture_common.net("linear_softmax", epochs=1.0,
                                    learning_rate=1e-2)
    config.substitute = lecture_common.net("linear_softmax", seed=1,
                                           epochs=1.0, learning_rate=1e-2)
    config.lr_max_iter = 50
    config.attacks = ("fgsm",)
    config.eps_list = (0.3,)
    config.progress = False
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; valid: 'quick', 'tiny'.")
  return config
