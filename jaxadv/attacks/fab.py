"""FAB: the fast adaptive boundary attack, untargeted and targeted (FAB-T).

Croce & Hein (ICML 2020), "Minimally distorted adversarial examples with a
fast adaptive boundary attack". FAB looks for the smallest perturbation
(L-inf or L2) that changes the prediction. Each iteration linearises the
decision boundary between the true class `y` and a class `k` at the
current iterate `x_i`,

    f_k(x_i) - f_y(x_i) + <grad_i, z - x_i> = 0,

projects both `x_i` and the clean `x` onto that hyperplane intersected with
the box [0, 1] (minimal-norm displacements `d_i`, `d_0`, by
`project_hyperplane`), and moves to the biased combination

    x_{i+1} = clip((x_i + eta d_i) (1 - alpha) + (x + eta d_0) alpha, 0, 1),
    alpha = min(|d_i| / (|d_i| + |d_0|), alpha_max),

which stays close to `x`. When an iterate is misclassified it is kept if
it is the closest adversarial point so far, and the iterate is pulled back
towards `x` by `beta`. Targeted FAB (FAB-T, the AutoAttack "standard"
version's third attack) always linearises towards one target class;
untargeted FAB takes, per example and iteration, the class whose
linearised boundary is nearest (one forward pass and one backward pass per
class, `jax.vmap` over the classes' cotangents). Defaults are AutoAttack's:
100 iterations, alpha_max 0.1, eta 1.05, beta 0.9, one run from the clean
image (later restarts start at random points of half the best distance).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax

from jaxadv import loops
from jaxadv import projections
from jaxadv import validation
from jaxadv.attacks import core
from jaxadv.types import LogitsFn


def _flat_norm(v: jax.Array, norm: str) -> jax.Array:
  v = v.reshape(v.shape[0], -1)
  if norm == "linf":
    return jnp.max(jnp.abs(v), axis=-1)
  return jnp.sqrt(jnp.sum(v * v, axis=-1))


def _project_one(t: jax.Array, w: jax.Array, b: jax.Array,
                 norm: str) -> jax.Array:
  """`project_hyperplane` for one flat point `t [D]`."""
  ranks = (t.ndim, w.ndim, jnp.ndim(b))
  if ranks != (1, 1, 0):
    raise ValueError(f"expected t [D], w [D] and a scalar b; got ranks {ranks}.")
  dtype = t.dtype
  t, w, b = (jnp.asarray(a, jnp.float32) for a in (t, w, b))
  r = b - jnp.dot(w, t)
  # Flip the hyperplane so that w . d must rise by r >= 0.
  s = jnp.where(r >= 0, 1.0, -1.0)
  w, r = w * s, r * s
  active = w != 0
  aw = jnp.abs(w)
  # Room in [0, 1] along sign(w): how far coordinate i can move helpfully.
  room = jnp.maximum(jnp.where(w > 0, 1.0 - t, t), 0.0)
  if norm == "linf":
    # d_i = sign(w_i) min(lam, room_i): saturates when lam reaches room_i.
    key, slope = room, aw
  else:
    # d_i = sign(w_i) min(mu |w_i|, room_i): saturates at mu = room_i / |w_i|.
    key, slope = room / jnp.where(active, aw, 1.0), aw * aw
  key = jnp.where(active, key, 0.0)
  slope = jnp.where(active, slope, 0.0)
  # g(lam) = sum_i |w_i| |d_i| = sum_i slope_i min(lam, key_i) is
  # continuous, piecewise linear and non-decreasing in lam >= 0; solve
  # g(lam) = r. Binary search over the float32 bit patterns of [0, lam_max]
  # (ordered like the values) for the largest lam_lo with g(lam_lo) <= r,
  # then solve exactly on its linear piece. No sort: XLA:CPU sorts slowly,
  # and 31 passes over D coordinates are cheaper than one sort.
  lam_max = jnp.max(key)
  g = lambda lam: jnp.sum(slope * jnp.minimum(lam, key))

  def search(_, bounds):
    lo, hi = bounds
    mid = lo + (hi - lo + 1) // 2
    ok = g(lax.bitcast_convert_type(mid, jnp.float32)) <= r
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid - 1)

  lo, _ = lax.fori_loop(
      0, 31, search,
      (jnp.int32(0), lax.bitcast_convert_type(lam_max, jnp.int32)))
  lam_lo = lax.bitcast_convert_type(lo, jnp.float32)
  sat = key <= lam_lo
  rest = r - jnp.sum(jnp.where(sat, slope * key, 0.0))
  rising = jnp.sum(jnp.where(sat, 0.0, slope))
  # No rising coordinate left: the hyperplane is out of the box's reach (or
  # w = 0), and the box point nearest to it saturates every coordinate.
  lam = jnp.where(rising > 0, rest / jnp.where(rising > 0, rising, 1.0),
                  lam_max)
  lam = jnp.clip(lam, lam_lo, lam_max)
  mag = lam if norm == "linf" else lam * aw
  d = jnp.where(active, jnp.sign(w) * jnp.minimum(mag, room), 0.0)
  return d.astype(dtype)


def project_hyperplane(t: jax.Array, w: jax.Array, b: jax.Array, *,
                       norm: str = "linf") -> jax.Array:
  """The minimal-norm displacement onto a hyperplane within the box [0, 1].

  For each row: `d` minimising `||d||` (L-inf or L2) subject to
  `<w, t + d> = b` and `0 <= t + d <= 1`, found exactly: a binary search
  over float32 values finds the linear piece of the piecewise-linear
  equation that holds the solution, which is then solved on that piece
  (computed in float32). When the box leaves the hyperplane out of reach,
  `d` is the box point that gets closest to it. FAB's projection step (Croce & Hein,
  ICML 2020); the same problem AutoAttack's `projection_linf` /
  `projection_l2` solve.

  Args:
    t: float [B, D] points in [0, 1].
    w: float [B, D] hyperplane normals.
    b: float [B] offsets.
    norm: "linf" or "l2".

  Returns:
    float [B, D] displacements (zero where `w` is zero).

  Raises:
    ValueError: an unknown norm or mismatched shapes.
  """
  validation.check_choice(norm, "norm", projections.NORMS)
  if t.ndim != 2 or w.shape != t.shape or jnp.shape(b) != t.shape[:1]:
    raise ValueError(f"expected t and w [B, D] and b [B]; got {t.shape}, "
                     f"{w.shape} and {jnp.shape(b)}.")
  return jax.vmap(lambda ti, wi, bi: _project_one(ti, wi, bi, norm))(t, w, b)


def _linearise(logits_fn: LogitsFn, x1: jax.Array, y: jax.Array,
               target: Optional[jax.Array], norm: str):
  """(f_k - f_y [B], its input gradient [B, ...]) for the chosen class k:
  the target, or the class with the nearest linearised boundary."""
  batch = x1.shape[0]
  rows = jnp.arange(batch)
  logits, vjp = jax.vjp(logits_fn, x1)
  num_classes = logits.shape[-1]
  onehot_y = jax.nn.one_hot(y, num_classes, dtype=logits.dtype)
  if target is not None:
    cot = jax.nn.one_hot(target, num_classes, dtype=logits.dtype) - onehot_y
    (grad,) = vjp(cot)
    return logits[rows, target] - logits[rows, y], grad
  # Every class k: cotangent e_k - e_y, one backward pass each.
  cots = (jnp.eye(num_classes, dtype=logits.dtype)[:, None, :] -
          onehot_y[None])
  (grads,) = jax.vmap(vjp)(cots)                      # [K, B, ...]
  diffs = (logits - logits[rows, y][:, None]).T       # [K, B]
  dual = "l1" if norm == "linf" else "l2"
  g = grads.reshape(num_classes, batch, -1)
  gnorm = (jnp.sum(jnp.abs(g), -1) if dual == "l1"
           else jnp.sqrt(jnp.sum(g * g, -1)))
  dist = jnp.abs(diffs) / (gnorm + 1e-12)
  dist = jnp.where(jnp.arange(num_classes)[:, None] == y[None], jnp.inf,
                   dist)
  k = jnp.argmin(dist, axis=0)                        # [B]
  return diffs[k, rows], grads[k, rows]


def _run(logits_fn, x, y, target, x1, best, best_dist, *, steps, norm,
         alpha_max, eta, beta, unroll):
  """One FAB run from `x1`, updating the closest adversarial points."""
  shape = x.shape
  flat = lambda v: v.reshape(shape[0], -1)
  expand = lambda v: projections.per_example(v, x.ndim)

  def check(x1, best, best_dist):
    adv = jnp.argmax(logits_fn(x1), axis=-1) != y
    dist = _flat_norm(x1 - x, norm)
    better = adv & (dist < best_dist)
    best = jnp.where(expand(better), x1, best)
    best_dist = jnp.where(better, dist, best_dist)
    x1 = jnp.where(expand(adv), x + (x1 - x) * beta, x1)
    return x1, best, best_dist

  def body(_, carry):
    x1, best, best_dist = check(*carry)
    df, dg = _linearise(logits_fn, x1, y, target, norm)
    w = flat(dg)
    b = -df + jnp.sum(w * flat(x1), axis=-1)
    d1 = project_hyperplane(flat(x1), w, b, norm=norm)
    d0 = project_hyperplane(flat(x), w, b, norm=norm)
    a1 = jnp.maximum(_flat_norm(d1, norm), 1e-8)
    a0 = jnp.maximum(_flat_norm(d0, norm), 1e-8)
    alpha = expand(jnp.clip(a1 / (a1 + a0), 0.0, alpha_max))
    x1 = ((x1 + eta * d1.reshape(shape)) * (1 - alpha) +
          (x + eta * d0.reshape(shape)) * alpha)
    return jnp.clip(x1, 0.0, 1.0), best, best_dist

  carry = loops.run_loop(steps, body, (x1, best, best_dist), unroll=unroll)
  _, best, best_dist = check(*carry)
  return best, best_dist


def fab_min_norm(logits_fn: LogitsFn, x: jax.Array, y: jax.Array,
                 key: jax.Array, *, eps=None, norm: str = "linf",
                 steps: int = 100, target: Optional[jax.Array] = None,
                 restarts: int = 1, alpha_max: float = 0.1, eta: float = 1.05,
                 beta: float = 0.9, unroll: Optional[bool] = None
                 ) -> tuple[jax.Array, jax.Array]:
  """FAB as a minimum-norm attack: the closest adversarial points found.

  Args:
    logits_fn: `x [B, ...] -> logits [B, C]` (eval mode; examples must not
      interact, e.g. no train-mode BatchNorm).
    x: float32 [B, ...] clean inputs in [0, 1].
    y: int [B] true labels.
    key: PRNG key (only restarts after the first use it).
    eps: scalar or [B] pixel units, or None: caps the random starts of
      restarts after the first (AutoAttack's `eps`); ignored with one run.
    norm: "linf" or "l2".
    steps: static iterations per run (100 in AutoAttack).
    target: int [B] target classes (FAB-T), or None (untargeted: the
      nearest linearised boundary among all classes, C backward passes
      per iteration).
    restarts: static number of runs (1 in AutoAttack's standard FAB-T).
    alpha_max: the largest weight of the clean point's projection (0.1).
    eta: overshoot of the projection steps (1.05).
    beta: backtracking factor towards `x` after a success (0.9).
    unroll: the step loop form (`jaxadv.loops.run_loop`); None = backend
      default.

  Returns:
    (x_best [B, ...]: the closest misclassified point found, `x` where none
    was; dist [B]: its norm from `x`, inf where none was, 0 for examples
    misclassified clean).

  Raises:
    ValueError, TypeError: bad `x`, `y`, `target`, `eps`, `steps`,
      `restarts`, `norm`, or `alpha_max`/`beta` outside [0, 1], eta <= 0.
  """
  core.validate(x, y, eps=0.0 if eps is None else eps, steps=steps,
                norm=norm, restarts=restarts)
  num_classes = validation.output_classes(logits_fn, x)
  core.check_finite_outputs(logits_fn, x, name="logits_fn")
  validation.check_labels(y, x.shape[0], "y", num_classes=num_classes)
  if target is not None:
    validation.check_labels(target, x.shape[0], "target",
                            num_classes=num_classes)
  validation.check_interval(alpha_max, "alpha_max", 0.0, 1.0)
  validation.check_interval(beta, "beta", 0.0, 1.0)
  validation.check_interval(eta, "eta", 0.0, float("inf"), low_open=True)
  best = x
  best_dist = jnp.full(x.shape[:1], jnp.inf, x.dtype)
  run = lambda x1, best, best_dist: _run(
      logits_fn, x, y, target, x1, best, best_dist, steps=steps, norm=norm,
      alpha_max=alpha_max, eta=eta, beta=beta, unroll=unroll)
  best, best_dist = run(x, best, best_dist)
  if restarts > 1:
    cap = jnp.inf if eps is None else jnp.broadcast_to(
        jnp.asarray(eps, x.dtype), x.shape[:1])

    def restart(r, carry):
      best, best_dist = carry
      k = jax.random.fold_in(key, r)
      if norm == "linf":
        t = jax.random.uniform(k, x.shape, x.dtype, -1.0, 1.0)
      else:
        t = jax.random.normal(k, x.shape, x.dtype)
      radius = jnp.minimum(best_dist, cap)
      radius = jnp.where(jnp.isfinite(radius), radius, 0.0)
      t = t / projections.per_example(
          jnp.maximum(_flat_norm(t, norm), 1e-12), x.ndim)
      x1 = jnp.clip(x + 0.5 * projections.per_example(radius, x.ndim) * t,
                    0.0, 1.0)
      return run(x1, best, best_dist)

    best, best_dist = loops.run_loop(restarts - 1, lambda r, c: restart(
        r + 1, c), (best, best_dist), unroll=False)
  return best, best_dist


def fab(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, key: jax.Array, *,
        eps, norm: str = "linf", steps: int = 100,
        target: Optional[jax.Array] = None, restarts: int = 1,
        alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9,
        unroll: Optional[bool] = None) -> jax.Array:
  """FAB / FAB-T with a budget: the closest adversarial point if it is
  within `eps`, else the clean input.

  Croce & Hein (ICML 2020). Arguments as `fab_min_norm`, with `eps`
  (scalar or [B], pixel units) required: the returned `x_adv` satisfies
  `||x_adv - x|| <= eps` exactly (float32) and lies in [0, 1].

  Returns:
    x_adv, same shape and dtype as `x`.
  """
  validation.check_nonnegative(eps, "eps")
  best, dist = fab_min_norm(logits_fn, x, y, key, eps=eps, norm=norm,
                            steps=steps, target=target, restarts=restarts,
                            alpha_max=alpha_max, eta=eta, beta=beta,
                            unroll=unroll)
  eps_b = jnp.broadcast_to(jnp.asarray(eps, x.dtype), x.shape[:1])
  ok = dist <= eps_b
  return jnp.where(projections.per_example(ok, x.ndim), best, x)
