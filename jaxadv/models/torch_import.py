"""Load PyTorch `state_dict`s into the Flax variables of jaxadv's models.

Users can evaluate models trained elsewhere (e.g. with the fast-AT, TRADES or
Rice et al. PyTorch code) with jaxadv's attacks. What changes between the two
frameworks:

* convolution weights: PyTorch `[O, I, kh, kw]` (OIHW) -> Flax `[kh, kw, I, O]`
  (HWIO);
* linear weights: PyTorch `[out, in]` -> Flax `[in, out]`;
* BatchNorm: `weight`, `bias` -> `params` `scale`, `bias`; `running_mean`,
  `running_var` -> `batch_stats` `mean`, `var` (`num_batches_tracked` is
  dropped);
* the first linear layer after a flatten: PyTorch flattens NCHW feature maps
  in (C, H, W) order and Flax NHWC ones in (H, W, C) order, so that weight's
  input rows are permuted;
* buffers that hold a constant of the Flax model rather than a variable
  (`TorchLayout.constants`, e.g. DMWideResNet's normalisation `mean` /
  `std`) are not converted: they may be absent, and where present must equal
  the model's attribute.

PyTorch key names follow the reference implementations of each architecture
(listed in `TORCH_LAYOUTS`), and also the Flax names with "/" written as "."
(`conv1.weight`, `layer1_0.bn1.running_mean`, ...). A `module.` prefix
(`nn.DataParallel`) is stripped.

`torch` is an optional dependency (`pip install jaxadv[torch]`), imported
only to read a file; a dict of tensors or numpy arrays needs no torch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
from collections.abc import Mapping
from typing import Any, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxadv.models import registry
from jaxadv.models.dm_wide_resnet import DMWideResNet
from jaxadv.models.mnist import FastATMNIST
from jaxadv.models.mnist import MadryCNN
from jaxadv.models.resnet import PreActResNet18
from jaxadv.models.wide_resnet import WideResNet

__all__ = ["TORCH_LAYOUTS", "TorchLayout", "load_torch_state_dict"]

StateDictSource = Union[str, os.PathLike, Mapping[str, Any]]


@dataclasses.dataclass(frozen=True)
class TorchLayout:
  """How one architecture's PyTorch reference names and flattens its weights.

  Attributes:
    reference: the PyTorch code whose `state_dict` keys are accepted.
    renames: (regex, replacement) pairs turning reference keys into the
      Flax-path names (`conv1.weight`, `block1_0.bn1.weight`, ...).
    ignored: regexes of reference keys that have no Flax counterpart.
    flatten: (dense layer, conv layer before the flatten), or None when the
      model pools globally before its first linear layer.
    input_shape: the default [1, H, W, C] used to build the Flax shapes.
    constants: (reference key, model attribute) pairs for buffers that are
      constants of the Flax model, not variables (e.g. the `mean` / `std`
      of in-model normalisation). Such a key may be missing; when present,
      its values (any shape, e.g. [1, C, 1, 1] or [C, 1, 1]) must equal the
      attribute's, or loading fails and names the values to build the model
      with.
  """
  reference: str
  renames: tuple[tuple[str, str], ...] = ()
  ignored: tuple[str, ...] = ()
  flatten: Optional[tuple[str, str]] = None
  input_shape: tuple[int, int, int, int] = (1, 32, 32, 3)
  constants: tuple[tuple[str, str], ...] = ()


TORCH_LAYOUTS: dict[type, TorchLayout] = {
    FastATMNIST: TorchLayout(
        reference="fast_adversarial/MNIST/mnist_net.py (an nn.Sequential: "
        "keys 0, 2, 5, 7) or conv1/conv2/fc1/fc2",
        renames=((r"^0\.", "conv1."), (r"^2\.", "conv2."), (r"^5\.", "fc1."),
                 (r"^7\.", "fc2.")),
        flatten=("fc1", "conv2"), input_shape=(1, 28, 28, 1)),
    MadryCNN: TorchLayout(
        reference="conv1/conv2/fc1/fc2 (PyTorch ports of "
        "MadryLab/mnist_challenge)",
        flatten=("fc1", "conv2"), input_shape=(1, 28, 28, 1)),
    PreActResNet18: TorchLayout(
        reference="preact_resnet.py of fast_adversarial / "
        "robust_overfitting (layerI.J.*, shortcut.0, bn, linear)",
        renames=((r"^layer(\d+)\.(\d+)\.", r"layer\1_\2."),
                 (r"\.shortcut\.0\.", ".shortcut."))),
    WideResNet: TorchLayout(
        reference="wideresnet.py of TRADES / robust_overfitting "
        "(blockI.layer.J.*, convShortcut, bn1, fc)",
        renames=((r"^block(\d+)\.layer\.(\d+)\.", r"block\1_\2."),
                 (r"\.convShortcut\.", ".shortcut."), (r"^bn1\.", "bn.")),
        ignored=(r"^sub_block1\.",)),
    DMWideResNet: TorchLayout(
        reference="dm_wide_resnet.py of RobustBench / deepmind-research "
        "(init_conv, layer.I.block.J.{batchnorm_0,conv_0,batchnorm_1,conv_1,"
        "shortcut}, batchnorm, logits; optional mean/std buffers)",
        renames=((r"^layer\.(\d+)\.block\.(\d+)\.", r"layer_\1_block_\2."),),
        constants=(("mean", "mean"), ("std", "std"))),
}


def _layout(model: nn.Module) -> TorchLayout:
  for cls, layout in TORCH_LAYOUTS.items():
    if isinstance(model, cls):
      return layout
  raise TypeError(
      f"`model` must be one of jaxadv's architectures "
      f"({', '.join(c.__name__ for c in TORCH_LAYOUTS)}) or a registered "
      f"name; got {type(model).__name__}.")


def _check_constants(found: Mapping[str, tuple[str, np.ndarray]],
                     layout: TorchLayout, model: nn.Module) -> None:
  """Raises if a constant buffer of `source` differs from the model's."""
  wrong = []
  for name, attr in layout.constants:
    if name not in found:
      continue
    key, value = found[name]
    got = np.asarray(value, np.float64).ravel()
    want = np.asarray(getattr(model, attr), np.float64).ravel()
    if want.size == 1:
      want = np.broadcast_to(want, got.shape)
    if got.shape != want.shape or not np.allclose(got, want, rtol=1e-6,
                                                  atol=1e-6):
      values = tuple(round(float(v), 7) for v in got)
      wrong.append(f"key {key!r} holds {values} but the model has "
                   f"{attr}={tuple(float(v) for v in want)}")
  if wrong:
    fix = ", ".join(
        f"{attr}={tuple(round(float(v), 7) for v in np.ravel(found[n][1]))}"
        for n, attr in layout.constants if n in found)
    raise ValueError(
        f"`source` does not match {type(model).__name__}: "
        f"{'; '.join(wrong)}. These are constants of the Flax model, not "
        f"variables: build it with {fix} (e.g. get_model(name, {fix})).")


def _to_numpy(value: Any) -> np.ndarray:
  if hasattr(value, "detach"):  # a torch.Tensor, without importing torch
    value = value.detach().cpu()
    if value.is_floating_point():
      value = value.float()  # bfloat16/float16 -> float32
    value = value.numpy()
  return np.asarray(value)


def _read(source: StateDictSource) -> dict[str, np.ndarray]:
  """The state_dict as {key: numpy array}, from a file or a mapping."""
  if isinstance(source, (str, os.PathLike)):
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ImportError(
          "Reading a torch.save file needs PyTorch: pip install "
          "'jaxadv[torch]' (or pass an already-loaded dict of arrays).") from e
    path = os.fspath(source)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"`source`: no such file {path!r}.")
    try:
      source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds  # pylint: disable=broad-except
      kind = ("refused: it holds objects other than tensors and containers "
              "(torch.load(weights_only=True) will not unpickle code); save "
              "model.state_dict() instead"
              if "Unsupported global" in str(e) else
              "not a readable torch.save file (empty, truncated or "
              "corrupted?)")
      raise ValueError(f"`source` {path!r}: {kind} ({type(e).__name__}: "
                       f"{str(e)[:200]}).") from e
  if isinstance(source, Mapping):
    for wrapper in ("state_dict", "model_state_dict", "model"):
      inner = source.get(wrapper)
      if isinstance(inner, Mapping):  # a training checkpoint around it
        source = inner
        break
  if not isinstance(source, Mapping):
    raise TypeError(f"`source` must be a path to a torch.save'd state_dict or "
                    f"a mapping of arrays; got {type(source).__name__}.")
  return {str(k): _to_numpy(v) for k, v in source.items()}


def _torch_name(collection: str, path: tuple[str, ...]) -> str:
  """The PyTorch-style key of a Flax variable (`conv1.weight`, ...)."""
  *modules, leaf = path
  leaf = {("params", "kernel"): "weight", ("params", "scale"): "weight",
          ("params", "bias"): "bias", ("batch_stats", "mean"): "running_mean",
          ("batch_stats", "var"): "running_var"}[(collection, leaf)]
  return ".".join(modules + [leaf])


def _convert(value: np.ndarray, target_shape: tuple[int, ...], *,
             flatten_channels: Optional[int]) -> np.ndarray:
  """PyTorch layout -> Flax layout for one weight (kernels only change)."""
  if len(target_shape) == 4 and value.ndim == 4:  # OIHW -> HWIO
    return value.transpose(2, 3, 1, 0)
  if len(target_shape) == 2 and value.ndim == 2:  # [out, in] -> [in, out]
    if flatten_channels is not None:
      out, flat = value.shape
      c = flatten_channels
      hw = flat // c
      side = math.isqrt(hw)
      if hw * c != flat or side * side != hw:
        return value.T  # the shape check below reports the mismatch
      # rows c*H*W + h*W + w (CHW)  ->  h*W*C + w*C + c (HWC)
      value = value.reshape(out, c, side, side).transpose(2, 3, 1, 0)
      return value.reshape(side * side * c, out)
    return value.T
  return value


def load_torch_state_dict(source: StateDictSource,
                          model: Union[str, nn.Module], *,
                          input_shape: Optional[tuple[int, ...]] = None,
                          strict: bool = True,
                          **model_kwargs: Any) -> dict[str, Any]:
  """Converts a PyTorch `state_dict` into Flax variables for `model`.

  Args:
    source: a path to a file written by `torch.save(module.state_dict(),
      path)` (read with `torch.load(..., weights_only=True)`), or an
      already-loaded mapping of key -> `torch.Tensor` / numpy array. A
      training checkpoint `{"state_dict": ...}` (or "model_state_dict",
      "model") is unwrapped.
    model: a jaxadv architecture (`FastATMNIST`, `MadryCNN`,
      `PreActResNet18`, `WideResNet`, `DMWideResNet` and their variants) or
      its registered name (`"fast_at_mnist"`, `"wide_resnet34_10"`,
      `"dm_wide_resnet70_16"`, ...).
    input_shape: [1, H, W, C] the PyTorch model was trained on; default
      MNIST (1, 28, 28, 1) for the MNIST networks, CIFAR (1, 32, 32, 3)
      otherwise. Only the MNIST networks' first linear layer depends on H, W.
    strict: raise on keys the architecture does not use (else ignore them).
    **model_kwargs: passed to `get_model` when `model` is a name (e.g.
      `num_classes=100`).

  Returns:
    The Flax variables `{"params": ...}` (plus `{"batch_stats": ...}` for
    BatchNorm models), float32, for `model.apply(variables, x, train=False)`
    on NHWC inputs in [0, 1]. Only `DMWideResNet` normalises its inputs
    itself (with the model's `mean` / `std` attributes); for the others, a
    PyTorch model trained on normalised inputs needs the same normalisation
    in front.

  Raises:
    ValueError: missing keys, unexpected keys (with `strict`), a weight
      whose shape does not fit, or a constant buffer (DMWideResNet's `mean`
      / `std`) that differs from the model's attribute; the message names
      the key(s).
    TypeError: `model` is not a jaxadv architecture, or `source` is neither
      a path nor a mapping.
    ImportError: `source` is a path and PyTorch is not installed.
  """
  if isinstance(model, str):
    model = registry.get_model(model, **model_kwargs)
  layout = _layout(model)
  shape = tuple(input_shape or layout.input_shape)
  abstract = jax.eval_shape(functools.partial(model.init, train=False),
                            jax.random.key(0), jnp.zeros(shape, jnp.float32))
  expected = {}  # torch-style key -> (collection, flax path, shape, dtype)
  for collection, tree in abstract.items():
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      names = tuple(p.key for p in path)
      expected[_torch_name(collection, names)] = (collection, names,
                                                  leaf.shape, leaf.dtype)

  state = _read(source)
  renamed: dict[str, tuple[str, np.ndarray]] = {}  # name -> (orig key, value)
  constants: dict[str, tuple[str, np.ndarray]] = {}
  constant_names = {name for name, _ in layout.constants}
  unexpected = []
  for key, value in state.items():
    name = key[len("module."):] if key.startswith("module.") else key
    if name in constant_names:
      constants[name] = (key, value)
      continue
    if name.endswith("num_batches_tracked") or any(
        re.search(p, name) for p in layout.ignored):
      continue
    for pattern, repl in layout.renames:
      name = re.sub(pattern, repl, name)
    if name in expected:
      renamed[name] = (key, value)
    else:
      unexpected.append(key)
  missing = sorted(set(expected) - set(renamed))
  if missing or (strict and unexpected):
    parts = []
    if missing:
      parts.append(f"missing keys {missing[:8]}"
                   f"{' ...' if len(missing) > 8 else ''}")
    if strict and unexpected:
      parts.append(f"unexpected keys {sorted(unexpected)[:8]}"
                   f"{' ...' if len(unexpected) > 8 else ''}")
    raise ValueError(
        f"`source` does not match {type(model).__name__}: "
        f"{'; '.join(parts)}. Expected the key names of {layout.reference}."
        f"{' Pass strict=False to ignore unexpected keys.' if not missing else ''}")
  _check_constants(constants, layout, model)

  flatten_channels = {}
  if layout.flatten is not None:
    dense, conv = layout.flatten
    flatten_channels[(dense,)] = expected[f"{conv}.weight"][2][-1]
  variables: dict[str, Any] = {}
  for name, (collection, names, target, dtype) in expected.items():
    key, value = renamed[name]
    converted = _convert(value, target, flatten_channels=flatten_channels.get(
        names[:-1]) if names[-1] == "kernel" else None)
    if tuple(converted.shape) != tuple(target):
      raise ValueError(
          f"`source` key {key!r} has shape {tuple(value.shape)}, which does "
          f"not fit {type(model).__name__}'s {'/'.join(names)} of Flax shape "
          f"{tuple(target)}; check the architecture, num_classes and "
          f"input_shape.")
    node = variables.setdefault(collection, {})
    for n in names[:-1]:
      node = node.setdefault(n, {})
    if not np.all(np.isfinite(converted)):
      raise ValueError(f"`source` key {key!r} holds NaN or inf values.")
    node[names[-1]] = jnp.asarray(converted, dtype)
  return variables
