r"""Cost of Mixup Inference: MI-OL (N mixed copies, vmapped) vs N plain forwards.

  python -m experiments.benchmark_mi [--model=fast_at_mnist] [--batch_size=500]
      [--num_samples=30] [--repeats=20]

Compares, on the same batch and weights, medians after compile warm-up,
timed in alternation (`timing.interleaved_medians`: round r times every
variant once, each right after an untimed call of it) so that machine drift
does not skew the ratios:

* `mi_ol`: `jaxadv.defenses.mi_ol`, one jitted call (partner draws, mixing,
  forwards, mean of softmax) with the backend's default `chunk_size`
  (on CPU a `lax.map` over chunks of ~1,024 images: 2 copies of a
  500-image batch), and with `chunk_size=None` (one vmapped forward of
  N x B images, the GPU/TPU default);
* `N forwards`: the jitted plain forward of the batch, called N times;
* `one N*B forward`: the plain forward of one N*B batch (the compute floor);
* `python loop over N`: MI-OL written the naive way, a Python loop of N
  jitted single-copy steps (draw, mix, forward, accumulate).

Part of `experiments/benchmark.py`; this script runs it alone.
"""

from __future__ import annotations

import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from experiments import timing
from jaxadv import data
from jaxadv import defenses
from jaxadv import models


def measure(model_name: str = "fast_at_mnist", batch_size: int = 500,
            num_samples: int = 30, repeats: int = 20,
            dataset: str = "mnist") -> dict:
  """Times MI-OL against plain forward passes; returns seconds and ratios."""
  x, y = data.load(dataset, "train")
  num_classes = data.info(dataset).num_classes
  model = models.get_model(model_name, num_classes=num_classes)
  variables = model.init(jax.random.key(0), x[:1], train=False)
  pool = defenses.make_pool(x, y, size=10000, key=jax.random.key(1),
                            num_classes=num_classes)
  xb = jnp.asarray(x[:batch_size])
  key = jax.random.key(2)
  out = {"model": model_name, "batch_size": batch_size,
         "num_samples": num_samples, "repeats": repeats}

  def logits_fn(v):
    return lambda z: model.apply(v, z, train=False)

  mi_fn = jax.jit(lambda v, xx, k: defenses.mi_ol(
      logits_fn(v), xx, pool, k, lam=0.5, num_samples=num_samples).probs)
  mi_vmap = jax.jit(lambda v, xx, k: defenses.mi_ol(
      logits_fn(v), xx, pool, k, lam=0.5, num_samples=num_samples,
      chunk_size=None).probs)
  fwd = jax.jit(lambda v, xx: jax.nn.softmax(model.apply(v, xx, train=False)))
  big = jnp.tile(xb, (num_samples, 1, 1, 1))

  @jax.jit
  def one_copy(v, xx, k, acc):
    y_hat = jnp.argmax(model.apply(v, xx, train=False), -1)
    x_s = defenses.draw_partners(pool, y_hat, k, num_samples=1,
                                 partners="ol")[0]
    return acc + jax.nn.softmax(model.apply(v, 0.5 * xx + 0.5 * x_s,
                                            train=False))

  def python_loop():
    acc = jnp.zeros((batch_size, num_classes))
    for i in range(num_samples):
      acc = one_copy(variables, xb, jax.random.fold_in(key, i), acc)
    return acc / num_samples

  def n_forwards():
    return [fwd(variables, xb) for _ in range(num_samples)]  # all awaited

  t0 = time.perf_counter()
  jax.block_until_ready(mi_fn(variables, xb, key))
  out["mi_ol_compile_s"] = time.perf_counter() - t0
  medians = timing.interleaved_medians({
      "mi_ol_s": lambda: mi_fn(variables, xb, key),
      "n_forwards_s": n_forwards,
      "mi_ol_vmap_s": lambda: mi_vmap(variables, xb, key),
      "one_big_forward_s": lambda: fwd(variables, big),
      "python_loop_s": python_loop}, repeats)
  out.update(medians)
  out["mi_ol_vs_n_forwards"] = out["mi_ol_s"] / out["n_forwards_s"]
  out["python_loop_vs_mi_ol"] = out["python_loop_s"] / out["mi_ol_s"]
  out["bar"] = (f"<= 1.1: "
                f"{'met' if out['mi_ol_vs_n_forwards'] <= 1.1 else 'MISSED'}")
  out["default_chunk_size"] = defenses.default_chunk_size(
      batch_size=batch_size)
  return out


def to_markdown(r: dict) -> str:
  """One small table."""
  n, b = r["num_samples"], r["batch_size"]
  return "\n".join([
      f"**Mixup Inference cost** ({r['model']}, batch {b}, N = {n}, median "
      f"of {r['repeats']} interleaved rounds after warm-up)", "",
      "| what | ms | vs N forwards |", "|---|---|---|",
      f"| MI-OL, N = {n} (jaxadv default here: chunk_size="
      f"{r['default_chunk_size']}) | {1e3 * r['mi_ol_s']:.1f} | "
      f"{r['mi_ol_vs_n_forwards']:.2f} |",
      f"| MI-OL, N = {n}, one vmapped N x B forward (chunk_size=None) | "
      f"{1e3 * r['mi_ol_vmap_s']:.1f} | "
      f"{r['mi_ol_vmap_s'] / r['n_forwards_s']:.2f} |",
      f"| {n} plain forwards of the batch | {1e3 * r['n_forwards_s']:.1f} | "
      f"1.00 |",
      f"| one forward of {n} x {b} images | {1e3 * r['one_big_forward_s']:.1f}"
      f" | {r['one_big_forward_s'] / r['n_forwards_s']:.2f} |",
      f"| MI-OL as a Python loop over N | {1e3 * r['python_loop_s']:.1f} | "
      f"{r['python_loop_s'] / r['n_forwards_s']:.2f} |", "",
      f"Bar MI-OL / N forwards {r['bar']}; MI-OL compile "
      f"{r['mi_ol_compile_s']:.2f} s."])


FLAGS = flags.FLAGS


def main(argv):
  del argv
  r = measure(FLAGS.model, FLAGS.batch_size, FLAGS.num_samples, FLAGS.repeats)
  print(to_markdown(r))


if __name__ == "__main__":
  flags.DEFINE_string("model", "fast_at_mnist", "Model name.")
  flags.DEFINE_integer("batch_size", 500, "Batch size.")
  flags.DEFINE_integer("num_samples", 30, "N, mixed copies per input.")
  flags.DEFINE_integer("repeats", 20, "Timed repeats.")
  app.run(main)
