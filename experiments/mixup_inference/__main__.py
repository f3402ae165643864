r"""The command line of the Mixup Inference experiment.

  python -m experiments.mixup_inference \
      --config=experiments/configs/mi_mnist.py --workdir=/tmp/mi_mnist
"""

from experiments import common
from experiments.mixup_inference.run import train_and_evaluate

if __name__ == "__main__":
  common.run(train_and_evaluate, multihost=True)
