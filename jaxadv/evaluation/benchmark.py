"""Evaluate any model in one call: `benchmark` (the AutoAttack protocol).

`benchmark(model, ...)` takes what users bring (a Flax module with its
variables, or any `x -> logits` function), loads the data, runs the
AutoAttack ensemble of Croce & Hein (ICML 2020) as RobustBench reports it
(clean accuracy, then the robust accuracy after every attack of the
chain), the gradient-masking sanity checks, and returns and prints the
numbers with their timings and the environment.

Compilation. jaxadv's jitted attacks take the model function as a static
argument, so JAX compiles once per distinct function. `as_apply_fn` makes
that key stable for what users pass:

* a Flax module: keyed by the module's fields (equal modules share one
  compilation), its `variables` traced;
* `functools.partial(f, params, ...)` or `jax.tree_util.Partial`: keyed by
  `f` and the non-array arguments; the array arguments are traced, so a new
  partial over new parameters does not recompile;
* any other callable: keyed by the object itself. A fresh `lambda` (or
  closure) per call compiles again each time (about a second for a small
  net); pass `functools.partial(fn, params)` instead, with the parameters
  as arguments.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import inspect
import os
import platform
import time
from typing import Any, Callable, Optional, Sequence, Union

import flax.linen as nn
import jax
import numpy as np

from jaxadv import validation
from jaxadv.evaluation import autoattack
from jaxadv.evaluation import report

__all__ = ["DEFAULT_EPS", "THREAT_MODELS", "VERSIONS", "as_apply_fn",
           "benchmark", "environment", "format_benchmark", "format_eps"]

# RobustBench's threat-model names -> jaxadv norms.
THREAT_MODELS = {"Linf": "linf", "L2": "l2"}
VERSIONS = ("standard", "rand", "apgd-t+square")
# Default eps per (dataset, norm) (RobustBench's and the papers').
DEFAULT_EPS = {("mnist", "linf"): 0.3, ("fashion_mnist", "linf"): 0.1,
                ("cifar10", "linf"): 8 / 255, ("cifar10_jpeg", "linf"): 8 / 255,
                ("cifar10", "l2"): 0.5, ("cifar10_jpeg", "l2"): 0.5,
                ("mnist", "l2"): 2.0, ("fashion_mnist", "l2"): 1.5}


def _takes_train(module: nn.Module) -> bool:
  try:
    return "train" in inspect.signature(type(module).__call__).parameters
  except (TypeError, ValueError):
    return False


@dataclasses.dataclass(frozen=True)
class _ModuleApply:
  """`(variables, x, train=False) -> logits` of a Flax module (hashable)."""
  module: nn.Module
  takes_train: bool

  def __call__(self, variables, x, *rest, train: bool = False):
    if self.takes_train:
      return self.module.apply(variables, x, *rest, train=train)
    return self.module.apply(variables, x, *rest)


@dataclasses.dataclass(frozen=True)
class _PartialApply:
  """`f(*args, x, *rest, **kwargs)` with the array leaves of (args, kwargs)
  passed as `variables` and everything else part of the static key."""
  func: Callable
  treedef: Any
  static: tuple  # the leaves' values, None where the leaf is an array

  def __call__(self, variables, x, *rest, train: bool = False):
    del train
    it = iter(variables)
    leaves = [next(it) if s is _ARRAY else s for s in self.static]
    args, kwargs = jax.tree.unflatten(self.treedef, leaves)
    return self.func(*args, x, *rest, **kwargs)


_ARRAY = "<array>"  # placeholder of a traced leaf in `_PartialApply.static`


@dataclasses.dataclass(frozen=True, eq=False)
class _CallableApply:
  """`fn(x, *rest)` for any callable, keyed by the object's identity."""
  fn: Callable

  def __call__(self, variables, x, *rest, train: bool = False):
    del variables, train
    return self.fn(x, *rest)

  def __hash__(self):
    return hash(id(self.fn))

  def __eq__(self, other):
    return isinstance(other, _CallableApply) and other.fn is self.fn


def _is_array(v: Any) -> bool:
  return isinstance(v, (jax.Array, np.ndarray, np.generic))


def as_apply_fn(model: Union[nn.Module, Callable[..., jax.Array]],
                variables: Any = None) -> tuple[Callable[..., jax.Array], Any]:
  """A model as jaxadv's `(apply_fn, variables)` pair, with a stable jit key.

  Args:
    model: a Flax Linen module (then `variables` are its variables; a
      `train` keyword of its `__call__` is passed `train=False`), a
      `functools.partial` / `jax.tree_util.Partial` of a function whose
      array arguments are the parameters (`partial(f, params)(x)` or, for
      a randomized model, `(x, key)`), or any callable `x -> logits`
      (`(x, key) -> logits` when randomized).
    variables: the module's variables; must be None for a callable.

  Returns:
    `(apply_fn, variables)` with `apply_fn(variables, x, train=False)` (or
    `apply_fn(variables, x, key)` for a randomized callable) returning the
    logits; equal inputs give equal (hashable) `apply_fn`s, so jaxadv's
    jitted attacks compile once for them (see the module docstring).

  Raises:
    TypeError: `model` is not callable, a module without `variables`, or a
      callable with `variables`.
  """
  if isinstance(model, nn.Module):
    if variables is None:
      raise TypeError("`variables` are required with a Flax module `model` "
                      "(e.g. `model.init(key, x)`).")
    return _ModuleApply(model, _takes_train(model)), variables
  if not callable(model):
    raise TypeError("`model` must be a Flax module or a callable "
                    f"`x -> logits`; got {type(model).__name__}.")
  if variables is not None:
    raise TypeError("`variables` is only for a Flax module `model`; bind a "
                    "function's parameters with functools.partial(fn, "
                    "params) instead.")
  if isinstance(model, (functools.partial, jax.tree_util.Partial)):
    leaves, treedef = jax.tree.flatten((tuple(model.args),
                                        dict(model.keywords)))
    static = tuple(_ARRAY if _is_array(v) else v for v in leaves)
    try:
      apply_fn = _PartialApply(model.func, treedef, static)
      hash(apply_fn)
    except TypeError:  # an unhashable non-array argument: key by identity
      return _CallableApply(model), ()
    return apply_fn, [v for v in leaves if _is_array(v)]
  return _CallableApply(model), ()


def _version(package: str) -> Optional[str]:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def environment() -> dict:
  """Where the numbers come from: versions, backend and devices.

  Returns:
    {"python", "platform", "processor", "cpu_count", "jax", "jaxlib",
    "flax", "optax", "jaxadv", "backend", "device_kinds", "device_count",
    "local_device_count", "process_count"}.
  """
  return {
      "python": platform.python_version(), "platform": platform.platform(),
      "processor": platform.processor(), "cpu_count": os.cpu_count(),
      "jax": jax.__version__, "jaxlib": _version("jaxlib"),
      "flax": _version("flax"), "optax": _version("optax"),
      "jaxadv": _version("jaxadv"),
      "backend": jax.default_backend(),
      "device_kinds": sorted({d.device_kind for d in jax.devices()}),
      "device_count": jax.device_count(),
      "local_device_count": jax.local_device_count(),
      "process_count": jax.process_count()}


def format_eps(v: float) -> str:
  """An eps or step for display: `k/255` when it is one, else 4 significant
  digits."""
  k = round(v * 255)
  if k and abs(v * 255 - k) < 1e-6:
    return f"{k}/255"
  return f"{v:.4g}"


def format_benchmark(result: dict) -> str:
  """A `benchmark` result as RobustBench-style text with a Markdown table."""
  pct = lambda v: f"{100 * v:.2f}"
  lines = [
      f"{result['model']} on {result['dataset']} "
      f"({result['n_examples']} test examples), {result['threat_model']} "
      f"eps = {format_eps(result['eps'])}, version '{result['version']}'"
      + (f" (EOT over {result['eot_samples']} draws)"
         if result.get("eot_samples") else ""), "",
      "| attack | robust accuracy % (cumulative) | examples attacked | s |",
      "|---|---|---|---|",
      f"| clean | {pct(result['clean_acc'])} | - | "
      f"{result['seconds']['clean']:.1f} |"]
  for name, acc in result["per_attack"].items():
    lines.append(f"| {name} | {pct(acc)} | {result['attacked'][name]} | "
                 f"{result['seconds'][name]:.1f} |")
  lines += ["", f"clean accuracy: {pct(result['clean_acc'])}%",
            f"robust accuracy: {pct(result['robust_acc'])}%",
            f"total: {result['seconds']['total']:.1f} s on "
            f"{result['environment']['backend']} "
            f"({', '.join(result['environment']['device_kinds'])})"]
  checks = result.get("sanity_checks")
  if checks:
    warned = sum(not c["passed"] for c in checks)
    lines += ["", f"sanity checks: {len(checks) - warned} passed, "
              f"{warned} warnings"]
    lines += [f"  {report.SanityCheck(**c)}" for c in checks]
  return "\n".join(lines)


def _model_name(model: Any) -> str:
  if isinstance(model, nn.Module):
    return type(model).__name__
  fn = getattr(model, "func", model)
  return getattr(fn, "__qualname__", type(fn).__name__)


def _load(dataset, n_examples: Optional[int], data_dir, manual_dir):
  if isinstance(dataset, str):
    from jaxadv import data  # pylint: disable=g-import-not-at-top
    x, y = data.load(dataset, "test", data_dir=data_dir,
                     manual_dir=manual_dir, limit=n_examples)
    return dataset, x, y
  if not (isinstance(dataset, (tuple, list)) and len(dataset) == 2):
    raise TypeError("`dataset` must be a dataset name (e.g. 'cifar10') or "
                    f"an (x, y) pair of arrays; got {type(dataset).__name__}.")
  x, y = dataset
  x, y = np.asarray(x), np.asarray(y)
  if n_examples is not None:
    x, y = x[:n_examples], y[:n_examples]
  return "arrays", x, y


def benchmark(model: Union[nn.Module, Callable[..., jax.Array]],
              variables: Any = None, *,
              dataset: Union[str, tuple[np.ndarray, np.ndarray]] = "cifar10",
              threat_model: str = "Linf", eps: Optional[float] = None,
              n_examples: Optional[int] = 10000, batch_size: int = 500,
              version: str = "standard",
              key: Optional[jax.Array] = None, checks: bool = True,
              sanity_subset: int = 500, return_adv: bool = False,
              verbose: bool = True, progress: bool = False,
              data_dir: Optional[str] = None,
              manual_dir: Optional[str] = None,
              model_name: Optional[str] = None,
              **attack_kwargs: Any) -> dict:
  """Clean and robust accuracy of any model under the AutoAttack protocol.

  Croce & Hein (ICML 2020), "Reliable evaluation of adversarial robustness
  with an ensemble of diverse parameter-free attacks", as RobustBench
  reports it. `version="standard"`: APGD-CE -> APGD-T (9 targets) ->
  FAB-T (9 targets) -> Square (5,000 queries), each on the survivors
  (`evaluate_robustness`; for "L2" without Square, which jaxadv has for
  L-inf only). `"rand"`: APGD-CE -> APGD-DLR with EOT over 20 draws, for
  randomized models (`evaluate_randomized`). `"apgd-t+square"`: the cheaper
  ensemble without FAB-T (not AutoAttack's standard version).

  Example:

    >>> result = benchmark(model, variables, dataset="cifar10",
    ...                    eps=8 / 255, n_examples=1000)  # doctest: +SKIP

  Args:
    model: a Flax module (with `variables`), or any `x -> logits` callable;
      for `version="rand"` a randomized `(x, key) -> logits` callable. See
      `as_apply_fn` for what avoids recompilation.
    variables: the module's variables (None for a callable).
    dataset: a `jaxadv.data` name ("mnist", "fashion_mnist", "cifar10",
      "cifar10_jpeg"; the first `n_examples` of the test split) or an
      `(x, y)` pair: x float32 [N, H, W, C] pixels in [0, 1], y int [N].
    threat_model: "Linf" or "L2".
    eps: budget in pixel units; default per dataset (L-inf: MNIST 0.3,
      Fashion-MNIST 0.1, CIFAR-10 8/255; L2: 2.0, 1.5, 0.5).
    n_examples: how many test examples (None = all).
    batch_size: the largest attack batch (see `evaluate_robustness`).
    version: "standard", "rand" or "apgd-t+square".
    key: PRNG key (default `jax.random.key(0)`).
    checks: run the sanity checks (`jaxadv.evaluation.sanity_checks`:
      eps = 0, accuracy falling with eps, ~0 at a large eps, Square vs
      the white-box attacks, the loss rising along PGD) on the first
      `sanity_subset` examples; deterministic versions only.
    sanity_subset: examples the checks use.
    return_adv: also return "x_adv" [N, ...] (the first adversarial example
      found per example, else the clean input).
    verbose: print the table.
    progress: progress bars.
    data_dir: as `jaxadv.data.load`.
    manual_dir: as `jaxadv.data.load`.
    model_name: the model's name in the table (default: its class name).
    **attack_kwargs: passed to `evaluate_robustness` / `evaluate_randomized`
      (e.g. `apgd_steps`, `num_targets`, `fab_steps`, `square_queries`,
      `eot_samples`, `unroll`).

  Returns:
    A dict: "clean_acc", "robust_acc" (fractions), "per_attack" (cumulative
    robust accuracy after each attack), "attacked", "seconds" (per attack,
    "clean", "checks", "total"), "robust" (bool [N]), "fooled_by",
    "sanity_checks" (list of dicts), "environment", "model", "dataset",
    "threat_model", "eps", "version", "n_examples", and "x_adv" with
    `return_adv`.

  Raises:
    ValueError, TypeError: an unknown threat model, version or dataset,
      no default eps for the dataset, bad data, or a bad model argument.
  """
  t_start = time.perf_counter()
  validation.check_choice(threat_model, "threat_model", tuple(THREAT_MODELS))
  validation.check_choice(version, "version", VERSIONS)
  norm = THREAT_MODELS[threat_model]
  if n_examples is not None:
    validation.check_count(n_examples, "n_examples", 1)
  name, x, y = _load(dataset, n_examples, data_dir, manual_dir)
  if eps is None:
    if (name, norm) not in DEFAULT_EPS:
      raise ValueError(f"no default `eps` for dataset {name!r} and "
                       f"threat_model {threat_model!r}; pass eps=.")
    eps = DEFAULT_EPS[(name, norm)]
  validation.check_nonnegative(eps, "eps")
  apply_fn, variables = as_apply_fn(model, variables)
  key = jax.random.key(0) if key is None else key
  if version == "rand":
    res = autoattack.evaluate_randomized(
        apply_fn, variables, x, y, key, eps=eps, norm=norm,
        batch_size=batch_size, progress=progress, return_adv=return_adv,
        **attack_kwargs)
  else:
    names = autoattack.ENSEMBLES[version]
    if norm != "linf":
      names = tuple(n for n in names if n != "square")
    res = autoattack.evaluate_robustness(
        apply_fn, variables, x, y, key, eps=eps, norm=norm,
        attack_names=names, batch_size=batch_size, progress=progress,
        return_adv=return_adv, **attack_kwargs)
  seconds = dict(res["seconds"])
  seconds["clean"] = (time.perf_counter() - t_start) - sum(seconds.values())
  sanity = []
  if checks and version != "rand":
    t0 = time.perf_counter()
    which = ["eps0", "eps_monotone", "large_eps", "loss_increases"]
    if "square" in res["attacks"]:
      which.insert(3, "square")
    found = report.sanity_checks(
        apply_fn, variables, x, y, jax.random.fold_in(key, 99),
        {"clean_acc": res["clean_acc"]}, eps=eps, norm=norm,
        pgd_steps=50, pgd_step_size=eps / 4, subset=sanity_subset,
        batch_size=min(batch_size, sanity_subset), ensemble=res,
        checks=which)
    sanity = [dataclasses.asdict(c) for c in found]
    seconds["checks"] = time.perf_counter() - t0
  seconds["total"] = time.perf_counter() - t_start
  out = {**res, "seconds": seconds, "sanity_checks": sanity,
         "environment": environment(), "dataset": name,
         "model": model_name or _model_name(model),
         "threat_model": threat_model, "eps": float(eps), "version": version,
         "n_examples": int(len(x))}
  if verbose:
    print(format_benchmark(out))
  return out
