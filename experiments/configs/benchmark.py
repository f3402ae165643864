"""Speed benchmark: training cost, attack throughput vs peers, loop form, memory.

Run (writes WORKDIR/benchmark.json and WORKDIR/benchmark.md):
  pip install -e ".[bench]"     # torch (CPU), torchattacks, foolbox
  python -m experiments.benchmarks \
      --config=experiments/configs/benchmark.py --workdir=/tmp/bench
Smoke run (one model, few repeats, small attack set):
  python -m experiments.benchmarks \
      --config=experiments/configs/benchmark.py:quick --workdir=/tmp/bench_q
"""

import ml_collections

_FREE = ("free:2", "free:4", "free:8")
_PGD = ("pgd:3", "pgd:7", "pgd:10", "pgd:40")


def _group(model: str, kernels: str, modes) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(model=model, kernels=kernels,
                                        modes=tuple(modes)))


def _with(modes, suffix: str) -> tuple:
  return tuple(m + suffix for m in modes)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The default benchmark; `arg="quick"` for a smoke run."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.dataset = "mnist"
  c.data_dir = ml_collections.config_dict.placeholder(str)
  c.manual_dir = ml_collections.config_dict.placeholder(str)
  c.eps = 0.3
  # The benchmark's convolution kernels: the XLA:CPU ones
  # (`jaxadv.models.xla_cpu`, via `get_model(kernels="xla_cpu")`); the
  # fast-AT net's rows with "lax" (the library default) show what that
  # choice is worth on CPU.
  c.kernels = "xla_cpu"
  # Training-step cost at a fixed batch (medians after warm-up), per group
  # of one model and one choice of kernels; "@fori" / "@unroll" pins the
  # replay / attack loop form, no suffix = `jaxadv.loops.default_unroll()`
  # (unrolled on CPU). With the XLA:CPU kernels the fast-AT net's free-AT
  # replays and PGD ran fastest rolled (free m = 8: 0.91-0.98x natural
  # rolled, 1.09-1.42 unrolled in four benchmark runs), so its rows pin
  # "@fori" and show the unrolled free rows beside them; the Madry CNN's
  # lax-conv gradients run unrolled (rolled m = 8: 9.2 s vs 1.0 s). The
  # "lax" group is the library default: lax convs and the default loop.
  c.batch_size = 128
  c.train = ml_collections.ConfigDict({
      "fast_at_mnist": _group(
          "fast_at_mnist", "xla_cpu",
          ("natural", "fgsm_rs") + _with(_FREE + _PGD, "@fori") +
          _with(_FREE, "@unroll")),
      "fast_at_mnist_lax": _group("fast_at_mnist", "lax",
                                  ("natural", "fgsm_rs") + _FREE + _PGD),
      "madry_cnn": _group("madry_cnn", "xla_cpu",
                          ("natural", "fgsm_rs") +
                          _with(_FREE + _PGD, "@unroll")),
  })
  c.warmup = 2
  c.repeats = 20
  # Peak resident memory per mode of these `train` groups, each in a fresh
  # subprocess.
  c.memory_groups = ("fast_at_mnist",)
  c.memory_steps = 5
  # Time to accuracy: training with the main job's recipes, kernels and loop
  # forms (experiments/configs/robust_mnist.py) until PGD-20 accuracy on a
  # fixed held-out batch first reaches `target`.
  c.tta = ml_collections.ConfigDict(dict(
      methods=("fgsm_rs", "free", "pgd"), target=0.8,
      heldout=500, pgd_steps=20, pgd_step_size=0.0375, check_every=100,
      max_seconds=400.0))
  # Attack throughput vs peers on the time-to-accuracy FGSM-RS model, with
  # each of `kernels` (the first names the plain "jaxadv" rows) and its
  # loop form (`unroll`: the XLA:CPU kernels' PGD rolled, as the main job
  # evaluates; lax with the backend default). Single PGD-50 calls vary
  # 20-30% around their median on the 2-core development VMs, so 7
  # interleaved rounds, and the bar is the per-round speedup's median.
  c.attack = ml_collections.ConfigDict(dict(
      num_examples=2000, batch_size=500, steps=50, step_size=0.01,
      repeats=7, peers=("torchattacks", "foolbox"),
      kernels=("xla_cpu", "lax"),
      unroll=ml_collections.ConfigDict(dict(
          xla_cpu=False,
          lax=ml_collections.config_dict.placeholder(bool)))))
  # Attack loop form: PGD-K on the fast-AT net, both forms, each kernels.
  c.loop_steps = (1, 7, 40)
  c.loop_batch_size = 100
  c.loop_kernels = ("xla_cpu", "lax")
  # Mixup Inference: MI-OL with N copies vs N plain forwards vs a Python
  # loop; `chunk_size` copies per lax.map step (2 x 500 = ~1,024 images, what
  # suits XLA:CPU's caches; None = one vmap).
  c.mixup_inference = ml_collections.ConfigDict(dict(
      model="fast_at_mnist", batch_size=500, num_samples=30, chunk_size=2))

  if arg == "quick":
    c.train = ml_collections.ConfigDict({
        "fast_at_mnist": _group(
            "fast_at_mnist", "xla_cpu",
            ("natural", "fgsm_rs", "free:4@fori", "pgd:3@fori",
             "free:4@unroll")),
        "fast_at_mnist_lax": _group("fast_at_mnist", "lax",
                                    ("natural", "free:4")),
    })
    c.repeats = 5
    c.memory_groups = ()
    c.tta.methods = ("fgsm_rs",)
    c.tta.max_seconds = 30.0
    c.tta.check_every = 50
    c.attack.num_examples = 200
    c.attack.batch_size = 100
    c.attack.steps = 10
    c.attack.repeats = 1
    c.loop_steps = (1, 7)
    c.mixup_inference.batch_size = 100
    c.mixup_inference.chunk_size = 10
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; valid: 'quick'.")
  return c
