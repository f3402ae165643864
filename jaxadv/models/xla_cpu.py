"""Convolution kernels for XLA:CPU: the one module that knows about them.

XLA:CPU compiles the gradients of `lax` convolutions slowly, inside rolled
loop bodies especially (jax's transposed convolutions hit a generic
emitter), and it runs strided convolutions with few channels slowly. The
kernels here compute the values of `jaxadv.models.layers.lax_conv` and its
derivatives (up to float32 rounding; the tests compare them across strides,
kernel sizes, paddings, jitted and not, and grad-of-grad) with programs
XLA:CPU compiles well:

* `conv2d_im2col`: the patch matrix built from slices and a concat, and one
  matmul. Strided convs whose kernel the stride divides (4x4 / 2) first
  become stride-1 convs on the space-to-depth input. The program holds no
  convolution, and jax's autodiff (both modes, any order) applies.
* `conv2d_im2col_grad` (a custom JVP): without differentiation the lax
  conv; with an input tangent only (attacks) the lax value (im2col with at
  most `FEW_CHANNELS` input channels) and an input gradient that is a
  canonical stride-1 conv on the space-to-depth grid; with a kernel tangent
  (training) exactly `conv2d_im2col`.
* `conv2d` (a custom VJP): both gradients as canonical NHWC x HWIO
  convolutions, for rolled loops over stride-1 convs; no forward mode.

`conv` picks one per convolution shape and is what
`jaxadv.models.get_model(name, kernels="xla_cpu")` gives every `Conv`. Use
it on CPU only; on GPU and TPU the default `lax_conv` is the right choice.
What each kernel costs on CPU is measured by
`python -m experiments.benchmarks.conv` (see the docs' benchmark page).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
from jax import lax
import jax.numpy as jnp

from jaxadv.models.layers import DIMS as _DIMS
from jaxadv.models.layers import Pads
from jaxadv.models.layers import lax_conv as _conv

__all__ = ["CONV_FNS", "FEW_CHANNELS", "IMPLS", "conv", "conv2d",
           "conv2d_im2col", "conv2d_im2col_grad", "uses_im2col"]


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


def _s2d_kernel(kernel: jax.Array, strides: tuple[int, int],
                inverse: bool = False) -> jax.Array:
  """[kh, kw, C, O] -> [kh/sh, kw/sw, sh*sw*C, O], matching _space_to_depth.

  With `inverse=True`, maps a space-to-depth kernel `[kh/sh, kw/sw,
  sh*sw*C, O]` back to `[kh, kw, C, O]`.
  """
  sh, sw = strides
  if inverse:
    kh2, kw2, c2, o = kernel.shape
    c = c2 // (sh * sw)
    kernel = kernel.reshape(kh2, kw2, sh, sw, c, o).transpose(0, 2, 1, 3, 4, 5)
    return kernel.reshape(kh2 * sh, kw2 * sw, c, o)
  kh, kw, c, o = kernel.shape
  kernel = kernel.reshape(kh // sh, sh, kw // sw, sw, c, o)
  kernel = kernel.transpose(0, 2, 1, 3, 4, 5)
  return kernel.reshape(kh // sh, kw // sw, sh * sw * c, o)


def _out_hw(in_hw, kernel_hw, strides, pads) -> tuple[int, int]:
  """Output height and width of a VALID conv over the padded input."""
  return tuple((size + lo + hi - k) // s + 1 for size, k, s, (lo, hi)
               in zip(in_hw, kernel_hw, strides, pads))  # type: ignore


def _s2d_pads(in_hw, kernel_hw, strides, pads) -> Pads:
  """Padding that makes the padded input a multiple of the strides."""
  full_pads = []
  for size, n_out, k, s, (lo, hi) in zip(
      in_hw, _out_hw(in_hw, kernel_hw, strides, pads), kernel_hw, strides,
      pads):
    need = (n_out - 1) * s + k  # input rows the outputs read
    total = -(-max(need, size + lo + hi) // s) * s
    full_pads.append((lo, total - size - lo))
  return tuple(full_pads)  # type: ignore


def _s2d_input(x, kernel_hw, strides, pads):
  """Pads `x` to a multiple of the strides and applies space-to-depth."""
  full_pads = _s2d_pads(x.shape[1:3], kernel_hw, strides, pads)
  xp = jnp.pad(x, ((0, 0),) + full_pads + ((0, 0),))
  return _space_to_depth(xp, strides)


def _forward(x, kernel, strides, pads):
  """The convolution; strided ones as a stride-1 conv on space-to-depth x.

  out[i, j] = sum_{a, b} xpad[s i + a, s j + b] W[a, b]; with a = s p + q the
  sum is a stride-1 conv of space_to_depth(xpad) with a (k/s x k/s) kernel,
  which XLA:CPU runs faster than the strided conv, forward and backward.
  """
  kernel_hw = kernel.shape[:2]
  if not _use_space_to_depth(kernel_hw, strides):
    return _conv(x, kernel, strides, pads)
  n_out = _out_hw(x.shape[1:3], kernel_hw, strides, pads)
  xs = _s2d_input(x, kernel_hw, strides, pads)
  y = _conv(xs, _s2d_kernel(kernel, strides), (1, 1), ((0, 0), (0, 0)))
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
  rolled replays are much slower with jax's own transpose rule).
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


def conv2d_im2col(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                  pads: Pads) -> jax.Array:
  """NHWC x HWIO convolution as im2col (slices and a concat) and one matmul.

  Strided convolutions whose kernel the stride divides are first turned into
  stride-1 convolutions on the space-to-depth input (a 4x4 / 2 conv becomes a
  2x2 window over 4x the channels), so the patch matrix is built from
  `(kh/sh) * (kw/sw)` contiguous slices. The program then holds no
  convolution at all, only slices, pads and dots, and jax's autodiff of
  those is what XLA:CPU compiles well, rolled loop bodies included. Any
  stride, kernel and padding works; `conv` uses it (as
  `conv2d_im2col_grad`) only where it was measured faster.

  Args:
    x: `[B, H, W, C_in]` float activations.
    kernel: `[kh, kw, C_in, C_out]` float kernel (HWIO).
    strides: static `(sh, sw)`, Python ints.
    pads: static `((top, bottom), (left, right))`, Python ints.

  Returns:
    `[B, H_out, W_out, C_out]`, equal to `lax.conv_general_dilated` up to
    float32 summation order. Differentiable in both modes, to any order.
  """
  patches, out_shape = _patches(x, kernel.shape[:2], strides, pads)
  return _patch_matmul(patches, kernel, strides, out_shape)


def _patches(x: jax.Array, kernel_hw: Sequence[int], strides: tuple[int, int],
             pads: Pads) -> tuple[jax.Array, tuple[int, int, int]]:
  """im2col's patch matrix `[B * H_out * W_out, k * C']` and `(B, H_out,
  W_out)`; the space-to-depth form for kernels the stride divides."""
  n_out = _out_hw(x.shape[1:3], kernel_hw, strides, pads)
  if _use_space_to_depth(kernel_hw, strides):
    x = _s2d_input(x, kernel_hw, strides, pads)
    kernel_hw = [k // s for k, s in zip(kernel_hw, strides)]
    strides = (1, 1)
  else:
    x = jnp.pad(x, ((0, 0),) + tuple(pads) + ((0, 0),))
  kh, kw = kernel_hw
  sh, sw = strides
  b, c = x.shape[0], x.shape[-1]
  cols = [lax.slice(x, (0, i, j, 0),
                    (b, i + (n_out[0] - 1) * sh + 1,
                     j + (n_out[1] - 1) * sw + 1, c), (1, sh, sw, 1))
          for i in range(kh) for j in range(kw)]
  patches = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)
  return patches.reshape(-1, kh * kw * c), (b, n_out[0], n_out[1])


def _patch_matmul(patches: jax.Array, kernel: jax.Array,
                  strides: tuple[int, int],
                  out_shape: tuple[int, int, int]) -> jax.Array:
  """The patch matrix times the (space-to-depth) kernel, as NHWC."""
  if _use_space_to_depth(kernel.shape[:2], strides):
    kernel = _s2d_kernel(kernel, strides)
  y = jnp.dot(patches, kernel.reshape(-1, kernel.shape[-1]))
  return y.reshape(out_shape + (kernel.shape[-1],))


# Input channels up to which a space-to-depth conv's value is computed as
# im2col and its input gradient as im2col's transpose (col2im); above it, the
# lax conv and a canonical stride-1 conv on the space-to-depth grid. Chosen
# by `python -m experiments.benchmarks.conv --single_channels=1,3,8,16,32`.
FEW_CHANNELS = 3


def _few_channel_s2d(x: jax.Array, kernel: jax.Array,
                     strides: Sequence[int]) -> bool:
  """Whether im2col is the faster form of this conv's attack path: a
  space-to-depth conv with at most `FEW_CHANNELS` input channels."""
  return (_use_space_to_depth(kernel.shape[:2], strides)
          and x.shape[-1] <= FEW_CHANNELS)


def _im2col_grad_value(x, kernel, strides, pads):
  """The value under an input tangent only: im2col or the lax conv."""
  if _few_channel_s2d(x, kernel, strides):
    return conv2d_im2col(x, kernel, strides, pads)
  return _conv(x, kernel, strides, pads)


def _input_tangent(dx, kernel, strides, pads):
  """The input term of the JVP, written so that its transpose is fast.

  Reverse mode never evaluates this; it transposes it. For space-to-depth
  convs with more than `FEW_CHANNELS` input channels it is a stride-1 conv
  on the space-to-depth input whose kernel is passed in HWOI layout, so the
  transpose jax derives (same kernel, in/out labels swapped) is a canonical
  NHWC x HWIO convolution, fast on XLA:CPU in rolled loop bodies too. With
  few channels it is im2col, whose transpose is slices, pads and adds.
  """
  kernel_hw = kernel.shape[:2]
  if not _use_space_to_depth(kernel_hw, strides) or _few_channel_s2d(
      dx, kernel, strides):
    return conv2d_im2col(dx, kernel, strides, pads)
  n_out = _out_hw(dx.shape[1:3], kernel_hw, strides, pads)
  xs = _s2d_input(dx, kernel_hw, strides, pads)
  k_hwoi = _s2d_kernel(kernel, strides).transpose(0, 1, 3, 2)
  y = lax.conv_general_dilated(xs, k_hwoi, (1, 1), ((0, 0), (0, 0)),
                               dimension_numbers=("NHWC", "HWOI", "NHWC"))
  return y[:, :n_out[0], :n_out[1], :]


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def conv2d_im2col_grad(x: jax.Array, kernel: jax.Array,
                       strides: tuple[int, int], pads: Pads) -> jax.Array:
  """A convolution whose derivatives are built for XLA:CPU.

  A `jax.custom_jvp` that computes `lax.conv_general_dilated`'s values and
  derivatives in the forms XLA:CPU runs fastest (the choice is static, by
  shape; `experiments/benchmarks/conv.py` measures each):

  * Value: the lax conv. Under an input tangent only (attacks), im2col for
    space-to-depth convs with at most `FEW_CHANNELS` input channels.
  * Kernel tangent (training): exactly "im2col": one patch matrix gives
    the value and the kernel term, and the input term is im2col's too.
  * Input tangent only (attacks): for space-to-depth convs with more
    channels, a stride-1 conv on the space-to-depth input whose transpose
    is a canonical convolution (`_input_tangent`); otherwise im2col, whose
    transpose is col2im.

  Differentiable to any order, in both modes (the rule is plain jax).

  Args:
    x: as in `conv2d_im2col`.
    kernel: as in `conv2d_im2col`.
    strides: as in `conv2d_im2col`.
    pads: as in `conv2d_im2col`.

  Returns:
    `[B, H_out, W_out, C_out]`, the convolution.
  """
  # Not differentiated (clean evaluation, Mixup Inference): the lax conv.
  # im2col's faster value for few channels is kept to the attack path: in
  # Mixup Inference's `lax.map` over mixed copies it was slower than lax.
  return _conv(x, kernel, strides, pads)


def _conv2d_im2col_grad_jvp(strides, pads, primals, tangents):
  x, kernel = primals
  dx, dkernel = tangents
  zero = jax.custom_derivatives.SymbolicZero
  if isinstance(dkernel, zero):
    # Input tangent only (attacks): im2col's value with few channels, the
    # lax conv's otherwise; no patch matrix for a kernel term.
    y = _im2col_grad_value(x, kernel, strides, pads)
    dy = None
  else:
    # A kernel tangent (training): one patch matrix of x gives both the
    # value and the kernel term, exactly as "im2col" does.
    patches, out_shape = _patches(x, kernel.shape[:2], strides, pads)
    y = _patch_matmul(patches, kernel, strides, out_shape)
    dy = _patch_matmul(patches, dkernel, strides, out_shape)
  if not isinstance(dx, zero):
    if dy is None:
      dy = _input_tangent(dx, kernel, strides, pads)
    else:
      # Training keeps im2col's input term, so training steps compute what
      # they computed before `_input_tangent` existed (free AT at eps 0.3 on
      # MNIST is chaotic in float rounding: see the README's benchmark).
      dy = dy + conv2d_im2col(dx, kernel, strides, pads)
  if dy is None:
    dy = jnp.zeros_like(y)
  return y, dy


conv2d_im2col_grad.defjvp(_conv2d_im2col_grad_jvp, symbolic_zeros=True)


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
    xs = _s2d_input(x, kernel_hw, strides, pads)
    kh, kw = kernel_hw
    sh, sw = strides
    gk2 = _kernel_grad(xs, g, (kh // sh, kw // sw), (1, 1),
                       ((0, 0), (0, 0)))
    gk = _s2d_kernel(gk2, strides, inverse=True)
  else:
    gk = _kernel_grad(x, g, kernel_hw, strides, pads)
  return gx.astype(x.dtype), gk.astype(kernel.dtype)


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)

# Every kernel by name (the benchmark times them side by side).
CONV_FNS = {"lax": _conv, "im2col": conv2d_im2col,
            "im2col_grad": conv2d_im2col_grad, "explicit": conv2d}
IMPLS = tuple(CONV_FNS)


def uses_im2col(kernel_hw: Sequence[int], strides: Sequence[int]) -> bool:
  """Whether `conv` runs a convolution of this shape as `conv2d_im2col_grad`.

  True for strided convolutions whose kernel the stride divides (the fast-AT
  MNIST net's 4x4 / 2 convs); stride-1 convs stay `lax_conv` (as im2col
  their forward pass is several times slower on XLA:CPU).
  """
  return _use_space_to_depth(kernel_hw, strides)


def conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
         pads: Pads) -> jax.Array:
  """The XLA:CPU convolution for this shape: im2col_grad or lax.

  Takes the arguments of `jaxadv.models.layers.lax_conv` (a `ConvFn`) and
  returns its value, float [B, H', W', C_out], up to float32 rounding.
  """
  if uses_im2col(kernel.shape[:2], strides):
    return conv2d_im2col_grad(x, kernel, strides, pads)
  return _conv(x, kernel, strides, pads)
