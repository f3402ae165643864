"""Mixup Inference: MI-PL, MI-OL and MI-Combined (Pang, Xu & Zhu, ICLR 2020).

For an input `x` with base prediction `y_hat = argmax F(x)`, Mixup Inference
averages the model's softmax over `num_samples` (N) mixtures of `x` with clean
training images `x_s` drawn from a sample pool:

    MI(x) = (1 / N) sum_i F(lam * x + (1 - lam) * x_s_i)

* MI-PL: partners from the predicted class `y_hat` (lam 0.5, N 10, pool 1,000);
* MI-OL: partners from the other classes (lam 0.5 for mixup models, 0.6 for
  IAT models; N 30; pool 10,000);
* MI-Combined: MI-PL first; its detection gap `max F(x) - max MI_PL(x)`
  decides (threshold 0.2) between the MI-PL output and MI-OL.

The N mixed copies are evaluated as one batched forward of B x N images
(`chunk_size=None`, the default), or `chunk_size` copies at a time through
`jax.lax.map` (the way to bound memory, and faster on CPU, where a chunk of
about 1,000 images keeps the activations in cache: see the benchmark);
the copies are folded into the batch example-major, so a batch split over
devices (`jaxadv.parallel.batch_parallel`) stays split. Partners are
drawn independently for every example and sample. Everything is a pure
function of an explicit PRNG key; `lam` may be traced (sweeping it does not
recompile), `num_samples` and `chunk_size` are static.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv import validation

from jaxadv.types import LogitsFn

PARTNERS = ("pl", "ol")

class SamplePool(NamedTuple):
  """Clean training images indexed by class, the partners of Mixup Inference.

  A balanced pool: the same number K of images for each of the C classes, so
  that a partner is `images[class, index]` with no padding or masking.
  """
  images: jax.Array  # float32 [C, K, H, W, Ch] (or [C, K, D]), pixels in [0, 1]

  @property
  def num_classes(self) -> int:
    return self.images.shape[0]

  @property
  def per_class(self) -> int:
    return self.images.shape[1]


class MIOutput(NamedTuple):
  """What Mixup Inference returns for a batch of B inputs and C classes."""
  probs: jax.Array   # float32 [B, C], rows sum to 1: the averaged softmax
  gap: jax.Array     # float32 [B], max F(x) - max MI(x): the detection gap
  base_pred: jax.Array  # int32 [B], argmax F(x): the base model's, NOT MI's
  detected: Optional[jax.Array] = None  # bool [B] (MI-Combined: used MI-OL)

  @property
  def pred(self) -> jax.Array:
    """int32 [B], Mixup Inference's prediction: `argmax(probs, -1)`."""
    return jnp.argmax(self.probs, axis=-1).astype(jnp.int32)


def make_pool(x: np.ndarray, y: np.ndarray, *, size: int, key: jax.Array,
              num_classes: Optional[int] = None) -> SamplePool:
  """Draws a balanced sample pool from (training) data, on the host.

  Args:
    x: float32 [M, ...] clean images in [0, 1] (training split, never test).
    y: int [M] labels in [0, num_classes).
    size: total pool size; `size // num_classes` images per class
      (1,000 for MI-PL, 10,000 for MI-OL in the paper).
    key: PRNG key choosing the images (without replacement within a class).
    num_classes: C; default `max(y) + 1`.

  Returns:
    A `SamplePool` with `images` [C, size // C, ...].

  Raises:
    ValueError: `size < num_classes`, mismatched lengths, or a class with
      fewer than `size // num_classes` images (including a missing class:
      MI-PL needs partners of every class it may predict).
  """
  validation.check_images(x, "x")
  x = np.asarray(x)
  y = np.asarray(y)
  if y.ndim != 1 or y.shape[0] != x.shape[0]:
    raise ValueError(f"`y` must be int [M] with M = {x.shape[0]} (the "
                     f"length of `x`); got shape {y.shape}.")
  num_classes = int(y.max()) + 1 if num_classes is None else int(num_classes)
  validation.check_labels(y, x.shape[0], "y", num_classes=num_classes)
  if size < num_classes:
    raise ValueError(f"`size` must be >= num_classes ({num_classes}) for a "
                     f"balanced pool; got {size}.")
  per_class = size // num_classes
  rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
  chosen = []
  for c in range(num_classes):
    idx = np.flatnonzero(y == c)
    if idx.size < per_class:
      raise ValueError(
          f"class {c} has {idx.size} images in `x`/`y`, fewer than the "
          f"{per_class} per class a pool of size {size} needs"
          f"{' (the class is missing)' if idx.size == 0 else ''}; MI-PL "
          f"needs partners from every class.")
    chosen.append(rng.choice(idx, per_class, replace=False))
  return SamplePool(jnp.asarray(x[np.stack(chosen)]))


def _check_pool_images(pool: SamplePool, x: jax.Array) -> None:
  """Static: `pool` is a SamplePool whose images are shaped as `x`'s."""
  if not isinstance(pool, SamplePool):
    raise TypeError(f"`pool` must be a SamplePool (see make_pool); got "
                    f"{type(pool).__name__}.")
  if tuple(pool.images.shape[2:]) != tuple(x.shape[1:]):
    raise ValueError(
        f"`x` images have shape {tuple(x.shape[1:])} but the `pool` images "
        f"(the model's data) {tuple(pool.images.shape[2:])}; they must "
        "match.")


def _check_pool(pool: SamplePool, x: jax.Array, num_classes: int) -> None:
  """Static checks: the pool's image shape and class count match."""
  _check_pool_images(pool, x)
  if pool.num_classes != num_classes:
    raise ValueError(
        f"`pool` has {pool.num_classes} classes but the model outputs "
        f"{num_classes} logits; build the pool with num_classes="
        f"{num_classes}.")
  if pool.per_class < 1:
    raise ValueError("`pool` has no images per class.")


def _check_lam(lam, name: str = "lam") -> None:
  if validation.is_concrete(lam):
    lam_np = np.asarray(lam)
    if not np.all(np.isfinite(lam_np)) or np.any(lam_np < 0) or np.any(
        lam_np > 1):
      raise ValueError(f"`{name}` must be in [0, 1]; got {lam}.")


def _draw_one(pool: SamplePool, y_hat: jax.Array, key: jax.Array,
              partners: str) -> jax.Array:
  """One partner per example: [B, ...]."""
  c, k = pool.num_classes, pool.per_class
  k_cls, k_idx = jax.random.split(key)
  idx = jax.random.randint(k_idx, y_hat.shape, 0, k)
  if partners == "pl":
    cls = y_hat
  else:
    cls = (y_hat + jax.random.randint(k_cls, y_hat.shape, 1, c)) % c
  return pool.images[cls, idx]


def _check_partners(pool: SamplePool, partners: str) -> None:
  validation.check_choice(partners, "partners", PARTNERS)
  if partners == "ol" and pool.num_classes < 2:
    raise ValueError("MI-OL needs at least 2 classes in `pool`.")


def draw_partners(pool: SamplePool, y_hat: jax.Array, key: jax.Array, *,
                  num_samples: int, partners: str) -> jax.Array:
  """Draws `num_samples` partners per example from the pool.

  Sample n uses `jax.random.split(key, num_samples)[n]`: the same draws
  `mixup_inference` makes with that key, however it chunks the copies.

  Args:
    pool: the `SamplePool` [C, K, ...].
    y_hat: int32 [B] predicted labels.
    key: PRNG key.
    num_samples: N, static.
    partners: "pl" (the predicted class) or "ol" (uniform over the other
      C - 1 classes), per example and sample.

  Returns:
    float32 [N, B, ...] partner images.

  Raises:
    ValueError: unknown `partners`, or "ol" with a one-class pool.
  """
  _check_partners(pool, partners)
  keys = jax.random.split(key, num_samples)
  return jax.vmap(lambda k: _draw_one(pool, y_hat, k, partners))(keys)


def map_samples(fn: Callable[[jax.Array], jax.Array], keys: jax.Array,
                chunk_size: Optional[int] = None) -> jax.Array:
  """`fn(key) -> [B, C]` over N keys: vmapped, or `chunk_size` at a time.

  Args:
    fn: one random copy's output (e.g. its softmax).
    keys: [N] PRNG keys.
    chunk_size: None (one vmapped call over all N) or an int >= 1
      (sequential steps of `chunk_size` vmapped copies), static.

  Returns:
    The stacked outputs, [N, B, C].
  """
  if chunk_size is None or chunk_size >= keys.shape[0]:
    return jax.vmap(fn)(keys)
  if chunk_size == 1:
    return jax.lax.map(fn, keys)
  return jax.lax.map(fn, keys, batch_size=chunk_size)


def mixup_inference(logits_fn: LogitsFn, x: jax.Array, pool: SamplePool,
                    key: jax.Array, *, lam=0.5, num_samples: int = 30,
                    partners: str = "ol",
                    chunk_size: Optional[int] = None) -> MIOutput:
  """Mixup Inference with partners from the predicted or the other classes.

  Pang, Xu & Zhu, "Mixup Inference: Better Exploiting Mixup to Defend
  Adversarial Attacks", ICLR 2020, Algorithm 1.

  Args:
    logits_fn: `x [B, ...] -> logits [B, C]`, the (mixup- or IAT-trained)
      model in inference mode.
    x: float32 [B, ...] inputs in [0, 1] (clean or adversarial).
    pool: `SamplePool` of clean training images, [C, K, ...].
    key: PRNG key for the partners.
    lam: weight of `x` in the mixture, in [0, 1]; scalar, may be traced.
      `lam = 1` gives back the base model's softmax.
    num_samples: N, the number of mixed copies per input (static, >= 1).
    partners: "pl" (MI-PL: class y_hat) or "ol" (MI-OL: other classes).
    chunk_size: evaluate the N copies `chunk_size` at a time (static, >= 1):
      None (default) evaluates all N x B images in one vmapped forward. The
      output does not depend on it (same draws, up to float summation
      order); on CPU, chunks of about 1,000 images are faster.

  Returns:
    `MIOutput(probs [B, C], gap [B], base_pred [B])`; Mixup Inference's
    prediction is `.pred` (`argmax(probs, -1)`), `base_pred` the base
    model's.

  Raises:
    ValueError, TypeError: bad `x`, `lam` outside [0, 1], `num_samples < 1`,
      unknown `partners`, or a pool that does not match `x` or the model.
  """
  validation.check_images(x, "x")
  validation.check_count(num_samples, "num_samples", 1)
  if chunk_size is not None:
    validation.check_count(chunk_size, "chunk_size", 1)
  validation.check_choice(partners, "partners", PARTNERS)
  _check_lam(lam)
  _check_pool_images(pool, x)
  try:
    logits = logits_fn(x)
  except Exception as e:  # flax scope / shape errors name neither argument
    if type(e).__module__.split(".")[0] != "flax":
      raise
    raise ValueError(
        f"`logits_fn` cannot run on `x` of shape {tuple(x.shape)} (does the "
        f"model take images of this size?): {type(e).__name__}: "
        f"{str(e)[:300]}") from e
  if validation.is_concrete(logits) and not bool(
      jnp.all(jnp.isfinite(logits))):
    raise ValueError("`logits_fn` gives NaN or inf logits at `x`: Mixup "
                     "Inference would return NaN probabilities; check the "
                     "model's parameters and inputs.")
  _check_pool(pool, x, logits.shape[-1])
  _check_partners(pool, partners)
  probs_x = jax.nn.softmax(logits, axis=-1)
  y_hat = jnp.argmax(logits, axis=-1).astype(jnp.int32)

  def copies(keys):  # k keys -> summed softmax of k copies, [B, C]
    # The copies are folded into the batch example-major, [B, k] -> [B * k],
    # so a batch split over devices stays split through the forward pass
    # (vmap's copy-major [k, B] -> [k * B] would gather it on every device).
    x_s = jax.vmap(lambda kk: _draw_one(pool, y_hat, kk, partners),
                   out_axes=1)(keys)
    x_mix = lam * x[:, None] + (1.0 - lam) * x_s
    logits = logits_fn(x_mix.reshape((-1,) + x.shape[1:]))
    probs = jax.nn.softmax(logits, axis=-1)
    return probs.reshape(x.shape[0], keys.shape[0], -1).sum(axis=1)

  keys = jax.random.split(key, num_samples)
  if chunk_size is None or chunk_size >= num_samples:
    total = copies(keys)
  else:  # sequential chunks of `chunk_size` copies, then the remainder
    groups = num_samples // chunk_size
    main = keys[:groups * chunk_size].reshape((groups, chunk_size))
    total = jax.lax.map(copies, main).sum(axis=0)
    if num_samples % chunk_size:
      total = total + copies(keys[groups * chunk_size:])
  probs = total / num_samples
  gap = jnp.max(probs_x, -1) - jnp.max(probs, -1)
  return MIOutput(probs=probs, gap=gap, base_pred=y_hat)


def mi_pl(logits_fn: LogitsFn, x: jax.Array, pool: SamplePool,
          key: jax.Array, *, lam=0.5, num_samples: int = 10,
          chunk_size: Optional[int] = None) -> MIOutput:
  """MI-PL: Mixup Inference with partners of the predicted label.

  Pang, Xu & Zhu (ICLR 2020). Defaults: lam 0.5, N 10 (pool of 1,000).
  Arguments and returns as in `mixup_inference`; `gap` is the detection gap
  `max F(x) - max MI_PL(x)`, larger on adversarial inputs.
  """
  return mixup_inference(logits_fn, x, pool, key, lam=lam,
                         num_samples=num_samples, partners="pl",
                         chunk_size=chunk_size)


def mi_ol(logits_fn: LogitsFn, x: jax.Array, pool: SamplePool,
          key: jax.Array, *, lam=0.5, num_samples: int = 30,
          chunk_size: Optional[int] = None) -> MIOutput:
  """MI-OL: Mixup Inference with partners of the other labels.

  Pang, Xu & Zhu (ICLR 2020). Defaults: lam 0.5 (0.6 for IAT models), N 30
  (pool of 10,000). Arguments and returns as in `mixup_inference`.
  """
  return mixup_inference(logits_fn, x, pool, key, lam=lam,
                         num_samples=num_samples, partners="ol",
                         chunk_size=chunk_size)


def mi_combined(logits_fn: LogitsFn, x: jax.Array, pool: SamplePool,
                key: jax.Array, *, pool_ol: Optional[SamplePool] = None,
                lam_pl=0.5, lam_ol=0.5, threshold=0.2,
                num_samples_pl: int = 5, num_samples_ol: int = 15,
                chunk_size: Optional[int] = None) -> MIOutput:
  """MI-Combined: MI-PL as a detector, MI-OL on the inputs it flags.

  Pang, Xu & Zhu (ICLR 2020). Computes MI-PL and its detection gap
  `g = max F(x) - max MI_PL(x)`; outputs MI-PL where `g < threshold` and
  MI-OL elsewhere. Both are computed for the whole batch (no data-dependent
  shapes) and selected per example.

  Args:
    logits_fn: as in `mixup_inference`.
    x: as in `mixup_inference`.
    key: as in `mixup_inference`.
    chunk_size: as in `mixup_inference`.
    pool: pool for MI-PL (and MI-OL unless `pool_ol` is given).
    pool_ol: optional separate (larger) pool for MI-OL.
    lam_pl: MI-PL's mixing weight in [0, 1] (may be traced).
    lam_ol: MI-OL's mixing weight in [0, 1] (may be traced).
    threshold: detection threshold on the MI-PL gap (may be traced).
    num_samples_pl: MI-PL's N (static).
    num_samples_ol: MI-OL's N (static).

  Returns:
    `MIOutput(probs, gap=MI-PL's gap, base_pred, detected=[B] bool)`.

  Raises:
    ValueError, TypeError: as in `mixup_inference`.
  """
  _check_lam(lam_pl, "lam_pl")
  _check_lam(lam_ol, "lam_ol")
  k_pl, k_ol = jax.random.split(key)
  pl = mi_pl(logits_fn, x, pool, k_pl, lam=lam_pl, num_samples=num_samples_pl,
             chunk_size=chunk_size)
  ol = mi_ol(logits_fn, x, pool if pool_ol is None else pool_ol, k_ol,
             lam=lam_ol, num_samples=num_samples_ol, chunk_size=chunk_size)
  detected = pl.gap >= threshold
  probs = jnp.where(detected[:, None], ol.probs, pl.probs)
  return MIOutput(probs=probs, gap=pl.gap, base_pred=pl.base_pred,
                  detected=detected)
