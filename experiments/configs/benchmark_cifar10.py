r"""CIFAR-10 training-step cost: the CPU-scale net and PreActResNet-18, eps 8/255.

The CIFAR-10 rows of the benchmark (issue 19): natural, FGSM-RS, free AT
m = 2/4/8 and PGD-3/7/10 steps with the CIFAR recipes of
`configs/robust_cifar10.py` (random crop + flip inside the step, the
per-channel `Normalized` input, BatchNorm updated by every attack forward,
SGD momentum 0.9 with weight decay 5e-4; FGSM-RS alpha 10/255, PGD step
2/255) at batch 128 on `cifar10_jpeg` images, for `compact_cnn` (XLA:CPU
kernels, as the CPU-scale config trains it) and for PreActResNet-18 (lax
convolutions, the library default; it has no XLA:CPU kernels), and the
same PreActResNet-18 natural step in PyTorch on the same cores
(informational). Ratios are per optimizer update against the natural step
of the same net, paired round by round.

Run (writes WORKDIR/benchmark.json and WORKDIR/benchmark.md):
  pip install -e ".[bench]"     # torch (CPU) for the reference row
  python -m experiments.benchmarks \
      --config=experiments/configs/benchmark_cifar10.py --workdir=/tmp/bc10
Smoke run (two modes per net, one round, batch 16):
  python -m experiments.benchmarks \
      --config=experiments/configs/benchmark_cifar10.py:quick \
      --workdir=/tmp/bc10_q
"""

import ml_collections

EPS = 8 / 255
MODES = ("natural", "fgsm_rs", "free:2", "free:4", "free:8", "pgd:3",
         "pgd:7", "pgd:10")


def _group(model: str, kernels: str, modes, **kw) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      model=model, kernels=kernels, modes=tuple(modes), normalize="cifar10",
      section=dict(augment="crop_flip", attack_bn="update"),
      step_sizes=dict(fgsm_rs=10 / 255, pgd=2 / 255), optimizer="sgd", **kw))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The CIFAR-10 step-cost benchmark; `arg="quick"` for a smoke run."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.dataset = "cifar10_jpeg"
  c.data_dir = ml_collections.config_dict.placeholder(str)
  c.manual_dir = ml_collections.config_dict.placeholder(str)
  c.eps = EPS
  c.kernels = "xla_cpu"
  c.batch_size = 128
  c.warmup = 2
  c.repeats = 10
  c.train = ml_collections.ConfigDict({
      # The CPU-scale net of configs/robust_cifar10.py, its loop forms (the
      # backend default: unrolled on CPU).
      "compact_cnn": _group(
          "compact_cnn", "xla_cpu", MODES,
          model_kwargs=dict(widths=(16, 32, 64, 128), convs_per_stage=1)),
      # Seconds per step on 2 cores: one warm-up and two rounds, no untimed
      # call before each timed one (a multi-second step does not feel
      # cold caches).
      "preact_resnet18": _group("preact_resnet18", "lax", MODES, warmup=1,
                                repeats=2, rewarm=0),
  })
  c.torch_reference = ml_collections.ConfigDict(dict(
      model="preact_resnet18", warmup=1, repeats=3))

  if arg == "quick":
    c.batch_size = 16
    c.warmup = 1
    c.repeats = 1
    for g in c.train.values():
      g.modes = ("natural", "free:2")
      g.warmup, g.repeats = 1, 1
    c.torch_reference.repeats = 1
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; valid: 'quick'.")
  return c
