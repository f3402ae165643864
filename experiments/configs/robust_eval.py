"""PGD-50x10 vs the AutoAttack-style ensemble, on trained models.

Two modes (set exactly one of `train_workdir` and `checkpoint`):

* `train_workdir`: loads the checkpoints that `experiments.robust_training`
  wrote (training a method first if its checkpoints are missing or
  unfinished) and evaluates each method of `methods` on MNIST at the
  training config's eps.
* `checkpoint`: evaluates ONE model from a checkpoint file or folder:
  an orbax checkpoint written by `jaxadv.training.fit(..., workdir=W)`
  (`W` itself, the checkpoint manager's folder, whose newest step is taken;
  or one step folder `W/<step>`), or a PyTorch `state_dict` file
  (`.pt` / `.pth`, `torch.save(model.state_dict(), path)`, read with
  `jaxadv.models.load_torch_state_dict`). `model` (a
  `jaxadv.models.get_model` name) and `dataset` (a `jaxadv.data` name) are
  required; `eps` defaults per dataset (`jaxadv.evaluation.DEFAULT_EPS`: 0.3 MNIST, 0.1
  Fashion-MNIST, 8/255 CIFAR-10). From an orbax checkpoint the "best"
  parameters (early stopping, `fit(select=...)`) are used when the
  checkpoint holds them, else the latest; the optimizer state is never read.

Both evaluate FGSM, PGD-50 x 10 restarts, APGD-CE, APGD-T (top-9 targets),
FAB-T (top-9 targets), Square (5000 queries) and their ensemble on the first
`n_examples` test images, with the sanity / gradient-masking checks. PGD's
step: `pgd.step_size` (0.01, the MNIST protocol at eps 0.3) on MNIST and in
train_workdir mode; on the other datasets of checkpoint mode
`pgd.eps_fraction * eps` (eps / 4: 2/255 at eps 8/255); set
`--config.pgd.eps_fraction=0` to use `pgd.step_size` everywhere.

Run (after training with experiments/configs/robust_mnist.py into TRAIN_DIR):
  python -m experiments.robust_eval --config=experiments/configs/robust_eval.py \
      --config.train_workdir=TRAIN_DIR --workdir=/tmp/robust_eval
Smoke run (a `robust_mnist.py:quick` training workdir, 100 images, small
budgets; trains the quick models itself when TRAIN_DIR is empty):
  python -m experiments.robust_eval \
      --config=experiments/configs/robust_eval.py:quick \
      --config.train_workdir=/tmp/quick_train --workdir=/tmp/robust_eval_quick
Any checkpoint (`--config` defaults to this file; `:quick` for small budgets):
  python -m experiments.robust_eval --config=experiments/configs/robust_eval.py \
      --config.checkpoint=model.pth --config.model=fast_at_mnist \
      --config.dataset=mnist --config.eps=0.3 --config.n_examples=1000 \
      --workdir=/tmp/robust_eval_pth
  python -m experiments.robust_eval --config=experiments/configs/robust_eval.py \
      --config.checkpoint=FIT_WORKDIR --config.model=preact_resnet18 \
      --config.dataset=cifar10 --workdir=/tmp/robust_eval_orbax
"""

import ml_collections

def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The default config; `arg="quick"` shrinks every budget for smoke runs."""
  placeholder = ml_collections.config_dict.placeholder
  config = ml_collections.ConfigDict()
  config.seed = 0
  # train_workdir mode: the robust_training workdir and the robust_mnist
  # variant it was run with.
  config.train_workdir = placeholder(str)
  config.train_variant = placeholder(str)
  config.methods = ("fgsm_rs", "pgd")
  # checkpoint mode: the checkpoint (orbax folder or .pt/.pth file), its
  # architecture (`jaxadv.models.get_model` name, built with the dataset's
  # num_classes and `kernels`), the dataset, eps (None = the dataset's L-inf default),
  # the data folders (None = jaxadv.data's defaults, $JAXADV_DATA_DIR) and
  # the attack loops' form (None = the backend default).
  config.checkpoint = placeholder(str)
  config.model = placeholder(str)
  config.dataset = placeholder(str)
  config.eps = placeholder(float)
  config.kernels = "lax"
  config.data_dir = placeholder(str)
  config.manual_dir = placeholder(str)
  config.unroll = placeholder(bool)
  # The first n_examples test images; `num_examples` is the same field
  # (either name sets both).
  config.n_examples = 1000
  config.num_examples = config.get_ref("n_examples")
  config.batch_size = 500
  # PGD-50x10; `eps_fraction`: the step on datasets other than MNIST in
  # checkpoint mode is eps_fraction * eps (0 = `step_size` everywhere).
  config.pgd = ml_collections.ConfigDict(dict(steps=50, step_size=0.01,
                                              restarts=10, eps_fraction=0.25))
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
    config.n_examples = 100
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
