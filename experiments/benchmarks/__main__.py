r"""Speed benchmark: jaxadv's training modes, attacks and loop forms vs peers.

  python -m experiments.benchmarks \
      --config=experiments/configs/benchmark.py --workdir=/tmp/bench

Writes `WORKDIR/benchmark.json` and `WORKDIR/benchmark.md`
(`experiments.benchmarks.run`).

On CPU the host is split into one XLA device per core
(`--xla_force_host_platform_device_count`, set below before jax is imported
unless XLA_FLAGS already sets it): single-device work runs as before, and the
"sharded" jaxadv attack spreads its batch over all of them, which is how JAX
uses more than one core for a network this small. It affects the CPU backend
only; on GPU/TPU the accelerators are used as they are.
"""

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS",
                                                                ""):
  os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "") +
      f" --xla_force_host_platform_device_count={os.cpu_count() or 1}").strip()

# pylint: disable=g-import-not-at-top,wrong-import-position
import json

from absl import app
from absl import flags
from absl import logging

from experiments import common

FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  if FLAGS.probe_memory:
    from experiments.benchmarks import training
    model_name, kernels, mode, bs, steps = FLAGS.probe_memory.split(",")
    print(json.dumps(training.probe_memory(model_name, kernels, mode,
                                           int(bs), int(steps))))
    return
  if FLAGS.config is None or FLAGS.workdir is None:
    raise app.UsageError("--config and --workdir are required.")
  from experiments.benchmarks import run
  run.run(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  common.cli.define_flags(config_help="Benchmark configuration.",
                          required=False)
  flags.DEFINE_string("probe_memory", None,
                      "Internal: 'model,kernels,mode,batch,steps' to measure "
                      "peak RSS in a fresh process.")
  app.run(main)
