"""PGD-50x10 vs the AutoAttack-style ensemble on robust_training's MNIST models.

Loads the checkpoints that `experiments.robust_training` wrote (training a
method first if its checkpoints are missing or unfinished) and evaluates
FGSM, PGD-50 (step 0.01) x 10 restarts, APGD-CE, APGD-T (top-9 targets),
FAB-T (top-9 targets), Square (5000 queries) and their ensemble on the first `num_examples` test
images, with the sanity / gradient-masking checks.

Run (after training with experiments/configs/robust_mnist.py into TRAIN_DIR):
  python -m experiments.robust_eval --config=experiments/configs/robust_eval.py \
      --config.train_workdir=TRAIN_DIR --workdir=/tmp/robust_eval
Smoke run (a `robust_mnist.py:quick` training workdir, 100 images, small
budgets; trains the quick models itself when TRAIN_DIR is empty):
  python -m experiments.robust_eval \
      --config=experiments/configs/robust_eval.py:quick \
      --config.train_workdir=/tmp/quick_train --workdir=/tmp/robust_eval_quick
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The default config; `arg="quick"` shrinks every budget for smoke runs."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  # The robust_training workdir and the robust_mnist variant it was run with.
  config.train_workdir = ml_collections.config_dict.placeholder(str)
  config.train_variant = ml_collections.config_dict.placeholder(str)
  config.methods = ("fgsm_rs", "pgd")
  config.num_examples = 1000
  config.batch_size = 500
  config.pgd = ml_collections.ConfigDict(dict(steps=50, step_size=0.01,
                                              restarts=10))
  # AutoAttack "standard": APGD-CE and APGD-T with 100 iterations, 1 restart,
  # 9 target classes; FAB-T 100 iterations, 1 restart, the same 9 targets;
  # Square with 5000 queries, p_init 0.8.
  config.apgd = ml_collections.ConfigDict(dict(steps=100, restarts=1,
                                               num_targets=9))
  config.fab = ml_collections.ConfigDict(dict(steps=100, restarts=1))
  config.square = ml_collections.ConfigDict(dict(queries=5000, p_init=0.8))
  # Also run APGD-T and Square alone on every clean-correct example.
  config.individual = True
  config.sanity = ml_collections.ConfigDict(dict(
      subset=1000, square_queries=1000, more_steps_factor=2,
      more_restarts=5, material=0.02, large_eps=0.5, large_eps_max_acc=0.05))
  config.progress = True

  if arg == "quick":
    config.train_variant = "quick"
    config.num_examples = 100
    config.batch_size = 100
    config.pgd.steps = 20
    config.pgd.step_size = 0.025
    config.pgd.restarts = 2
    config.apgd.steps = 20
    config.apgd.num_targets = 3
    config.fab.steps = 20
    config.square.queries = 200
    config.sanity.subset = 100
    config.sanity.square_queries = 100
    config.sanity.more_restarts = 2
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; valid: 'quick'.")
  return config
