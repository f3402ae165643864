r"""AutoAttack's standard ensemble: jaxadv vs torchattacks 3.5.1 on one CPU.

jaxadv's `evaluation.evaluate_robustness(attack_names=STANDARD)` (APGD-CE,
APGD-T x 9 targets, FAB-T x 9 targets, Square 5,000 queries, each on the
survivors) against torchattacks' APGD / APGDT / FAB / Square configured with
AutoAttack's standard settings and chained as AutoAttack chains them
(`experiments/benchmarks/ensemble.py`), on the same fast-AT MNIST net
(FGSM-RS trained here, 3 epochs; identical weights in its PyTorch twin)
and the same 1,000 MNIST test images, in one process. Bar (issue #20):
jaxadv's whole chain, compile included, >= 2x faster, at a robust accuracy
at most 0.5 points above torchattacks'.

Run (writes WORKDIR/benchmark.json and WORKDIR/benchmark.md; about 6
minutes on 2 idle CPU cores):
  pip install -e ".[bench]"     # torch (CPU), torchattacks
  python -m experiments.benchmarks \
      --config=experiments/configs/benchmark_ensemble.py \
      --workdir=experiments/results/benchmark_ensemble
Smoke run (20 images, 5 steps, 2 targets, 50 queries, a tiny model):
  python -m experiments.benchmarks \
      --config=experiments/configs/benchmark_ensemble.py:quick \
      --workdir=/tmp/bench_ens_q
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The ensemble benchmark; `arg="quick"` for a smoke run."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.dataset = "mnist"
  c.data_dir = ml_collections.config_dict.placeholder(str)
  c.manual_dir = ml_collections.config_dict.placeholder(str)
  c.eps = 0.3
  # The benchmark's convolution kernels (as `configs/benchmark.py`).
  c.kernels = "xla_cpu"
  # The model: `configs/robust_mnist.py`'s recipe `method`, shortened
  # (FGSM-RS 3 epochs, eps ramp 1: measured 23 s of training, 98.2% clean,
  # 79.5% PGD-50 on the 1,000 images), then PGD-`pgd_steps` test accuracy
  # for the record.
  c.model = ml_collections.ConfigDict(dict(
      name="fast_at_mnist", method="fgsm_rs", epochs=3.0,
      eps_ramp_epochs=1.0, pgd_steps=50, pgd_step_size=0.01,
      train_limit=ml_collections.config_dict.placeholder(int),
      val_size=ml_collections.config_dict.placeholder(int)))
  # AutoAttack's standard version (`autoattack.py`, set_version("standard")):
  # APGD 100 steps 1 restart, 9 targets, FAB-T 100 steps 1 restart, Square
  # 5,000 queries, p_init 0.8. `batch_size` is both libraries' attack batch.
  # `unroll`: jaxadv's step loops (False = rolled, the XLA:CPU kernels'
  # evaluation form in `configs/robust_mnist.py`; None = the backend
  # default). `order`: the runs, in order ("jaxadv": the first call in the
  # process, compilation inside; "jaxadv_warm", optional: the same call
  # again, about 5 more minutes).
  c.ensemble = ml_collections.ConfigDict(dict(
      num_examples=1000, attacks=("apgd-ce", "apgd-t", "fab-t", "square"),
      apgd_steps=100, num_targets=9, fab_steps=100, square_queries=5000,
      p_init=0.8, batch_size=500, unroll=False,
      order=("jaxadv", "torchattacks")))

  if arg == "quick":
    c.model.epochs = 1.0
    c.model.eps_ramp_epochs = 0.5
    c.model.train_limit = 2000
    c.model.val_size = 200
    c.model.pgd_steps = 5
    c.model.pgd_step_size = 0.1
    c.ensemble.num_examples = 20
    c.ensemble.apgd_steps = 5
    c.ensemble.num_targets = 2
    c.ensemble.fab_steps = 5
    c.ensemble.square_queries = 50
    c.ensemble.batch_size = 10
    c.ensemble.order = ("jaxadv", "torchattacks", "jaxadv_warm")
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; valid: 'quick'.")
  return c
