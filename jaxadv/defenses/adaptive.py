"""Adaptive attacks on randomized inference-time defences.

Two adaptive attacks against Mixup Inference (and the input-transformation
baselines):

* **EOT-PGD** (honest): `jaxadv.attacks.eot_pgd` on the loss of the
  defence's own output, e.g. `-log MI(x)_y`, averaging the gradient over
  fresh draws of the defence's randomness at every step (Athalye et al.,
  2018). Build its loss with `probs_loss_fn(defense_fn)`.
* **Average of perturbations over mixed inputs**
  (`mi_average_perturbation_pgd`, after the "adaptive attack" of Pang, Xu &
  Zhu, ICLR 2020, Sec. 4): run PGD in input space on the base model at
  `lam * x' + (1 - lam) * x_s` for `num_partners` fixed partners `x_s`
  separately, and take the mean of the resulting perturbations. Reported
  for comparison: it never averages gradients over the randomness, so it is
  a weaker attack.
* **Mixed-space PGD** (`mi_mixed_space_pgd`): the same paper's attack as its
  released code runs it: PGD on the mixed images themselves, the gradient
  averaged over the partners, the mean mixed-space perturbation added to x.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from jaxadv import attacks
from jaxadv import loops
from jaxadv import losses
from jaxadv import projections
from jaxadv import validation
from jaxadv.defenses import mixup_inference as mi

# (x [B, ...], key) -> probabilities [B, C] of a randomized defence.
DefenseFn = Callable[[jax.Array, jax.Array], jax.Array]
LOSSES = ("ce", "cw")
_TINY = 1e-12


def probs_loss_fn(defense_fn: DefenseFn, loss: str = "ce"):
  """The per-example loss of a randomized defence's output, for EOT attacks.

  Args:
    defense_fn: `(x [B, ...], key) -> probs [B, C]`, e.g.
      `lambda x, k: mi_ol(logits_fn, x, pool, k).probs`.
    loss: "ce" (`-log p_y`) or "cw" (the margin of log-probabilities,
      `max_{j != y} log p_j - log p_y`).

  Returns:
    `loss_fn(x, y, key) -> [B]`, to pass to `jaxadv.attacks.eot_pgd`.

  Raises:
    ValueError: unknown `loss`.
  """
  validation.check_choice(loss, "loss", LOSSES)

  def loss_fn(x, y, key):
    log_probs = jnp.log(defense_fn(x, key) + _TINY)
    if loss == "ce":
      return -jnp.take_along_axis(log_probs, y[:, None], axis=-1)[:, 0]
    return losses.cw_margin(log_probs, y)

  return loss_fn


def mi_average_perturbation_pgd(
    logits_fn: Callable[[jax.Array], jax.Array], x: jax.Array, y: jax.Array,
    pool: mi.SamplePool, key: jax.Array, *, lam, eps, step_size, steps: int,
    num_partners: int = 10, partners: str = "ol", norm: str = "linf",
    targeted: bool = False, unroll: Optional[bool] = None) -> jax.Array:
  """The adaptive attack of Pang, Xu & Zhu (ICLR 2020) on Mixup Inference.

  Partners `x_s_1..n` are drawn once (from the clean prediction's class for
  "pl", other classes for "ol"); PGD is run on the base model's loss at
  `lam * x' + (1 - lam) * x_s_i` for each i (vmapped), and the final
  perturbation is the mean of the n perturbations (inside the ball by
  convexity, projected again for safety).

  Args:
    logits_fn: the base model, `x [B, ...] -> logits [B, C]`.
    x: float32 [B, ...] clean inputs in [0, 1].
    y: int [B] labels (targets when `targeted`).
    pool: the MI sample pool.
    key: PRNG key (partners and PGD random starts).
    lam: the MI mixing weight the attack assumes, in [0, 1].
    eps: pixel units, may be traced.
    step_size: pixel units, may be traced.
    steps: PGD steps per partner (static).
    num_partners: n, static.
    partners: "pl" or "ol".
    norm: "linf" or "l2".
    targeted: descend the target's loss.
    unroll: unroll the step loop (True), roll it (False) or None
      (`jaxadv.loops.default_unroll()`: unrolled on CPU only).

  Returns:
    x_adv in the eps-ball around `x` and in [0, 1].

  Raises:
    ValueError, TypeError: bad inputs.
  """
  validation.check_count(num_partners, "num_partners", 1)
  k_partners, k_pgd = jax.random.split(key)
  y_hat = jnp.argmax(logits_fn(x), -1).astype(jnp.int32)
  x_s = mi.draw_partners(pool, y_hat, k_partners, num_samples=num_partners,
                         partners=partners)

  def one(x_s_i, k):
    loss_i = losses.make_loss_fn(
        lambda xa: logits_fn(lam * xa + (1.0 - lam) * x_s_i), "ce")
    return attacks.pgd(loss_i, x, y, k, eps=eps, step_size=step_size,
                    steps=steps, norm=norm, targeted=targeted, unroll=unroll) - x

  deltas = jax.vmap(one)(x_s, jax.random.split(k_pgd, num_partners))
  delta = projections.project(jnp.mean(deltas, axis=0), eps, norm)
  return projections.apply_delta(x, delta, eps, norm)


def mi_mixed_space_pgd(
    logits_fn: Callable[[jax.Array], jax.Array], x: jax.Array, y: jax.Array,
    pool: mi.SamplePool, key: jax.Array, *, lam, eps, step_size, steps: int,
    num_partners: int = 5, partners: str = "ol", targeted: bool = False,
    labels: str = "predicted", unroll: Optional[bool] = None) -> jax.Array:
  """Pang, Xu & Zhu's adaptive attack on MI as their released code runs it.

  `gen_adv_crafter_adaptive` of P2333/Mixup-Inference (ICLR 2020), L-inf,
  batched: `num_partners` partners `x_s_i` per example are drawn once
  (`partners` "ol": from classes other than the clean prediction, as the
  authors' MI-OL script; "pl": from it). PGD (random start in the ball, step
  `step_size`, `steps` steps) then runs on the MIXED images
  `m_i = lam * x + (1 - lam) * x_s_i`: each step moves every copy by the
  same `step_size * sign(mean_i grad_{m_i} CE(f(m_i + eta_i), y_i))` (the
  gradient averaged over the partners), each `eta_i` kept in the eps-ball
  and `m_i + eta_i` in [0, 1]. The mean mixed-space perturbation is added
  to the clean input: `x_adv = x + mean_i eta_i`.

  The attacker budgets eps in the mixed image, but MI mixes `x_adv` with
  weight `lam`, so only `lam * eps` of it reaches the model: a weaker attack
  than EOT-PGD through the defence (`probs_loss_fn` + `attacks.eot_pgd`).
  Differences from the released code: it attacks one image at a time, we a
  batch; it does not clip `x_adv` to the pixel range, we do (`x_adv` stays
  in the eps-ball around `x` by convexity).

  Args:
    logits_fn: the base model, `x [B, ...] -> logits [B, C]`.
    x: float32 [B, ...] clean inputs in [0, 1].
    y: int [B] labels; the targets when `targeted`.
    pool: the MI sample pool.
    key: PRNG key (partners, random starts).
    lam: the mixing weight the attack assumes, in [0, 1].
    eps: L-inf budget, pixel units, may be traced.
    step_size: pixel units, may be traced.
    steps: PGD steps (static).
    num_partners: partners per example (static, >= 1).
    partners: "ol" or "pl".
    targeted: descend the loss of the targets `y`.
    labels: untargeted only: "predicted" (the authors' default: each mixed
      copy's own predicted class, cleverhans' guard against label leaking)
      or "true" (`y`).
    unroll: unroll the step loop (True), roll it (False) or None
      (`jaxadv.loops.default_unroll()`).

  Returns:
    x_adv [B, ...] in the eps-ball around `x` and in [0, 1].

  Raises:
    ValueError, TypeError: bad inputs (`validation` messages).
  """
  validation.check_count(num_partners, "num_partners", 1)
  validation.check_choice(labels, "labels", ("predicted", "true"))
  k_partners, k_init = jax.random.split(key)
  y_hat = jnp.argmax(logits_fn(x), -1).astype(jnp.int32)
  x_s = mi.draw_partners(pool, y_hat, k_partners, num_samples=num_partners,
                         partners=partners)              # [n, B, ...]
  mixed = lam * x[None] + (1.0 - lam) * x_s
  n, b = mixed.shape[:2]
  flat = mixed.reshape((n * b,) + mixed.shape[2:])
  if targeted or labels == "true":
    y_att = jnp.tile(y, n)
  else:
    y_att = jnp.argmax(logits_fn(flat), -1).astype(jnp.int32)
  sign = -1.0 if targeted else 1.0

  def total_loss(z):
    return sign * jnp.sum(losses.cross_entropy(logits_fn(z), y_att))

  eta = projections.clip_box(flat, projections.random_init(
      k_init, flat, eps, "linf"))

  def body(_, eta):
    g = jax.grad(total_loss)(flat + eta).reshape(mixed.shape)
    step = step_size * jnp.sign(jnp.mean(g, axis=0))     # shared over copies
    eta = eta + jnp.tile(step, (n,) + (1,) * (step.ndim - 1))
    return projections.clip_box(flat, jnp.clip(eta, -eps, eps))

  eta = loops.run_loop(steps, body, eta, unroll=unroll)
  delta = jnp.mean(eta.reshape(mixed.shape), axis=0)
  return projections.apply_delta(x, jnp.clip(delta, -eps, eps), eps, "linf")
