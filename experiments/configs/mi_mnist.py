"""Mixup Inference on MNIST: mixup and IAT models, MI-PL/OL/Combined vs baselines.

Trains a mixup model and an interpolated-AT model (fast-AT MNIST net), then
evaluates every defence (none, Gaussian, rotation, Xie, Guo, MI-PL, MI-OL,
MI-Combined) under untargeted and targeted PGD-10/50/200 at eps 0.05, each
oblivious and adaptive (EOT), plus an eps sweep (0.02-0.3) for PGD-10.

Run (PGD-10 on 500 test images, PGD-50 on the first 200, PGD-200 on the
first 100: `eval.examples_by_steps`). Measured: 35 min 21 s wall on 2 CPU
cores, both models trained from scratch:
  python -m experiments.mixup_inference \
      --config=experiments/configs/mi_mnist.py --workdir=/tmp/mi_mnist
PGD-10 only (every defence, oblivious and adaptive, the eps sweep): append
`:pgd10` to the config path (27.5 minutes in an earlier run, before the
rotation baseline got faster).
The timings above predate AutoAttack's rand version (`config.autoattack_rand`:
APGD-CE + APGD-DLR, 100 steps, EOT 20 against the 7 randomized defences on
the 500 PGD-10 images), which adds to them.
Smoke run (same pipeline, small budget; 10 minutes on 2 CPU cores shared
with other jobs, 5 of them the rand version):
  python -m experiments.mixup_inference \
      --config=experiments/configs/mi_mnist.py:quick --workdir=/tmp/mi_quick
"""

import ml_collections

from experiments.configs import mi_common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The MNIST config; `arg="quick"` shrinks data, training and attacks."""
  config = mi_common.base_config()
  config.dataset = "mnist"
  config.model = "fast_at_mnist"
  if arg == "quick":
    mi_common.make_quick(config)
  elif arg == "pgd10":
    mi_common.make_pgd10(config)
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; valid: 'quick', "
                     "'pgd10'.")
  return config
