"""Type aliases shared across jaxadv (documentation only; nothing is checked).

Shapes: B examples, C classes; images are float32 [B, H, W, C] in [0, 1].
"""

from __future__ import annotations

from typing import Any, Callable

import jax

PyTree = Any
"""Any nested structure of arrays (parameters, optimizer state...)."""

LogitsFn = Callable[[jax.Array], jax.Array]
"""`x [B, ...] -> logits float32 [B, C]`."""

LossFn = Callable[[jax.Array, jax.Array], jax.Array]
"""`(x [B, ...], y int [B]) -> per-example loss float32 [B]`."""

KeyedLossFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
"""`(x [B, ...], y [B], key) -> per-example loss [B]` of a randomized model."""

ApplyFn = Callable[..., jax.Array]
"""`apply_fn(variables, x, train=False) -> logits [B, C]` (Flax `Module.apply`)."""

Batch = dict
"""`{"x": float32 [B, H, W, C] in [0, 1], "y": int32 [B]}`."""

Metrics = dict
"""Scalar metrics of one step, `{"loss": float32 [], "accuracy": float32 []}`."""
