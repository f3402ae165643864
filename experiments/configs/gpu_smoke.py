r"""GPU smoke run: PreActResNet-18 natural, FGSM-RS and free AT (m = 8), 1 epoch each.

What `scripts/gpu_smoke.sh` runs on one GPU (about 8 minutes on one H100 is
the budget): the paper-scale network and recipes of `cifar10_paper.py` for
one epoch-equivalent each (free AT: one epoch of optimizer updates, i.e.
1/8 pass over the data with m = 8), so `results.json`'s per-method
`train_seconds / train_steps` gives free AT's time per update over
natural's; then clean accuracy on the 10k test set and PGD-20 (step 2/255,
one restart) on the first 1,000 test images; the sanity checks on the
first 200. No AutoAttack ensemble (a smoke run, not a result).
  python -m experiments.robust_training \
      --config=experiments/configs/gpu_smoke.py --workdir=/tmp/gpu_smoke
"""

import ml_collections

from experiments.configs import cifar10_paper


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The smoke config (`arg` must be None)."""
  if arg:
    raise ValueError(f"unknown config variant {arg!r}; there is none.")
  config = cifar10_paper.base_config()
  config.dataset = "cifar10_jpeg"
  config.model = "preact_resnet18"
  config.methods = ("natural", "fgsm_rs", "free")
  config.natural = cifar10_paper.method(step="natural", epochs=1.0)
  config.fgsm_rs = cifar10_paper.fgsm_rs()
  config.fgsm_rs.epochs = 1.0
  config.free = cifar10_paper.method(step="free", replays=8, epochs=1.0)
  config.eval.pgd_steps = 20
  config.eval.pgd_restarts = 1
  config.eval.pgd_examples = 1000
  config.eval.autoattack_examples = 0
  config.eval.sanity_subset = 200
  config.progress = False
  return config
