"""The attack-step loop: unrolled or `lax.fori_loop`, chosen per backend.

On XLA:CPU the loop form's cost depends on the convolutions in the body
(`jaxadv.models.layers`): with jax's own conv gradients a rolled loop ran
~3.4x slower than the unrolled one (PGD-40, fast-AT MNIST net, batch 100:
595 vs 177 ms), because XLA:CPU compiles non-canonical convs inside while
bodies with a slow emitter. The fast-AT net's convs default to
`im2col_grad` on CPU (patches, dots and canonical convs only), where the two
forms cost about the same (PGD-10 at batch 500: 223 ms unrolled, 243 ms
rolled; PGD-50 511-571 vs 533-565 images/s with the current layers);
stride-1 convs (Madry CNN) still prefer unrolled. So the default stays
"unroll" on CPU
(`experiments/benchmark_loop.py`, `experiments/benchmark_conv.py` measure
it). On GPU/TPU a rolled loop keeps compile time flat in the number of
steps, so it is the default there.
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
