"""Peer libraries for the benchmark: torchattacks (PyTorch) and foolbox (JAX).

Only `experiments.benchmarks.attack` imports this module; torch,
torchattacks and foolbox come from the optional extra
`pip install -e .[bench]`. The jaxadv library itself never imports them.

The PyTorch models replicate jaxadv's MNIST nets layer for layer and receive
the same weights (`port_to_torch`): conv kernels HWIO -> OIHW, dense kernels
transposed, and the activations flattened in NHWC order so the first dense
layer needs no permutation.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


def _torch():
  import torch  # pylint: disable=g-import-not-at-top
  return torch


def torch_model(name: str, num_classes: int = 10):
  """The PyTorch twin of a jaxadv MNIST model ("fast_at_mnist", "madry_cnn")."""
  torch = _torch()
  nn = torch.nn

  class FlattenNHWC(nn.Module):
    def forward(self, x):
      return x.permute(0, 2, 3, 1).flatten(1)

  if name == "fast_at_mnist":
    return nn.Sequential(
        nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
        FlattenNHWC(), nn.Linear(7 * 7 * 32, 100), nn.ReLU(),
        nn.Linear(100, num_classes))
  if name == "madry_cnn":
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        FlattenNHWC(), nn.Linear(7 * 7 * 64, 1024), nn.ReLU(),
        nn.Linear(1024, num_classes))
  raise ValueError(f"no PyTorch twin for model {name!r}; valid: "
                   "'fast_at_mnist', 'madry_cnn'.")


def port_to_torch(name: str, params: Any, num_classes: int = 10):
  """Copies Flax params of `name` into its PyTorch twin (eval mode)."""
  torch = _torch()
  model = torch_model(name, num_classes)
  layers = [m for m in model if isinstance(m, (torch.nn.Conv2d,
                                                torch.nn.Linear))]
  names = sorted(params, key=lambda k: (not k.startswith("conv"), k))
  if len(names) != len(layers):
    raise ValueError(f"layer mismatch: flax {names} vs {len(layers)} torch")
  with torch.no_grad():
    for layer, key in zip(layers, names):
      kernel = np.asarray(params[key]["kernel"])
      if isinstance(layer, torch.nn.Conv2d):
        kernel = kernel.transpose(3, 2, 0, 1)  # HWIO -> OIHW
      else:
        kernel = kernel.T  # [in, out] -> [out, in]
      layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
      layer.bias.copy_(torch.from_numpy(np.array(params[key]["bias"])))
  return model.eval()


def torchattacks_pgd(model, x: np.ndarray, y: np.ndarray, *, eps: float,
                     step_size: float, steps: int, batch_size: int,
                     random_start: bool = True) -> tuple[np.ndarray, float]:
  """torchattacks.PGD over `x` (NHWC numpy); returns (correct [N], seconds)."""
  torch = _torch()
  import torchattacks  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  atk = torchattacks.PGD(model, eps=eps, alpha=step_size, steps=steps,
                         random_start=random_start)
  xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  yt = torch.from_numpy(y.astype(np.int64))
  correct = []
  t0 = time.perf_counter()
  for i in range(0, len(x), batch_size):
    adv = atk(xt[i:i + batch_size], yt[i:i + batch_size])
    with torch.no_grad():
      correct.append((model(adv).argmax(1) == yt[i:i + batch_size]).numpy())
  return np.concatenate(correct), time.perf_counter() - t0


def foolbox_pgd(logits_fn: Callable[[jax.Array], jax.Array], x: np.ndarray,
                y: np.ndarray, *, eps: float, step_size: float, steps: int,
                batch_size: int,
                random_start: bool = True) -> tuple[np.ndarray, float]:
  """foolbox 3 `LinfPGD` on its JAX backend (EagerPy); (correct [N], seconds)."""
  import foolbox as fb  # pylint: disable=g-import-not-at-top
  fmodel = fb.JAXModel(logits_fn, bounds=(0.0, 1.0))
  attack = fb.attacks.LinfPGD(abs_stepsize=step_size, steps=steps,
                              random_start=random_start)
  correct = []
  t0 = time.perf_counter()
  for i in range(0, len(x), batch_size):
    xb, yb = jnp.asarray(x[i:i + batch_size]), jnp.asarray(y[i:i + batch_size])
    _, clipped, _ = attack(fmodel, xb, yb, epsilons=eps)
    correct.append(np.asarray(jnp.argmax(logits_fn(clipped), -1) == yb))
  return np.concatenate(correct), time.perf_counter() - t0


def cleverhans_status() -> str:
  """Whether cleverhans' JAX attacks import on this JAX (they did not here)."""
  import importlib  # pylint: disable=g-import-not-at-top
  try:
    importlib.import_module("cleverhans.jax.attacks.projected_gradient_descent")
  except Exception as e:  # pylint: disable=broad-except
    return f"not runnable: {type(e).__name__}: {e}"
  return "importable"
