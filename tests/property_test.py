"""Property tests (hypothesis) for every attack in `jaxadv.attacks`.

For any drawn shape, eps, step size, step count, norm and data: `x_adv` lies
in the eps-ball around `x` and in the [0, 1] box (up to float rounding), and
targeted attacks do not increase the target's loss on average. The model is
a fixed random linear classifier (a pure-function unit test: random tensors
are fine here). Shapes come from a short list and the attacks run eagerly:
op-by-op dispatch reuses its per-primitive compilations across attacks and
draws, which on the shared CPU costs far less than one `jit` compilation per
(attack, norm, shape). PGD with restarts (a `fori_loop`, which would
recompile eagerly) is jitted once, with eps / step_size traced.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from jaxadv import attacks
from jaxadv import losses

SHAPES = ((3, 5, 5, 2), (4, 12))   # an NHWC batch and a flat [B, D] batch
NUM_CLASSES = 4
TOL = 1e-5                         # float32 rounding of x + delta
SETTINGS = settings(max_examples=10, deadline=None, derandomize=True)


def _weights(dim: int) -> jax.Array:
  return jax.random.normal(jax.random.key(dim), (dim, NUM_CLASSES)) * 2.0


def _loss_fn(x, y):
  logits = x.reshape(x.shape[0], -1) @ _weights(int(np.prod(x.shape[1:])))
  return losses.cross_entropy(logits, y)


def _keyed_loss_fn(x, y, key):
  """A randomized 'defence' for EOT: the model sees x plus a small wobble.

  The wobble is a cheap function of the key (no `jax.random` draw, whose
  vmapped eager compilation would dominate this file's run time).
  """
  phase = jnp.sum(jax.random.key_data(key).astype(jnp.float32))
  return _loss_fn(jnp.clip(x + 0.01 * jnp.sin(phase + 7.0 * x), 0.0, 1.0), y)


def _data(shape, seed, edges=True):
  """Pixels in [0, 1] and labels.

  With `edges`, many pixels are exactly 0 or 1 (the box binds); else they lie
  in [0.3, 0.7] (the eps-ball binds).
  """
  kx, ky = jax.random.split(jax.random.key(seed))
  u = jax.random.uniform(kx, shape)
  x = jnp.clip(u * 1.6 - 0.3, 0.0, 1.0) if edges else 0.3 + 0.4 * u
  return x, jax.random.randint(ky, (shape[0],), 0, NUM_CLASSES)


def _attack(name: str, norm: str, targeted: bool = False,
            random_start: bool = True, restarts: int = 1):
  """`attack(x, y, key, eps, step_size) -> x_adv` for one static config."""
  kw = dict(targeted=targeted)
  if name == "fgsm":
    fn = lambda x, y, k, e, s: attacks.fgsm(_loss_fn, x, y, eps=e, **kw)
  elif name == "fgm":
    fn = lambda x, y, k, e, s: attacks.fgm(_loss_fn, x, y, eps=e, norm=norm,
                                           **kw)
  elif name == "fgsm_rs":
    fn = lambda x, y, k, e, s: attacks.fgsm_rs(_loss_fn, x, y, k, eps=e,
                                               step_size=s, norm=norm, **kw)
  elif name == "bim":
    fn = lambda x, y, k, e, s: attacks.bim(_loss_fn, x, y, eps=e,
                                           step_size=s, steps=3, norm=norm,
                                           **kw)
  elif name == "pgd":
    fn = lambda x, y, k, e, s: attacks.pgd(
        _loss_fn, x, y, k, eps=e, step_size=s, steps=3, norm=norm,
        restarts=restarts, random_start=random_start, **kw)
  elif name == "eot_pgd":
    fn = lambda x, y, k, e, s: attacks.eot_pgd(
        _keyed_loss_fn, x, y, k, eps=e, step_size=s, steps=2, eot_samples=2,
        norm=norm, random_start=random_start, **kw)
  return fn


_PGD_RESTARTS = jax.jit(_attack("pgd", "linf", restarts=3))


CONFIGS = [("fgsm", "linf"), ("fgm", "linf"), ("fgm", "l2"),
           ("fgsm_rs", "linf"), ("fgsm_rs", "l2"), ("bim", "linf"),
           ("bim", "l2"), ("pgd", "linf"), ("pgd", "l2"),
           ("eot_pgd", "linf"), ("eot_pgd", "l2")]


def _norm(d, norm):
  flat = d.reshape(d.shape[0], -1)
  if norm == "linf":
    return np.max(np.abs(flat), axis=1)
  return np.sqrt(np.sum(flat.astype(np.float64) ** 2, axis=1))


# Examples are cheap once an (attack, norm, shape) has run: the cost is the
# first eager call of each, so this test draws more of them.
# About 23 s: slow, run by .ci/run after the default suite.
@pytest.mark.slow
@settings(SETTINGS, max_examples=40)
@given(config=st.sampled_from(CONFIGS), shape=st.sampled_from(SHAPES),
       eps=st.floats(0.0, 1.0), step_frac=st.floats(0.0, 2.0),
       edges=st.booleans(), seed=st.integers(0, 2**16))
def test_x_adv_in_ball_and_box(config, shape, eps, step_frac, edges, seed):
  name, norm = config
  if norm == "l2":
    eps *= 3.0  # L2 budgets are larger than L-inf ones
  if name == "eot_pgd":  # its eager vmap compiles per shape (~8 s); it shares
    shape = SHAPES[0]    # start/ascent/projection with pgd, tested on both
  x, y = _data(shape, seed, edges)
  eps = np.float32(eps)
  x_adv = np.asarray(_attack(name, norm)(x, y, jax.random.key(seed), eps,
                                         np.float32(eps * step_frac)))
  assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
  assert np.all(np.isfinite(x_adv))
  assert x_adv.min() >= -TOL and x_adv.max() <= 1.0 + TOL
  dist = _norm(x_adv - np.asarray(x), norm)
  assert np.all(dist <= float(eps) * (1 + TOL) + TOL), (dist.max(), eps)


@pytest.mark.slow  # 6-14 s; CI's slow line
@SETTINGS
@given(restarts=st.booleans(),
       eps=st.lists(st.floats(0.0, 0.5), min_size=3, max_size=3),
       seed=st.integers(0, 2**16))
def test_per_example_eps_and_restarts_in_ball(restarts, eps, seed):
  """eps as a vector [B]; PGD with restarts keeps the best run per example."""
  norm = "linf"
  x, y = _data(SHAPES[0], seed)
  eps = np.asarray(eps, np.float32)
  attack = _PGD_RESTARTS if restarts else _attack("pgd", norm)
  x_adv = np.asarray(attack(x, y, jax.random.key(seed), eps, eps / 4))
  assert x_adv.min() >= -TOL and x_adv.max() <= 1.0 + TOL
  dist = _norm(x_adv - np.asarray(x), norm)
  assert np.all(dist <= eps * (1 + TOL) + TOL), (dist, eps)


TARGETED = [("fgsm", "linf"), ("fgm", "l2"), ("bim", "linf"), ("bim", "l2"),
            ("pgd", "linf"), ("eot_pgd", "l2")]


@pytest.mark.slow  # 6-14 s; CI's slow line
@SETTINGS
@given(config=st.sampled_from(TARGETED), shape=st.sampled_from(SHAPES),
       eps=st.floats(0.0, 0.05), step_frac=st.floats(0.1, 1.0),
       seed=st.integers(0, 2**16))
def test_targeted_attacks_do_not_increase_target_loss(config, shape, eps,
                                                      step_frac, seed):
  """Mean target loss at x_adv <= at x (attacks start at x: no random start).

  Small budgets: a signed step of a large size can overshoot the minimum of
  the loss along its direction, so only the descent property is tested.
  """
  name, norm = config
  x, _ = _data(shape, seed)
  target = jax.random.randint(jax.random.key(seed + 1), (shape[0],), 0,
                              NUM_CLASSES)
  attack = _attack(name, norm, targeted=True, random_start=False)
  x_adv = attack(x, target, jax.random.key(seed), np.float32(eps),
                 np.float32(eps * step_frac))
  before = float(jnp.mean(_loss_fn(x, target)))
  after = float(jnp.mean(_loss_fn(x_adv, target)))
  assert after <= before + 1e-5, (before, after)
