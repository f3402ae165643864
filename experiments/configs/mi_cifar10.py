"""Mixup Inference on CIFAR-10 (Pang et al., 2020 setting), for GPU users.

PreAct ResNet-18 trained with mixup (alpha 1) and with interpolated AT
(PGD-10, eps 8/255, step 2/255), SGD momentum 0.9, lr 0.1 piecewise, weight
decay 5e-4, batch 128; defences with the paper's defaults; PGD-10/50/200 at
eps 8/255, step 2/255, plus a sweep over eps 2-16/255. Hours on a GPU; not
meant for CPU beyond the quick variant.

Data: `cifar10` (the python tarball) or, offline with ../shared/data, the
JPEG re-encoding `cifar10_jpeg` (not bit-identical to CIFAR-10):
  python -m experiments.mixup_inference \
      --config=experiments/configs/mi_cifar10.py --workdir=/tmp/mi_cifar10
  python -m experiments.mixup_inference \
      --config=experiments/configs/mi_cifar10.py:jpeg --workdir=/tmp/mi_cifar10
Smoke run of the pipeline on the JPEG copy (CPU, a few minutes):
  python -m experiments.mixup_inference \
      --config=experiments/configs/mi_cifar10.py:jpeg,quick --workdir=/tmp/q
"""

import ml_collections

from experiments.configs import mi_common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """CIFAR-10 config; `arg` is a comma list of "jpeg" and "quick"."""
  variants = set(filter(None, (arg or "").split(",")))
  unknown = variants - {"jpeg", "quick"}
  if unknown:
    raise ValueError(f"unknown variants {sorted(unknown)}; valid: jpeg, quick.")
  config = mi_common.base_config()
  config.dataset = "cifar10_jpeg" if "jpeg" in variants else "cifar10"
  config.model = "preact_resnet18"
  config.kernels = "lax"
  for name in ("mixup", "iat"):
    mc = config[name]
    mc.optimizer = "sgd"
    mc.schedule = "piecewise"
    mc.learning_rate = 0.1
    mc.weight_decay = 5e-4
    mc.epochs = 200.0
  config.iat.eps = 8 / 255
  config.iat.step_size = 2 / 255
  config.iat.eps_ramp_epochs = 0.0
  config.iat.unroll = None     # the backend default (rolled on GPU/TPU)
  config.eval.eps = 8 / 255
  config.eval.sweep_eps = (2 / 255, 4 / 255, 8 / 255, 16 / 255)
  config.eval.num_examples = 1000
  config.eval.examples_by_steps = ()      # a GPU attacks all 1000 each time
  config.eval.batch_size = 250
  config.eval.unroll = None
  config.baselines.min_fraction = 0.75   # 24-32 px on 32-px images
  config.mi.chunk_size = 10               # N x B ResNet forwards in chunks
  if "quick" in variants:
    mi_common.make_quick(config)
    config.mixup.epochs = 0.2
    config.iat.epochs = 0.05
    config.train_limit = 2000
    config.eval.num_examples = 20
    config.eval.clean_examples = 40
    config.eval.batch_size = 20
    config.eval.sweep_eps = (8 / 255,)
    config.analysis.num_examples = 20
  return config
