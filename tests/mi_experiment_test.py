"""A tiny real-data run of the Mixup Inference experiment (quick config, shrunk)."""

import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import mixup_inference
from experiments.configs import mi_mnist
from experiments.mixup_inference import evaluate
from experiments.mixup_inference import plan
from jaxadv import defenses

RESULT_KEYS = {"model", "defense", "attack", "targeted", "mode", "steps",
               "eps", "acc"}


def _tiny_config():
  config = mi_mnist.get_config("quick")
  config.progress = False
  config.train_limit = 1000
  config.mixup.epochs = 0.5
  config.iat.epochs = 0.25
  config.iat.steps = 2
  config.defenses = ("none", "gaussian", "mi_pl", "mi_ol", "mi_combined")
  config.baselines.num_samples = 3
  config.mi.pl_pool_size = 100
  config.mi.ol_pool_size = 200
  config.mi.pl_num_samples = 3
  config.mi.ol_num_samples = 4
  config.mi.combined_num_samples_pl = 2
  config.mi.combined_num_samples_ol = 3
  config.eval.num_examples = 20
  config.eval.clean_examples = 40
  config.eval.batch_size = 20
  config.eval.steps = (3,)
  config.eval.examples_by_steps = ((3, 10),)  # attacks on the first 10
  config.eval.sweep_steps = 3
  config.eval.sweep_eps = (0.05, 0.1)
  config.adaptive.max_samples = 2
  config.adaptive.paper_num_partners = 2
  config.adaptive.paper_steps = (3,)
  config.autoattack_rand.apgd_steps = 3
  config.analysis.lams = (0.5, 1.0)
  config.analysis.num_examples = 20
  config.eot_draws.draws = (1, 2)
  config.eot_draws.steps = 2
  config.eot_draws.num_examples = 8
  config.eot_draws.defenses = ("mi_ol", "mi_combined")
  return config


@pytest.mark.slow  # ~4.5 min on 2 busy cores; .ci/run runs it after the
                   # default suite
def test_tiny_mi_run_writes_every_record_and_resumes(tmp_path):
  config = _tiny_config()
  workdir = str(tmp_path)
  records = mixup_inference.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  assert saved["environment"]["jax"]
  saved = saved["records"]
  assert saved == records
  for r in records:
    assert set(r) == RESULT_KEYS | {"num_examples"}
    assert r["mode"] in ("oblivious", "adaptive")
    assert 0.0 <= r["acc"] <= 1.0
    # Clean accuracy on 40 images; every 3-step attack on the first 10.
    assert r["num_examples"] == (40 if r["attack"] == "none" else 10)
  # Every oblivious attack number has its adaptive counterpart.
  obl = {(r["model"], r["defense"], r["targeted"], r["steps"], r["eps"])
         for r in records if r["mode"] == "oblivious" and r["attack"] == "pgd"}
  adp = {(r["model"], r["defense"], r["targeted"], r["steps"], r["eps"])
         for r in records if r["mode"] == "adaptive" and r["attack"] in (
             "pgd", "eot_pgd")}
  assert obl and obl == adp
  # 2 models x 5 defences: clean + (untargeted, targeted) PGD-3 at eps 0.05
  # + the sweep's extra eps 0.1, each oblivious and adaptive, plus the
  # paper's attack in both forms (mean of per-partner perturbations; the
  # authors' mixed-space PGD) for the 3 MI defences at eps 0.05, plus the
  # adaptive worst case of the 4 defences at the 3 settings, plus
  # AutoAttack's rand version against the 4 randomized defences.
  assert len(records) == 2 * (5 * (1 + 3 * 2) + 2 * 3 * 2 + 4 * 3 + 4)
  # The worst case is the per-example AND of the attacks' verdicts, so it is
  # never above any of them, and it is recomputed exactly from the saved
  # per-example arrays.
  per_example = np.load(os.path.join(workdir, "per_example.npz"))
  key = lambda r, attack, mode: "|".join(str(v) for v in (
      r["model"], r["defense"], attack, r["targeted"], mode, r["steps"],
      r["eps"]))
  assert {len(per_example[k]) for k in per_example.files} == {10}
  worst = [r for r in records if r["attack"] == "worst_case"]
  assert len(worst) == 2 * 4 * 3
  for r in worst:
    assert r["mode"] == "adaptive"
    parts = [per_example[key(r, a, m)] for a, m in (
        ("pgd", "oblivious"), ("eot_pgd", "adaptive"),
        ("pgd_mixed_avg", "adaptive"), ("pgd_mixed_space", "adaptive"))
             if key(r, a, m) in per_example.files]
    assert len(parts) >= 2
    if not r["targeted"] and r["eps"] == config.eval.eps:  # + AA rand
      parts.append(per_example[_pe_key(r, plan.RAND_ATTACK, "adaptive", 3)])
    assert r["acc"] == pytest.approx(np.mean(np.logical_and.reduce(parts)))
    for p in parts:
      assert r["acc"] <= np.mean(p) + 1e-9
    obl = next(o["acc"] for o in records if o["attack"] == "pgd" and
               o["mode"] == "oblivious" and all(
                   o[k] == r[k] for k in ("model", "defense", "targeted",
                                          "steps", "eps")))
    assert r["acc"] <= obl
  clean = [r for r in records if r["attack"] == "none"]
  assert len(clean) == 10
  # The undefended mixup model is really attacked.
  none_clean = next(r["acc"] for r in clean
                    if r["model"] == "mixup" and r["defense"] == "none")
  none_pgd = next(r["acc"] for r in records if r["model"] == "mixup" and
                  r["defense"] == "none" and r["attack"] == "pgd" and
                  not r["targeted"] and r["eps"] == 0.1)
  assert none_pgd < none_clean
  for name in ("acc_vs_lam.png", "probs_vs_lam.png", "acc_vs_eps.png",
               "results.md", "details.json"):
    assert os.path.exists(os.path.join(workdir, name)), name
  with open(os.path.join(workdir, "details.json")) as f:
    details = json.load(f)
  auc = details["analysis"]["mixup"]["detection"]["mi_pl"]["auc_oblivious"]
  assert 0.0 <= auc <= 1.0
  _check_rand_records(records, config,
                      {k: per_example[k] for k in per_example.files},
                      details["autoattack_rand"])
  with open(os.path.join(workdir, "results.md")) as f:
    md = f.read()
  assert "AutoAttack rand" in md and "EOT-PGD against its number" in md
  # The draws study: every model x defence x draw count, the full defence.
  draws = details["eot_draws"]
  assert sorted((r["model"], r["defense"], r["eot_samples"]) for r in draws) == (
      sorted((m, d, k) for m in config.models for d in ("mi_ol", "mi_combined")
             for k in (1, 2)))
  for r in draws:
    assert r["max_samples"] is None and r["num_examples"] == 8
    assert r["copies"] == evaluate.copies(r["defense"], config)
    assert 0.0 <= r["acc"] <= 1.0

  # Started again: everything is found on disk, nothing is recomputed.
  again = mixup_inference.train_and_evaluate(config, workdir)
  assert again == records
  with open(os.path.join(workdir, "details.json")) as f:
    assert json.load(f)["eot_draws"] == draws


def test_unknown_defense_is_rejected(tmp_path):
  config = _tiny_config()
  config.defenses = ("none", "jpeg")
  with pytest.raises(ValueError, match="jpeg"):
    mixup_inference.train_and_evaluate(config, str(tmp_path))


def test_attack_examples_per_step_count():
  config = mi_mnist.get_config()
  config.eval.num_examples = 500
  config.eval.examples_by_steps = ((50, 200), (200, 100))
  assert [plan.attack_examples(config, s)
          for s in (10, 50, 200)] == [500, 200, 100]
  config.eval.examples_by_steps = ()
  assert plan.attack_examples(config, 200) == 500
  config.eval.examples_by_steps = ((10, 0),)
  with pytest.raises(ValueError, match="examples_by_steps"):
    plan.attack_examples(config, 10)


def test_upsert_replaces_a_rerun_record_in_place():
  rec = lambda acc, n: plan._record("m", "mi_ol", "pgd", False,
                                    "oblivious", 10, 0.05, acc, n)
  records = [rec(0.5, 500), plan._record(
      "m", "none", "none", False, "oblivious", 0, 0.0, 0.9)]
  done = {plan._rkey(r) for r in records}
  plan._upsert(records, done, rec(0.25, 100))
  assert len(records) == 2 and records[0]["acc"] == 0.25
  assert records[0]["num_examples"] == 100
  plan._upsert(records, done, rec(0.1, 100) | {"steps": 50})
  assert len(records) == 3


def test_mnist_configs_set_the_committed_kernels_loops_and_chunks():
  """The old CPU defaults, now explicit: XLA:CPU kernels, rolled attack
  loops, ~1,024 images per MI chunk."""
  config = mi_mnist.get_config()
  assert config.kernels == "xla_cpu"
  assert config.mi.chunk_size == 1024 // config.eval.batch_size == 2
  assert config.eval.unroll is False and config.adaptive.unroll is False
  assert config.iat.unroll is False
  assert mi_mnist.get_config("quick").mi.chunk_size == 10


def _pe_key(r, attack, mode, steps=None):
  return "|".join(str(v) for v in (
      r["model"], r["defense"], attack, r["targeted"], mode,
      r["steps"] if steps is None else steps, r["eps"]))


def _check_rand_records(records, config, per_example, rand_details):
  """AutoAttack's rand version: one record per randomized defence and model,
  untargeted at the main eps, never above its clean accuracy on the same
  examples (a fresh draw), and every untargeted worst case there includes
  its verdicts."""
  eps, steps = float(config.eval.eps), config.autoattack_rand.apgd_steps
  n = plan.rand_examples(config)
  randomized = [d for d in config.defenses if d != "none"]
  rand = {(r["model"], r["defense"]): r for r in records
          if r["attack"] == plan.RAND_ATTACK}
  assert set(rand) == {(m, d) for m in config.models for d in randomized}
  for (m, d), r in rand.items():
    assert (r["mode"], r["targeted"], r["steps"], r["eps"],
            r["num_examples"]) == ("adaptive", False, steps, eps, n)
    verdicts = per_example[_pe_key(r, plan.RAND_ATTACK, "adaptive")]
    assert len(verdicts) == n and r["acc"] == pytest.approx(verdicts.mean())
    assert r["acc"] <= rand_details[m][d]["clean_acc"] + 1e-9
    assert rand_details[m][d]["num_examples"] == n
  worst = [r for r in records if r["attack"] == "worst_case"
           and not r["targeted"] and r["eps"] == eps]
  assert {(r["model"], r["defense"]) for r in worst} == set(rand)
  for r in worst:
    verdicts = per_example[_pe_key(r, plan.RAND_ATTACK, "adaptive", steps)]
    parts = [per_example[k] for k in (
        _pe_key(r, a, mode) for a, mode in plan.WORST_CASE_OF)
             if k in per_example]
    k = r["num_examples"]
    assert r["acc"] == pytest.approx(
        np.mean(np.logical_and.reduce(parts + [verdicts[:k]])))
    assert r["acc"] <= np.mean(verdicts[:k]) + 1e-9
    if k == n:
      assert r["acc"] <= rand[(r["model"], r["defense"])]["acc"] + 1e-9


def test_capped_attack_sees_the_capped_defence_verdicts_the_full_one():
  full = lambda v, x, k: jax.nn.softmax(v * jnp.stack([x, -x], -1), -1)
  capped = lambda v, x, k: jax.nn.softmax(2 * v * jnp.stack([x, -x], -1), -1)
  f = evaluate.log_probs_attacked_capped(full, capped)
  x, key = jnp.array([0.3, -0.2]), jax.random.key(0)
  np.testing.assert_allclose(f(1.0, x, key), jnp.log(full(1.0, x, key)),
                             rtol=1e-5)
  loss = lambda fn: lambda z: jnp.sum(fn(1.0, z, key)[:, 0])
  value, grad = jax.value_and_grad(loss(f))(x)
  ref_value, ref_grad = jax.value_and_grad(
      loss(lambda v, z, k: jnp.log(capped(v, z, k) + 1e-12)))(x)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-5)


@pytest.mark.slow  # ~50-80 s
def test_autoattack_rand_job_joins_the_adaptive_worst_case(mnist_mlp,
                                                           tmp_path):
  """The whole evaluation of one model (a small MNIST MLP) on 12 images:
  the rand version runs against every randomized defence, on the examples
  of the untargeted attacks, capped inside the attack, and joins the worst
  case; a second call finds everything and recomputes nothing."""
  apply, variables, x_test, y_test = mnist_mlp
  config = _tiny_config()
  config.defenses = ("none", "gaussian", "mi_ol")
  config.eval.targeted = (False,)
  config.eval.steps = (2,)
  config.eval.examples_by_steps = ()
  config.eval.num_examples = 12
  config.eval.clean_examples = 12
  config.eval.batch_size = 12
  config.eval.sweep_steps = 2
  config.eval.sweep_eps = (0.05,)
  config.adaptive.paper_steps = ()
  config.autoattack_rand.apgd_steps = 3
  config.autoattack_rand.eot_samples = 2
  config.autoattack_rand.max_samples = 2
  config.models = ("mlp",)
  pool = defenses.make_pool(x_test[100:400], y_test[100:400], size=100,
                            key=jax.random.key(1), num_classes=10)
  ev = evaluate.Evaluator(config, types.SimpleNamespace(apply=apply),
                          variables, {"pl": pool, "ol": pool}, 0.5)
  test = (x_test[:20], y_test[:20])
  records, details = [], {}
  per_example = plan.PerExample(str(tmp_path / "per_example.npz"))
  run = lambda: evaluate.evaluate_model(
      "mlp", ev, config, test, (y_test[:20] + 1) % 10, records, lambda: None,
      jax.random.key(2), per_example, details.setdefault("mlp", {}))
  timings = run()
  assert {"autoattack_rand/gaussian/u3/0.05",
          "autoattack_rand/mi_ol/u3/0.05"} <= set(timings)
  _check_rand_records(records, config, per_example.arrays, details)
  for d in ("gaussian", "mi_ol"):
    assert details["mlp"][d]["max_samples"] == 2
    assert details["mlp"][d]["attacked"]["apgd-ce"] <= 12
  assert plan.PerExample(per_example.path).arrays.keys() == (
      per_example.arrays.keys())
  before = [dict(r) for r in records]
  assert run() == {}  # resumed: nothing left to run
  assert records == before


def test_eot_draws_study_runs_every_cell_once_on_the_full_defence(mnist_mlp,
                                                                  tmp_path):
  apply, variables, x_test, y_test = mnist_mlp
  config = _tiny_config()
  config.eval.batch_size = 8
  config.eot_draws.defenses = ("mi_ol",)
  config.eot_draws.draws = (1, 3)
  pool = defenses.make_pool(x_test[100:400], y_test[100:400], size=100,
                            key=jax.random.key(1), num_classes=10)
  ev = evaluate.Evaluator(config, types.SimpleNamespace(apply=apply),
                          variables, {"pl": pool, "ol": pool}, 0.5)
  rows, saves = [], []
  run = lambda: evaluate.eot_draws_study(
      "mlp", ev, config, (x_test[:20], y_test[:20]), jax.random.key(3), rows,
      lambda: saves.append(len(rows)))
  run()
  assert [(r["defense"], r["eot_samples"]) for r in rows] == [
      ("mi_ol", 1), ("mi_ol", 3)]
  assert saves == [1, 2]      # saved after every cell: resumable
  for r in rows:
    assert r["copies"] == config.mi.ol_num_samples  # all N, not capped
    assert r["num_examples"] == 8 and 0.0 <= r["acc"] <= 1.0
  run()                       # found, not recomputed
  assert len(rows) == 2 and saves == [1, 2]


def test_cifar10_paper_config_feeds_resnet50_pixels_in_minus_one_one():
  from experiments import common
  from experiments.configs import mi_cifar10
  config = mi_cifar10.get_config("jpeg")
  assert config.dataset == "cifar10_jpeg" and config.model == "resnet50"
  assert config.iat.attack_bn == "eval" and config.iat.steps == 10
  config.model = "fast_at_mnist"     # a small stand-in for the wrapper check
  model = common.robust.get_model(config)
  x = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1))
  variables = model.init(jax.random.key(1), x)
  inner = common.robust.models.get_model("fast_at_mnist", num_classes=10,
                                         kernels=config.kernels)
  np.testing.assert_allclose(
      model.apply(variables, x),
      inner.apply({"params": variables["params"]["model"]}, 2 * x - 1),
      rtol=1e-5, atol=1e-5)
