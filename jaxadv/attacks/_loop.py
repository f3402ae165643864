"""The attack-step loop: unrolled or `lax.fori_loop`, chosen per backend.

On XLA:CPU the loop form's cost depends on what the body computes
(`jaxadv.models.layers`): with jax's own conv gradients a rolled loop ran
~3.4x slower than the unrolled one (PGD-40, fast-AT MNIST net, batch 100:
595 vs 177 ms), because XLA:CPU compiles non-canonical convs inside while
bodies with a slow emitter, and the Madry CNN's stride-1 convs (lax)
still prefer unrolled (free AT m = 8: 1.0 s unrolled, 9.2 s rolled). A
body with no convolution at all is the other way round: the fast-AT net's
free-AT replays (im2col_grad convs, which are patches and dots under a
kernel gradient) cost 7.3 ms per replay rolled against 11.5 unrolled at
m = 8, because XLA's fusion duplicates the unrolled replays' space-to-depth
copies (19 copies in a natural step, 433 in 8 unrolled replays, 24
rolled), and an MLP's m = 8 replays 17.1 against 22.5 ms, with PGD equal
either way and rolled compiles 2-4x faster. So on CPU the default
inspects the body: "unroll" if its jaxpr has a convolution, "fori" if not
(`experiments/benchmark.py`, `experiments/benchmark_loop.py`,
`experiments/benchmark_conv.py` measure it). On GPU/TPU a rolled loop keeps
compile time flat in the number of steps, so it is always the default
there.
"""

from __future__ import annotations

from typing import Callable, Optional, TypeVar

import jax

from jaxadv import _checks

T = TypeVar("T")
LOOP_FORMS = ("unroll", "fori")


def _has_conv(jaxpr) -> bool:
  """Whether a jaxpr (or any jaxpr nested in its equations) convolves."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "conv_general_dilated":
      return True
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        sub = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
        if isinstance(sub, jax.extend.core.Jaxpr) and _has_conv(sub):
          return True
  return False


def default_loop(backend: Optional[str] = None, *,
                 body: Optional[Callable[[int, T], T]] = None,
                 init: Optional[T] = None) -> str:
  """The default loop form for `backend` (default: jax's default backend).

  Args:
    backend: "cpu", "gpu", "tpu"...; default `jax.default_backend()`.
    body: optionally the loop body `(i, carry) -> carry`, with `init` its
      initial carry; on CPU it is traced once (`jax.make_jaxpr`) to see
      whether it convolves.

  Returns:
    "fori" on GPU/TPU. On CPU: "unroll" when no body is given or the body
    has a convolution, "fori" when it has none (see the module docstring
    for the measurements).
  """
  backend = backend or jax.default_backend()
  if backend != "cpu":
    return "fori"
  if body is None:
    return "unroll"
  jaxpr = jax.make_jaxpr(body, static_argnums=0)(0, init)
  return "unroll" if _has_conv(jaxpr.jaxpr) else "fori"


def run_loop(steps: int, body: Callable[[int, T], T], init: T,
             loop: Optional[str] = None) -> T:
  """Runs `body(i, carry)` for i in [0, steps) in the chosen loop form.

  Args:
    steps: static number of iterations.
    body: `(i, carry) -> carry`.
    init: the initial carry.
    loop: "unroll", "fori" or None (the default for this backend and body,
      `default_loop(body=body, init=init)`).

  Returns:
    The final carry.
  """
  if loop is not None:
    _checks.check_choice(loop, "loop", LOOP_FORMS)
  if steps == 0:
    return init
  loop = loop or default_loop(body=body, init=init)
  if loop == "unroll":
    carry = init
    for i in range(steps):
      carry = body(i, carry)
    return carry
  return jax.lax.fori_loop(0, steps, body, init)
