"""The attack-step loop: unrolled or `lax.fori_loop`, chosen per backend.

History, measured on XLA:CPU (2 cores, fast-AT MNIST net, batch 100, PGD-40;
`experiments/benchmark.py`, "Attack loop form"): with `flax.linen.Conv` the
rolled loop ran 3.4x slower than the unrolled one (595 vs 177 ms), because
inside a while body XLA:CPU compiled the input-gradient convolution (kernel
in OI order) with a slow generic emitter. jaxadv's models now use
`jaxadv.models.layers.Conv`, whose input gradient is an HWIO convolution;
with it the rolled loop is as fast (139 vs 139 ms at batch 100, 212 vs 250 ms
for PGD-10 at batch 500, 595 vs 676 ms for the Madry CNN) and compiles 3x
faster, so "fori" is the default on every backend. Models with plain
`nn.Conv` layers may still run faster with `loop="unroll"` on CPU.
"""

from __future__ import annotations

from typing import Callable, Optional, TypeVar

import jax

from jaxadv import _checks

T = TypeVar("T")
LOOP_FORMS = ("unroll", "fori")


def default_loop(backend: Optional[str] = None) -> str:
  """The default loop form for `backend` (default: jax's default backend)."""
  del backend  # The same on every backend measured (see the module doc).
  return "fori"


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
