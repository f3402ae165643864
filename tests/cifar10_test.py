"""CIFAR-10 groundwork: augmentation inside the step, BatchNorm modes of the
training attacks, the references' optimizers and schedules, mixed
precision, and the paper-scale and CPU-scale configs on real CIFAR-10
images (the JPEG q75 copy, `cifar10_jpeg`)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.common import robust as robust_lib
from experiments.common import training as training_lib
from experiments.configs import cifar10_paper
from experiments.configs import robust_cifar10
from experiments.configs import robust_mnist
from jaxadv import augment
from jaxadv import data
from jaxadv import models
from jaxadv import training
from jaxadv.models import cifar_compact

# About 2 minutes of compiles on 2 cores (more with the slow paper-scale
# runs): the whole module is slow, to keep the default suite near 10
# minutes; .ci/run runs it.
pytestmark = pytest.mark.slow

EPS = 8 / 255
SMALL = dict(widths=(8, 16), convs_per_stage=1)  # a tiny BN net for tests


@pytest.fixture(scope="module")
def cifar16():
  """16 real CIFAR-10 test images (JPEG q75 copy) as a training batch."""
  x, y = data.load("cifar10_jpeg", "test", limit=16)
  return {"x": jnp.asarray(x), "y": jnp.asarray(y)}


def _model(name="compact_cnn", **kw):
  kw = {**SMALL, **kw} if name == "compact_cnn" else kw
  return models.Normalized(models.get_model(name, **kw))


def _state(model, tx=None, *, eps=EPS, step_size=2 / 255, delta=None,
           compute_dtype=None):
  return training.create_train_state(
      model, jax.random.key(0), (1, 32, 32, 3), tx or optax.sgd(0.1),
      eps=eps, step_size=step_size, delta_shape=delta,
      compute_dtype=compute_dtype)


def _same(a, b):
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def _close(a, b, rtol=1e-5, atol=1e-6):
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol,
                               atol=atol)


def _differs(a, b):
  return any(not np.array_equal(np.asarray(u), np.asarray(v))
             for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


CROP_FLIP = functools.partial(augment.crop_flip, padding=4)

# ---------------------------------------------------- augmentation ----


def test_augment_is_inside_the_step_with_the_documented_key(cifar16):
  """A natural step with augment = the step without it on the batch
  augmented with fold_in(fold_in(key, step), AUGMENT_KEY)."""
  state = _state(_model())
  key = jax.random.key(3)
  aug_step = jax.jit(training.natural_step(augment=CROP_FLIP))
  plain = jax.jit(training.natural_step())
  got, m_aug = aug_step(state, cifar16, key)
  k = jax.random.fold_in(jax.random.fold_in(key, 0), training.AUGMENT_KEY)
  pre = {**cifar16, "x": CROP_FLIP(k, cifar16["x"])}
  want, _ = plain(state, pre, key)
  _close(got.params, want.params)
  _close(got.batch_stats, want.batch_stats)
  no_aug, m_plain = plain(state, cifar16, key)
  assert _differs(got.params, no_aug.params)
  assert float(m_aug["loss"]) != float(m_plain["loss"])
  again, _ = aug_step(state, cifar16, key)      # same key: same draw
  _same(again.params, got.params)
  other, _ = aug_step(state, cifar16, jax.random.key(4))
  assert _differs(other.params, got.params)


def test_augment_draws_differ_between_steps(cifar16):
  """The draw follows the step counter (fold_in(key, state.step))."""
  state = _state(_model(), optax.sgd(0.0))
  seen = []

  def spy(key, x):
    out = CROP_FLIP(key, x)
    seen.append(out)
    return out

  step = training.natural_step(augment=spy)   # not jitted: spy sees arrays
  s1, _ = step(state, cifar16, jax.random.key(0))
  step(s1, cifar16, jax.random.key(0))
  assert len(seen) == 2 and not np.array_equal(seen[0], seen[1])


def test_no_augment_keeps_the_perturbation_keys(cifar16):
  """An identity augmentation changes nothing: the attack keys are those
  of the step without augmentation (MNIST's numbers stay as they were)."""
  state = _state(_model(), eps=EPS, step_size=10 / 255)
  key = jax.random.key(5)
  ident = lambda k, x: x  # noqa: E731
  for make in (lambda **kw: training.fgsm_rs_step(**kw),
               lambda **kw: training.pgd_at_step(steps=1, **kw)):
    a, _ = jax.jit(make())(state, cifar16, key)
    b, _ = jax.jit(make(augment=ident))(state, cifar16, key)
    _same(a.params, b.params)


def test_free_at_replays_see_one_draw_and_delta_is_augmented(cifar16):
  """Free AT with augment = free AT on the once-augmented batch: all m
  replays see one draw and delta lives in the augmented coordinates."""
  model = _model()
  state = _state(model, delta=cifar16["x"].shape, eps=EPS)
  key = jax.random.key(7)
  got, _ = jax.jit(training.free_at_step(replays=3, augment=CROP_FLIP))(
      state, cifar16, key)
  k = jax.random.fold_in(jax.random.fold_in(key, 0), training.AUGMENT_KEY)
  pre = {**cifar16, "x": CROP_FLIP(k, cifar16["x"])}
  want, _ = jax.jit(training.free_at_step(replays=3))(state, pre, key)
  _close(got.params, want.params)
  _close(got.delta, want.delta, atol=1e-7)
  assert int(got.step) == 3
  # The delta is a perturbation of the augmented images (it has the
  # crops' black borders' gradient structure, not the raw images').
  assert float(jnp.max(jnp.abs(got.delta))) <= EPS + 1e-6
  assert float(jnp.max(jnp.abs(got.delta))) > 0


def test_augment_must_be_callable():
  with pytest.raises(TypeError, match="augment"):
    training.natural_step(augment="crop_flip")


# ------------------------------------------------------- BatchNorm ----

def _bn_updates(state, new, model, batch):
  """How many running-average updates moved `state` to `new`.

  With learning rate 0 and eps 0 every forward pass of the step sees the
  same inputs and parameters, hence the same batch statistics s; from
  running means r_0 = 0, n updates give r_n = (1 - 0.9^n) s, and one
  train-mode forward gives r_1 = 0.1 s.
  """
  _, one = model.apply(training.variables_of(state), batch["x"], train=True,
                       mutable=["batch_stats"])
  r1 = np.concatenate([np.ravel(v) for path, v in
                       jax.tree_util.tree_leaves_with_path(one["batch_stats"])
                       if path[-1].key == "mean"])
  rn = np.concatenate([np.ravel(v) for path, v in
                       jax.tree_util.tree_leaves_with_path(new.batch_stats)
                       if path[-1].key == "mean"])
  sel = np.abs(r1) > 1e-3
  ratio = np.median(rn[sel] / r1[sel])
  return math.log(1.0 - 0.1 * ratio) / math.log(0.9)


BN_CASES = [
    ("natural", lambda: training.natural_step(), 1),
    ("fgsm_rs/batch", lambda: training.fgsm_rs_step(attack_bn="batch"), 1),
    ("fgsm_rs/update", lambda: training.fgsm_rs_step(attack_bn="update"), 2),
    ("fgsm_rs/eval", lambda: training.fgsm_rs_step(attack_bn="eval"), 1),
    ("pgd3/batch", lambda: training.pgd_at_step(steps=3, attack_bn="batch"),
     1),
    ("pgd3/default", lambda: training.pgd_at_step(steps=3), 4),
    ("fgsm_rs/default", lambda: training.fgsm_rs_step(), 2),
    ("pgd3/update", lambda: training.pgd_at_step(steps=3,
                                                 attack_bn="update"), 4),
    ("pgd3/eval", lambda: training.pgd_at_step(steps=3, attack_bn="eval"), 1),
    ("free3", lambda: training.free_at_step(replays=3), 3),
]


@pytest.mark.parametrize("name,make,expected", BN_CASES,
                         ids=[c[0] for c in BN_CASES])
def test_running_statistics_update_count(cifar16, name, make, expected):
  """The documented number of BN running-average updates per step."""
  del name
  model = _model()
  state = _state(model, optax.sgd(0.0), eps=0.0, step_size=0.0,
                 delta=cifar16["x"].shape)
  new, _ = jax.jit(make())(state, cifar16, jax.random.key(0))
  n = _bn_updates(state, new, model, cifar16)
  assert abs(n - expected) < 0.05, n
  # Evaluation never moves them.
  model.apply(training.variables_of(new), cifar16["x"], train=False)


@pytest.mark.parametrize("steps", [1, 3])
def test_update_mode_same_deltas_other_statistics(cifar16, steps):
  """attack_bn "update" crafts the same perturbation as "batch" (train-mode
  forwards do not read the running averages): the same parameters after
  the update, different running statistics."""
  model = _model()
  state = _state(model, eps=EPS, step_size=2 / 255)
  key = jax.random.key(11)
  make = (lambda bn: training.fgsm_rs_step(attack_bn=bn)) if steps == 1 else (
      lambda bn: training.pgd_at_step(steps=steps, attack_bn=bn))
  a, ma = jax.jit(make("batch"))(state, cifar16, key)
  b, mb = jax.jit(make("update"))(state, cifar16, key)
  _close(a.params, b.params, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(ma["loss"], mb["loss"], rtol=1e-5)
  assert _differs(a.batch_stats, b.batch_stats)
  c, _ = jax.jit(make("eval"))(state, cifar16, key)
  assert _differs(a.params, c.params)   # crafted against running averages


@pytest.mark.slow  # PreActResNet-18 compiles for about a minute on CPU
def test_update_mode_on_preact_resnet18(cifar16):
  """PreActResNet-18 (the fast-AT network): PGD-2 with attack_bn="update"
  makes 3 running-average updates per step, "batch" 1."""
  model = models.Normalized(models.get_model("preact_resnet18"))
  batch = {k: v[:8] for k, v in cifar16.items()}
  state = _state(model, optax.sgd(0.0), eps=0.0, step_size=0.0)
  for bn, expected in (("update", 3), ("batch", 1)):
    new, m = jax.jit(training.pgd_at_step(steps=2, attack_bn=bn,
                                          unroll=False))(
                                              state, batch, jax.random.key(0))
    assert np.isfinite(float(m["loss"]))
    assert abs(_bn_updates(state, new, model, batch) - expected) < 0.05


def test_update_mode_without_batchnorm_is_the_plain_attack():
  """BN-free models (the MNIST nets): "update" is exactly the old step."""
  model = models.get_model("fast_at_mnist")
  x, y = data.load("mnist", "test", limit=8)
  batch = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
  state = training.create_train_state(model, jax.random.key(0),
                                      (1, 28, 28, 1), optax.sgd(0.1),
                                      eps=0.3, step_size=0.1)
  for make in (lambda bn: training.pgd_at_step(steps=1, attack_bn=bn),
               lambda bn: training.fgsm_rs_step(attack_bn=bn)):
    a, _ = jax.jit(make("update"))(state, batch, jax.random.key(1))
    b, _ = jax.jit(make("batch"))(state, batch, jax.random.key(1))
    _same(a.params, b.params)


def test_attack_bn_is_checked():
  with pytest.raises(ValueError, match="attack_bn"):
    training.pgd_at_step(steps=1, attack_bn="train")
  with pytest.raises(ValueError, match="attack_bn"):
    training.fgsm_rs_step(attack_bn=None)


# ----------------------------------------------------- optimizers ----

def _params():
  return models.get_model("compact_cnn", **SMALL).init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]


def test_kernels_mask_excludes_biases_and_batchnorm():
  mask = training.kernels_mask(_params())
  flat = {"/".join(p.key for p in path): v for path, v in
          jax.tree_util.tree_leaves_with_path(mask)}
  assert flat["conv1_0/kernel"] and flat["fc/kernel"]
  assert not flat["fc/bias"] and not flat["bn1_0/scale"]
  assert not flat["bn2_0/bias"]


def test_sgd_all_is_the_old_chain_and_torch_sgd():
  params = _params()
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.01), params)
  ours = training.sgd(0.1, momentum=0.9, weight_decay=5e-4)
  old = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1, 0.9))
  p1, s1, p2, s2 = params, ours.init(params), params, old.init(params)
  buf = None
  torch_p = params
  for _ in range(3):
    u1, s1 = ours.update(grads, s1, p1)
    p1 = optax.apply_updates(p1, u1)
    u2, s2 = old.update(grads, s2, p2)
    p2 = optax.apply_updates(p2, u2)
    # torch.optim.SGD: d = g + wd p; buf = mu buf + d (buf = d at first);
    # p -= lr buf.
    d = jax.tree.map(lambda g, p: g + 5e-4 * p, grads, torch_p)
    buf = d if buf is None else jax.tree.map(lambda b, d: 0.9 * b + d, buf, d)
    torch_p = jax.tree.map(lambda p, b: p - 0.1 * b, torch_p, buf)
  _same(p1, p2)
  _close(p1, torch_p, rtol=1e-6, atol=1e-7)


def test_sgd_kernels_decays_only_kernels():
  params = _params()
  zero = jax.tree.map(jnp.zeros_like, params)
  tx = training.sgd(0.1, weight_decay=2e-4, decay="kernels")
  upd, _ = tx.update(zero, tx.init(params), params)
  mask = training.kernels_mask(params)
  for u, p, m in zip(jax.tree.leaves(upd), jax.tree.leaves(params),
                     jax.tree.leaves(mask)):
    want = -0.1 * 2e-4 * p if m else jnp.zeros_like(p)
    np.testing.assert_allclose(u, want, rtol=1e-6, atol=1e-12)


def test_sgd_is_checked():
  with pytest.raises(ValueError, match="decay"):
    training.sgd(0.1, decay="bn")
  with pytest.raises(ValueError, match="weight_decay"):
    training.sgd(0.1, weight_decay=-1.0)


# ------------------------------------------------------ schedules ----

def test_cyclic_matches_torch_cycliclr_and_train_cifar():
  n, lr_max = 100, 0.2
  half = training.cyclic(n, lr_max, 0.5)
  for t in range(n + 1):  # CyclicLR(0, lr_max, n/2, n/2) at its t-th step
    x = 1.0 + t / n - math.floor(1 + t / n)
    torch_lr = lr_max * max(0.0, 1.0 - abs(2 * x - 1)) if t < n else 0.0
    assert float(half(t)) == pytest.approx(torch_lr, abs=1e-7)
  fifths = training.make_schedule("cyclic", total_steps=n,
                                  learning_rate=lr_max)
  for t in range(n + 1):  # np.interp(t, [0, 2/5 n, n], [0, lr_max, 0])
    want = float(np.interp(t, [0, 0.4 * n, n], [0, lr_max, 0]))
    assert float(fifths(t)) == pytest.approx(want, abs=1e-7)


def test_piecewise_is_the_madry_free_schedule():
  sched = training.make_schedule("piecewise", total_steps=80_000,
                                 learning_rate=0.1)
  for t, want in ((0, 0.1), (39_999, 0.1), (40_000, 0.01), (59_999, 0.01),
                  (60_000, 0.001), (79_999, 0.001)):
    assert float(sched(t)) == pytest.approx(want, rel=1e-6)


# ------------------------------------------------ mixed precision ----

def test_bfloat16_compute_float32_master_weights(cifar16):
  model = models.Normalized(models.get_model("compact_cnn", **SMALL))
  state = _state(model, eps=EPS, step_size=2 / 255,
                 compute_dtype=jnp.bfloat16)
  ref = _state(model, eps=EPS, step_size=2 / 255)
  logits = state.apply_fn(training.variables_of(state), cifar16["x"])
  assert logits.dtype == jnp.float32
  step = jax.jit(training.pgd_at_step(steps=2, attack_bn="update"))
  new, m = step(state, cifar16, jax.random.key(0))
  new_ref, m_ref = jax.jit(training.pgd_at_step(steps=2, attack_bn="update"))(
      ref, cifar16, jax.random.key(0))
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(new.params))
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(new.batch_stats))
  assert np.isfinite(float(m["loss"]))
  np.testing.assert_allclose(m["loss"], m_ref["loss"], rtol=0.05)
  assert _differs(new.params, new_ref.params)   # bf16 really was used


def test_normalize_keeps_the_input_dtype():
  x = jnp.full((2, 4, 4, 3), 0.5, jnp.bfloat16)
  out = models.normalize.normalize(x, models.normalize.CIFAR10_MEAN,
                                   models.normalize.CIFAR10_STD)
  assert out.dtype == jnp.bfloat16


# --------------------------------------------- the experiments table ----

def test_mnist_recipe_trains_as_before():
  """robust_mnist's sections build exactly the old pipeline (no
  augmentation, Adam with the 2/5 cyclic schedule): identical parameters."""
  x, y = data.load("mnist", "train", limit=200)
  config = robust_mnist.get_config()
  section = config.fgsm_rs
  section.epochs = 1.0
  model = models.get_model("fast_at_mnist", kernels="xla_cpu")
  got = training_lib.train_model("fgsm_rs", section, model, x, y,
                                 key=jax.random.key(1), batch_size=100,
                                 seed=0, eps=0.3, progress=False)
  assert training_lib.augmentation(section) is None
  state = training.create_train_state(
      model, jax.random.key(1), (1, 28, 28, 1),
      optax.adam(training.cyclic(2, section.learning_rate)), eps=0.3,
      step_size=section.step_size, eps_ramp_steps=4)
  want = training.fit(state, training.fgsm_rs_step(), x, y, batch_size=100,
                      num_batches=2, seed=0, progress=False)
  _same(got.result.state.params, want.state.params)


def test_sections_build_augment_optimizer_and_bn_mode():
  c = cifar10_paper.free()
  aug = training_lib.augmentation(c)
  assert aug.keywords == {"padding": 2}
  assert training_lib.augmentation({"augment": None}) is None
  with pytest.raises(ValueError, match="augmentation"):
    training_lib.augmentation({"augment": "cutout"})
  tx = training_lib.OPTIMIZERS["sgd"](0.1, c)
  params = _params()
  upd, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params),
                     params)
  assert float(jnp.abs(upd["fc"]["bias"]).max()) == 0.0  # "kernels" only
  assert float(jnp.abs(upd["fc"]["kernel"]).max()) > 0.0


# ------------------------------------------------------- configs ----

def _paper_run(name, tmp_path, *, batch_size=2, small_model=False):
  """2 steps of the paper config `name` on 4 real CIFAR-10 (JPEG) images,
  checkpointed, then restored from the checkpoint (`small_model`: with a
  tiny `compact_cnn` instead of the paper's network)."""
  config = cifar10_paper.get_config(name)
  config.dataset = "cifar10_jpeg"
  if small_model:
    config.model = "compact_cnn"
    config.model_kwargs = dict(SMALL)
  section = config[name]
  step = training_lib.get_step(section.step)
  section.total_updates = 2 * step.updates(section)
  section.unroll = False   # rolled loops: one compiled body on CPU
  x, y = data.load("cifar10_jpeg", "train", limit=2 * batch_size)
  model = robust_lib.get_model(config)
  kw = dict(key=jax.random.key(0), batch_size=batch_size, seed=0,
            eps=config.eps, workdir=str(tmp_path), progress=False)
  first = training_lib.train_model(name, section, model, x, y, **kw)
  assert first.result.batches == 2
  losses = [r["loss"] for r in first.result.history if "loss" in r]
  assert losses and all(np.isfinite(losses))
  again = training_lib.train_model(name, section, model, x, y, **kw)
  assert again.result.batches == 2 and again.result.train_seconds >= 0
  _same(again.result.state.params, first.result.state.params)
  _same(again.result.state.batch_stats, first.result.state.batch_stats)
  assert (tmp_path / "checkpoints" / name).is_dir()
  return first


@pytest.mark.parametrize("name", ["fgsm_rs", "pgd", "free"])
def test_paper_recipe_two_steps_and_checkpoint_small_model(tmp_path, name):
  """Each paper recipe's pipeline (SGD, schedule, augmentation, BN mode,
  Normalized, checkpoints) with a tiny network: fast."""
  _paper_run(name, tmp_path, small_model=True)


@pytest.mark.slow  # PreActResNet-18: 20-30 s each on 2 CPU cores
@pytest.mark.parametrize("name", ["fgsm_rs", "pgd"])
def test_paper_config_two_steps_and_checkpoint(tmp_path, name):
  _paper_run(name, tmp_path)


@pytest.mark.slow
def test_paper_free_config_two_steps_and_checkpoint(tmp_path):
  """WRN-34-10 with m = 8 replays (46M parameters: about 5 minutes on 2
  shared CPU cores)."""
  trained = _paper_run("free", tmp_path)
  assert int(trained.result.state.step) == 16
  assert trained.result.state.delta.shape == (2, 32, 32, 3)


def test_paper_configs_are_the_references():
  fg, pg, fr = (cifar10_paper.get_config(n) for n in ("fgsm_rs", "pgd",
                                                      "free"))
  assert fg.model == pg.model == "preact_resnet18"
  assert fr.model == "wide_resnet34_10"
  assert (fg.fgsm_rs.epochs, fg.fgsm_rs.learning_rate) == (15.0, 0.2)
  assert fg.fgsm_rs.step_size == pytest.approx(10 / 255)
  assert (pg.pgd.steps, pg.pgd.step_size) == (7, pytest.approx(2 / 255))
  assert (fr.free.replays, fr.free.total_updates) == (8, 80_000)
  assert fr.free.weight_decay_on == "kernels"
  for c in (fg, pg, fr):
    assert c.eps == pytest.approx(8 / 255) and c.dataset == "cifar10"
    assert c.normalize == "cifar10" and c.eval.pgd_steps == 50
    assert c.eval.pgd_restarts == 10
  with pytest.raises(ValueError, match="variant"):
    cifar10_paper.get_config("trades")


@pytest.mark.parametrize("arg", [None, "quick"])
def test_robust_cifar10_config(arg):
  config = robust_cifar10.get_config(arg)
  assert config.dataset == "cifar10_jpeg"
  names = [m for m in config.methods if m not in config.best_of]
  names += [n for g in config.best_of.values() for n in g]
  for name in names:
    assert config[name].step in training_lib.STEPS
  assert (config.free.replays, config.free_m2.replays,
          config.free_m4.replays) == (8, 2, 4)
  assert tuple(config.best_of.free_best) == ("free_m2", "free_m4")
  assert config.pgd.steps == (3 if arg else 7)
  # The headline: AutoAttack's standard ensemble with its own budgets (no
  # overrides); the smoke run keeps the cheaper, named one.
  from jaxadv import evaluation
  if arg is None:
    assert not dict(config.eval.autoattack)
    assert (robust_lib.ensemble_settings({})["attack_names"] ==
            list(evaluation.STANDARD))
  else:
    assert (tuple(config.eval.autoattack.attack_names) ==
            evaluation.ENSEMBLES["apgd-t+square"])
  cost = cifar_compact.compact_cnn_cost(**config.model_kwargs)
  if arg is None:
    doc = robust_cifar10.__doc__.replace("\n", " ")
    assert f"{cost['params']:,} parameters" in doc
    assert f"{cost['flops'] / 1e6:.1f} MFLOPs" in doc
    assert config.eval.pgd_examples == 2000
    assert config.eval.autoattack_examples == 1000
  model = robust_lib.get_model(config)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  n = sum(v.size for v in jax.tree.leaves(variables["params"]))
  assert n == cost["params"]


@pytest.mark.slow  # the `:quick` main job on real CIFAR-10 (JPEG), minutes
def test_robust_cifar10_quick_pipeline(tmp_path):
  import json
  import os
  from experiments import robust_training
  config = robust_cifar10.get_config("quick")
  config.progress = False
  workdir = str(tmp_path / "run")
  records = robust_training.train_and_evaluate(config, workdir)
  assert [r["method"] for r in records] == list(config.methods)
  for r in records:
    assert tuple(r) == robust_training.RESULT_KEYS
    assert r["dataset"] == "cifar10_jpeg"
    assert r["pgd_acc"] <= r["fgsm_acc"] + 1e-9
  with open(os.path.join(workdir, "details.json")) as f:
    details = json.load(f)
  sel = details["free_best"]["selection"]
  assert sel["chosen"] in ("free_m2", "free_m4")
  assert details["free_best"]["config"]["replays"] in (2, 4)
  ev = details["pgd"]["evaluation"]
  assert (ev["clean_examples"], ev["pgd_examples"],
          ev["autoattack_examples"]) == (500, 200, 100)
  assert 0.0 <= ev["autoattack_acc"] <= 1.0
  assert any("val_pgd_acc" in h for h in details["free"]["history"])
  with open(os.path.join(workdir, "results.md")) as f:
    md = f.read()
  assert "AA-style ensemble" in md and "free_best: free_m" in md
  # The held-out curve against catastrophic overfitting, per method.
  assert "Held-out PGD accuracy after each pass" in md
  assert "- pgd: " in md
  assert os.path.getsize(os.path.join(workdir, "heldout_pgd.png")) > 0


def test_gpu_smoke_config_and_script():
  """scripts/gpu_smoke.sh's config: PreActResNet-18, one epoch-equivalent
  of natural, FGSM-RS and free AT m = 8, PGD-20 on 1,000 test images."""
  import pathlib
  import subprocess
  from experiments.configs import gpu_smoke
  config = gpu_smoke.get_config()
  assert config.model == "preact_resnet18"
  assert config.dataset == "cifar10_jpeg"
  assert tuple(config.methods) == ("natural", "fgsm_rs", "free")
  assert [config[m].epochs for m in config.methods] == [1.0, 1.0, 1.0]
  assert (config.free.replays, config.fgsm_rs.step) == (8, "fgsm_rs")
  assert (config.eval.pgd_steps, config.eval.pgd_restarts,
          config.eval.pgd_examples) == (20, 1, 1000)
  for name in config.methods:
    assert config[name].step in training_lib.STEPS
  script = pathlib.Path(__file__).parent.parent / "scripts" / "gpu_smoke.sh"
  assert "configs/gpu_smoke.py" in script.read_text()
  subprocess.run(["bash", "-n", str(script)], check=True)
