r"""Linearity and cross-sections of a naturally trained MNIST CNN.

fast_at_mnist, 3 epochs on the 60,000 training images; logits of 5 test
images along x + t sign(g), t in [-0.5, 0.5] (101 points, not clipped to the
box); class maps of 16 test images over 41 x 41 grids, a and b in
[-0.5, 0.5] (clipped to [0, 1]).

Run:
  python -m experiments.linearity \
      --config=experiments/configs/linearity.py --workdir=/tmp/linearity
Quick (under 5 minutes on 2 CPU cores):
  python -m experiments.linearity \
      --config=experiments/configs/linearity.py:quick --workdir=/tmp/lin_quick
"""

import ml_collections

from experiments.configs import lecture_common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The default config; `arg="quick"` shrinks data and grids."""
  config = lecture_common.base_config()
  config.test_limit = 1000
  config.cnn = lecture_common.net("fast_at_mnist", epochs=3.0,
                                  learning_rate=3e-3)
  config.scan_images = 5
  config.scan_t_max = 0.5
  config.scan_points = 101
  config.map_images = 16
  config.map_range = 0.5
  config.map_points = 41
  if arg == "quick":
    config.train_limit = 10000
    config.cnn.epochs = 2.0
    config.map_images = 9
    config.map_points = 31
  elif arg == "tiny":  # the test suite's smoke run
    config.train_limit = 1000
    config.test_limit = 200
    config.cnn.epochs = 1.0
    config.scan_images = 2
    config.scan_points = 11
    config.map_images = 2
    config.map_points = 7
    config.progress = False
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; valid: 'quick', 'tiny'.")
  return config
