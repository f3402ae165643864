"""Learning-rate schedules used by the adversarial-training papers (optax)."""

from __future__ import annotations

from typing import Sequence

import optax

from jaxadv import validation


def cyclic(total_steps: int, peak_value: float,
           peak_fraction: float = 0.4) -> optax.Schedule:
  """Triangular cyclic schedule 0 -> peak -> 0 (Wong, Rice & Kolter, 2020).

  Args:
    total_steps: number of optimizer updates in the whole run.
    peak_value: the largest learning rate.
    peak_fraction: where the peak sits, as a fraction of the run (2/5 in the
      fast-AT code).

  Raises:
    ValueError, TypeError: `total_steps < 1`, negative `peak_value` or
      `peak_fraction` outside [0, 1].
  """
  validation.check_count(total_steps, "total_steps", 1)
  validation.check_nonnegative(peak_value, "peak_value", "a learning rate")
  validation.check_interval(peak_fraction, "peak_fraction", 0.0, 1.0)
  up = max(1, int(round(total_steps * peak_fraction)))
  down = max(1, total_steps - up)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak_value, up),
       optax.linear_schedule(peak_value, 0.0, down)], [up])


def piecewise(init_value: float, boundaries: Sequence[int],
              scale: float = 0.1) -> optax.Schedule:
  """Piecewise-constant decay by `scale` at each boundary (Madry et al.; Free AT)."""
  return optax.piecewise_constant_schedule(
      init_value, {int(b): scale for b in boundaries})


def make_schedule(name: str, *, total_steps: int, learning_rate: float,
                  boundaries: Sequence[float] = (0.5, 0.75)) -> optax.Schedule:
  """A schedule by name: "constant", "cyclic" or "piecewise".

  `boundaries` are fractions of `total_steps` for "piecewise".

  Raises:
    ValueError: unknown name.
  """
  if name == "constant":
    return optax.constant_schedule(learning_rate)
  if name == "cyclic":
    return cyclic(total_steps, learning_rate)
  if name == "piecewise":
    return piecewise(learning_rate, [int(f * total_steps) for f in boundaries])
  raise ValueError(f"`schedule` must be one of ('constant', 'cyclic', "
                   f"'piecewise'); got {name!r}.")
