"""Input validation shared by the public functions of jaxadv.

Every check raises a `ValueError` or `TypeError` that names the argument and
what was expected. Shape and dtype checks are static, so they cost nothing
under `jax.jit`. Value checks (NaN, pixel range, label range, eps >= 0) need
concrete values: they run when the argument is a concrete array and are skipped
for tracers, so a function called inside a jitted step is checked by its
caller, outside the jitted core.

`checked(fn)` is the checked mode for jitted code: while `fn` is traced
under it, the value checks of the functions it calls become
`jax.experimental.checkify` checks, run inside the compiled code, along with
checkify's NaN checks (any operation that makes a NaN, e.g. NaN logits
from the model), and a failure raises with the message of the check.
"""

from __future__ import annotations

import contextvars
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify


def is_concrete(value: Any) -> bool:
  """True when `value` holds concrete data (not a tracer under jit/grad)."""
  return not isinstance(value, jax.core.Tracer)


# Whether value checks of traced arguments become checkify checks (set by
# `checked` while it traces; never at module level).
_CHECKING = contextvars.ContextVar("jaxadv_checking", default=False)


def _traced_check(ok: Any, message: str, *fmt: Any) -> None:
  """`checkify.check(ok, message)` in checked mode; nothing otherwise."""
  if _CHECKING.get():
    checkify.check(jnp.all(ok), message, *fmt)


def checked(fn: Callable[..., Any], *, jit: bool = True) -> Callable[..., Any]:
  """`fn` with its value checks enforced inside jitted code.

  Traces `fn` (jitted when `jit`) under `jax.experimental.checkify`: the
  value checks jaxadv skips for tracers (NaN/inf or out-of-range pixels,
  eps < 0, labels out of range) become run-time checks, and checkify's NaN
  checks flag the first operation that produces a NaN (e.g. NaN logits
  from the model, hence NaN gradients and a NaN `x_adv`). A failed check
  raises `checkify.JaxRuntimeError` naming what failed. Checks run in the
  compiled code, so the checked function is slower; use it to debug.

  Only what is traced under `checked` is checked: a jitted function that
  was already compiled elsewhere keeps its compiled (unchecked) form.

  Args:
    fn: a function of arrays (e.g. `lambda x, y, k: attacks.pgd(...)`).
    jit: compile it (default) or run it op by op under checkify.

  Returns:
    A function with the same arguments and results as `fn`.
  """
  def traced(*args, **kwargs):
    token = _CHECKING.set(True)
    try:
      return fn(*args, **kwargs)
    finally:
      _CHECKING.reset(token)

  target = jax.jit(traced) if jit else traced
  errors = checkify.user_checks | checkify.nan_checks
  run = checkify.checkify(target, errors=errors)

  def call(*args, **kwargs):
    err, out = run(*args, **kwargs)
    err.throw()
    return out

  return call


def check_image_batch_static(x: Any, name: str = "x", *,
                             rank: int | None = None, min_rank: int = 2,
                             context: str = "") -> None:
  """Static (jit-free) checks of an image batch: rank and floating dtype.

  Args:
    x: array [B, ...].
    name: the argument's name, used in error messages.
    rank: the exact rank required (4 for [B, H, W, C]), or None.
    min_rank: the smallest rank accepted when `rank` is None.
    context: prefix of the message (e.g. the model's name).

  Raises:
    TypeError: non-floating pixels.
    ValueError: wrong rank or an empty batch.
  """
  prefix = f"{context}: " if context else ""
  shape = np.shape(x)
  if len(shape) >= 1 and shape[0] == 0:
    raise ValueError(f"{prefix}`{name}` is empty (shape {shape}): pass at "
                     "least one example.")
  if rank is not None and len(shape) != rank:
    raise ValueError(
        f"{prefix}`{name}` must be a rank-{rank} NHWC image batch of shape "
        f"[B, H, W, C]; got rank {len(shape)} with shape {shape}.")
  if rank is None and len(shape) < min_rank:
    raise ValueError(
        f"{prefix}`{name}` must be a batch of images of rank >= {min_rank} "
        f"([B, H, W, C] or [B, D]); got shape {shape}.")
  dtype = jnp.result_type(x)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(
        f"{prefix}`{name}` must hold floating-point pixels in [0, 1]; got "
        f"dtype {dtype}. Rescale integer images with "
        f"x.astype(np.float32) / 255.")


def check_images(x: Any, name: str = "x", *, min_rank: int = 2) -> None:
  """Checks a batch of images: floating dtype, rank, finite values in [0, 1].

  Args:
    x: array [B, ...] of pixels in [0, 1].
    name: the argument's name, used in error messages.
    min_rank: smallest accepted rank (2 for [B, D], 4 for [B, H, W, C]).

  Raises:
    TypeError: integer or boolean pixels.
    ValueError: wrong rank, NaN/inf, or values outside [0, 1].
  """
  check_image_batch_static(x, name, min_rank=min_rank)
  if not is_concrete(x):
    _traced_check(jnp.isfinite(x), f"`{name}` contains NaN or inf values.")
    _traced_check((x >= 0) & (x <= 1),
                  f"`{name}` must hold pixels in [0, 1].")
    return
  if np.size(x):
    xa = np.asarray(x)
    if not np.all(np.isfinite(xa)):
      raise ValueError(f"`{name}` contains NaN or inf values.")
    lo, hi = float(xa.min()), float(xa.max())
    if lo < 0.0 or hi > 1.0:
      hint = (" It looks like 0-255 pixels: divide by 255." if hi > 1.0 and
              hi <= 255.0 else "")
      raise ValueError(
          f"`{name}` must hold pixels in [0, 1]; got values in "
          f"[{lo:.4g}, {hi:.4g}].{hint}")


def check_labels(y: Any, batch_size: int, name: str = "y",
                 num_classes: int | None = None) -> None:
  """Checks integer labels [B] (values in [0, num_classes) when known).

  Raises:
    TypeError: non-integer labels.
    ValueError: wrong shape or labels out of range.
  """
  shape = np.shape(y)
  if shape != (batch_size,):
    raise ValueError(
        f"`{name}` must be integer labels of shape ({batch_size},) matching "
        f"the batch of `x`; got shape {shape}.")
  dtype = jnp.result_type(y)
  if not jnp.issubdtype(dtype, jnp.integer):
    raise TypeError(f"`{name}` must hold integer class labels; got dtype {dtype}.")
  if not is_concrete(y):
    hi = num_classes if num_classes is not None else jnp.iinfo(jnp.int32).max
    _traced_check((y >= 0) & (y < hi),
                  f"`{name}` labels must lie in [0, {hi}).")
    return
  if batch_size:
    ya = np.asarray(y)
    hi = num_classes if num_classes is not None else np.inf
    if ya.min() < 0 or ya.max() >= hi:
      rng = f"[0, {num_classes})" if num_classes is not None else ">= 0"
      raise ValueError(
          f"`{name}` labels must lie in {rng}; got values in "
          f"[{int(ya.min())}, {int(ya.max())}].")


def check_nonnegative(value: Any, name: str,
                      units: str = "pixel units") -> None:
  """Checks a scalar budget (eps, step_size) is finite and >= 0 when concrete."""
  if np.ndim(value) not in (0, 1):
    raise ValueError(f"`{name}` must be a scalar or a per-example vector; got "
                     f"shape {np.shape(value)}.")
  if not is_concrete(value):
    _traced_check(jnp.isfinite(value), f"`{name}` must be finite.")
    _traced_check(value >= 0, f"`{name}` must be >= 0 ({units}).")
    return
  v = np.asarray(value)
  if not np.all(np.isfinite(v)):
    raise ValueError(f"`{name}` must be finite; got {value}.")
  if np.any(v < 0):
    raise ValueError(f"`{name}` must be >= 0 ({units}); got {value}.")


def check_per_example(value: Any, name: str, batch_size: int) -> None:
  """Checks that a per-example vector (eps, step_size) has `batch_size`
  entries; scalars pass."""
  if np.ndim(value) == 1 and np.shape(value)[0] != batch_size:
    raise ValueError(
        f"`{name}` must be a scalar or a per-example vector of shape "
        f"({batch_size},) matching the batch of `x`; got shape "
        f"{np.shape(value)}.")


def check_count(value: Any, name: str, minimum: int = 0) -> None:
  """Checks a static integer count (steps, restarts, replays)."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"`{name}` must be a Python int (static); got "
                    f"{type(value).__name__} {value!r}.")
  if value < minimum:
    raise ValueError(f"`{name}` must be >= {minimum}; got {value}.")


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> None:
  """Checks a string option against its allowed values."""
  if value not in choices:
    raise ValueError(f"`{name}` must be one of {choices}; got {value!r}.")


def check_logits(logits: Any, y: Any, name: str = "logits",
                 labels_name: str = "y") -> None:
  """Checks logits [B, C] (floating) and their integer labels y [B] in [0, C).

  Shape and dtype checks are static; the label range is checked only for
  concrete `y`.

  Raises:
    TypeError: non-floating logits or non-integer labels.
    ValueError: wrong ranks/shapes or labels outside [0, C).
  """
  shape = np.shape(logits)
  if len(shape) != 2:
    raise ValueError(f"`{name}` must be [B, C] (one row of class scores per "
                     f"example); got shape {shape}.")
  dtype = jnp.result_type(logits)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"`{name}` must be floating point; got dtype {dtype}.")
  check_labels(y, shape[0], labels_name, num_classes=shape[1])


def check_interval(value: Any, name: str, low: float, high: float, *,
                   low_open: bool = False, what: str = "") -> None:
  """Checks a concrete scalar (or array) lies in [low, high] ((low, high]).

  Skipped for tracers, like the other value checks.
  """
  if not is_concrete(value):
    return
  v = np.asarray(value, np.float64)
  ok = np.all(np.isfinite(v)) and np.all(v <= high) and (
      np.all(v > low) if low_open else np.all(v >= low))
  if not ok:
    bracket = "(" if low_open else "["
    raise ValueError(f"`{name}` must be in {bracket}{low}, {high}]"
                     f"{' (' + what + ')' if what else ''}; got {value}.")


def output_classes(logits_fn: Any, x: Any) -> int | None:
  """The number of classes C a model outputs for inputs shaped like `x`.

  Traces `logits_fn` on one abstract example (`jax.eval_shape`: no compute);
  returns None when that fails or the output is not [1, C], so callers fall
  back to checking labels without an upper bound.
  """
  try:
    spec = jax.ShapeDtypeStruct((1,) + tuple(np.shape(x)[1:]), jnp.float32)
    out = jax.eval_shape(logits_fn, spec)
  except Exception:  # pylint: disable=broad-except
    return None
  shape = getattr(out, "shape", ())
  return int(shape[-1]) if len(shape) == 2 else None


def check_nhwc(x: jax.Array, model_name: str) -> None:
  """Checks that `x` is a floating-point rank-4 `[B, H, W, C]` batch.

  Shared by all models in :mod:`jaxadv.models`. The check uses only the static
  shape and dtype, so it runs at trace time and costs nothing under `jax.jit`.
  Pixel values are deliberately not inspected (that would force a host sync on
  every eager forward pass).

  Args:
    x: Input passed to a model's `__call__`.
    model_name: Name of the model, used in the error message.

  Raises:
    ValueError: If `x` does not have rank 4.
    TypeError: If `x` does not have a floating dtype.
  """
  check_image_batch_static(x, "x", rank=4, context=model_name)
