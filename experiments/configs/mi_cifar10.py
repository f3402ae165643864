r"""Mixup Inference on CIFAR-10, the paper's setting (Pang, Xu & Zhu, 2020), for GPU users.

The models as Pang et al.'s paper and released code (P2333/Mixup-Inference,
`train_resnet_mixup.py`) train them: ResNet-50 (`resnet50`, the CIFAR form
of He et al.'s bottleneck network; the released code imports a
`resnet_3layer` module that is not in its repository, so its exact layout
is not known), inputs scaled to [-1, 1], momentum SGD (0.9, no weight
decay), batch 64, 200 epochs, the learning rate divided by 10 at epochs 100
and 150: 0.01 for mixup (alpha 1), 0.1 for interpolated AT (alpha 1, PGD-10
at eps 8/255 with step 2/255 under the running BatchNorm statistics, clean
and adversarial halves 1:1). Random crop and flip are assumed (the released
`cifar_transform` is not in its repository either). Defences with the
paper's defaults; PGD-10/50/200 at eps 8/255, step 2/255, plus a sweep over
eps 2-16/255. Hours on a GPU; not meant for CPU beyond the quick variant.

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
  config.model = "resnet50"
  config.kernels = "lax"
  config.normalize = "symmetric"   # [0, 1] -> [-1, 1]
  config.batch_size = 64
  for name, lr in (("mixup", 0.01), ("iat", 0.1)):
    mc = config[name]
    mc.optimizer = "sgd"
    mc.schedule = "piecewise"
    mc.boundaries = (0.5, 0.75)    # epochs 100 and 150 of 200
    mc.learning_rate = lr
    mc.weight_decay = 0.0
    mc.epochs = 200.0
    mc.augment = "crop_flip"
  config.iat.eps = 8 / 255
  config.iat.step_size = 2 / 255
  config.iat.steps = 10
  config.iat.attack_bn = "eval"
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
    config.model = "preact_resnet18"   # a smaller net for the CPU smoke run
    config.mixup.epochs = 0.2
    config.iat.epochs = 0.05
    config.train_limit = 2000
    config.eval.num_examples = 20
    config.eval.clean_examples = 40
    config.eval.batch_size = 20
    config.eval.sweep_eps = (8 / 255,)
    config.analysis.num_examples = 20
  return config
