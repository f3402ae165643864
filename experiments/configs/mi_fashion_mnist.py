"""Mixup Inference on Fashion-MNIST: the MNIST protocol on a harder dataset.

Same models, defences and attacks as `mi_mnist.py` (fast-AT MNIST net, eps
0.05 main table, eps sweep 0.02-0.3 for PGD-10).

Run (PGD-10/50/200; not yet timed end to end on CPU, and well over the
PGD-10 protocol's time, which on MNIST was 27.5 minutes on 2 idle cores):
  python -m experiments.mixup_inference \
      --config=experiments/configs/mi_fashion_mnist.py --workdir=/tmp/mi_fmnist
PGD-10 only (every defence, oblivious and adaptive, the eps sweep): append
`:pgd10` to the config path.
AutoAttack's rand version (`config.autoattack_rand`) adds to both.
Smoke run (about 10 minutes on 2 CPU cores, as MNIST's):
  python -m experiments.mixup_inference \
      --config=experiments/configs/mi_fashion_mnist.py:quick --workdir=/tmp/q
"""

import ml_collections

from experiments.configs import mi_common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The Fashion-MNIST config; `arg="quick"` for a smoke run."""
  config = mi_common.base_config()
  config.dataset = "fashion_mnist"
  config.model = "fast_at_mnist"
  if arg == "quick":
    mi_common.make_quick(config)
  elif arg == "pgd10":
    mi_common.make_pgd10(config)
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; valid: 'quick', "
                     "'pgd10'.")
  return config
