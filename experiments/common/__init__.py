"""The toolkit every experiment script shares (and nothing else imports).

* `cli`: the absl entry point and flags (`--config`, `--workdir`, the
  multi-host flags), so `python -m experiments.<script> --help` lists them.
* `results`: the results writer (JSON + Markdown through one table helper)
  and the environment record every `results.json` carries.
* `training`: data loading, the one name -> training-step table, the
  benchmark's mode strings ("free:8@fori") and the train-one-model helper.
* `robust`: the robust-training recipes of `configs/robust_mnist.py`
  (validation PGD check, catastrophic-overfitting stop), shared by
  `robust_training`, `robust_eval` and the benchmark's time to accuracy.

Experiment scripts import this package and `experiments.configs`, never
another script.
"""

from experiments.common import cli
from experiments.common import results
from experiments.common import robust
from experiments.common import training
from experiments.common.cli import run
from experiments.common.results import environment
from experiments.common.results import json_dump
from experiments.common.results import json_load
from experiments.common.results import load_records
from experiments.common.results import markdown_table
from experiments.common.results import pyplot
from experiments.common.results import write_markdown
from experiments.common.results import write_results
from experiments.common.training import STEPS
from experiments.common.training import Trained
from experiments.common.training import load_train_test
from experiments.common.training import load_train_val_test
from experiments.common.training import train_model
from experiments.common.training import train_net
