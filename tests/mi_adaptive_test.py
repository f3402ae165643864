"""Pang et al.'s adaptive attack as their released code runs it
(`defenses.mi_mixed_space_pgd`) against a per-example reference loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import defenses
from jaxadv import losses
from jaxadv import projections
from jaxadv.defenses import mixup_inference as mi

C = 4
SHAPE = (5, 5, 1)


def _logits_fn():
  k1, k2 = jax.random.split(jax.random.key(3))
  w1 = jax.random.normal(k1, (int(np.prod(SHAPE)), 16))
  w2 = jax.random.normal(k2, (16, C))
  return lambda x: jnp.tanh(x.reshape((x.shape[0], -1)) @ w1) @ w2


def _pool(per_class=3):
  return mi.SamplePool(
      jax.random.uniform(jax.random.key(7), (C, per_class) + SHAPE))


def _reference(logits_fn, x, y, pool, key, *, lam, eps, step_size, steps,
               num_partners, partners, targeted, labels):
  """One example at a time, as `gen_adv_crafter_adaptive` does."""
  k_partners, k_init = jax.random.split(key)
  y_hat = jnp.argmax(logits_fn(x), -1).astype(jnp.int32)
  x_s = np.asarray(mi.draw_partners(pool, y_hat, k_partners,
                                    num_samples=num_partners,
                                    partners=partners))
  n, b = x_s.shape[:2]
  mixed_all = lam * np.asarray(x)[None] + (1 - lam) * x_s
  flat = mixed_all.reshape((n * b,) + SHAPE)
  eta0 = np.asarray(projections.clip_box(flat, projections.random_init(
      k_init, jnp.asarray(flat), eps, "linf"))).reshape(mixed_all.shape)
  out = []
  for j in range(b):
    m = mixed_all[:, j]                      # [n, ...] this example's copies
    if targeted or labels == "true":
      t = np.full(n, int(y[j]))
    else:
      t = np.asarray(jnp.argmax(logits_fn(jnp.asarray(m)), -1))
    adv = m + eta0[:, j]
    for _ in range(steps):
      def loss(z):
        ce = losses.cross_entropy(logits_fn(z), jnp.asarray(t))
        return jnp.mean(ce) * (-1.0 if targeted else 1.0)
      g = np.asarray(jax.grad(loss)(jnp.asarray(adv)))
      adv = np.clip(adv + step_size * np.sign(g.mean(0, keepdims=True)),
                    0, 1)
      adv = np.clip(m + np.clip(adv - m, -eps, eps), 0, 1)
    out.append(np.clip(np.asarray(x)[j] + (adv - m).mean(0), 0, 1))
  return np.stack(out)


_SLOW = pytest.mark.slow  # the other cases, ~2 s each, in CI's slow line


@pytest.mark.parametrize("partners,targeted,labels,jit", [
    ("ol", False, "predicted", True),
    pytest.param("ol", False, "predicted", False, marks=_SLOW),
    pytest.param("ol", False, "true", True, marks=_SLOW),
    pytest.param("pl", True, "true", False, marks=_SLOW)])
def test_matches_the_per_example_reference(partners, targeted, labels, jit):
  logits_fn, pool = _logits_fn(), _pool()
  x = jax.random.uniform(jax.random.key(1), (6,) + SHAPE)
  y = jnp.arange(6, dtype=jnp.int32) % C
  kw = dict(lam=0.6, eps=0.1, step_size=0.03, steps=4, num_partners=3,
            partners=partners, targeted=targeted, labels=labels)

  def run(x, y, key, eps):
    return defenses.mi_mixed_space_pgd(logits_fn, x, y, pool, key,
                                       **{**kw, "eps": eps})
  fn = jax.jit(run) if jit else run
  x_adv = np.asarray(fn(x, y, jax.random.key(5), 0.1))
  ref = _reference(logits_fn, x, y, pool, jax.random.key(5), **kw)
  np.testing.assert_allclose(x_adv, ref, atol=1e-5)
  assert np.abs(x_adv - np.asarray(x)).max() <= np.float32(0.1)
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  assert not np.allclose(x_adv, x)


def test_bad_arguments_are_named():
  logits_fn, pool = _logits_fn(), _pool()
  x = jax.random.uniform(jax.random.key(1), (2,) + SHAPE)
  y = jnp.zeros(2, jnp.int32)
  kw = dict(lam=0.5, eps=0.1, step_size=0.03, steps=2)
  with pytest.raises(ValueError, match="num_partners"):
    defenses.mi_mixed_space_pgd(logits_fn, x, y, pool, jax.random.key(0),
                                num_partners=0, **kw)
  with pytest.raises(ValueError, match="labels"):
    defenses.mi_mixed_space_pgd(logits_fn, x, y, pool, jax.random.key(0),
                                labels="oracle", **kw)
