"""Tests of the benchmark's pieces that must be right for its numbers to count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import benchmark
from experiments import benchmark_conv
from jaxadv import models


@pytest.mark.parametrize("mode, updates, passes", [
    ("natural", 1, 1), ("fgsm_rs", 1, 2), ("free:8", 8, 8), ("pgd:7", 1, 8),
    ("free:4@fori", 4, 4), ("pgd:3@unroll", 1, 4)])
def test_build_mode_counts(mode, updates, passes):
  _, u, p = benchmark.build_mode(mode)
  assert (u, p) == (updates, passes)


def test_parse_mode_loop_suffix():
  assert benchmark.parse_mode("free:8@fori") == ("free", 8, "fori")
  assert benchmark.parse_mode("natural") == ("natural", 0, None)
  with pytest.raises(ValueError, match="loop"):
    benchmark.build_mode("free:2@while")[0]


def test_conv_benchmark_times_every_setting():
  res = benchmark_conv.measure("fast_at_mnist", "im2col_grad",
                               attack_batch=4, train_batch=4, steps=1,
                               replays=2, repeats=1)
  assert set(res) == {"forward", "pgd_unroll", "pgd_fori", "natural",
                      "free_unroll", "free_fori"}
  for median_s, first_s in res.values():
    assert 0 < median_s <= first_s + 1.0


def test_train_modes_are_timed_in_one_interleaved_pass():
  """Rows come back in the modes' order, each with its own compile time and
  a per-update time that divides the call by the updates it makes."""
  from jaxadv import data
  x, y = data.load("mnist", "train", limit=8)
  rows = benchmark.time_train_modes("fast_at_mnist", ("natural", "free:2"),
                                    {"x": x, "y": y}, 0.3, warmup=1,
                                    repeats=2)
  assert [r["mode"] for r in rows] == ["natural", "free:2"]
  for r in rows:
    assert r["call_s"] > 0 and r["compile_s"] > 0
    np.testing.assert_allclose(r["per_update_s"],
                               r["call_s"] / r["updates_per_call"])
  assert rows[1]["updates_per_call"] == 2
  for r in rows:  # the rounds the median (and paired ratios) come from
    assert len(r["round_s"]) == 2
    np.testing.assert_allclose(r["call_s"], np.median(r["round_s"]))


def test_interleaved_medians_alternate_calls():
  """Each round calls every function once (after `rewarm` untimed calls),
  in order."""
  from experiments import timing
  order = []
  calls = {n: (lambda n=n: order.append(n) or jnp.zeros(())) for n in "ab"}
  medians = timing.interleaved_medians(calls, repeats=3, warmup=1, rewarm=1)
  assert order == list("ab") + list("aabb") * 3
  assert set(medians) == {"a", "b"} and all(v >= 0 for v in medians.values())


def test_interleaved_times_keep_every_round():
  from experiments import timing
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
  from experiments import timing
  r = timing.paired_ratio(num, den)
  np.testing.assert_allclose((r["median"], r["min"], r["max"]), want,
                             rtol=1e-12)


@pytest.mark.parametrize("num, den", [([], []), ([1.0, 2.0], [1.0])])
def test_paired_ratio_rejects_mismatched_rounds(num, den):
  from experiments import timing
  with pytest.raises(ValueError, match="same length"):
    timing.paired_ratio(num, den)


def test_loop_benchmark_times_both_forms_in_alternation():
  from experiments import benchmark_loop
  r = benchmark_loop.measure_pair(2, batch_size=4, repeats=3)
  for loop in ("unroll", "fori"):
    assert r[loop]["median_s"] > 0 and r[loop]["compile_s"] > 0
  ratio = r["fori_over_unroll"]
  assert ratio["min"] <= ratio["median"] <= ratio["max"]


@pytest.mark.parametrize("name", ["fast_at_mnist", "madry_cnn"])
def test_torch_port_matches_logits(name):
  torch = pytest.importorskip("torch")
  from experiments import peers
  model = models.get_model(name)
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
  x = np.asarray(jax.random.uniform(jax.random.key(1), (8, 28, 28, 1)))
  tmodel = peers.port_to_torch(name, params)
  with torch.no_grad():
    tl = tmodel(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  np.testing.assert_allclose(tl, model.apply({"params": params}, x),
                             atol=1e-5, rtol=1e-5)


def test_mi_benchmark_times_the_same_work():
  """The MI benchmark runs on real data and reports consistent ratios."""
  from experiments import benchmark_mi
  r = benchmark_mi.measure("fast_at_mnist", batch_size=20, num_samples=3,
                           repeats=1)
  for k in ("mi_ol_s", "mi_ol_vmap_s", "n_forwards_s", "one_big_forward_s",
            "python_loop_s"):
    assert r[k] > 0, k
  np.testing.assert_allclose(r["mi_ol_vs_n_forwards"],
                             r["mi_ol_s"] / r["n_forwards_s"])
  assert "MI-OL" in benchmark_mi.to_markdown(r)


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
  res = benchmark.attack_throughput(config, "fast_at_mnist", params, x, y)
  names = [r["attack"] for r in res["rows"]]
  assert names[0] == "jaxadv (1 device)"
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
  assert "Without the random start" in benchmark.to_markdown(
      {"machine": benchmark.machine(), "config": {"batch_size": 1,
                                                  "repeats": 1},
       "train": [], "attack": res})
