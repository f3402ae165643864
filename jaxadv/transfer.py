"""Transferability: crafting on source models, scoring on target models.

* `craft` runs a gradient attack against one model or against the averaged
  logits of several (Liu, Chen, Liu & Song, ICLR 2017), over a whole array in
  fixed-size jitted batches (eps and step size traced: a sweep does not
  recompile).
* `ensemble_logits_fn` is that average as a `logits_fn`, for the attacks.
* `majority_vote` combines hard predictions of models of any kind (the
  ensemble target of Papernot, McDaniel & Goodfellow, 2016).
* `misclassification_matrix` is the source x target table: the fraction of
  the adversarial examples crafted on each source that each target
  misclassifies.
* `fit_substitute` trains a differentiable substitute on a model's own labels,
  so non-differentiable sources (decision trees, kNN, vote ensembles) are
  attacked through it (Papernot et al., 2016).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxadv import parallel
from jaxadv import validation
from jaxadv import attacks
from jaxadv import losses
from jaxadv import training
from jaxadv.evaluation import robust

from jaxadv.types import ApplyFn
CRAFT_ATTACKS = ("fgsm", "bim", "pgd")


def ensemble_logits_fn(logits_fns: Sequence[losses.LogitsFn],
                       weights: Optional[Sequence[float]] = None
                       ) -> losses.LogitsFn:
  """The weighted average of several models' logits (Liu et al., ICLR 2017).

  Args:
    logits_fns: M >= 1 functions `x [B, ...] -> logits [B, C]` (same C).
    weights: M non-negative weights (normalised to sum 1); None = uniform.

  Returns:
    `logits_fn(x) -> float32 [B, C]`, `sum_m w_m logits_m(x)`.

  Raises:
    ValueError: no models, or `weights` of the wrong length, negative or all 0.
  """
  if not logits_fns:
    raise ValueError("`logits_fns` must hold at least one model.")
  w = _normalised_weights(weights, len(logits_fns))

  def logits_fn(x: jax.Array) -> jax.Array:
    return sum(wm * fn(x) for wm, fn in zip(w, logits_fns))

  return logits_fn


def _normalised_weights(weights, m: int) -> tuple[float, ...]:
  if weights is None:
    return (1.0 / m,) * m
  w = np.asarray(weights, np.float64)
  if w.shape != (m,):
    raise ValueError(f"`weights` must have one entry per model ({m}); got "
                     f"shape {w.shape}.")
  if np.any(w < 0) or not w.sum() > 0:
    raise ValueError(f"`weights` must be >= 0 and not all zero; got {weights}.")
  return tuple(float(v) for v in w / w.sum())


@functools.partial(
    jax.jit,
    static_argnames=("apply_fns", "weights", "attack", "steps", "targeted",
                     "loss", "unroll"))
def _craft_batch(apply_fns, variables, x, y, key, eps, step_size, *,
                 weights, attack, steps, targeted, loss, unroll):
  fns = [functools.partial(lambda v, a, z: a(v, z, train=False), v, a)
         for v, a in zip(variables, apply_fns)]
  loss_fn = losses.make_loss_fn(ensemble_logits_fn(fns, weights), loss)
  if attack == "fgsm":
    return attacks.fgsm(loss_fn, x, y, eps=eps, targeted=targeted)
  return attacks.pgd(loss_fn, x, y, key, eps=eps, step_size=step_size,
                     steps=steps, random_start=attack == "pgd",
                     targeted=targeted, unroll=unroll)


def craft(apply_fns: Sequence[ApplyFn], variables: Sequence[Any],
          x: np.ndarray, y: np.ndarray, key: jax.Array, *,
          attack: str = "pgd", eps: float, step_size: float = 0.0,
          steps: int = 0, targeted: bool = False, loss: str = "ce",
          weights: Optional[Sequence[float]] = None, batch_size: int = 500,
          unroll: Optional[bool] = None) -> np.ndarray:
  """L-inf adversarial examples against one model or an ensemble's logits.

  With one model this is FGSM (Goodfellow, Shlens & Szegedy, 2015), BIM or
  PGD (Madry et al., 2018) on it; with several, the attack ascends the loss
  of their weighted average logits (Liu et al., ICLR 2017), the examples
  meant to transfer to a held-out model.

  Args:
    apply_fns: M Flax-style `apply_fn(variables, x, train=False) -> logits
      [B, C]` (hashable: they are static under jit).
    variables: M variable trees, one per model.
    x: float32 [N, ...] clean inputs, pixels in [0, 1].
    y: int [N] true labels (untargeted) or target labels (`targeted=True`).
    key: PRNG key (PGD's random start; batch i uses `fold_in(key, i)`).
    attack: "fgsm", "bim" or "pgd".
    eps: L-inf budget, pixel units (0.3 on MNIST); traced.
    step_size: BIM / PGD step, pixel units; traced.
    steps: BIM / PGD iterations (static).
    targeted: descend the loss of the target `y`.
    loss: "ce" or "cw", applied to the (averaged) logits.
    weights: ensemble weights (None = uniform).
    batch_size: fixed attack batch (the last batch is padded).
    unroll: unroll the step loop (True), roll it (False) or None
      (`jaxadv.loops.default_unroll()`: unrolled on CPU only).

  Returns:
    x_adv: float32 [N, ...], `||x_adv - x||_inf <= eps`, pixels in [0, 1].

  Raises:
    ValueError, TypeError: mismatched `apply_fns` / `variables`, bad `x`,
      `y`, `eps`, `step_size`, `steps`, `batch_size` or an unknown `attack`.
  """
  if len(apply_fns) != len(variables) or not apply_fns:
    raise ValueError(f"`apply_fns` and `variables` must be non-empty and of "
                     f"the same length; got {len(apply_fns)} and "
                     f"{len(variables)}.")
  validation.check_choice(attack, "attack", CRAFT_ATTACKS)
  attacks.core.validate(x, y, eps=eps, step_size=step_size, steps=steps)
  validation.check_count(batch_size, "batch_size", 1)
  w = _normalised_weights(weights, len(apply_fns))
  y = np.asarray(y, np.int32)
  out = np.empty_like(np.asarray(x, np.float32))
  eps_a, step_a = jnp.float32(eps), jnp.float32(step_size)
  for i, (chunk, n) in enumerate(parallel.padded_batches(np.arange(len(x)),
                                                        batch_size)):
    x_adv = _craft_batch(tuple(apply_fns), tuple(variables), x[chunk],
                         y[chunk], jax.random.fold_in(key, i), eps_a, step_a,
                         weights=w, attack=attack, steps=steps,
                         targeted=targeted, loss=loss, unroll=unroll)
    out[chunk[:n]] = np.asarray(x_adv)[:n]
  return out


def majority_vote(preds: np.ndarray, num_classes: int) -> np.ndarray:
  """Hard-vote ensemble: the class most of the M models predict.

  Ties go to the lowest class index among the tied classes.

  Args:
    preds: int [M, N] predictions of M models on N inputs.
    num_classes: C; predictions must lie in [0, C).

  Returns:
    int32 [N] voted classes.

  Raises:
    ValueError: `preds` not rank 2 or values outside [0, C).
  """
  preds = np.asarray(preds)
  if preds.ndim != 2:
    raise ValueError(f"`preds` must be [M, N] predictions; got shape "
                     f"{preds.shape}.")
  if preds.size and (preds.min() < 0 or preds.max() >= num_classes):
    raise ValueError(f"`preds` must lie in [0, {num_classes}); got values in "
                     f"[{preds.min()}, {preds.max()}].")
  votes = np.eye(num_classes, dtype=np.int32)[preds].sum(axis=0)  # [N, C]
  return np.argmax(votes, axis=-1).astype(np.int32)


def misclassification_matrix(preds: Mapping[str, Mapping[str, np.ndarray]],
                             y: np.ndarray) -> dict[str, dict[str, float]]:
  """The source x target transfer matrix (Papernot et al., 2016).

  Args:
    preds: `preds[source][target]` = int [N] predictions of `target` on the
      N adversarial examples crafted on `source` (every source with the same
      targets).
    y: int [N] true labels of the underlying clean examples.

  Returns:
    `rates[source][target]` in [0, 1]: the fraction of the source's
    adversarial examples that the target misclassifies (`pred != y`).

  Raises:
    ValueError: empty `preds`, sources with different target sets, or
      predictions whose shape differs from `y`'s.
  """
  y = np.asarray(y)
  if not preds:
    raise ValueError("`preds` must hold at least one source.")
  targets = list(next(iter(preds.values())))
  rates: dict[str, dict[str, float]] = {}
  for source, row in preds.items():
    if list(row) != targets:
      raise ValueError(f"source {source!r} has targets {list(row)}; expected "
                       f"{targets} like the first source.")
    rates[source] = {}
    for target, p in row.items():
      p = np.asarray(p)
      if p.shape != y.shape:
        raise ValueError(f"preds[{source!r}][{target!r}] has shape {p.shape}; "
                         f"expected {y.shape} like `y`.")
      rates[source][target] = float(np.mean(p != y))
  return rates


def fit_substitute(model: Any, key: jax.Array, x: np.ndarray,
                   source_labels: np.ndarray, *, batch_size: int = 128,
                   epochs: float = 2.0, learning_rate: float = 1e-3,
                   seed: int = 0, workdir: Optional[str] = None,
                   desc: str = "substitute", progress: bool = True
                   ) -> tuple[dict, float]:
  """Trains a differentiable substitute on a source model's labels.

  The substitute learns to imitate the source, not the truth: it is fitted
  (Adam, natural training via `training.fit`) to `source_labels`, the
  source's predictions on `x`. Gradient attacks on the substitute then stand
  in for attacks on a non-differentiable source (Papernot et al., 2016;
  their black-box variant also grows `x` by Jacobian augmentation, not done
  here).

  Args:
    model: a Flax module `model(x, train=...) -> logits`.
    key: PRNG key for the initialisation.
    x: float32 [N, ...] inputs in [0, 1] (e.g. a training subset).
    source_labels: int [N], the source's predictions on `x`.
    batch_size: minibatch size.
    epochs: passes over `x` (fractional allowed).
    learning_rate: Adam's step size.
    seed: data-order seed.
    workdir: checkpoint folder (resumable), or None.
    desc: progress-bar label.
    progress: show progress.

  Returns:
    (variables, agreement): the substitute's variables and the fraction of
    `x` where its prediction equals `source_labels`.

  Raises:
    ValueError, TypeError: bad `x` or labels, or fewer examples than a batch.
  """
  validation.check_images(x, "x")
  validation.check_labels(source_labels, len(x), "source_labels")
  num_batches = max(1, int(round(epochs * len(x) / batch_size)))
  state = training.create_train_state(model, key, (1,) + tuple(x.shape[1:]),
                                      optax.adam(learning_rate))
  result = training.fit(state, training.natural_step(), x,
                        np.asarray(source_labels, np.int32),
                        batch_size=batch_size, num_batches=num_batches,
                        seed=seed, workdir=workdir, desc=desc,
                        progress=progress)
  variables = training.variables_of(result.state)
  agreement = float(np.mean(robust.predict(model.apply, variables, x)
                            == np.asarray(source_labels)))
  return variables, agreement
