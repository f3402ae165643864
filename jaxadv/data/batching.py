"""Deterministic, resumable mini-batching of in-memory arrays.

The example order of an epoch is a pure function of ``(seed, epoch)``:
``np.random.default_rng([seed, epoch]).permutation(n)``. A run restarted from a
checkpoint at batch ``k`` of epoch ``e`` calls
``batches(x, y, bs, seed=seed, epoch=e, start_batch=k)`` and sees exactly the
batches it would have seen without the interruption.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator

import numpy as np


def _check_int(value: object, arg: str, minimum: int) -> int:
  if (
      isinstance(value, bool)
      or not isinstance(value, numbers.Integral)
      or value < minimum
  ):
    raise ValueError(f"{arg} must be an int >= {minimum}, got {value!r}.")
  return int(value)


def num_batches(n: int, batch_size: int, drop_remainder: bool = True) -> int:
  """Number of batches in one epoch.

  Args:
    n: Number of examples (>= 0).
    batch_size: Examples per batch (> 0).
    drop_remainder: If True the last partial batch is dropped
      (``n // batch_size``), else kept (``ceil(n / batch_size)``).

  Returns:
    The number of batches per epoch.

  Raises:
    ValueError: If ``n < 0`` or ``batch_size <= 0`` (the message names the
      argument).
  """
  n = _check_int(n, "n", 0)
  batch_size = _check_int(batch_size, "batch_size", 1)
  return n // batch_size if drop_remainder else -(-n // batch_size)


def epoch_permutation(n: int, *, seed: int, epoch: int) -> np.ndarray:
  """The example order of one epoch.

  Args:
    n: Number of examples (>= 0).
    seed: Non-negative int seed of the run.
    epoch: Non-negative epoch index.

  Returns:
    int64 [n] permutation of ``range(n)``, equal to
    ``np.random.default_rng([seed, epoch]).permutation(n)``.

  Raises:
    ValueError: If an argument is negative or not an int.
  """
  n = _check_int(n, "n", 0)
  seed = _check_int(seed, "seed", 0)
  epoch = _check_int(epoch, "epoch", 0)
  return np.random.default_rng([seed, epoch]).permutation(n)


def batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    seed: int,
    epoch: int = 0,
    shuffle: bool = True,
    drop_remainder: bool = True,
    start_batch: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
  """Iterates over one epoch of mini-batches.

  Arguments are validated when `batches` is called, not at the first
  ``next()``.

  Args:
    x: Inputs, floating point [N, ...] (e.g. float32 [N, H, W, C] images in
      [0, 1] from `jaxadv.data.load`). Batches are cast to float32.
    y: Integer labels [N]. Batches are cast to int32.
    batch_size: Examples per batch (> 0).
    seed: Non-negative int; with ``epoch`` it fixes the order.
    epoch: Non-negative epoch index; each epoch has its own order.
    shuffle: If False the examples come in their stored order (``seed`` and
      ``epoch`` are still validated but do not matter).
    drop_remainder: If True every batch has exactly ``batch_size`` examples
      and the last ``N % batch_size`` examples of the epoch's order are
      skipped; else the last batch may be smaller.
    start_batch: Index of the first batch to yield, in
      ``[0, num_batches(N, batch_size, drop_remainder)]``; used to resume
      mid-epoch (the batches are identical to those of an uninterrupted run).

  Yields:
    ``{"x": float32 [B, ...], "y": int32 [B]}`` with ``B == batch_size``
    (except possibly the last batch when ``drop_remainder`` is False).

  Raises:
    ValueError: Bad argument; the message names it (``x``, ``y``,
      ``batch_size``, ``seed``, ``epoch`` or ``start_batch``).
  """
  x = np.asarray(x)
  y = np.asarray(y)
  if x.ndim < 1:
    raise ValueError(f"x must have a leading batch axis, got shape {x.shape}.")
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(
        "x must be floating point (e.g. float32 in [0, 1]), got dtype"
        f" {x.dtype}; convert integer images with x.astype(np.float32) / 255"
        " first."
    )
  if y.ndim != 1:
    raise ValueError(f"y must be 1-D [N], got shape {y.shape}.")
  if not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"y must hold integer labels, got dtype {y.dtype}.")
  if len(x) != len(y):
    raise ValueError(
        f"x and y must have the same length, got len(x)={len(x)} and"
        f" len(y)={len(y)}."
    )
  batch_size = _check_int(batch_size, "batch_size", 1)
  seed = _check_int(seed, "seed", 0)
  epoch = _check_int(epoch, "epoch", 0)
  start_batch = _check_int(start_batch, "start_batch", 0)
  n = len(x)
  total = num_batches(n, batch_size, drop_remainder)
  if start_batch > total:
    raise ValueError(
        f"start_batch must be <= num_batches={total} for n={n}, got"
        f" {start_batch}."
    )
  order = (
      epoch_permutation(n, seed=seed, epoch=epoch) if shuffle else np.arange(n)
  )
  return _iterate(x, y, order, batch_size, start_batch, total)


def _iterate(
    x: np.ndarray,
    y: np.ndarray,
    order: np.ndarray,
    batch_size: int,
    start_batch: int,
    total: int,
) -> Iterator[dict[str, np.ndarray]]:
  for b in range(start_batch, total):
    idx = order[b * batch_size : (b + 1) * batch_size]
    yield {
        "x": x[idx].astype(np.float32, copy=False),
        "y": y[idx].astype(np.int32, copy=False),
    }
