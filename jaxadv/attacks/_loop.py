"""The attack-step loop: unrolled or `lax.fori_loop`, chosen per backend.

Measured on XLA:CPU (2 cores, fast-AT MNIST net, batch 100): a 10-step PGD
loop runs ~3x faster unrolled than as `lax.fori_loop`, and a 40-step loop
~3.4x faster (see `experiments/benchmark_loop.py`). The cause is the conv
gradient: inside a while body XLA:CPU compiles jax's input-gradient conv
(kernel in OI order) with a slow generic emitter. With
`jaxadv.models.layers.Conv(explicit_grads=True)` the rolled loop is as fast
as the unrolled one (PGD-40: 139 vs 139 ms), but that layer is opt-in, so
the default stays "unroll" on CPU. On GPU/TPU a rolled loop keeps compile
time flat in the number of steps, so it is the default there.
"""

from __future__ import annotations

from typing import Callable, Optional, TypeVar

import jax

from jaxadv import _checks

T = TypeVar("T")
LOOP_FORMS = ("unroll", "fori")


def default_loop(backend: Optional[str] = None) -> str:
  """The default loop form for `backend` (default: jax's default backend)."""
  backend = backend or jax.default_backend()
  return "unroll" if backend == "cpu" else "fori"


def run_loop(steps: int, body: Callable[[int, T], T], init: T,
             loop: Optional[str] = None) -> T:
  """Runs `body(i, carry)` for i in [0, steps) in the chosen loop form.

  Args:
    steps: static number of iterations.
    body: `(i, carry) -> carry`.
    init: the initial carry.
    loop: "unroll", "fori" or None (the backend's default, `default_loop()`).

  Returns:
    The final carry.
  """
  loop = loop or default_loop()
  _checks.check_choice(loop, "loop", LOOP_FORMS)
  if loop == "unroll":
    carry = init
    for i in range(steps):
      carry = body(i, carry)
    return carry
  return jax.lax.fori_loop(0, steps, body, init)
