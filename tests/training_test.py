"""Tests of the training steps (pure functions) and the resumable loop."""


import time

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxadv import data
from jaxadv import losses
from jaxadv import models
from jaxadv import training

SHAPE = (8, 28, 28, 1)
EPS = 0.3


def _state(tx=None, delta=False, eps=EPS, step_size=0.1):
  model = models.get_model("fast_at_mnist")
  tx = tx or optax.sgd(0.1)
  return training.create_train_state(
      model, jax.random.key(0), (1, 28, 28, 1), tx, eps=eps,
      step_size=step_size, delta_shape=SHAPE if delta else None)


def _batch(seed):
  kx, ky = jax.random.split(jax.random.key(seed))
  return {"x": jax.random.uniform(kx, SHAPE),
          "y": jax.random.randint(ky, (SHAPE[0],), 0, 10)}


def _ce(state, params, x, y):
  logits = state.apply_fn({"params": params}, x, train=True)
  return jnp.mean(losses.cross_entropy(logits, y))


def _tree_close(a, b, atol=1e-6):
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(u, v, atol=atol, rtol=1e-5)


@pytest.mark.parametrize("jit", [True, False])
def test_natural_step_is_plain_sgd(jit):
  state = _state()
  batch = _batch(1)
  step = training.natural_step()
  new, metrics = (jax.jit(step) if jit else step)(state, batch,
                                                  jax.random.key(0))
  g = jax.grad(lambda p: _ce(state, p, batch["x"], batch["y"]))(state.params)
  expected = jax.tree.map(lambda p, g: p - 0.1 * g, state.params, g)
  _tree_close(new.params, expected)
  assert int(new.step) == 1
  np.testing.assert_allclose(metrics["loss"],
                             _ce(state, state.params, batch["x"], batch["y"]),
                             rtol=1e-5)


@pytest.mark.parametrize("jit", [True, False])
def test_free_at_step_equals_manual_value_and_grad(jit):
  replays = 3
  state = _state(delta=True)
  step = training.free_at_step(replays=replays)
  step = jax.jit(step) if jit else step
  batches = [_batch(1), _batch(2)]
  # Manual reference: per replay, one value_and_grad over (params, delta).
  params, delta = state.params, jnp.zeros(SHAPE)
  for batch in batches:
    for _ in range(replays):
      f = lambda p, d: _ce(state, p, jnp.clip(batch["x"] + d, 0, 1),
                           batch["y"])
      _, (gp, gd) = jax.value_and_grad(f, argnums=(0, 1))(params, delta)
      params = jax.tree.map(lambda p, g: p - 0.1 * g, params, gp)
      delta = jnp.clip(delta + EPS * jnp.sign(gd), -EPS, EPS)
    state, _ = step(state, batch, jax.random.key(0))
    _tree_close(state.params, params, atol=1e-5)
    np.testing.assert_allclose(state.delta, delta, atol=1e-6)
  assert int(state.step) == 2 * replays
  # delta persists across minibatches, stays in the ball, is not trivial.
  assert float(jnp.abs(state.delta).max()) <= EPS + 1e-6
  assert float(jnp.mean(jnp.abs(state.delta) == EPS)) > 0.5


def test_free_at_needs_fixed_batch_delta():
  state = _state(delta=False)
  with pytest.raises(ValueError, match="state.delta"):
    training.free_at_step(replays=2)(state, _batch(0), jax.random.key(0))


def _loops(jaxpr):
  """(primitive, trip count) of every loop in `jaxpr`, nested ones included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in ("scan", "while"):
      found.append((eqn.primitive.name, eqn.params.get("length")))
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      found += _loops(sub)
  return found


@pytest.mark.parametrize("unroll", [True, False])
def test_free_at_makes_one_value_and_grad_call_per_replay(monkeypatch, unroll):
  """The replay loop's body (one replay) holds ONE value_and_grad over
  (params, delta), in both loop forms: `lax.fori_loop` traces its body once
  (unrolled or not), and the step is one loop of `replays` trips."""
  calls = []
  real = jax.value_and_grad

  def counting(*args, **kwargs):
    calls.append(kwargs.get("argnums"))
    return real(*args, **kwargs)

  monkeypatch.setattr(jax, "value_and_grad", counting)
  state = _state(delta=True)
  step = training.free_at_step(replays=4, unroll=unroll)
  jaxpr = jax.make_jaxpr(step)(state, _batch(0), jax.random.key(0))
  assert calls == [(0, 1)]
  assert ("scan", 4) in _loops(jaxpr.jaxpr)


@pytest.mark.parametrize("method", ["fgsm_rs", "pgd"])
def test_adversarial_steps_train_on_perturbed_inputs(method):
  state = _state(step_size=0.1)
  batch = _batch(3)
  step = (training.fgsm_rs_step() if method == "fgsm_rs"
          else training.pgd_at_step(steps=3))
  new, metrics = jax.jit(step)(state, batch, jax.random.key(0))
  clean_loss = _ce(state, state.params, batch["x"], batch["y"])
  # The reported loss is the loss on the adversarial batch: higher than clean.
  assert float(metrics["loss"]) > float(clean_loss)
  assert int(new.step) == 1
  # Keys are folded with the step: the same key at another step differs.
  a, _ = jax.jit(step)(state, batch, jax.random.key(0))
  b, _ = jax.jit(step)(state.replace(step=state.step + 1), batch,
                       jax.random.key(0))
  assert not np.allclose(jax.tree.leaves(a.params)[0],
                         jax.tree.leaves(b.params)[0])


def test_attack_params_are_traced():
  """Changing eps reuses the compiled step."""
  state = _state()
  step = jax.jit(training.fgsm_rs_step())
  batch = _batch(0)
  step(state, batch, jax.random.key(0))
  n = step._cache_size()
  state2 = state.replace(attack_params={**state.attack_params,
                                        "eps": jnp.float32(0.1),
                                        "step_size": jnp.float32(0.12)})
  step(state2, batch, jax.random.key(0))
  assert step._cache_size() == n


def test_eps_ramp():
  state = _state(eps=0.3, step_size=0.4)
  state = state.replace(attack_params={**state.attack_params,
                                       "eps_ramp_steps": jnp.float32(10)})
  for step, frac in [(0, 0.0), (5, 0.5), (10, 1.0), (50, 1.0)]:
    eps, step_size = training.current_attack_params(
        state.replace(step=jnp.int32(step)))
    np.testing.assert_allclose([eps, step_size], [0.3 * frac, 0.4 * frac],
                               rtol=1e-6)


def test_cyclic_schedule():
  s = training.cyclic(100, 5e-3)
  assert float(s(0)) == 0.0
  np.testing.assert_allclose(float(s(40)), 5e-3, rtol=1e-6)
  assert float(s(100)) == pytest.approx(0.0, abs=1e-9)


@pytest.fixture(scope="module")
def mnist_subset():
  x, y = data.load("mnist", "train", limit=1200)
  return x, y


# Kill-and-resume, corrupt checkpoints and divergence: tests/resume_test.py.


def test_fit_learns_real_mnist(mnist_subset):
  x, y = mnist_subset
  state = training.create_train_state(
      models.get_model("fast_at_mnist"), jax.random.key(0), (1, 28, 28, 1),
      optax.adam(2e-3))
  result = training.fit(state, training.natural_step(), x[:1000], y[:1000],
                        batch_size=50, num_batches=120, seed=0,
                        progress=False)
  logits = result.state.apply_fn({"params": result.state.params}, x[1000:])
  acc = float(np.mean(np.argmax(logits, -1) == y[1000:]))
  assert acc > 0.85, acc


def _fast_at_state(lr=2e-3):
  return training.create_train_state(
      models.get_model("fast_at_mnist"), jax.random.key(0), (1, 28, 28, 1),
      optax.adam(lr))


def test_fit_eval_hook_excludes_its_time_and_records_history(mnist_subset):
  """eval_fn every 10 batches and after the last: its records carry the
  batch count and the training time so far, which leaves out compilation
  and the time spent in eval_fn (0.5 s sleeps) and epoch_fn."""
  x, y = mnist_subset
  x_test, y_test = x[1000:], y[1000:]
  spans = []  # (hook, start, end) of every hook call, wall clock

  def eval_fn(state, batches):
    t = time.perf_counter()
    time.sleep(0.5)
    logits = state.apply_fn({"params": state.params}, x_test)
    acc = float(np.mean(np.argmax(logits, -1) == y_test))
    spans.append(("eval", t, time.perf_counter()))
    return {"test_accuracy": acc, "seen": batches}

  def epoch_fn(state, epoch):
    t = time.perf_counter()
    time.sleep(0.5)
    spans.append(("epoch", t, time.perf_counter()))
    return {"pass": epoch}

  t0 = time.perf_counter()
  result = training.fit(_fast_at_state(), training.natural_step(), x[:1000],
                        y[:1000], batch_size=50, num_batches=25, seed=0,
                        progress=False, eval_fn=eval_fn, eval_every=10,
                        epoch_fn=epoch_fn)
  wall = time.perf_counter() - t0
  evals = [r for r in result.history if "test_accuracy" in r]
  passes = [r for r in result.history if "epoch" in r]
  # 20 batches per pass: evals at 10, 20 and after the last (25); two passes.
  assert [r["batches"] for r in evals] == [10, 20, 25]
  assert [r["seen"] for r in evals] == [10, 20, 25]
  assert [(r["epoch"], r["batches"], r["pass"]) for r in passes] == [
      (0, 20, 0), (1, 25, 1)]
  assert result.batches == 25 and not result.stopped_early
  assert 0.0 < evals[0]["train_seconds"] < evals[1]["train_seconds"]
  assert evals[1]["train_seconds"] < evals[2]["train_seconds"]
  assert evals[2]["train_seconds"] == pytest.approx(result.train_seconds,
                                                    abs=0.05)
  # Trained (the history holds real accuracies, rising from chance).
  assert evals[-1]["test_accuracy"] > 0.6
  # Five hook calls of >= 0.5 s each: none of it counted as training time.
  hooks = sum(end - start for _, start, end in spans)
  assert len(spans) == 5 and hooks >= 2.5
  assert result.train_seconds <= wall - hooks - result.compile_seconds + 0.05
  # Between two evals, training time <= the wall time outside the hooks.
  ends = [end for hook, _, end in spans if hook == "eval"]
  starts = [start for hook, start, _ in spans if hook == "eval"]
  for i in range(len(evals) - 1):
    outside = starts[i + 1] - ends[i] - sum(
        end - start for hook, start, end in spans
        if hook == "epoch" and ends[i] <= start <= starts[i + 1])
    gained = evals[i + 1]["train_seconds"] - evals[i]["train_seconds"]
    assert 0.0 < gained <= outside + 0.02, (i, gained, outside)


def test_fit_eval_hook_stop_is_checkpointed(tmp_path, mnist_subset):
  x, y = mnist_subset
  seen = []

  def eval_fn(state, batches):
    seen.append(batches)
    return {"stop": batches >= 15}

  workdir = str(tmp_path / "run")
  result = training.fit(_fast_at_state(), training.natural_step(), x[:1000],
                        y[:1000], batch_size=50, num_batches=40, seed=0,
                        workdir=workdir, progress=False, eval_fn=eval_fn,
                        eval_every=5)
  assert seen == [5, 10, 15]
  assert result.batches == 15 and result.stopped_early
  assert int(result.state.step) == 15
  # The stop is part of the checkpoint: resuming trains no further.
  again = training.fit(_fast_at_state(), training.natural_step(), x[:1000],
                       y[:1000], batch_size=50, num_batches=40, seed=0,
                       workdir=workdir, progress=False, eval_fn=eval_fn,
                       eval_every=5)
  assert again.batches == 15 and again.stopped_early and seen == [5, 10, 15]
  np.testing.assert_array_equal(jax.tree.leaves(again.state.params)[0],
                                jax.tree.leaves(result.state.params)[0])


def test_fit_eval_every_needs_eval_fn(mnist_subset):
  x, y = mnist_subset
  # Without eval_every, eval_fn runs once, after the last batch.
  result = training.fit(_fast_at_state(), training.natural_step(), x[:100],
                        y[:100], batch_size=50, num_batches=3, seed=0,
                        progress=False, eval_fn=lambda s, b: {"at": b})
  assert [r["at"] for r in result.history if "at" in r] == [3]
  with pytest.raises(ValueError, match="eval_fn"):
    training.fit(_fast_at_state(), training.natural_step(), x[:100], y[:100],
                 batch_size=50, num_batches=2, seed=0, progress=False,
                 eval_every=1)
  with pytest.raises(ValueError, match="eval_every"):
    training.fit(_fast_at_state(), training.natural_step(), x[:100], y[:100],
                 batch_size=50, num_batches=2, seed=0, progress=False,
                 eval_fn=lambda s, b: {}, eval_every=0)
