"""The iteration loop of attacks and free-AT replays: one `lax.fori_loop`.

Every multi-step routine in jaxadv (PGD, APGD, EOT-PGD, Square, free AT's
replays) runs its steps through `run_loop`, which is `lax.fori_loop` with a
static trip count and an `unroll` choice:

* `unroll=True` compiles to the straight-line unrolled program (XLA sees
  every step, compile time grows with `steps`);
* `unroll=False` keeps one rolled loop body (compile time flat in `steps`).

`unroll=None` takes `default_unroll()` for the backend the program runs on:
rolled on GPU/TPU, unrolled on CPU, where XLA:CPU compiles the gradients of
`lax` convolutions inside rolled loop bodies with a slow generic emitter.
The benchmark (`experiments/benchmarks/loop.py`) measures both forms; any
function that takes `unroll=` lets a user or a config override the default.
"""

from __future__ import annotations

from typing import Callable, Optional, TypeVar

import jax
from jax import lax

T = TypeVar("T")


def default_unroll(backend: Optional[str] = None) -> bool:
  """Whether attack-step loops are unrolled by default on `backend`.

  Args:
    backend: "cpu", "gpu", "tpu"...; default `jax.default_backend()`.

  Returns:
    True on CPU, False on every other backend.
  """
  return (backend or jax.default_backend()) == "cpu"


def run_loop(steps: int, body: Callable[[int, T], T], init: T, *,
             unroll: Optional[bool] = None) -> T:
  """Runs `body(i, carry)` for i in [0, steps): `lax.fori_loop` with `unroll`.

  Args:
    steps: static number of iterations (>= 0).
    body: `(i, carry) -> carry`; `i` is an int32 scalar.
    init: the initial carry (any pytree of arrays).
    unroll: True (unrolled), False (rolled) or None (`default_unroll()`).

  Returns:
    The final carry (`init` itself when `steps == 0`).

  Raises:
    TypeError: `unroll` is not a bool or None.
  """
  if unroll is None:
    unroll = default_unroll()
  if not isinstance(unroll, bool):
    raise TypeError(f"unroll: expected True, False or None, got {unroll!r}")
  return lax.fori_loop(0, steps, body, init, unroll=unroll)
