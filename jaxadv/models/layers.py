"""The 2-D convolution layer of jaxadv's models, with a pluggable kernel.

`Conv` is a drop-in for `flax.linen.Conv` (NHWC input, the same `kernel`
`[kh, kw, C_in, features]` and `bias` `[features]` parameters and
initialisers, so checkpoints and PyTorch ports are unchanged) whose
convolution is a function `conv_fn(x, kernel, strides, pads) -> y`. The
default is `lax_conv`, `lax.conv_general_dilated` with jax's own
gradients: what runs on GPU and TPU. Backend-specific kernels with the same
values live in their own module (`jaxadv.models.xla_cpu`) and are chosen in
one place, `jaxadv.models.get_model(name, kernels=...)`.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import flax.linen as nn
from flax.linen import dtypes as flax_dtypes
import jax
from jax import lax

__all__ = ["Conv", "ConvFn", "Padding", "Pads", "explicit_padding",
           "lax_conv"]

Padding = Union[str, int, Sequence[tuple[int, int]]]
Pads = tuple[tuple[int, int], tuple[int, int]]
ConvFn = Callable[[jax.Array, jax.Array, tuple[int, int], Pads], jax.Array]
"""`(x [B, H, W, C_in], kernel [kh, kw, C_in, C_out], strides, pads) -> y`."""

DIMS = ("NHWC", "HWIO", "NHWC")


def explicit_padding(padding: Padding, in_hw: Sequence[int],
                     kernel_hw: Sequence[int],
                     strides: Sequence[int]) -> Pads:
  """Turns flax-style `padding` into explicit `((top, bottom), (left, right))`.

  Args:
    padding: "SAME", "VALID", an int (the same on every side) or two
      `(low, high)` pairs.
    in_hw: input height and width.
    kernel_hw: kernel height and width.
    strides: the two strides.

  Returns:
    Two `(low, high)` pairs of Python ints.

  Raises:
    ValueError: unknown padding string, or not two pairs.
  """
  if isinstance(padding, str):
    if padding.upper() not in ("SAME", "VALID"):
      raise ValueError(f"padding: expected 'SAME', 'VALID', an int or two "
                       f"(low, high) pairs, got {padding!r}")
    pads = lax.padtype_to_pads(tuple(in_hw), tuple(kernel_hw), tuple(strides),
                               padding.upper())
  elif isinstance(padding, int):
    pads = ((padding, padding), (padding, padding))
  else:
    pads = tuple(tuple(p) for p in padding)
    if len(pads) != 2 or any(len(p) != 2 for p in pads):
      raise ValueError(f"padding: expected two (low, high) pairs, got "
                       f"{padding!r}")
  return tuple((int(lo), int(hi)) for lo, hi in pads)  # type: ignore


def lax_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
             pads: Pads) -> jax.Array:
  """`lax.conv_general_dilated` in NHWC x HWIO -> NHWC, explicit padding.

  Args:
    x: float [B, H, W, C_in].
    kernel: float [kh, kw, C_in, C_out].
    strides: `(sh, sw)`.
    pads: `((top, bottom), (left, right))`.

  Returns:
    float [B, H', W', C_out].
  """
  return lax.conv_general_dilated(x, kernel, strides, pads,
                                  dimension_numbers=DIMS)


class Conv(nn.Module):
  """Drop-in for `flax.linen.Conv` (2-D, NHWC) with a pluggable `conv_fn`.

  Same parameters as `nn.Conv` (`kernel` `[kh, kw, C_in, features]`, `bias`
  `[features]`), same default initialisers and the same outputs, so
  checkpoints and PyTorch ports are unchanged.

  Attributes:
    features: output channels.
    kernel_size: `(kh, kw)`.
    strides: `(sh, sw)`.
    padding: "SAME", "VALID", an int or two `(low, high)` pairs.
    use_bias: add a learned bias.
    kernel_init: kernel initialiser.
    bias_init: bias initialiser.
    conv_fn: the convolution `(x, kernel, strides, pads) -> y`; None =
      `lax_conv`. `jaxadv.models.xla_cpu.conv` gives the same values with
      XLA:CPU-friendly gradients.
  """

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: Padding = "SAME"
  use_bias: bool = True
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()
  conv_fn: Optional[ConvFn] = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the convolution to `x` `[B, H, W, C_in]`; returns NHWC."""
    if x.ndim != 4:
      raise ValueError(f"x: expected rank 4 [B, H, W, C], got shape "
                       f"{x.shape}")
    kernel_hw = tuple(int(k) for k in self.kernel_size)
    strides = tuple(int(s) for s in self.strides)
    kernel = self.param("kernel", self.kernel_init,
                        kernel_hw + (x.shape[-1], self.features))
    bias = (self.param("bias", self.bias_init, (self.features,))
            if self.use_bias else None)
    x, kernel, bias = flax_dtypes.promote_dtype(x, kernel, bias)
    pads = explicit_padding(self.padding, x.shape[1:3], kernel_hw, strides)
    y = (self.conv_fn or lax_conv)(x, kernel, strides, pads)
    if bias is not None:
      y = y + bias
    return y
