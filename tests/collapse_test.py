"""`training.fit`'s CollapseGuard: detection, rollback, stop or recovery,
and resuming a guarded run (real MNIST; the check is scripted on the
state's step so that the collapse happens where the test says)."""

import jax
import numpy as np
import optax
import pytest

from jaxadv import data
from jaxadv import models
from jaxadv import training


@pytest.fixture(scope="module")
def mnist():
  return data.load("mnist", "train", limit=640)


def _state():
  return training.create_train_state(
      models.get_model("fast_at_mnist"), jax.random.key(0), (1, 28, 28, 1),
      optax.adam(1e-3), eps=0.3, step_size=0.375)


def _scripted(schedule):
  """A check whose PGD accuracy is `schedule(step)`."""
  calls = []

  def check(state):
    step = int(state.step)
    calls.append(step)
    return {"pgd_acc": schedule(step)}

  return check, calls


def _fit(mnist, step, num_batches, **kw):
  x, y = mnist
  return training.fit(_state(), step, x, y, batch_size=32,
                      num_batches=num_batches, seed=0, progress=False, **kw)


def _leaves_equal(a, b):
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


@pytest.mark.slow  # ~13 s
def test_collapse_rolls_back_to_the_best_check_and_stops(mnist):
  # Accuracy rises to 0.6 at batch 30, then collapses to 0.05.
  check, calls = _scripted(lambda s: {10: 0.3, 20: 0.5, 30: 0.6}.get(s, 0.05))
  guard = training.CollapseGuard(check=check, every=10, start=10)
  with pytest.warns(RuntimeWarning, match="catastrophic overfitting at "
                    "batch 40"):
    result = _fit(mnist, training.fgsm_rs_step(), 60, guard=guard)
  assert result.collapsed and result.collapse_batch == 40
  assert result.stopped_early and result.batches == 30
  assert int(result.state.step) == 30
  assert calls == [10, 20, 30, 40]
  # The returned parameters are those after 30 batches, bit for bit.
  plain = _fit(mnist, training.fgsm_rs_step(), 30)
  _leaves_equal(result.state.params, plain.state.params)
  event = [r for r in result.history if r.get("collapsed")]
  assert len(event) == 1 and event[0]["detected_at"] == 40
  assert event[0]["rolled_back_to"] == 30
  assert "fell below" in event[0]["reason"]


@pytest.mark.slow  # ~13 s
def test_collapse_then_recovery_continues_with_the_safer_step(mnist, tmp_path):
  # Collapse at 40 under FGSM-RS; the recovery step (natural training
  # here, any step works) trains batches 31-60 again and never collapses.
  seen = []

  def check(state):  # collapses the first time batch 40 is reached only
    step = int(state.step)
    seen.append(step)
    return {"pgd_acc": 0.05 if seen.count(40) == 1 and step == 40
            else 0.5 + step / 1000}

  guard = training.CollapseGuard(check=check, every=10, action="continue",
                                 recovery_step=training.natural_step())
  with pytest.warns(RuntimeWarning, match="rolled back to batch 30"):
    result = _fit(mnist, training.fgsm_rs_step(), 60, guard=guard,
                  workdir=str(tmp_path / "guarded"))
  assert result.collapsed and result.collapse_batch == 40
  assert not result.stopped_early and result.batches == 60
  assert int(result.state.step) == 60
  assert seen == [10, 20, 30, 40, 40, 50, 60]
  # The same as 30 FGSM-RS batches, then 30 natural ones from batch 31.
  x, y = mnist
  two = str(tmp_path / "two_stage")
  for step, n in ((training.fgsm_rs_step(), 30), (training.natural_step(), 60)):
    staged = training.fit(_state(), step, x, y, batch_size=32, num_batches=n,
                          seed=0, progress=False, workdir=two)
  _leaves_equal(result.state.params, staged.state.params)
  # Resuming the finished guarded run gives the same result and flag.
  again = _fit(mnist, training.fgsm_rs_step(), 60, guard=guard,
               workdir=str(tmp_path / "guarded"))
  assert again.collapsed and again.collapse_batch == 40
  _leaves_equal(again.state.params, result.state.params)


def test_fgsm_gap_is_a_collapse_and_no_judgement_before_start(mnist):
  def check(state):
    step = int(state.step)
    return {"pgd_acc": 0.0 if step == 10 else 0.4,
            "fgsm_acc": 0.9 if step == 30 else 0.45}
  # Batch 10's 0.0 comes before `start`: recorded, not judged.
  guard = training.CollapseGuard(check=check, every=10, start=20)
  with pytest.warns(RuntimeWarning, match="FGSM accuracy 0.900"):
    result = _fit(mnist, training.fgsm_rs_step(), 40, guard=guard)
  assert result.collapsed and result.collapse_batch == 30
  assert result.batches == 20
  checks = [r["guard_pgd_acc"] for r in result.history
            if "guard_pgd_acc" in r]
  assert checks[:2] == [0.0, 0.4]


def test_no_collapse_no_flag(mnist):
  check, calls = _scripted(lambda s: 0.5)
  result = _fit(mnist, training.natural_step(), 25,
                guard=training.CollapseGuard(check=check, every=10))
  assert not result.collapsed and result.collapse_batch is None
  assert calls == [10, 20, 25]  # and once after the last batch


def test_guard_rejects_bad_settings(mnist):
  ok = lambda s: {"pgd_acc": 0.5}
  with pytest.raises(ValueError, match="every"):
    training.CollapseGuard(check=ok, every=0)
  with pytest.raises(ValueError, match="recovery_step"):
    training.CollapseGuard(check=ok, every=5, action="continue")
  with pytest.raises(ValueError, match="action"):
    training.CollapseGuard(check=ok, every=5, action="retry")
  with pytest.raises(TypeError, match="CollapseGuard"):
    _fit(mnist, training.natural_step(), 5, guard={"every": 5})
  with pytest.raises(KeyError, match="pgd_acc"):
    _fit(mnist, training.natural_step(), 5, guard=training.CollapseGuard(
        check=lambda s: {"acc": 0.5}, every=5))
