r"""The speed benchmark: training modes, attacks, loop forms, kernels, MI.

  python -m experiments.benchmarks \
      --config=experiments/configs/benchmark.py --workdir=/tmp/bench

Modules: `run` (runs every part, writes `benchmark.json` / `.md`),
`training` (training-step cost, peak memory, time to accuracy), `attack`
(PGD throughput against the peers), `ensemble` (AutoAttack's standard
ensemble against the same four attacks in torchattacks, with
`configs/benchmark_ensemble.py`), `peers` (torchattacks, foolbox),
`loop` (the attack loop form), `mi` (the cost of Mixup Inference), `conv`
(the convolution kernels, standalone), `timing` (interleaved medians and
paired ratios). `loop`, `mi` and `conv` also run alone
(`python -m experiments.benchmarks.loop --help`).

This package's `__init__` imports nothing, so that `__main__` can set
XLA_FLAGS before jax starts.
"""
