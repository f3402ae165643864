"""Learning-rate schedules used by the adversarial-training papers (optax).

Counted in optimizer updates (free AT's replays each count), as the
references do:

* `cyclic` (Wong, Rice & Kolter 2020): the triangle 0 -> peak -> 0 over the
  run. locuslab/fast_adversarial `CIFAR10/train_{fgsm,pgd,free}.py` use
  `torch.optim.lr_scheduler.CyclicLR(base_lr=0, max_lr=lr_max,
  step_size_up=n/2, step_size_down=n/2)`, stepped after every update: the
  peak at 1/2 of the run (`peak_fraction=0.5`; update t uses
  `lr_max * t / (n/2)` on the way up, as here). Their DAWNBench-style
  `train_cifar.py` (and the MNIST script) interpolate `[0, 2/5, 1] x epochs
  -> [0, lr_max, 0]`: the peak at 2/5 (`peak_fraction=0.4`, the default),
  evaluated one update later than here (`(i + 1) / len(loader)`).
* `piecewise` (Madry et al. 2018, MadryLab/cifar10_challenge; Shafahi et
  al. 2019, ashafahi/free_adv_train): `[[0, 0.1], [40000, 0.01], [60000,
  0.001]]` of 80,000 updates, i.e. `piecewise(0.1, [40000, 60000])`, or
  `make_schedule("piecewise", boundaries=(0.5, 0.75))`. TF's
  `piecewise_constant` switches after the boundary update (update 40000
  still uses 0.1), optax at it: one update of 80,000 differs.
"""

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
  """Piecewise-constant decay by `scale` at each boundary (Madry et al.; Free AT).

  Args:
    init_value: the learning rate before the first boundary.
    boundaries: the updates at which the rate is multiplied by `scale`
      (update `b` already uses the lower rate).
    scale: the factor per boundary.

  Returns:
    An optax schedule.
  """
  return optax.piecewise_constant_schedule(
      init_value, {int(b): scale for b in boundaries})


def make_schedule(name: str, *, total_steps: int, learning_rate: float,
                  boundaries: Sequence[float] = (0.5, 0.75),
                  peak_fraction: float = 0.4) -> optax.Schedule:
  """A schedule by name: "constant", "cyclic" or "piecewise".

  Args:
    name: "constant", "cyclic" (`cyclic`) or "piecewise" (`piecewise`, decay
      by 0.1 at each boundary).
    total_steps: optimizer updates in the run.
    learning_rate: the constant rate, the cyclic peak or the piecewise start.
    boundaries: fractions of `total_steps` for "piecewise".
    peak_fraction: where the "cyclic" peak sits (0.4: Wong et al.'s
      `train_cifar.py`; 0.5: their `train_fgsm.py`, `CyclicLR`).

  Returns:
    An optax schedule.

  Raises:
    ValueError: unknown name.
  """
  if name == "constant":
    return optax.constant_schedule(learning_rate)
  if name == "cyclic":
    return cyclic(total_steps, learning_rate, peak_fraction)
  if name == "piecewise":
    return piecewise(learning_rate, [int(f * total_steps) for f in boundaries])
  raise ValueError(f"`schedule` must be one of ('constant', 'cyclic', "
                   f"'piecewise'); got {name!r}.")
