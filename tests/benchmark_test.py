"""Tests of the benchmark's pieces that must be right for its numbers to count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.benchmarks import attack
from experiments.benchmarks import conv
from experiments.benchmarks import loop
from experiments.benchmarks import mi
from experiments.benchmarks import run
from experiments.benchmarks import timing
from experiments.benchmarks import training
from jaxadv import models


@pytest.mark.slow  # ~10 s of compiles; CI's slow line
def test_conv_benchmark_times_every_setting():
  res = conv.measure("fast_at_mnist", "im2col_grad",
                               attack_batch=4, train_batch=4, steps=1,
                               replays=2, repeats=1)
  assert set(res) == {"forward", "pgd_unroll", "pgd_fori", "natural",
                      "free_unroll", "free_fori"}
  for median_s, first_s in res.values():
    assert 0 < median_s <= first_s + 1.0


@pytest.mark.slow  # 6-14 s; CI's slow line
def test_train_modes_are_timed_in_one_interleaved_pass():
  """Rows come back in the modes' order, each with its own compile time and
  a per-update time that divides the call by the updates it makes."""
  from jaxadv import data
  x, y = data.load("mnist", "train", limit=8)
  rows = training.time_train_modes("fast_at_mnist",
                                   ("natural", "free:2@fori"),
                                   {"x": x, "y": y}, 0.3, warmup=1,
                                   repeats=2, kernels="lax")
  assert [r["mode"] for r in rows] == ["natural", "free:2@fori"]
  assert {r["kernels"] for r in rows} == {"lax"}
  for r in rows:
    assert r["call_s"] > 0 and r["compile_s"] > 0
    np.testing.assert_allclose(r["per_update_s"],
                               r["call_s"] / r["updates_per_call"])
  assert rows[1]["updates_per_call"] == 2
  for r in rows:  # the rounds the median (and paired ratios) come from
    assert len(r["round_s"]) == 2
    np.testing.assert_allclose(r["call_s"], np.median(r["round_s"]))
  training.add_ratios(rows, batches_per_epoch=10)
  assert rows[0]["ratio_to_natural"] == 1.0 and rows[0]["bar"] == "-"
  assert rows[1]["bar"].startswith("<= 1.05: ")
  md = "\n".join(training.train_markdown(
      {"config": {"batch_size": 8, "repeats": 2}, "train": rows}))
  assert "| model | kernels | mode |" in md and "free:2@fori" in md


def test_interleaved_medians_alternate_calls():
  """Each round calls every function once (after `rewarm` untimed calls),
  in order."""
  order = []
  calls = {n: (lambda n=n: order.append(n) or jnp.zeros(())) for n in "ab"}
  medians = timing.interleaved_medians(calls, repeats=3, warmup=1, rewarm=1)
  assert order == list("ab") + list("aabb") * 3
  assert set(medians) == {"a", "b"} and all(v >= 0 for v in medians.values())


def test_interleaved_times_keep_every_round():
  calls = {n: (lambda: jnp.zeros(())) for n in "abc"}
  times = timing.interleaved_times(calls, repeats=4, warmup=0, rewarm=0)
  assert list(times) == list("abc")
  assert all(len(t) == 4 and min(t) >= 0 for t in times.values())


@pytest.mark.parametrize("num, den, want", [
    ([2.0, 4.0, 9.0], [1.0, 2.0, 3.0], (2.0, 2.0, 3.0)),
    ([1.0], [4.0], (0.25, 0.25, 0.25)),
    # A slow round moves both terms: the paired median ignores it, the
    # ratio of medians (3 / 1.5 = 2) does not.
    ([1.0, 1.1, 3.0, 1.0], [1.0, 1.0, 3.0, 1.0], (1.0, 1.0, 1.1)),
])
def test_paired_ratio(num, den, want):
  r = timing.paired_ratio(num, den)
  np.testing.assert_allclose((r["median"], r["min"], r["max"]), want,
                             rtol=1e-12)


@pytest.mark.parametrize("num, den", [([], []), ([1.0, 2.0], [1.0])])
def test_paired_ratio_rejects_mismatched_rounds(num, den):
  with pytest.raises(ValueError, match="same length"):
    timing.paired_ratio(num, den)


@pytest.mark.parametrize("kernels", ["xla_cpu", "lax"])
def test_loop_benchmark_times_both_forms_in_alternation(kernels):
  r = loop.measure_pair(2, batch_size=4, repeats=3, kernels=kernels)
  assert r["kernels"] == kernels
  for form in ("unroll", "fori"):
    assert r[form]["median_s"] > 0 and r[form]["compile_s"] > 0
  ratio = r["fori_over_unroll"]
  assert ratio["min"] <= ratio["median"] <= ratio["max"]
  md = loop.to_markdown([{"steps": 2, **r}], batch_size=4)
  assert f"| 2 | {kernels} |" in md and "default_unroll" in md


@pytest.mark.parametrize("name", ["fast_at_mnist", "madry_cnn"])
def test_torch_port_matches_logits(name):
  torch = pytest.importorskip("torch")
  from experiments.benchmarks import peers
  model = models.get_model(name)
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
  x = np.asarray(jax.random.uniform(jax.random.key(1), (8, 28, 28, 1)))
  tmodel = peers.port_to_torch(name, params)
  with torch.no_grad():
    tl = tmodel(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  np.testing.assert_allclose(tl, model.apply({"params": params}, x),
                             atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # ~12 s; CI's slow line
def test_mi_benchmark_times_the_same_work():
  """The MI benchmark runs on real data and reports consistent ratios."""
  r = mi.measure("fast_at_mnist", batch_size=20, num_samples=3, repeats=1,
                 kernels="xla_cpu", chunk_size=2)
  assert r["chunk_size"] == 2 and r["kernels"] == "xla_cpu"
  for k in ("mi_ol_s", "mi_ol_vmap_s", "n_forwards_s", "one_big_forward_s",
            "python_loop_s"):
    assert r[k] > 0, k
  np.testing.assert_allclose(r["mi_ol_vs_n_forwards"],
                             r["mi_ol_s"] / r["n_forwards_s"])
  assert "chunk_size=2" in mi.to_markdown(r)


@pytest.mark.slow  # 6-14 s; CI's slow line
def test_attack_throughput_rows_and_deterministic_agreement():
  """jaxadv vs the peers on real images: with no random start the three
  PGDs are the same deterministic attack, so their verdicts agree."""
  pytest.importorskip("torchattacks")
  pytest.importorskip("foolbox")
  from experiments.configs import benchmark as benchmark_config
  from jaxadv import data
  config = benchmark_config.get_config("quick")
  config.attack.num_examples = 8
  config.attack.batch_size = 4
  config.attack.steps = 3
  config.attack.repeats = 1
  x, y = data.load("mnist", "test", limit=8)
  params = models.get_model("fast_at_mnist").init(
      jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
  res = attack.attack_throughput(config, "fast_at_mnist", params, x, y)
  names = [r["attack"] for r in res["rows"]]
  assert names[0] == "jaxadv (1 device)"
  assert "jaxadv (1 device, lax kernels)" in names  # what the kernels cost
  assert any("torchattacks" in n for n in names)
  assert any("foolbox" in n for n in names)
  for r in res["rows"]:
    assert r["images_per_s"] > 0 and 0 <= r["robust_acc"] <= 1
  with_start = [r for r in res["rows"] if "robust_acc_no_random_start" in r]
  assert len(with_start) == 3
  # Untrained weights, 3 steps: float rounding may flip a verdict at most.
  for r in with_start:
    assert r["verdicts_differing_from_jaxadv_no_random_start"] <= 1
  for b in res["bar"]:  # one round: the paired speedup is that round's
    assert b["speedup_range"] == [b["speedup"], b["speedup"]]
    np.testing.assert_allclose(b["speedup"], b["ratio_of_medians"],
                               rtol=1e-9)
  assert "Without the random start" in run.to_markdown(
      {"machine": run.machine(), "config": {"batch_size": 1, "repeats": 1},
       "train": [], "attack": res})


@pytest.mark.slow  # 6-14 s; CI's slow line
def test_time_to_accuracy_runs_on_fits_eval_hook():
  """Time to accuracy is `training.fit` with its `eval_fn` hook: training
  stops at the first check that reaches the target."""
  import inspect
  from jaxadv import training as jaxadv_training
  if "eval_fn" not in inspect.signature(jaxadv_training.fit).parameters:
    pytest.skip("training.fit has no eval_fn hook yet")
  from experiments.configs import benchmark as benchmark_config
  config = benchmark_config.get_config("quick")
  config.tta.target = 0.0  # reached at the first check
  config.tta.check_every = 3
  config.tta.heldout = 20
  config.tta.pgd_steps = 2
  rows, states = training.time_to_accuracy(config)
  (row,) = rows
  assert row["method"] == "fgsm_rs" and row["batches"] == 3
  assert row["seconds_to_target"] is not None
  assert row["fwd_bwd_passes"] == 2 * 3
  assert [b for _, b, _ in row["curve"]] == [3]
  assert states["fgsm_rs"][0] == "fast_at_mnist"
  assert "| fgsm_rs |" in "\n".join(training.tta_markdown(
      {"config": config.to_dict(), "tta": rows}))


@pytest.mark.slow  # 6-14 s; CI's slow line
def test_build_mode_adds_section_fields_but_the_mode_wins():
  from experiments import common
  _, updates, passes = common.training.build_mode(
      "pgd:2", {"augment": "crop_flip", "attack_bn": "batch", "steps": 99})
  assert (updates, passes) == (1, 3)
  with pytest.raises(ValueError, match="unknown augmentation"):
    common.training.build_mode("natural", {"augment": "cutout"})
  state = common.training.mode_state(
      models.get_model("compact_cnn", widths=(4, 8)), "pgd:2",
      (2, 32, 32, 3), 8 / 255, step_sizes={"pgd": 2 / 255})
  np.testing.assert_allclose(state.attack_params["step_size"], 2 / 255,
                             rtol=1e-6)
  np.testing.assert_allclose(state.attack_params["eps"], 8 / 255, rtol=1e-6)


@pytest.mark.slow  # 6-14 s; CI's slow line
def test_cifar10_rows_use_the_cifar_recipe():
  """The CIFAR-10 groups time the CIFAR recipe (Normalized model, SGD,
  augmentation and BatchNorm-updating attacks) on real CIFAR-10 images."""
  from experiments.configs import benchmark_cifar10
  from jaxadv import data
  config = benchmark_cifar10.get_config("quick")
  assert config.dataset == "cifar10_jpeg" and config.eps == 8 / 255
  g = config.train.compact_cnn
  g.model_kwargs = dict(widths=(4, 8), convs_per_stage=1)
  setup = run.group_setup(g)
  assert isinstance(setup["model"], models.Normalized)
  assert setup["section"] == {"augment": "crop_flip", "attack_bn": "update"}
  assert setup["rewarm"] == 1
  x, y = data.load("cifar10_jpeg", "train", limit=4)
  rows = training.time_train_modes(g.model, ("natural", "fgsm_rs"),
                                   {"x": x, "y": y}, config.eps, 0, 1,
                                   kernels=g.kernels, **setup)
  assert [r["mode"] for r in rows] == ["natural", "fgsm_rs"]
  assert all(r["batch_size"] == 4 and r["call_s"] > 0 for r in rows)
  assert rows[1]["passes_per_call"] == 2
  assert run.group_setup(config.train.preact_resnet18)["rewarm"] == 0


def test_torch_reference_step_and_line():
  pytest.importorskip("torch")
  from experiments.benchmarks import torch_reference
  net = torch_reference.preact_resnet18()
  # The same parameter count as jaxadv's PreActResNet18.
  assert sum(p.numel() for p in net.parameters()) == 11_172_170
  x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
  res = torch_reference.natural_step_seconds(x, np.array([0, 1]), warmup=0,
                                             repeats=2)
  assert res["batch_size"] == 2 and len(res["round_s"]) == 2
  assert res["call_s"] > 0 and res["threads"] >= 1
  (line,) = torch_reference.to_markdown(res, 2 * res["call_s"])
  assert "2.00x" in line and "PreActResNet-18" in line


def _ensemble_config(**budget):
  from experiments.configs import benchmark_ensemble
  config = benchmark_ensemble.get_config("quick")
  config.ensemble.update(budget)
  return config


def test_ensemble_chains_run_on_the_survivors_of_the_same_model():
  """jaxadv's standard ensemble and the torchattacks chain on the same
  weights: the twin's logits agree, each attack runs only on the points
  still robust, and the results carry the bar and the settings."""
  pytest.importorskip("torchattacks")
  from experiments.benchmarks import ensemble
  from jaxadv import data
  config = _ensemble_config(num_examples=6, apgd_steps=2, num_targets=2,
                            fab_steps=2, square_queries=5, batch_size=4,
                            order=("jaxadv", "torchattacks", "jaxadv_warm"))
  model = models.get_model("fast_at_mnist", kernels=config.kernels)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  x, _ = data.load("mnist", "test", limit=6)
  # Labels = the net's own predictions: every point starts robust.
  y = np.asarray(jnp.argmax(model.apply(variables, x), -1))
  e = ensemble.measure(config, model, variables, x, y)
  assert e["port"]["max_logit_diff"] < 1e-4
  assert e["port"]["argmax_disagreements"] == 0
  assert e["clean_acc"] == {"jaxadv": 1.0, "torchattacks": 1.0}
  assert [r["attack"] for r in e["per_attack"]] == list(
      config.ensemble.attacks)
  for lib in ("jaxadv", "torchattacks"):
    accs = [r[f"{lib}_robust_acc"] for r in e["per_attack"]]
    assert accs == sorted(accs, reverse=True)  # cumulative
    # Each attack starts from the survivors of the ones before it.
    assert [r[f"{lib}_entering"] for r in e["per_attack"]] == [
        round(6 * a) for a in [1.0] + accs[:-1]]
  for r in e["per_attack"]:
    targets = 2 if r["attack"] in ("apgd-t", "fab-t") else 1
    assert r["jaxadv_attacked_over_targets"] <= targets * r["jaxadv_entering"]
  assert e["robust_in_both"] + e["robust_only_jaxadv"] <= 6
  assert e["warm_matches_cold"]  # same key, same result
  assert e["jaxadv_compile_s"] >= 0
  assert e["total_s"]["jaxadv"] > 0 and e["total_s"]["torchattacks"] > 0
  np.testing.assert_allclose(
      e["speedup"], e["total_s"]["torchattacks"] / e["total_s"]["jaxadv"])
  assert e["bar"]["met"] == (e["bar"]["fast_enough"]
                             and e["bar"]["accurate_enough"])
  assert "resc_schedule=False" in e["torchattacks_attacks"][3]
  assert "multi_targeted=True" in e["torchattacks_attacks"][2]
  md = "\n".join(ensemble.to_markdown(e))
  assert "| **whole chain** |" in md and "+ fab-t" in md


@pytest.mark.slow  # trains the quick model (~10 s), then both chains
def test_ensemble_benchmark_writes_its_results(tmp_path):
  pytest.importorskip("torchattacks")
  import json
  config = _ensemble_config()
  res = run.run(config, str(tmp_path))
  e = res["ensemble"]
  assert e["model"]["method"] == "fgsm_rs" and e["num_examples"] == 20
  assert e["port"]["argmax_disagreements"] == 0
  saved = json.loads((tmp_path / "benchmark.json").read_text())
  assert saved["ensemble"]["bar"] == e["bar"]
  md = (tmp_path / "benchmark.md").read_text()
  assert "AutoAttack standard ensemble" in md and "Bar:" in md
