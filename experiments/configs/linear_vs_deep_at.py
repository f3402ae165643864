r"""Adversarial training of logistic regression vs a CNN on MNIST.

linear_softmax (logistic regression) and fast_at_mnist, each trained
naturally and with PGD-10 adversarial training (step eps / 4, eps ramped over
the first epoch) at eps 0.1 and 0.3; Adam with a cyclic lr, 3 epochs on the
first 30,000 training images. Robust accuracy on 2,000 test images under PGD-20
(step eps / 8) x 2 restarts at eps 0, 0.05, 0.1, 0.2, 0.3.

Run:
  python -m experiments.linear_vs_deep_at \
      --config=experiments/configs/linear_vs_deep_at.py --workdir=/tmp/lin_at
Quick (under 5 minutes on 2 CPU cores):
  python -m experiments.linear_vs_deep_at \
      --config=experiments/configs/linear_vs_deep_at.py:quick \
      --workdir=/tmp/lin_at_quick
"""

import ml_collections

from experiments.configs import lecture_common


def _at(model, eps, **kw):
  return lecture_common.net(model, step="pgd", eps=eps, step_size=eps / 4,
                            steps=10, eps_ramp_epochs=1.0, **kw)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The default config; `arg="quick"` shrinks data and steps."""
  config = lecture_common.base_config()
  config.train_limit = 30000
  config.test_limit = 2000
  lr = dict(epochs=3.0, learning_rate=1e-2)
  cnn = dict(epochs=3.0, learning_rate=3e-3)
  config.models = ml_collections.ConfigDict({
      "lr_natural": lecture_common.net("linear_softmax", **lr),
      "lr_pgd01": _at("linear_softmax", 0.1, **lr),
      "lr_pgd03": _at("linear_softmax", 0.3, **lr),
      "cnn_natural": lecture_common.net("fast_at_mnist", **cnn),
      "cnn_pgd01": _at("fast_at_mnist", 0.1, **cnn),
      "cnn_pgd03": _at("fast_at_mnist", 0.3, **cnn),
  })
  config.eps_list = (0.0, 0.05, 0.1, 0.2, 0.3)
  config.eval = ml_collections.ConfigDict(dict(
      pgd_steps=20, pgd_step_fraction=0.125, pgd_restarts=2))
  if arg == "quick":
    config.train_limit = 10000
    config.test_limit = 500
    for nc in config.models.values():
      nc.epochs = 2.0
      if nc.step == "pgd":
        nc.steps = 5
        nc.step_size = nc.eps / 2
        nc.eps_ramp_epochs = 0.5
    config.eval.pgd_steps = 10
    config.eval.pgd_step_fraction = 0.25
    config.eval.pgd_restarts = 1
  elif arg == "tiny":  # the test suite's smoke run
    config.train_limit = 500
    config.test_limit = 50
    config.models = ml_collections.ConfigDict({
        "lr_natural": lecture_common.net("linear_softmax", epochs=1.0,
                                         learning_rate=1e-2),
        "lr_pgd03": lecture_common.net("linear_softmax", step="pgd", eps=0.3,
                                       step_size=0.15, steps=2, epochs=1.0,
                                       learning_rate=1e-2),
        "cnn_natural": lecture_common.net("fast_at_mnist", epochs=1.0,
                                          learning_rate=3e-3)})
    config.eps_list = (0.0, 0.3)
    config.eval.pgd_steps = 2
    config.eval.pgd_step_fraction = 0.5
    config.eval.pgd_restarts = 1
    config.progress = False
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; valid: 'quick', 'tiny'.")
  return config
