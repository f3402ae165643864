"""The absl entry point of every experiment script.

Each script ends with

    if __name__ == "__main__":
      common.run(train_and_evaluate)

which defines `--config` (an `ml_collections` config file, `path[:arg]`),
`--workdir` and, with `multihost=True`, `--coordinator_address`,
`--num_processes` and `--process_id`, then calls
`train_and_evaluate(config, workdir)`, after writing the workdir's
`config.json` and `environment.json` (`results.write_run_info`). The flags
are defined only when the module runs as a script, so importing it (tests,
other tools) defines none.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags

from experiments.common import results

FLAGS = flags.FLAGS


def define_multihost_flags() -> None:
  """--coordinator_address / --num_processes / --process_id (multi-host)."""
  flags.DEFINE_string("coordinator_address", None,
                      "Multi-host: host:port of process 0 for "
                      "jax.distributed.initialize; unset = one process.")
  flags.DEFINE_integer("num_processes", 1, "Multi-host: number of processes.")
  flags.DEFINE_integer("process_id", 0, "Multi-host: index of this process.")


def maybe_initialize_distributed() -> None:
  """Joins the other processes when --coordinator_address is given."""
  if "coordinator_address" in FLAGS and FLAGS.coordinator_address:
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes,
                               process_id=FLAGS.process_id)


def _as_main_module_flags(before: set) -> None:
  """Makes the flags defined since `before` key flags of the main module,
  so the script's `--help` lists them (absl's short help shows only the
  main module's flags)."""
  for name in sorted(set(FLAGS) - before):
    FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])


def define_flags(*, config_help: str = "Experiment configuration file.",
                 multihost: bool = False, required: bool = True) -> None:
  """--config and --workdir (required unless `required=False`), and the
  multi-host flags with `multihost=True`, listed by the script's --help."""
  before = set(FLAGS)
  flags.DEFINE_string("workdir", None, "Output directory.")
  config_flags.DEFINE_config_file("config", None, config_help,
                                  lock_config=True)
  if multihost:
    define_multihost_flags()
  if required:
    flags.mark_flags_as_required(["config", "workdir"])
  _as_main_module_flags(before)


def run(train_and_evaluate: Callable[[ml_collections.ConfigDict, str], Any],
        *, multihost: bool = False,
        config_help: str = "Experiment configuration file.",
        define_extra: Optional[Callable[[], None]] = None) -> None:
  """Defines the flags and runs `train_and_evaluate(config, workdir)`.

  Args:
    train_and_evaluate: the script's job.
    multihost: also define the multi-host flags and join the other
      processes before the job starts.
    config_help: the `--config` flag's help text.
    define_extra: defines the script's own extra flags, if any.
  """
  define_flags(config_help=config_help, multihost=multihost)
  if define_extra is not None:
    define_extra()

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    maybe_initialize_distributed()
    results.write_run_info(FLAGS.workdir, FLAGS.config)
    train_and_evaluate(FLAGS.config, FLAGS.workdir)

  app.run(main)
