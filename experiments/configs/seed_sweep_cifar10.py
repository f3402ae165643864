r"""Seed sweep on CIFAR-10 (JPEG copy) at eps 8/255, the CPU-scale net.

The CIFAR-10 half of issue #22's sweep (`seed_sweep_mnist.py` is the MNIST
half; `experiments/seed_sweep.py` runs both): FGSM-RS, free AT, N-FGSM and
GradAlign over 5 seeds x 1 held-out split (the MNIST sweep has 2 splits;
one here to fit 2 CPU cores), PGD-7 AT over 2 runs as the reference, each
under `training.CollapseGuard` (held-out PGD-10 and FGSM on 500 images
every half epoch, judged from the end of the first epoch; a drop of more
than 0.2 below the best check, or FGSM above PGD by more than 0.3, is a
collapse: roll back to the best check and stop). Each run is evaluated with
PGD-50 (step 2/255) x 10 restarts on the first 500 test images.

Recipes: `configs/robust_cifar10.py` (`compact_cnn` (16, 32, 64, 128), SGD
momentum 0.9, weight decay 5e-4, cyclic learning rate peaking at 0.2 at
2/5, crop and flip, batch 128), shortened to 2 epochs (free AT: m = 4 over 4
epoch-equivalents, 1 pass); FGSM-RS alpha 10/255 (Wong et al.); N-FGSM
noise 2 eps, alpha = eps, no projection (de Jorge et al.); GradAlign FGSM
from zero, alpha = eps, lambda 0.2 (Andriushchenko & Flammarion's value at
8/255); PGD-7 AT step 2/255.

Run (estimated about 2 hours on 2 CPU cores, one process per core;
minutes on a GPU with `--config.kernels=lax`; resumable):
  for i in 0 1; do XLA_FLAGS="--xla_cpu_multi_thread_eigen=false \
      intra_op_parallelism_threads=1" taskset -c $i python -m \
      experiments.seed_sweep --config=experiments/configs/seed_sweep_cifar10.py \
      --workdir=/tmp/sweep_c10 --config.num_shards=2 --config.shard_index=$i &
  done
  python -m experiments.seed_sweep \
      --config=experiments/configs/seed_sweep_cifar10.py --workdir=/tmp/sweep_c10
Smoke run (2 methods, 1 seed, tiny budget; a few minutes):
  python -m experiments.seed_sweep \
      --config=experiments/configs/seed_sweep_cifar10.py:quick --workdir=/tmp/q
"""

import ml_collections

from experiments.configs import robust_cifar10


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The sweep; `arg="quick"` for a smoke run."""
  base = robust_cifar10.get_config()
  c = ml_collections.ConfigDict()
  for k in ("dataset", "data_dir", "manual_dir", "model", "model_kwargs",
            "kernels", "normalize", "eps", "batch_size", "train_limit",
            "val_pgd_steps", "val_pgd_step_size"):
    c[k] = base[k]
  c.checkpoint_every = 200
  c.progress = True
  c.test_limit = 500
  c.val_size = 1000
  c.seeds = (0, 1, 2, 3, 4)
  c.splits = (0,)
  c.reference = "pgd"
  c.reference_runs = ((0, 0), (1, 0))
  c.methods = ("fgsm_rs", "free", "n_fgsm", "grad_align", "pgd")
  c.num_shards = 1
  c.shard_index = 0
  c.only_runs = ()
  eps = base.eps
  short = dict(epochs=2.0)
  c.fgsm_rs = base.fgsm_rs.copy_and_resolve_references()
  c.fgsm_rs.update(dict(select_best=False, **short))
  c.free = base.free_m4.copy_and_resolve_references()
  c.free.epochs = 4.0
  c.n_fgsm = base.fgsm_rs.copy_and_resolve_references()
  c.n_fgsm.update(dict(step="n_fgsm", step_size=eps, select_best=False,
                       **short))
  c.n_fgsm.noise = 2.0
  c.grad_align = base.fgsm_rs.copy_and_resolve_references()
  c.grad_align.update(dict(step="grad_align", step_size=eps,
                           select_best=False, **short))
  c.grad_align.grad_align_lambda = 0.2
  c.pgd = base.pgd.copy_and_resolve_references()
  c.pgd.update(short)
  c.guard = ml_collections.ConfigDict(dict(
      every_epochs=0.5, check_examples=500, drop=0.2, fgsm_gap=0.3,
      start_epochs=1.0, action="stop"))
  c.eval = ml_collections.ConfigDict(dict(
      pgd_steps=50, pgd_step_size=2 / 255, pgd_restarts=10, batch_size=250,
      unroll=ml_collections.config_dict.placeholder(bool)))

  if arg == "quick":
    c.train_limit = 2000
    c.test_limit = 100
    c.val_size = 200
    c.seeds = (0,)
    c.reference_runs = ()
    c.methods = ("fgsm_rs", "n_fgsm")
    for name in ("fgsm_rs", "n_fgsm"):
      c[name].epochs = 1.0
    c.guard.every_epochs = 0.5
    c.guard.start_epochs = 0.5
    c.guard.check_examples = 100
    c.eval.pgd_steps = 5
    c.eval.pgd_restarts = 1
    c.eval.batch_size = 100
    c.progress = False
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; valid: 'quick'.")
  return c
