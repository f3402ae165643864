"""A 2-D convolution whose gradients XLA:CPU compiles well inside loops.

`jax.grad` of `lax.conv_general_dilated` gives convolutions with swapped
kernel dimensions (`dim_labels=..._01oi->...` in the HLO) for the input
gradient, and transposed operands for the kernel gradient. Outside a loop
XLA:CPU canonicalises them and calls its fast (Eigen) convolution. Inside a
`lax.fori_loop`/`scan` body it does not, and falls back to a generic
emitter. Measured on 2 CPU cores (fast-AT MNIST net): PGD-40 at batch 100 ran
3.4x slower rolled than unrolled (595 vs 177 ms), and free AT with m = 2
rolled replays took 112 ms per call against 15 ms unrolled (Madry CNN: 3.5 s
against 0.37 s). The gap is the same on one core: it is the emitted conv,
not threading.

`conv2d` writes both gradients as canonical NHWC x HWIO convolutions (input
gradient: the flipped kernel in HWIO layout over the dilated cotangent;
kernel gradient: activations viewed as [C, H, W, N] against the cotangent as
an HWIO window). Strided convolutions whose kernel the stride divides (the
fast-AT net's 4x4 / 2) run as stride-1 convolutions on the space-to-depth
input, forward and backward, which is ~1.3x faster for PGD at batch 500.
With it the rolled loops run as fast as unrolled ones (PGD-40: 139 vs
139 ms; free AT m = 2: 16 vs 18 ms per call) and compile ~3x faster.
The price, measured: a natural training step outside any loop is ~1.3x
slower (fast-AT net, batch 128: 10.1 vs 7.3 ms; Madry CNN: 240 vs 185 ms),
because the explicit transposes are real copies there.

Values equal jax's own gradients (the tests compare them across strides,
kernel sizes and paddings, and grad-of-grad). Forward-mode differentiation
(`jax.jvp`, `jax.jacfwd`) through `conv2d` raises; `Conv(explicit_grads=
False)`, the default, is a plain `lax` convolution.

Status: opt-in (`explicit_grads=True`). jaxadv's models use `Conv` with the
default, so they compute exactly what `nn.Conv` computes. Not yet the
default because, besides the natural-step cost above, a free-AT
time-to-accuracy run with it switched on (robust_mnist recipe, m = 8, rolled
replays) did not reach 80% PGD-20 accuracy within 400 s, where the default
path reaches it in ~86 s; that has not been explained yet.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence, Union

import flax.linen as nn
from flax.linen import dtypes as flax_dtypes
import jax
from jax import lax
import jax.numpy as jnp

__all__ = ["Conv", "conv2d", "explicit_padding"]

Padding = Union[str, int, Sequence[tuple[int, int]]]
Pads = tuple[tuple[int, int], tuple[int, int]]
_DIMS = ("NHWC", "HWIO", "NHWC")


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


def _conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
          pads: Pads) -> jax.Array:
  return lax.conv_general_dilated(x, kernel, strides, pads,
                                  dimension_numbers=_DIMS)


def _use_space_to_depth(kernel_hw: Sequence[int],
                        strides: Sequence[int]) -> bool:
  """Strided convs whose kernel the stride divides run as stride-1 convs."""
  return (any(s > 1 for s in strides)
          and all(k % s == 0 for k, s in zip(kernel_hw, strides)))


def _space_to_depth(x: jax.Array, strides: tuple[int, int]) -> jax.Array:
  b, h, w, c = x.shape
  sh, sw = strides
  x = x.reshape(b, h // sh, sh, w // sw, sw, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // sh, w // sw, sh * sw * c)


def _depth_to_space(x: jax.Array, strides: tuple[int, int],
                    c: int) -> jax.Array:
  b, h, w, _ = x.shape
  sh, sw = strides
  x = x.reshape(b, h, w, sh, sw, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * sh, w * sw, c)


def _s2d_kernel(kernel: jax.Array, strides: tuple[int, int]) -> jax.Array:
  kh, kw, c, o = kernel.shape
  sh, sw = strides
  kernel = kernel.reshape(kh // sh, sh, kw // sw, sw, c, o)
  return kernel.transpose(0, 2, 1, 3, 4, 5).reshape(
      kh // sh, kw // sw, sh * sw * c, o)


def _s2d_pads(in_hw, kernel_hw, strides, pads):
  """Padding that makes the padded input a multiple of the strides."""
  out = []
  for size, k, s, (lo, hi) in zip(in_hw, kernel_hw, strides, pads):
    n_out = (size + lo + hi - k) // s + 1
    need = (n_out - 1) * s + k  # input rows the outputs read
    total = -(-max(need, size + lo + hi) // s) * s
    out.append((lo, total - size - lo))
  return tuple(out)


def _forward(x, kernel, strides, pads):
  """The convolution; strided ones as a stride-1 conv on space-to-depth x.

  out[i, j] = sum_{a, b} xpad[s i + a, s j + b] W[a, b]; with a = s p + q the
  sum is a stride-1 conv of space_to_depth(xpad) with a (k/s x k/s) kernel,
  which XLA:CPU runs about 1.3x faster than the strided conv, forward and
  backward (fast-AT MNIST net, batch 500).
  """
  kernel_hw = kernel.shape[:2]
  if not _use_space_to_depth(kernel_hw, strides):
    return _conv(x, kernel, strides, pads)
  full_pads = _s2d_pads(x.shape[1:3], kernel_hw, strides, pads)
  n_out = [(size + lo + hi - k) // s + 1 for size, k, s, (lo, hi)
           in zip(x.shape[1:3], kernel_hw, strides, pads)]
  xp = jnp.pad(x, ((0, 0),) + full_pads + ((0, 0),))
  y = _conv(_space_to_depth(xp, strides), _s2d_kernel(kernel, strides),
            (1, 1), ((0, 0), (0, 0)))
  return y[:, :n_out[0], :n_out[1], :]


def _input_grad(x, kernel, strides, pads, g):
  """d conv / d x as convolutions whose kernels are in HWIO layout."""
  kernel_hw = kernel.shape[:2]
  c = x.shape[-1]
  if _use_space_to_depth(kernel_hw, strides):
    full_pads = _s2d_pads(x.shape[1:3], kernel_hw, strides, pads)
    k2 = _s2d_kernel(kernel, strides)
    kh, kw = k2.shape[:2]
    s2d_hw = [(size + lo + hi) // s for size, s, (lo, hi)
              in zip(x.shape[1:3], strides, full_pads)]
    # Transpose of a VALID stride-1 conv: a FULL conv with the flipped
    # kernel, then zero rows for outputs the slice dropped.
    gy = jnp.pad(g, ((0, 0), (0, s2d_hw[0] - kh + 1 - g.shape[1]),
                     (0, s2d_hw[1] - kw + 1 - g.shape[2]), (0, 0)))
    flipped = jnp.flip(k2, (0, 1)).transpose(0, 1, 3, 2)
    gs = _conv(gy, flipped, (1, 1), ((kh - 1, kh - 1), (kw - 1, kw - 1)))
    gxp = _depth_to_space(gs, strides, c)
    (top, _), (left, _) = full_pads
    return gxp[:, top:top + x.shape[1], left:left + x.shape[2], :]
  # Transposed convolution: dilate g by the strides, pad so that a VALID
  # stride-1 convolution with the flipped kernel returns [H, W].
  back_pads = []
  for size, out, k, s, (lo, _) in zip(x.shape[1:3], g.shape[1:3], kernel_hw,
                                      strides, pads):
    low = k - 1 - lo
    back_pads.append((low, size + k - 1 - low - ((out - 1) * s + 1)))
  flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)  # HW,O,I as HWIO
  return lax.conv_general_dilated(g, flipped, (1, 1), tuple(back_pads),
                                  lhs_dilation=strides,
                                  dimension_numbers=_DIMS)


def _kernel_grad(x: jax.Array, g: jax.Array, kernel_hw: Sequence[int],
                 strides: tuple[int, int], pads: Pads) -> jax.Array:
  """d conv / d kernel as one canonical (NHWC x HWIO) convolution.

  gk[a, b, c, o] = sum_{n, i, j} xpad[n, s i + a, s j + b, c] g[n, i, j, o]:
  a convolution of xpad viewed as [C, H, W, N] with g viewed as an HWIO
  window [oh, ow, N, O] dilated by the strides. Written out so that XLA:CPU
  does not meet a non-canonical convolution inside a loop body (free AT's
  rolled replays ran 13x slower with jax's own transpose rule).
  """
  xp = lax.pad(x, jnp.zeros((), x.dtype),
               ((0, 0, 0),) + tuple((lo, hi, 0) for lo, hi in pads)
               + ((0, 0, 0),))
  need = [(o - 1) * s + k for o, s, k in zip(g.shape[1:3], strides,
                                            kernel_hw)]
  lhs = xp[:, :need[0], :need[1], :].transpose(3, 1, 2, 0)
  rhs = g.transpose(1, 2, 0, 3)
  gk = lax.conv_general_dilated(lhs, rhs, (1, 1), ((0, 0), (0, 0)),
                                rhs_dilation=strides,
                                dimension_numbers=_DIMS)
  return gk.transpose(1, 2, 0, 3)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
           pads: Pads) -> jax.Array:
  """NHWC x HWIO convolution with an explicit, loop-friendly input gradient.

  Strided convolutions whose kernel size the stride divides (the fast-AT
  MNIST net's 4x4 / 2) run as stride-1 convolutions on the space-to-depth
  input, forward and backward; the others as `lax.conv_general_dilated`
  with the input gradient given as a transposed convolution whose kernel is
  already in HWIO layout.

  Args:
    x: `[B, H, W, C_in]` float activations.
    kernel: `[kh, kw, C_in, C_out]` float kernel (flax's HWIO layout).
    strides: static `(sh, sw)`, Python ints.
    pads: static `((top, bottom), (left, right))`, Python ints
      (see `explicit_padding`).

  Returns:
    `[B, H_out, W_out, C_out]`, equal (to float rounding) to
    `lax.conv_general_dilated` with the same arguments.
  """
  return _forward(x, kernel, strides, pads)


def _conv2d_fwd(x, kernel, strides, pads):
  return _forward(x, kernel, strides, pads), (x, kernel)


def _conv2d_bwd(strides, pads, res, g):
  x, kernel = res
  gx = _input_grad(x, kernel, strides, pads, g)
  kernel_hw = kernel.shape[:2]
  if _use_space_to_depth(kernel_hw, strides):
    full_pads = _s2d_pads(x.shape[1:3], kernel_hw, strides, pads)
    xs = _space_to_depth(
        jnp.pad(x, ((0, 0),) + full_pads + ((0, 0),)), strides)
    kh, kw, c, o = kernel.shape
    sh, sw = strides
    gk2 = _kernel_grad(xs, g, (kh // sh, kw // sw), (1, 1),
                       ((0, 0), (0, 0)))
    # Inverse of _s2d_kernel (the same axis swap).
    gk = gk2.reshape(kh // sh, kw // sw, sh, sw, c, o).transpose(
        0, 2, 1, 3, 4, 5).reshape(kh, kw, c, o)
  else:
    gk = _kernel_grad(x, g, kernel_hw, strides, pads)
  return gx.astype(x.dtype), gk.astype(kernel.dtype)


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


class Conv(nn.Module):
  """Drop-in for `flax.linen.Conv` (2-D, NHWC) with `conv2d`'s gradient.

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
    explicit_grads: use `conv2d`'s custom VJP (opt-in; see the module
      doc for what it costs and buys on CPU). False (default): a plain `lax`
      convolution, which also supports forward-mode autodiff.
  """

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: Padding = "SAME"
  use_bias: bool = True
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()
  explicit_grads: bool = False

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
    if self.explicit_grads:
      y = conv2d(x, kernel, strides, pads)
    else:
      y = _conv(x, kernel, strides, pads)
    if bias is not None:
      y = y + bias
    return y
