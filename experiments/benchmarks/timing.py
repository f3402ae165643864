"""Timing helpers shared by the benchmarks: compile once, then a median.

Every benchmark figure is a median over repeated calls after a warm-up,
with compile time measured separately (issue #7's protocol).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import jax
import numpy as np


def compile_timed(fn: Callable, *args: Any, **jit_kwargs: Any
                  ) -> tuple[Any, float]:
  """`jax.jit(fn, **jit_kwargs)` lowered and compiled for `args`.

  Returns:
    (the compiled function, seconds spent tracing and compiling).
  """
  t0 = time.perf_counter()
  compiled = jax.jit(fn, **jit_kwargs).lower(*args).compile()
  return compiled, time.perf_counter() - t0


def median_seconds(call: Callable[[], Any], repeats: int,
                   warmup: int = 1) -> float:
  """Median wall seconds of `call()` (blocked until ready) over `repeats`
  calls, after `warmup` untimed ones."""
  return interleaved_medians({"call": call}, repeats, warmup=warmup,
                             rewarm=0)["call"]


def interleaved_medians(calls: dict[str, Callable[[], Any]], repeats: int,
                        warmup: int = 1, rewarm: int = 1) -> dict[str, float]:
  """Median wall seconds of each named call, timed in alternation.

  The medians of `interleaved_times` (same arguments).

  Returns:
    name -> median seconds over the rounds.
  """
  times = interleaved_times(calls, repeats, warmup=warmup, rewarm=rewarm)
  return {name: float(np.median(t)) for name, t in times.items()}


def interleaved_times(calls: dict[str, Callable[[], Any]], repeats: int,
                      warmup: int = 1, rewarm: int = 1
                      ) -> dict[str, list[float]]:
  """Wall seconds of each named call in every round, timed in alternation.

  Round r times every call once, in order, before round r + 1 starts, so a
  machine that drifts (other load, clock changes) shifts every call alike
  and their ratios stay comparable (`paired_ratio` takes them round by
  round); `median_seconds` called one after the other would put each figure
  in a different stretch of time. Each timed call follows `rewarm` untimed
  calls of the same function: right after a different program, the first
  call pays for cold caches and re-faulted allocator pages (measured: a
  Madry CNN natural step timed right after a PGD-40 step ran 2x its
  steady-state time), which a training loop that repeats one step never
  sees.

  Args:
    calls: name -> zero-argument call (its result is blocked until ready).
    repeats: timed rounds.
    warmup: untimed rounds first.
    rewarm: untimed calls of a function just before each of its timed ones.

  Returns:
    name -> `repeats` wall seconds, round by round.
  """
  for _ in range(warmup):
    for call in calls.values():
      jax.block_until_ready(call())
  times = {name: [] for name in calls}
  for _ in range(repeats):
    for name, call in calls.items():
      for _ in range(rewarm):
        jax.block_until_ready(call())
      t0 = time.perf_counter()
      jax.block_until_ready(call())
      times[name].append(time.perf_counter() - t0)
  return times


def paired_ratio(num: Sequence[float], den: Sequence[float]) -> dict:
  """`num[r] / den[r]` round by round: its median, min and max.

  For times from the same rounds of `interleaved_times`: a stretch where the
  machine runs slow (measured here: single calls 20-30% off their median)
  then moves both terms of a round, so the median of the per-round ratios is
  steadier than the ratio of the two medians.

  Raises:
    ValueError: the sequences are empty or differ in length.
  """
  num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
  if num.shape != den.shape or num.ndim != 1 or not num.size:
    raise ValueError("`num` and `den` must be non-empty sequences of the "
                     f"same length; got shapes {num.shape} and {den.shape}.")
  r = num / den
  return {"median": float(np.median(r)), "min": float(r.min()),
          "max": float(r.max())}
