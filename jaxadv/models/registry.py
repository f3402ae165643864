"""Name -> model constructor registry and small helpers for Flax models.

Example:

  >>> import jax
  >>> from jaxadv.models import get_model, has_batch_norm, init_model
  >>> model = get_model("preact_resnet18", num_classes=10)
  >>> variables = init_model(model, jax.random.key(0), (1, 32, 32, 3))
  >>> has_batch_norm(variables)
  True
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxadv.models.cifar_compact import CompactCNN
from jaxadv.models.dm_wide_resnet import DMWideResNet16_2
from jaxadv.models.dm_wide_resnet import DMWideResNet28_10
from jaxadv.models.dm_wide_resnet import DMWideResNet70_16
from jaxadv.models.linear import LinearSoftmax
from jaxadv.models.mnist import FastATMNIST
from jaxadv.models.mnist import MadryCNN
from jaxadv.models.mlp import MLP
from jaxadv.models.mlp import VATMLP
from jaxadv.models.resnet import PreActResNet18
from jaxadv.models.resnet import ResNet50
from jaxadv.models.wide_resnet import WideResNet16_4
from jaxadv.models.wide_resnet import WideResNet28_10
from jaxadv.models.wide_resnet import WideResNet34_10

__all__ = [
    "get_model",
    "has_batch_norm",
    "init_model",
    "list_models",
    "register_model",
]

ModelConstructor = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelConstructor] = {
    "compact_cnn": CompactCNN,
    "dm_wide_resnet16_2": DMWideResNet16_2,
    "dm_wide_resnet28_10": DMWideResNet28_10,
    "dm_wide_resnet70_16": DMWideResNet70_16,
    "fast_at_mnist": FastATMNIST,
    "linear_softmax": LinearSoftmax,
    "madry_cnn": MadryCNN,
    "mlp": MLP,
    "preact_resnet18": PreActResNet18,
    "resnet50": ResNet50,
    "wide_resnet28_10": WideResNet28_10,
    "wide_resnet34_10": WideResNet34_10,
    "wide_resnet16_4": WideResNet16_4,
    "vat_mlp": VATMLP,
}


def list_models() -> list[str]:
  """Returns the registered model names, sorted alphabetically."""
  return sorted(_REGISTRY)


KERNELS = ("lax", "xla_cpu")
"""The convolution kernels `get_model(kernels=...)` accepts."""


def get_model(name: str, *, kernels: str = "lax", **kwargs: Any) -> nn.Module:
  """Builds a registered model by name.

  Built-in names: `"compact_cnn"` (`CompactCNN`, a small BatchNorm CNN for
  CIFAR on CPUs), `"fast_at_mnist"` (`FastATMNIST`), `"linear_softmax"`
  (`LinearSoftmax`, logistic regression), `"madry_cnn"`
  (`MadryCNN`), `"preact_resnet18"` (`PreActResNet18`), `"resnet50"`
  (`ResNet50`, CIFAR form), `"wide_resnet28_10"`,
  `"wide_resnet34_10"` and `"wide_resnet16_4"` (`WideResNet` variants),
  `"dm_wide_resnet28_10"`, `"dm_wide_resnet70_16"` and `"dm_wide_resnet16_2"`
  (`DMWideResNet` variants: Swish, in-model normalisation, the RobustBench
  layout of Gowal et al. 2020 / Rebuffi et al. 2021), `"mlp"` (`MLP`) and
  `"vat_mlp"` (784-1200-1200-10 with BatchNorm, the MNIST network of virtual
  adversarial training).

  This is the one place where a model's convolution kernels are chosen.

  Args:
    name: Registered model name (see `list_models()`).
    kernels: `"lax"` (default: `lax.conv_general_dilated` and jax's own
      gradients, right for GPU and TPU) or `"xla_cpu"` (every conv through
      `jaxadv.models.xla_cpu.conv`: the same values, with gradients that
      XLA:CPU runs faster). Only models with a `conv_fn` attribute take
      `"xla_cpu"`; models without convolutions ignore `kernels`.
    **kwargs: Passed to the constructor, e.g. `num_classes=100` or, for Wide
      ResNets, `dropout_rate=0.3`.

  Returns:
    An unbound Flax Linen module; initialise it with `init_model` or
    `model.init`.

  Raises:
    ValueError: If `name` is not registered, `kernels` is unknown, or
      `kernels="xla_cpu"` is asked of a conv model without `conv_fn`.
  """
  if not isinstance(name, str) or name not in _REGISTRY:
    raise ValueError(
        f"Unknown model name {name!r}; `name` must be one of {list_models()}.")
  if kernels not in KERNELS:
    raise ValueError(f"kernels: expected one of {KERNELS}, got {kernels!r}")
  model = _REGISTRY[name](**kwargs)
  if kernels == "xla_cpu" and hasattr(model, "conv_fn"):
    from jaxadv.models import xla_cpu  # pylint: disable=g-import-not-at-top
    model = model.clone(conv_fn=xla_cpu.conv)
  elif kernels == "xla_cpu" and name not in _NO_CONVS:
    raise ValueError(f"kernels='xla_cpu': model {name!r} has no `conv_fn` "
                     f"attribute; use kernels='lax'")
  return model


_NO_CONVS = ("linear_softmax", "mlp", "vat_mlp")


def register_model(name: str, constructor: ModelConstructor, *,
                   overwrite: bool = False) -> None:
  """Registers a user model constructor under `name` for `get_model`.

  Args:
    name: Non-empty name to register.
    constructor: Callable returning a Flax Linen module, typically the module
      class itself or a `functools.partial` of it. It should accept
      `num_classes` as a keyword argument and the module's `__call__` should
      have the signature `(x, train: bool = False)`.
    overwrite: Allow replacing an existing registration (including built-ins).

  Raises:
    ValueError: If `name` is empty or already registered and `overwrite` is
      False.
    TypeError: If `name` is not a string or `constructor` is not callable.
  """
  if not isinstance(name, str):
    raise TypeError(f"`name` must be a str; got {type(name).__name__}.")
  if not name:
    raise ValueError("`name` must be a non-empty string.")
  if not callable(constructor):
    raise TypeError(
        f"`constructor` must be callable; got {type(constructor).__name__}.")
  if name in _REGISTRY and not overwrite:
    raise ValueError(
        f"Model name {name!r} is already registered; pass overwrite=True to "
        f"replace it.")
  _REGISTRY[name] = constructor


def init_model(model: nn.Module, key: jax.Array,
               input_shape: Sequence[int]) -> dict[str, Any]:
  """Initialises `model` on a dummy float32 batch of zeros.

  Initialisation runs in inference mode (`train=False`) under `jax.jit`, so no
  dropout key is needed and only one compilation is paid for large models.

  Args:
    model: Flax Linen module whose `__call__` takes `(x, train=False)`.
    key: PRNG key (`jax.random.key` or `jax.random.PRNGKey`) for the
      parameters.
    input_shape: Input shape `[B, H, W, C]`, e.g. `(1, 32, 32, 3)`; the batch
      size does not affect the variables.

  Returns:
    The variables dict: `{"params": ...}` plus `{"batch_stats": ...}` for
    models with BatchNorm.

  Raises:
    ValueError: If `input_shape` is not four positive integers.
  """
  shape = tuple(input_shape)
  if len(shape) != 4 or not all(
      isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
    raise ValueError(
        "`input_shape` must be four positive ints [B, H, W, C]; got "
        f"{input_shape!r}.")
  init_fn = jax.jit(functools.partial(model.init, train=False))
  variables = init_fn(key, jnp.zeros(shape, jnp.float32))
  return dict(variables)


def has_batch_norm(variables: Mapping[str, Any]) -> bool:
  """Returns True if `variables` holds a non-empty `batch_stats` collection.

  Args:
    variables: A Flax variables dict, as returned by `init_model`.

  Returns:
    Whether the model keeps BatchNorm running statistics, i.e. whether `apply`
    with `train=True` must be called with `mutable=["batch_stats"]`.
  """
  return bool(jax.tree_util.tree_leaves(variables.get("batch_stats", {})))
