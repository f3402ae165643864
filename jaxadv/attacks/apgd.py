"""Auto-PGD: APGD-CE, APGD-DLR and targeted APGD-T.

Croce & Hein (ICML 2020), "Reliable evaluation of adversarial robustness with
an ensemble of diverse parameter-free attacks". PGD with momentum whose step
size needs no tuning: it starts at `2 * eps` and is halved, per example, at
checkpoints `w_j = ceil(p_j * steps)` (`p_0 = 0`, `p_1 = 0.22`,
`p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`) when

  1. fewer than `rho * (w_j - w_{j-1})` of the steps since the last checkpoint
     raised the loss, or
  2. the step size was not halved at the last checkpoint and the best loss
     has not improved since then;

after halving, the iterate restarts from the best (highest-loss) point. The
update is `z = P(x_k + eta * sign(g))` (L2: `g / ||g||_2`),
`x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_{k-1}))` with
`alpha = 0.75` (1 at the first step). All state (step size, counters, best
point) is per example, so one batch runs in one jitted loop.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv import validation
from jaxadv import losses
from jaxadv.attacks import core
from jaxadv import loops
from jaxadv import projections
from jaxadv.types import LossFn

# (x [B, ...], y [B]) -> (per-example loss [B], fooled bool [B])
_ValueFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
LOGITS_LOSSES = ("ce", "cw", "dlr", "dlr_targeted")


def checkpoints(steps: int) -> list[int]:
  """The APGD checkpoints `w_j = ceil(p_j * steps)` for `p_j <= 1`.

  `p_0 = 0`, `p_1 = 0.22`, `p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`
  (Croce & Hein, 2020). For 100 steps: [0, 22, 41, 57, 70, 80, 87, 93, 99].

  Args:
    steps: static number of iterations (>= 0).

  Returns:
    Sorted distinct checkpoints, starting with 0.

  Raises:
    TypeError, ValueError: `steps` not an int >= 0.
  """
  validation.check_count(steps, "steps", 0)
  p = [0.0, 0.22]
  while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1.0:
    p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
  # round() strips float noise (0.41 * 100 = 41.000000000000004).
  return sorted({math.ceil(round(q * steps, 6)) for q in p})


def _schedule(steps: int) -> tuple[np.ndarray, np.ndarray]:
  """Per iteration i: is (i + 1) a checkpoint, and the period ending there."""
  is_ckpt = np.zeros(max(steps, 1), bool)
  period = np.ones(max(steps, 1), np.float32)
  w = checkpoints(steps)
  for prev, cur in zip(w, w[1:]):
    if 0 < cur <= steps:
      is_ckpt[cur - 1] = True
      period[cur - 1] = cur - prev
  return is_ckpt, period


# Key of the EOT draws, folded into the attack's key (the random starts use
# the key itself, so a deterministic model's results do not change).
_EOT_STREAM = 0x7EEDF00D


def _value_and_grad(value_fn: _ValueFn, x, y, delta, sign: float,
                    key: Optional[jax.Array] = None,
                    eot_samples: Optional[int] = None):
  """(objective [B] to maximise, fooled [B], its input gradient) at x+delta.

  With `eot_samples`, `value_fn(x, y, key)` is randomized: objective and
  gradient are means over `eot_samples` draws (vmapped) split from `key`, and
  an example counts as fooled when most draws misclassify it.
  """
  if eot_samples is None:
    def total(d):
      loss, fooled = value_fn(x + d, y)
      return sign * jnp.sum(loss), (sign * loss, fooled)

    g, (obj, fooled) = jax.grad(total, has_aux=True)(delta)
    return obj, fooled, g

  def total_k(d, k):
    loss, fooled = value_fn(x + d, y, k)
    return sign * jnp.sum(loss), (sign * loss, fooled)

  keys = jax.random.split(key, eot_samples)
  g, (obj, fooled) = jax.vmap(jax.grad(total_k, has_aux=True),
                              in_axes=(None, 0))(delta, keys)
  return (jnp.mean(obj, axis=0), jnp.mean(fooled, axis=0) > 0.5,
          jnp.mean(g, axis=0))


def _apgd_run(value_fn: _ValueFn, x, y, key, *, eps, steps: int, norm: str,
              targeted: bool, rho: float, momentum: float,
              unroll: Optional[bool], eot_samples: Optional[int] = None):
  """One APGD run; returns (delta, objective, fooled) per example.

  `delta` is the last fooling iterate where one was found, else the
  highest-objective point (the objective is the loss, negated if targeted).
  With `eot_samples`, evaluation t (0 = the start) draws from
  `fold_in(fold_in(key, _EOT_STREAM), t)`.
  """
  sign = -1.0 if targeted else 1.0
  b = x.shape[0]
  ex = lambda v: projections.per_example(v, x.ndim)
  eot_key = jax.random.fold_in(key, _EOT_STREAM)
  vg = lambda d, t: _value_and_grad(
      value_fn, x, y, d, sign, jax.random.fold_in(eot_key, t), eot_samples)
  delta0 = core.start(key, x, eps, norm, True)
  obj0, fooled0, g0 = vg(delta0, 0)
  step0 = jnp.broadcast_to(2.0 * jnp.asarray(eps, x.dtype), (b,))
  is_ckpt, period = (jnp.asarray(a) for a in _schedule(steps))
  init = dict(delta=delta0, prev=delta0, grad=g0, obj=obj0, step_size=step0,
              best=delta0, best_grad=g0, best_obj=obj0, fooled=fooled0,
              adv=delta0, count=jnp.zeros(b, jnp.int32),
              best_obj_ckpt=obj0, reduced_ckpt=jnp.zeros(b, bool))

  def body(i, s):
    a = jnp.where(i == 0, 1.0, momentum).astype(x.dtype)
    z = core.ascend(x, s["delta"], s["grad"], eps=eps,
                       step_size=s["step_size"], norm=norm)
    d = s["delta"] + a * (z - s["delta"]) + (1 - a) * (s["delta"] - s["prev"])
    d = projections.clip_box(x, projections.project(d, eps, norm))
    obj, fooled, g = vg(d, i + 1)
    improved = obj > s["best_obj"]
    best = jnp.where(ex(improved), d, s["best"])
    best_grad = jnp.where(ex(improved), g, s["best_grad"])
    best_obj = jnp.where(improved, obj, s["best_obj"])
    count = s["count"] + (obj > s["obj"]).astype(jnp.int32)
    ckpt = is_ckpt[i]
    cond1 = count < rho * period[i]
    cond2 = ~s["reduced_ckpt"] & (best_obj <= s["best_obj_ckpt"])
    reduce = ckpt & (cond1 | cond2)
    return dict(
        delta=jnp.where(ex(reduce), best, d), prev=s["delta"],
        grad=jnp.where(ex(reduce), best_grad, g), obj=obj,
        step_size=jnp.where(reduce, s["step_size"] / 2, s["step_size"]),
        best=best, best_grad=best_grad, best_obj=best_obj,
        fooled=s["fooled"] | fooled,
        adv=jnp.where(ex(fooled), d, s["adv"]),
        count=jnp.where(ckpt, 0, count),
        best_obj_ckpt=jnp.where(ckpt, best_obj, s["best_obj_ckpt"]),
        reduced_ckpt=jnp.where(ckpt, reduce, s["reduced_ckpt"]))

  s = loops.run_loop(steps, body, init, unroll=unroll)
  delta = jnp.where(ex(s["fooled"]), s["adv"], s["best"])
  return delta, s["best_obj"], s["fooled"]


def _apgd(value_fn: _ValueFn, x, y, key, *, eps, steps, norm, restarts,
          targeted, rho, momentum, unroll,
          eot_samples: Optional[int] = None) -> jax.Array:
  """APGD with restarts: per example, a fooling run wins, else the best loss."""
  if not 0.0 < rho <= 1.0:
    raise ValueError(f"`rho` must lie in (0, 1]; got {rho}.")
  if not 0.0 <= momentum <= 1.0:
    raise ValueError(f"`momentum` must lie in [0, 1]; got {momentum}.")
  if eot_samples is not None:
    validation.check_count(eot_samples, "eot_samples", 1)
  run = lambda k: _apgd_run(value_fn, x, y, k, eps=eps, steps=steps,
                            norm=norm, targeted=targeted, rho=rho,
                            momentum=momentum, unroll=unroll,
                            eot_samples=eot_samples)
  def better(new, best):  # a fooling run wins, else the higher objective
    (_, o1, f1), (_, o0, f0) = new, best
    return (f1 & ~f0) | ((f1 == f0) & (o1 > o0))

  best_delta, _, _ = core.best_of_restarts(run, key, restarts, better)
  return projections.apply_delta(x, best_delta, eps, norm)


def apgd(loss_fn: LossFn, x: jax.Array, y: jax.Array, key: jax.Array, *,
         eps, steps: int, norm: str = "linf", restarts: int = 1,
         targeted: bool = False, rho: float = 0.75, momentum: float = 0.75,
         eot_samples: Optional[int] = None,
         unroll: Optional[bool] = None) -> jax.Array:
  """Auto-PGD on a per-example loss (Croce & Hein, ICML 2020).

  The interface of `jaxadv.attacks.pgd` without `step_size`: APGD sets its
  own (`2 * eps`, halved per example at the checkpoints of `checkpoints`).
  Returns, per example, the highest-loss point found (lowest for targeted).

  Args:
    loss_fn: `(x [B, ...], y [B]) -> [B]` per-example loss (e.g.
      `jaxadv.losses.make_loss_fn(logits_fn, "ce")` for APGD-CE or "dlr"
      for APGD-DLR); with `eot_samples`, `(x, y, key) -> [B]` of a
      randomized model.
    x: float32 [B, ...] clean inputs, pixels in [0, 1].
    y: int [B] labels, or target labels when `targeted`.
    key: PRNG key (restart r starts uniformly in the ball from
      `fold_in(key, r)`).
    eps: scalar or [B] budget in pixel units; may be traced.
    steps: static number of iterations (>= 0); 100 in AutoAttack.
    norm: "linf" or "l2".
    restarts: static number of runs (>= 1); each example keeps its best.
    targeted: minimise the loss of the target `y` instead.
    rho: condition-1 threshold on the fraction of loss-raising steps.
    momentum: the paper's alpha (0.75).
    eot_samples: None for a deterministic `loss_fn`; else the static number
      of draws of a randomized `loss_fn(x, y, key)` whose losses and
      gradients are averaged at every iterate (Expectation over
      Transformation; 20 in AutoAttack's "rand" version).
    unroll: unroll the step loop (True), roll it (False) or None
      (`jaxadv.loops.default_unroll()`: unrolled on CPU only).

  Returns:
    x_adv, same shape and dtype as `x`, `||x_adv - x||_norm <= eps` per
    example, pixels in [0, 1].

  Raises:
    ValueError, TypeError: bad shapes, dtypes, pixel range, labels, negative
      eps/steps, restarts < 1, unknown norm, rho outside (0, 1] or momentum
      outside [0, 1], or eot_samples < 1.
  """
  core.validate(x, y, eps=eps, steps=steps, norm=norm, restarts=restarts)
  core.check_loss_fn(loss_fn, x, y, *(() if eot_samples is None else (key,)))
  value_fn = lambda v, t, *k: (loss_fn(v, t, *k), jnp.zeros(v.shape[0], bool))
  return _apgd(value_fn, x, y, key, eps=eps, steps=steps, norm=norm,
               restarts=restarts, targeted=targeted, rho=rho,
               momentum=momentum, unroll=unroll, eot_samples=eot_samples)


def apgd_logits(logits_fn: losses.LogitsFn, x: jax.Array, y: jax.Array,
                key: jax.Array, *, eps, steps: int, loss: str = "ce",
                target: Optional[jax.Array] = None, norm: str = "linf",
                restarts: int = 1, rho: float = 0.75, momentum: float = 0.75,
                eot_samples: Optional[int] = None,
                unroll: Optional[bool] = None) -> jax.Array:
  """APGD-CE / APGD-DLR / APGD-T on a model, as in AutoAttack.

  Like `apgd`, but the model's logits also tell which iterates are
  misclassified: an example returns the last misclassified iterate when
  there was one (any restart), else its highest-loss point.

  Args:
    logits_fn: `x [B, ...] -> logits [B, C]`; with `eot_samples`,
      `(x, key) -> logits` of a randomized model (log-probabilities serve
      for a defence that outputs probabilities).
    x: float32 [B, ...] clean inputs in [0, 1].
    y: int [B] true labels.
    key: PRNG key (random starts and, with `eot_samples`, the draws).
    eps: scalar or [B], pixel units; may be traced.
    steps: static iterations (100 in AutoAttack).
    loss: "ce" (APGD-CE), "dlr" (APGD-DLR), "cw", or "dlr_targeted"
      (APGD-T: maximise `jaxadv.losses.dlr_targeted` towards `target`).
    target: int [B] target classes; required exactly for "dlr_targeted".
    norm: "linf" or "l2".
    restarts: static number of runs (>= 1).
    rho: as `apgd`.
    momentum: as `apgd`.
    eot_samples: as `apgd`; an iterate counts as misclassified when most
      of its draws misclassify it.
    unroll: as `apgd`.

  Returns:
    x_adv in the eps-ball around `x` and in [0, 1], same shape and dtype.

  Raises:
    ValueError, TypeError: bad inputs (as `apgd`), an unknown `loss`, or
      `target` missing for / given without "dlr_targeted".
  """
  core.validate(x, y, eps=eps, steps=steps, norm=norm, restarts=restarts)
  validation.check_choice(loss, "loss", LOGITS_LOSSES)
  if (loss == "dlr_targeted") != (target is not None):
    raise ValueError("`target` must be given exactly when "
                     f"loss='dlr_targeted'; got loss={loss!r} and target "
                     f"{'set' if target is not None else 'None'}.")
  if target is not None:
    validation.check_labels(target, x.shape[0], "target")
  core.check_finite_outputs(logits_fn, x,
                            *(() if eot_samples is None else (key,)),
                            name="logits_fn")

  def value_fn(v, labels, *k):
    logits = logits_fn(v, *k)
    if loss == "dlr_targeted":
      value = losses.dlr_targeted(logits, labels, target)
    else:
      value = losses.get_loss(loss)(logits, labels)
    return value, jnp.argmax(logits, axis=-1) != labels

  return _apgd(value_fn, x, y, key, eps=eps, steps=steps, norm=norm,
               restarts=restarts, targeted=False, rho=rho, momentum=momentum,
               unroll=unroll, eot_samples=eot_samples)
