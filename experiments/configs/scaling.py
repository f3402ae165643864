"""Data-parallel scaling: measured step times, all-reduce bytes, projection.

Run (4 emulated CPU devices; the flag must be set before jax starts):
  XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m \
      experiments.scaling --config=experiments/configs/scaling.py \
      --workdir=/tmp/scaling
Smoke run:
  XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m \
      experiments.scaling --config=experiments/configs/scaling.py:quick \
      --workdir=/tmp/scaling_quick
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The default config; `arg="quick"` for a smoke run."""
  c = ml_collections.ConfigDict()
  c.data_dir = ml_collections.config_dict.placeholder(str)
  c.manual_dir = ml_collections.config_dict.placeholder(str)
  c.eps = 0.3
  # Convolution kernels (`jaxadv.models.get_model`): the XLA:CPU ones on
  # this CPU-scale config (what the committed results ran with).
  c.kernels = "xla_cpu"
  c.devices = (1, 2, 4)
  c.per_device_batch = 64
  c.timed_models = ("fast_at_mnist", "madry_cnn")
  c.modes = ("natural", "free:4", "pgd:10")
  c.warmup = 1
  c.repeats = 5
  # Published per-device bandwidths (bytes/s, one direction) for the ring:
  # A100 NVLink 3: 600 GB/s total bidirectional per GPU; H100 NVLink 4:
  # 900 GB/s (nvidia.com/data-center/nvlink); PCIe 4.0 x16: 64 GB/s
  # bidirectional (A100 NVLink is "10x PCIe Gen4"); TPU v4: all-reduce
  # bandwidth 1.1 PB/s per 4096-chip pod (cloud.google.com/tpu/docs/v4),
  # 1.1e15 / 4096 per chip; a v4-32 slice has 16 chips (JAX devices).
  c.interconnects = ml_collections.ConfigDict({
      "a100_nvlink_x8": {"n": 8, "bytes_per_s": 300e9},
      "h100_nvlink_x8": {"n": 8, "bytes_per_s": 450e9},
      "pcie4_x8": {"n": 8, "bytes_per_s": 32e9},
      "tpu_v4_32_ici": {"n": 16, "bytes_per_s": 1.1e15 / 4096},
  })
  if arg == "quick":
    c.timed_models = ("fast_at_mnist",)
    c.modes = ("natural", "pgd:3")
    c.per_device_batch = 16
    c.repeats = 2
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; valid: 'quick'.")
  return c
