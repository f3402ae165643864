"""Inputs that used to give a silently wrong answer now fail loudly.

Each case names the public function, the bad input and the error (or the
documented result) it must give: NaN logits (evaluations, every attack,
Mixup Inference), labels beyond the model's classes, per-example eps
vectors, scalar losses, unreadable PyTorch files, empty batches,
adversarial training with no budget, the checked mode under jit, a wrong
image size for Mixup Inference, a reused workdir with other settings and
`fit` twice from one state. Tiny linear models and random tensors
(pure-function checks); no dataset needed.
"""

from __future__ import annotations

import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxadv import attacks
from jaxadv import evaluation
from jaxadv import losses
from jaxadv import models
from jaxadv import training

B, C = 8, 10


def _linear_apply(variables, x, train=False):
  del train
  return x.reshape(x.shape[0], -1) @ variables["w"] + variables["b"]


def _data(n=B, seed=0):
  kx, ky = jax.random.split(jax.random.key(seed))
  x = np.array(jax.random.uniform(kx, (n, 6, 6, 1)))
  y = np.array(jax.random.randint(ky, (n,), 0, C), np.int32)
  return x, y


def _variables(nan=False):
  w = jax.random.normal(jax.random.key(1), (36, C))
  if nan:
    w = w.at[0, 0].set(jnp.nan)
  return {"w": w, "b": jnp.zeros(C)}


@pytest.mark.parametrize("fn", ["accuracy", "robust_accuracy",
                                "evaluate_robustness"])
def test_nan_logits_raise_instead_of_predicting_class_0(fn):
  x, y = _data()
  v = _variables(nan=True)
  call = {
      "accuracy": lambda: evaluation.accuracy(_linear_apply, v, x, y),
      "robust_accuracy": lambda: evaluation.robust_accuracy(
          _linear_apply, v, x, y, jax.random.key(0), eps=0.1,
          step_size=0.05, steps=2),
      "evaluate_robustness": lambda: evaluation.evaluate_robustness(
          _linear_apply, v, x, y, jax.random.key(0), eps=0.1,
          attack_names=("apgd-ce",), apgd_steps=2, batch_size=B),
  }[fn]
  with pytest.raises(ValueError, match="logits contain NaN"):
    call()


def test_evaluate_robustness_checks_labels_against_the_model():
  x, y = _data()
  y[0] = C  # one past the model's classes
  with pytest.raises(ValueError, match=r"`y` labels must lie in \[0, 10\)"):
    evaluation.evaluate_robustness(_linear_apply, _variables(), x, y,
                                   jax.random.key(0), eps=0.1, batch_size=B)


def test_per_example_eps_of_the_wrong_length_names_eps():
  x, y = _data()
  loss_fn = losses.make_loss_fn(lambda z: _linear_apply(_variables(), z))
  with pytest.raises(ValueError, match=r"`eps` must be a scalar or a "
                     r"per-example vector of shape \(8,\)"):
    attacks.pgd(loss_fn, x, y, jax.random.key(0), eps=jnp.full(B - 1, 0.1),
                steps=2)
  with pytest.raises(ValueError, match="`step_size`"):
    attacks.pgd(loss_fn, x, y, jax.random.key(0), eps=0.1,
                step_size=jnp.full(3, 0.01), steps=2)
  with pytest.raises(ValueError, match="`eps`"):
    evaluation.robust_accuracy(_linear_apply, _variables(), x, y,
                               jax.random.key(0), eps=np.full(3, 0.1),
                               step_size=0.05, steps=2)


@pytest.mark.slow
def test_robust_accuracy_slices_a_per_example_eps_with_the_batches():
  x, y = _data(n=12)
  v = _variables()
  eps = np.where(np.arange(12) % 2 == 0, 0.0, 0.5).astype(np.float32)
  kw = dict(attack="pgd", step_size=0.2, steps=5, batch_size=5)
  flags = evaluation.robust_correct(_linear_apply, v, x, y,
                                    jax.random.key(0), eps=eps, **kw)
  clean = evaluation.predict(_linear_apply, v, x) == y
  # eps 0: the verdict is the clean one; eps 0.5: as the scalar run at 0.5.
  np.testing.assert_array_equal(flags[::2], clean[::2])
  at_half = evaluation.robust_correct(_linear_apply, v, x, y,
                                      jax.random.key(0), eps=0.5, **kw)
  assert (flags[1::2] <= clean[1::2]).all()
  assert flags[1::2].sum() <= at_half[1::2].sum() + 2  # same attack, noise


@pytest.mark.parametrize("attack", ["pgd", "apgd", "fgsm", "fgsm_rs",
                                    "eot_pgd"])
def test_a_scalar_loss_fn_is_refused(attack):
  x, y = _data()
  mean_loss = lambda z, t, *k: jnp.mean(losses.make_loss_fn(
      lambda u: _linear_apply(_variables(), u))(z, t))
  kw = {"pgd": dict(steps=2, restarts=2), "apgd": dict(steps=2),
        "eot_pgd": dict(steps=2)}.get(attack, {})
  with pytest.raises(ValueError, match="`loss_fn` must return per-example"):
    getattr(attacks, attack)(mean_loss, x, y, jax.random.key(0), eps=0.1,
                             **kw)


@pytest.mark.parametrize("attack", ["pgd", "apgd", "fgsm", "square", "fab"])
def test_empty_batches_are_refused(attack):
  x, y = _data()
  logits_fn = lambda z: _linear_apply(_variables(), z)
  fn = logits_fn if attack in ("square", "fab") else losses.make_loss_fn(
      logits_fn)
  kw = {"pgd": dict(steps=2), "apgd": dict(steps=2), "fab": dict(steps=2),
        "square": dict(queries=2)}.get(attack, {})
  with pytest.raises(ValueError, match="`x` is empty"):
    getattr(attacks, attack)(fn, x[:0], y[:0], jax.random.key(0), eps=0.1,
                             **kw)


def test_empty_evaluations_are_refused():
  x, y = _data()
  v = _variables()
  with pytest.raises(ValueError, match="`x` is empty"):
    evaluation.robust_accuracy(_linear_apply, v, x[:0], y[:0],
                               jax.random.key(0), eps=0.1, step_size=0.05,
                               steps=2)
  with pytest.raises(ValueError, match="`x` is empty"):
    evaluation.evaluate_robustness(_linear_apply, v, x[:0], y[:0],
                                   jax.random.key(0), eps=0.1)


class Payload:
  """Not a tensor container: torch.load(weights_only=True) refuses it."""


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory):
  torch = pytest.importorskip("torch")
  d = tmp_path_factory.mktemp("torch")
  model = models.get_model("fast_at_mnist")
  good = {k: torch.as_tensor(np.asarray(v)) for k, v in {
      "conv1.weight": np.zeros((16, 1, 4, 4)), "conv1.bias": np.zeros(16),
      "conv2.weight": np.zeros((32, 16, 4, 4)), "conv2.bias": np.zeros(32),
      "fc1.weight": np.zeros((100, 1568)), "fc1.bias": np.zeros(100),
      "fc2.weight": np.zeros((10, 100)), "fc2.bias": np.zeros(10)}.items()}
  torch.save(good, d / "good.pt")
  nan = dict(good, **{"fc2.bias": torch.full((10,), float("nan"))})
  torch.save(nan, d / "nan.pt")
  raw = (d / "good.pt").read_bytes()
  (d / "truncated.pt").write_bytes(raw[:len(raw) // 2])
  (d / "corrupted.pt").write_bytes(b"\x00\xff" * 200)
  (d / "empty.pt").write_bytes(b"")
  with open(d / "pickle.pt", "wb") as f:
    pickle.dump({"x": Payload()}, f, protocol=2)
  return model, d


@pytest.mark.parametrize("name,match", [
    ("truncated.pt", "not a readable torch.save file"),
    ("corrupted.pt", "not a readable torch.save file"),
    ("empty.pt", "not a readable torch.save file"),
    ("pickle.pt", "refused"),
    ("nan.pt", "fc2.bias' holds NaN"),
    ("missing.pt", "no such file"),
])
def test_unreadable_torch_files_name_the_file(torch_files, name, match):
  model, d = torch_files
  with pytest.raises((ValueError, FileNotFoundError), match=match) as e:
    models.load_torch_state_dict(str(d / name), model)
  if name != "nan.pt":
    assert "`source`" in str(e.value) and name in str(e.value)
  models.load_torch_state_dict(str(d / "good.pt"), model)  # still loads


@pytest.mark.parametrize("step,missing", [
    (lambda: training.pgd_at_step(steps=2), "eps"),
    (lambda: training.free_at_step(replays=2), "eps"),
    (lambda: training.fgsm_rs_step(), "eps"),
])
def test_adversarial_training_without_a_budget_warns(step, missing):
  x, y = _data(n=32)
  model = models.get_model("mlp", hidden=(8,), batch_norm=False)
  state = training.create_train_state(
      model, jax.random.key(0), (1, 6, 6, 1), optax.sgd(0.1),
      delta_shape=(16, 6, 6, 1))
  with pytest.warns(RuntimeWarning, match=rf"\['{missing}'\]` is 0"):
    training.fit(state, step(), x, y, batch_size=16, num_batches=1, seed=0,
                 progress=False)


def test_pgd_at_without_step_size_warns_and_natural_does_not(recwarn):
  x, y = _data(n=32)
  model = models.get_model("mlp", hidden=(8,), batch_norm=False)
  make = lambda **kw: training.create_train_state(
      model, jax.random.key(0), (1, 6, 6, 1), optax.sgd(0.1), **kw)
  with pytest.warns(RuntimeWarning, match=r"\['step_size'\]` is 0"):
    training.fit(make(eps=0.1), training.pgd_at_step(steps=2), x, y,
                 batch_size=16, num_batches=1, seed=0, progress=False)
  recwarn.clear()
  training.fit(make(), training.natural_step(), x, y, batch_size=16,
               num_batches=1, seed=0, progress=False)
  training.fit(make(eps=0.1, step_size=0.02), training.pgd_at_step(steps=2),
               x, y, batch_size=16, num_batches=1, seed=0, progress=False)
  assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)
              and "attack_params" in str(w.message)]


# --------------------------------------------------------------- attacks ----

def _nan_logits(z):
  return _linear_apply(_variables(nan=True), z)


@pytest.mark.parametrize("attack", ["pgd", "fgsm", "eot_pgd", "apgd",
                                    "apgd_logits", "square", "fab"])
def test_attacks_refuse_a_model_with_nan_outputs(attack):
  x, y = _data()
  key = jax.random.key(0)
  loss_fn = losses.make_loss_fn(_nan_logits)
  call = {
      "pgd": lambda: attacks.pgd(loss_fn, x, y, key, eps=0.1, steps=2),
      "fgsm": lambda: attacks.fgsm(loss_fn, x, y, key, eps=0.1),
      "eot_pgd": lambda: attacks.eot_pgd(
          lambda v, t, k: loss_fn(v, t), x, y, key, eps=0.1, steps=2),
      "apgd": lambda: attacks.apgd(loss_fn, x, y, key, eps=0.1, steps=2),
      "apgd_logits": lambda: attacks.apgd_logits(_nan_logits, x, y, key,
                                                 eps=0.1, steps=2),
      "square": lambda: attacks.square(_nan_logits, x, y, key, eps=0.1,
                                       queries=3),
      "fab": lambda: attacks.fab(_nan_logits, x, y, key, eps=0.1, steps=2),
  }[attack]
  with pytest.raises(ValueError, match="NaN or inf outputs at the clean"):
    call()


def test_labels_outside_a_custom_loss_classes_are_named():
  # Only make_loss_fn knows the classes; an own loss that indexes its
  # log-probabilities with a label out of range gives NaN, and the error
  # says labels may be the cause.
  x, y = _data()
  y[0] = C + 2
  custom = lambda v, t: -jnp.take_along_axis(
      jax.nn.log_softmax(_linear_apply(_variables(), v)), t[:, None], 1)[:, 0]
  with pytest.raises(ValueError, match="labels outside its classes"):
    attacks.pgd(custom, x, y, jax.random.key(0), eps=0.1, steps=2)
  with pytest.raises(ValueError, match=r"`y` labels must lie in \[0, 10\)"):
    attacks.pgd(losses.make_loss_fn(
        lambda v: _linear_apply(_variables(), v)), x, y, jax.random.key(0),
                eps=0.1, steps=2)


def test_checked_mode_catches_bad_values_inside_jit():
  from jax.experimental import checkify  # pylint: disable=import-outside-toplevel
  from jaxadv import validation  # pylint: disable=import-outside-toplevel
  x, y = _data()
  loss_fn = losses.make_loss_fn(lambda z: _linear_apply(_variables(), z))
  pgd = validation.checked(lambda x, y, k, e: attacks.pgd(
      loss_fn, x, y, k, eps=e, steps=2))
  key = jax.random.key(0)
  assert pgd(x, y, key, 0.1).shape == x.shape  # good inputs pass
  # Under a plain jit these pass unnoticed (tracers): checked mode raises.
  bad_x = x.copy()
  bad_x[0, 0, 0, 0] = np.nan
  bad_y = y.copy()
  bad_y[0] = C
  for args, match in [((bad_x, y, key, 0.1), "`x` contains NaN"),
                      ((x, y, key, -0.1), "`eps` must be >= 0"),
                      ((x, bad_y, key, 0.1), r"`y` labels must lie in \[0, 10\)")]:
    with pytest.raises(checkify.JaxRuntimeError, match=match):
      pgd(*args)
  # A model that turns finite inputs into NaN logits.
  nan_pgd = validation.checked(lambda x, y, k: attacks.pgd(
      losses.make_loss_fn(_nan_logits), x, y, k, eps=0.1, steps=2))
  with pytest.raises(checkify.JaxRuntimeError, match="nan generated"):
    nan_pgd(x, y, key)


# ------------------------------------------------------- mixup inference ----

def test_mi_ol_names_a_wrong_image_size_and_nan_logits():
  from jaxadv import defenses  # pylint: disable=import-outside-toplevel
  x, _ = _data(n=40)
  y = np.arange(40, dtype=np.int32) % C  # every class, for the pool
  pool = defenses.make_pool(x, y, size=20, key=jax.random.key(0),
                            num_classes=C)
  logits_fn = lambda z: _linear_apply(_variables(), z)
  big = np.zeros((2, 8, 8, 1), np.float32)
  with pytest.raises(ValueError, match=r"`x` images have shape \(8, 8, 1\)"):
    defenses.mi_ol(logits_fn, big, pool, jax.random.key(1), num_samples=2)
  model = models.get_model("fast_at_mnist")
  variables = model.init(jax.random.key(0), np.zeros((1, 28, 28, 1)),
                         train=False)
  small_pool = defenses.make_pool(x, y, size=20, key=jax.random.key(0),
                                  num_classes=C)
  with pytest.raises(ValueError, match=r"cannot run on `x` of shape"):
    defenses.mi_ol(lambda z: model.apply(variables, z, train=False), x[:2],
                   small_pool, jax.random.key(1), num_samples=2)
  with pytest.raises(ValueError, match="NaN or inf logits"):
    defenses.mi_ol(_nan_logits, x[:2], pool, jax.random.key(1),
                   num_samples=2)


# ------------------------------------------------------------------ fit ----

def _fit_args(seed=0, num_batches=4, x=None):
  xs, ys = _data(n=32, seed=3) if x is None else x
  return dict(x=xs, y=ys, batch_size=8, num_batches=num_batches, seed=seed,
              progress=False)


def _linear_state():
  return training.create_train_state(models.get_model("linear_softmax"),
                                     jax.random.key(0), (1, 6, 6, 1),
                                     optax.sgd(0.1))


def test_a_reused_workdir_with_other_settings_is_refused(tmp_path):
  w = str(tmp_path / "run")
  first = training.fit(_linear_state(), training.natural_step(), workdir=w,
                       **_fit_args())
  for kw, what in [(dict(seed=1), "seed"), (dict(num_batches=2),
                                            "num_batches"),
                   (dict(x=_data(n=32, seed=4)), "data")]:
    with pytest.raises(ValueError, match=f"another run; it differs in {what}"):
      training.fit(_linear_state(), training.natural_step(), workdir=w,
                   **_fit_args(**kw))
  with pytest.raises(ValueError, match="run_config"):
    training.fit(_linear_state(), training.natural_step(), workdir=w,
                 run_config={"lr": 0.2}, **_fit_args())
  # The same settings resume; a larger num_batches continues the run.
  same = training.fit(_linear_state(), training.natural_step(), workdir=w,
                      **_fit_args())
  for u, v in zip(jax.tree.leaves(same.state.params),
                  jax.tree.leaves(first.state.params)):
    np.testing.assert_array_equal(u, v)
  longer = training.fit(_linear_state(), training.natural_step(), workdir=w,
                        **_fit_args(num_batches=6))
  assert longer.batches == 6
  # on_mismatch="restart" sets the old run aside, with a warning.
  with pytest.warns(RuntimeWarning, match="moved it to"):
    fresh = training.fit(_linear_state(), training.natural_step(), workdir=w,
                         on_mismatch="restart", **_fit_args(seed=1))
  assert fresh.batches == 4
  assert any(".stale-" in n for n in os.listdir(tmp_path))


def test_fit_twice_from_the_same_initial_state():
  state = _linear_state()
  a = training.fit(state, training.natural_step(), **_fit_args())
  b = training.fit(state, training.natural_step(), **_fit_args())
  for u, v in zip(jax.tree.leaves(a.state.params),
                  jax.tree.leaves(b.state.params)):
    np.testing.assert_array_equal(u, v)
