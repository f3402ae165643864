"""FAB / FAB-T: the exact hyperplane projection, minimal distances on linear
models, the budgeted attack's ball, and agreement with torchattacks' FAB."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import attacks


def _reference_projection(t, w, b, norm):
  """Bisection on the budget: an independent solution of
  min ||d|| s.t. <w, t + d> = b, 0 <= t + d <= 1 (None when out of reach)."""
  r = b - w @ t
  s = 1.0 if r >= 0 else -1.0
  w, r = w * s, r * s
  room = np.where(w > 0, 1 - t, t)
  aw = np.abs(w)
  reach = lambda lam: np.sum(aw * np.minimum(
      lam if norm == "linf" else lam * aw, room))
  if reach(1e6) < r:
    return None
  lo, hi = 0.0, 1e6
  for _ in range(200):
    mid = (lo + hi) / 2
    lo, hi = (lo, mid) if reach(mid) >= r else (mid, hi)
  mag = hi if norm == "linf" else hi * aw
  return np.sign(w) * np.minimum(mag, room)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("dim", [1, 7, 64, 784])
def test_projection_is_the_exact_minimiser(norm, dim):
  rng = np.random.default_rng(dim)
  batch = 40
  t = rng.uniform(size=(batch, dim)).astype(np.float32)
  w = rng.normal(size=(batch, dim)).astype(np.float32)
  if dim > 1:
    w[:, 0] = 0.0  # a zero normal coordinate never moves
  b = (np.sum(w * t, 1) + rng.normal(size=batch)).astype(np.float32)
  fn = lambda t, w, b: attacks.project_hyperplane(t, w, b, norm=norm)
  for f in (fn, jax.jit(fn)):
    d = np.asarray(f(jnp.asarray(t), jnp.asarray(w), jnp.asarray(b)))
    assert (t + d).min() >= -1e-6 and (t + d).max() <= 1 + 1e-6
    if dim > 1:
      assert np.all(d[:, 0] == 0)
    reached = 0
    for i in range(batch):
      want = _reference_projection(t[i].astype(np.float64),
                                   w[i].astype(np.float64), float(b[i]), norm)
      if want is None:  # out of reach: the box point closest to the plane
        gap = b[i] - w[i] @ t[i]
        assert np.sign(w[i] @ d[i]) == np.sign(gap)
        assert abs(w[i] @ d[i]) <= abs(gap) + 1e-5
        continue
      reached += 1
      np.testing.assert_allclose(d[i], want, atol=2e-6)
      np.testing.assert_allclose(w[i] @ (t[i] + d[i]), b[i], atol=1e-4)
    assert reached >= batch // 4


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_edge_cases(norm):
  t = jnp.asarray(np.random.default_rng(0).uniform(size=(3, 5)), jnp.float32)
  w = jnp.asarray([[0.0] * 5, [1.0, -2.0, 0.0, 3.0, 0.5], [0.25] * 5],
                  jnp.float32)
  on_plane = jnp.sum(w * t, 1)
  # w = 0, or t already on its plane: no move at all.
  d = attacks.project_hyperplane(t, w, on_plane, norm=norm)
  np.testing.assert_allclose(np.asarray(d), 0.0, atol=1e-30)
  # Out of the box's reach: every active coordinate goes to its bound.
  far = on_plane.at[1].add(1e3)
  d = np.asarray(attacks.project_hyperplane(t, w, far, norm=norm))
  want = np.where(np.asarray(w[1]) > 0, 1.0, 0.0) - np.asarray(t[1])
  want[2] = 0.0
  np.testing.assert_allclose(d[1], want, atol=1e-7)
  # The input dtype is kept.
  d16 = attacks.project_hyperplane(t.astype(jnp.float16), w.astype(
      jnp.float16), on_plane.astype(jnp.float16), norm=norm)
  assert d16.dtype == jnp.float16


def test_projection_checks_shapes():
  with pytest.raises(ValueError, match="expected t and w"):
    attacks.project_hyperplane(jnp.zeros((2, 3)), jnp.zeros((2, 4)),
                               jnp.zeros(2))
  with pytest.raises(ValueError, match="`norm` must be one of"):
    attacks.project_hyperplane(jnp.zeros((2, 3)), jnp.zeros((2, 3)),
                               jnp.zeros(2), norm="l1")


def _linear_model(seed=0, dim=20, classes=2):
  rng = np.random.default_rng(seed)
  w = jnp.asarray(rng.normal(size=(dim, classes)).astype(np.float32))
  # Boundaries through the box: biases centre the logits at x = 0.5.
  c = jnp.asarray((rng.normal(size=classes) - 0.5 * np.asarray(w).sum(0))
                  .astype(np.float32))
  return lambda x: x.reshape(x.shape[0], -1) @ w + c, np.asarray(w), np.asarray(c)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_finds_the_minimal_distance_of_a_linear_model(norm):
  """Two classes: the boundary is one hyperplane; FAB's distance is at least
  the exact minimum (no point closer is misclassified) and within 5% of it."""
  logits_fn, w, c = _linear_model()
  rng = np.random.default_rng(1)
  x = rng.uniform(0.3, 0.7, size=(64, 20)).astype(np.float32)
  y = np.argmax(np.asarray(logits_fn(jnp.asarray(x))), -1).astype(np.int32)
  x_adv, dist = attacks.fab_min_norm(logits_fn, jnp.asarray(x),
                                     jnp.asarray(y), jax.random.key(0),
                                     norm=norm, steps=30)
  dist = np.asarray(dist)
  wdiff = (w[:, 1 - y] - w[np.arange(20)[:, None], y[None]]).T   # [B, D]
  margin = np.abs(np.sum(x * wdiff, 1) + c[1 - y] - c[y])
  exact = []
  for i in range(len(x)):
    d = _reference_projection(x[i].astype(np.float64),
                              wdiff[i].astype(np.float64),
                              float(-(c[1 - y[i]] - c[y[i]])), norm)
    # None: the box holds no point of the other class at all.
    exact.append(np.inf if d is None else np.linalg.norm(
        d, np.inf if norm == "linf" else 2))
  exact = np.asarray(exact)
  reach = np.isfinite(exact)
  assert reach.sum() >= len(x) // 2 and margin.min() > 0
  assert np.all(np.isinf(dist[~reach]))
  dist, exact = dist[reach], exact[reach]
  assert np.all(dist >= exact * (1 - 1e-4))
  assert np.all(dist <= exact * 1.05 + 1e-6)
  x, y, x_adv = x[reach], y[reach], np.asarray(x_adv)[reach]
  pred = np.argmax(np.asarray(logits_fn(x_adv)), -1)
  assert np.all(pred != y)
  got = (np.abs(x_adv - x).max(-1) if norm == "linf" else
         np.sqrt(np.sum((x_adv - x) ** 2, -1)))
  np.testing.assert_allclose(got, dist, rtol=1e-6)


def test_fab_budget_is_exact_and_jit_matches_eager():
  logits_fn, _, _ = _linear_model(seed=2, dim=12, classes=4)
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.uniform(size=(32, 12)).astype(np.float32))
  y = jnp.argmax(logits_fn(x), -1)
  target = (y + 1) % 4
  eps = np.float32(0.05)
  kw = dict(eps=eps, steps=15, target=target)
  eager = attacks.fab(logits_fn, x, y, jax.random.key(0), **kw)
  jitted = jax.jit(lambda x, y, k: attacks.fab(logits_fn, x, y, k, **kw))(
      x, y, jax.random.key(0))
  np.testing.assert_allclose(np.asarray(eager), np.asarray(jitted), atol=1e-6)
  linf = np.abs(np.asarray(eager) - np.asarray(x)).max(-1)
  assert np.all(linf <= eps)   # exactly, in float32
  fooled = np.asarray(jnp.argmax(logits_fn(eager), -1) != y)
  _, dist = attacks.fab_min_norm(logits_fn, x, y, jax.random.key(0),
                                 steps=15, target=target)
  np.testing.assert_array_equal(fooled, np.asarray(dist) <= eps)
  assert np.all(linf[~fooled] == 0)  # not fooled within eps: the clean x


def test_fab_restarts_never_worse_and_misclassified_clean_is_zero():
  logits_fn, _, _ = _linear_model(seed=4, dim=10, classes=3)
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.uniform(size=(24, 10)).astype(np.float32))
  pred = jnp.argmax(logits_fn(x), -1)
  y = pred.at[:3].set((pred[:3] + 1) % 3)   # three wrong clean
  one = attacks.fab_min_norm(logits_fn, x, y, jax.random.key(0), steps=5)[1]
  three = attacks.fab_min_norm(logits_fn, x, y, jax.random.key(0), steps=5,
                               restarts=3, eps=0.3)[1]
  assert np.all(np.asarray(three) <= np.asarray(one) + 1e-7)
  np.testing.assert_array_equal(np.asarray(one)[:3], 0.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(eps=-0.1), "eps"),
    (dict(eps=0.1, steps=-1), "steps"),
    (dict(eps=0.1, alpha_max=1.5), "alpha_max"),
    (dict(eps=0.1, beta=-0.1), "beta"),
    (dict(eps=0.1, eta=0.0), "eta"),
    (dict(eps=0.1, target=jnp.array([0, 3])), "target"),
    (dict(eps=0.1, norm="l1"), "norm"),
])
def test_fab_rejects_bad_arguments(kwargs, match):
  logits_fn, _, _ = _linear_model(dim=4, classes=3)
  x = jnp.full((2, 4), 0.5)
  with pytest.raises(ValueError, match=match):
    attacks.fab(logits_fn, x, jnp.array([0, 1]), jax.random.key(0),
                **{"steps": 2, **kwargs})


@pytest.mark.slow  # trains a small MNIST net and runs both FABs: ~2 minutes
def test_fab_agrees_with_torchattacks_on_mnist():
  """jaxadv's FAB-T over 9 targets and untargeted FAB give the same robust
  accuracy as torchattacks' FAB (AutoAttack's port) on the same weights."""
  torch = pytest.importorskip("torch")
  torchattacks = pytest.importorskip("torchattacks")
  import optax
  from experiments.benchmarks import peers
  from jaxadv import data, models, training
  x, y = data.load("mnist", "train", limit=6400)
  xt, yt = data.load("mnist", "test", limit=150)
  model = models.get_model("fast_at_mnist")
  state = training.create_train_state(model, jax.random.key(0),
                                      (1, 28, 28, 1), optax.adam(1e-3))
  step = jax.jit(training.natural_step())
  for i in range(150):
    j = (i * 128) % len(x)
    state, _ = step(state, {"x": x[j:j + 128], "y": y[j:j + 128]},
                    jax.random.key(i))
  logits_fn = lambda v: model.apply({"params": state.params}, v)
  eps = 0.1
  xj, yj = jnp.asarray(xt), jnp.asarray(yt)
  clean = np.asarray(jnp.argmax(logits_fn(xj), -1) == yj)

  @jax.jit
  def fab_t(r):
    logits = logits_fn(xj)
    others = jnp.where(jax.nn.one_hot(yj, 10) > 0, -jnp.inf, logits)
    target = jnp.argsort(-others, -1)[:, r]
    return attacks.fab_min_norm(logits_fn, xj, yj, jax.random.key(0),
                                target=target, steps=100, unroll=False)[1]

  dist_t = np.min([np.asarray(fab_t(r)) for r in range(9)], axis=0)
  dist_u = np.asarray(attacks.fab_min_norm(logits_fn, xj, yj,
                                           jax.random.key(0), steps=100,
                                           unroll=False)[1])
  tmodel = peers.port_to_torch("fast_at_mnist", state.params).eval()
  xtt = torch.from_numpy(xt.transpose(0, 3, 1, 2).copy())
  ytt = torch.from_numpy(yt.astype(np.int64))
  for multi, dist in ((True, dist_t), (False, dist_u)):
    atk = torchattacks.FAB(tmodel, norm="Linf", eps=eps, steps=100,
                           n_restarts=1, multi_targeted=multi, n_classes=10)
    adv = atk(xtt, ytt)
    with torch.no_grad():
      ok = (tmodel(adv).argmax(1) == ytt).numpy()
    theirs = float(np.mean(ok & clean))
    ours = float(np.mean(clean & (dist > eps)))
    assert abs(ours - theirs) <= 0.02, (multi, ours, theirs)
