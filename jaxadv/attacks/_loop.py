"""The attack-step loop: unrolled or `lax.fori_loop`, chosen per backend.

On GPU/TPU a rolled loop keeps compile time flat in the number of steps, so
it is always the default there. On XLA:CPU the form's cost depends on the
convolutions in the body (`jaxpr`, `jaxadv.models.layers`):

* A body with a non-canonical convolution (anything but NHWC x HWIO ->
  NHWC without input dilation or feature groups; jax's gradients of a lax
  conv are such convs) runs far slower rolled, because XLA:CPU compiles
  those convs inside while bodies with a slow generic emitter: PGD-40 on
  the fast-AT net with lax convs, batch 100, 595 ms rolled vs 177 unrolled;
  free AT m = 8 on the Madry CNN 9.2 s vs 1.0 s. Those run unrolled.
* A body whose convolutions are all canonical, or that has none, runs
  rolled: the fast-AT net with its CPU default convs (`im2col_grad`, whose
  derivatives are patches, dots and canonical convs), an MLP. Measured on 2
  cores (`experiments/benchmark.py`, `experiments/benchmark_loop.py`): free
  AT m = 8 on the fast-AT net 0.91-0.98x a natural step per update rolled
  against 1.09-1.42x unrolled in four benchmark runs (XLA's fusion
  duplicates the unrolled replays' space-to-depth copies), PGD-50 at batch
  500 533-565 img/s rolled against 511-571 unrolled, PGD-40 at batch 100
  135 ms either way, and rolled loops compile up to 4x faster.

So on CPU `default_loop(body=..., init=...)` traces the body once and picks
"unroll" if it finds a non-canonical convolution and "fori" otherwise.
Without a body it returns "unroll", the safe form for unknown bodies.
"""

from __future__ import annotations

from typing import Callable, Optional, TypeVar

import jax
from jax import lax

from jaxadv import _checks

T = TypeVar("T")
LOOP_FORMS = ("unroll", "fori")

_CANONICAL = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1),
                                        ("NHWC", "HWIO", "NHWC"))


def _is_canonical_conv(params: dict) -> bool:
  return (params["dimension_numbers"] == _CANONICAL
          and all(d == 1 for d in params["lhs_dilation"])
          and params["feature_group_count"] == 1
          and params["batch_group_count"] == 1)


def _has_slow_conv(jaxpr) -> bool:
  """Whether a jaxpr (or one nested in it) has a non-canonical conv."""
  for eqn in jaxpr.eqns:
    if (eqn.primitive.name == "conv_general_dilated"
        and not _is_canonical_conv(eqn.params)):
      return True
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        sub = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
        if isinstance(sub, jax.extend.core.Jaxpr) and _has_slow_conv(sub):
          return True
  return False


def default_loop(backend: Optional[str] = None, *,
                 body: Optional[Callable[[int, T], T]] = None,
                 init: Optional[T] = None) -> str:
  """The default loop form for `backend` and, on CPU, for `body`.

  Args:
    backend: "cpu", "gpu", "tpu"...; default `jax.default_backend()`.
    body: optionally the loop body `(i, carry) -> carry`, with `init` its
      initial carry (arrays or their `jax.ShapeDtypeStruct`s); on CPU it is
      traced once (`jax.make_jaxpr`) to look at its convolutions.

  Returns:
    "fori" on GPU/TPU. On CPU: "unroll" when no body is given or the body
    has a non-canonical convolution, "fori" otherwise (the module docstring
    has the measurements).
  """
  backend = backend or jax.default_backend()
  if backend != "cpu":
    return "fori"
  if body is None:
    return "unroll"
  jaxpr = jax.make_jaxpr(body, static_argnums=0)(0, init)
  return "unroll" if _has_slow_conv(jaxpr.jaxpr) else "fori"


def run_loop(steps: int, body: Callable[[int, T], T], init: T,
             loop: Optional[str] = None) -> T:
  """Runs `body(i, carry)` for i in [0, steps) in the chosen loop form.

  Args:
    steps: static number of iterations.
    body: `(i, carry) -> carry`.
    init: the initial carry.
    loop: "unroll", "fori" or None (the default for this backend and body,
      `default_loop(body=body, init=init)`). With `steps == 1` the body is
      called once, in either form.

  Returns:
    The final carry.
  """
  if loop is not None:
    _checks.check_choice(loop, "loop", LOOP_FORMS)
  if steps == 0:
    return init
  if steps == 1:  # nothing to roll; the same program either way
    return body(0, init)
  loop = loop or default_loop(body=body, init=init)
  if loop == "unroll":
    carry = init
    for i in range(steps):
      carry = body(i, carry)
    return carry
  return jax.lax.fori_loop(0, steps, body, init)
