r"""Cost of Mixup Inference: MI-OL (N mixed copies) vs N plain forwards.

  python -m experiments.benchmarks.mi [--model=fast_at_mnist]
      [--kernels=xla_cpu] [--batch_size=500] [--num_samples=30]
      [--chunk_size=2] [--repeats=20]

Compares, on the same batch and weights, medians after compile warm-up,
timed in alternation (`timing.interleaved_medians`: round r times every
variant once, each right after an untimed call of it) so that machine drift
does not skew the ratios:

* `mi_ol`: `jaxadv.defenses.mi_ol`, one jitted call (partner draws, mixing,
  forwards, mean of softmax) with the given `chunk_size` (a `lax.map` over
  chunks of copies; the benchmark config's 2 copies of a 500-image batch
  are ~1,024 images per step, what suits XLA:CPU's caches), and with
  `chunk_size=None` (one vmapped forward of N x B images, the library
  default, for GPU/TPU);
* `N forwards`: the jitted plain forward of the batch, called N times;
* `one N*B forward`: the plain forward of one N*B batch (the compute floor);
* `python loop over N`: MI-OL written the naive way, a Python loop of N
  jitted single-copy steps (draw, mix, forward, accumulate).

Part of `python -m experiments.benchmarks`; this module runs it alone.
"""

from __future__ import annotations

import time

from typing import Optional

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from experiments import common
from experiments.benchmarks import timing
from jaxadv import data
from jaxadv import defenses
from jaxadv import models


def measure(model_name: str = "fast_at_mnist", batch_size: int = 500,
            num_samples: int = 30, repeats: int = 20,
            dataset: str = "mnist", *, kernels: str = "xla_cpu",
            chunk_size: Optional[int] = 2) -> dict:
  """Times MI-OL against plain forward passes; returns seconds and ratios."""
  x, y = data.load(dataset, "train")
  num_classes = data.info(dataset).num_classes
  model = models.get_model(model_name, kernels=kernels,
                           num_classes=num_classes)
  variables = model.init(jax.random.key(0), x[:1], train=False)
  pool = defenses.make_pool(x, y, size=10000, key=jax.random.key(1),
                            num_classes=num_classes)
  xb = jnp.asarray(x[:batch_size])
  key = jax.random.key(2)
  out = {"model": model_name, "kernels": kernels, "batch_size": batch_size,
         "num_samples": num_samples, "repeats": repeats,
         "chunk_size": chunk_size}

  def logits_fn(v):
    return lambda z: model.apply(v, z, train=False)

  mi_fn = jax.jit(lambda v, xx, k: defenses.mi_ol(
      logits_fn(v), xx, pool, k, lam=0.5, num_samples=num_samples,
      chunk_size=chunk_size).probs)
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
  return out


def to_markdown(r: dict) -> str:
  """One small table."""
  n, b = r["num_samples"], r["batch_size"]
  nf = r["n_forwards_s"]
  chunk = r.get("chunk_size", r.get("default_chunk_size"))
  rows = [
      (f"MI-OL, N = {n}, chunk_size={chunk} ({chunk} copies per lax.map "
       "step)", f"{1e3 * r['mi_ol_s']:.1f}", f"{r['mi_ol_vs_n_forwards']:.2f}"),
      (f"MI-OL, N = {n}, one vmapped N x B forward (chunk_size=None, the "
       "library default)", f"{1e3 * r['mi_ol_vmap_s']:.1f}",
       f"{r['mi_ol_vmap_s'] / nf:.2f}"),
      (f"{n} plain forwards of the batch", f"{1e3 * nf:.1f}", "1.00"),
      (f"one forward of {n} x {b} images",
       f"{1e3 * r['one_big_forward_s']:.1f}",
       f"{r['one_big_forward_s'] / nf:.2f}"),
      ("MI-OL as a Python loop over N", f"{1e3 * r['python_loop_s']:.1f}",
       f"{r['python_loop_s'] / nf:.2f}")]
  kernels = f", {r['kernels']} kernels" if "kernels" in r else ""
  return "\n".join([
      f"**Mixup Inference cost** ({r['model']}{kernels}, batch {b}, N = {n}, "
      f"median of {r['repeats']} interleaved rounds after warm-up)", "",
      common.markdown_table(("what", "ms", "vs N forwards"), rows), "",
      f"Bar MI-OL / N forwards {r['bar']}; MI-OL compile "
      f"{r['mi_ol_compile_s']:.2f} s."])


def main(argv):
  del argv
  f = flags.FLAGS
  r = measure(f.model, f.batch_size, f.num_samples, f.repeats,
              kernels=f.kernels, chunk_size=f.chunk_size or None)
  print(to_markdown(r))


if __name__ == "__main__":
  flags.DEFINE_string("model", "fast_at_mnist", "Model name.")
  flags.DEFINE_string("kernels", "xla_cpu",
                      "Convolution kernels (`jaxadv.models.get_model`).")
  flags.DEFINE_integer("batch_size", 500, "Batch size.")
  flags.DEFINE_integer("num_samples", 30, "N, mixed copies per input.")
  flags.DEFINE_integer("chunk_size", 2,
                       "MI-OL copies per lax.map step (0: one vmap).")
  flags.DEFINE_integer("repeats", 20, "Timed repeats.")
  app.run(main)
