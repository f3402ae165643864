r"""Measures the attack-step loop form: unrolled vs `lax.fori_loop`.

  python -m experiments.benchmark_loop [--steps=1,7,40] [--batch_size=100]

Prints, for PGD-K on the fast-AT MNIST net, the median time per attack call
(after warm-up; the two forms timed in alternation, their ratio the median of
the per-round ratios) and the compile time of each form on the running
backend, and the form `jaxadv.attacks.default_loop()` picks there.
"""

from __future__ import annotations


from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from experiments import timing
from jaxadv import attacks
from jaxadv import losses
from jaxadv import models

FLAGS = flags.FLAGS


def _define_flags() -> None:
  # Defined only when run as a script, so other scripts can import this one.
  flags.DEFINE_list("steps", ["1", "7", "40"], "PGD step counts K.")
  flags.DEFINE_integer("batch_size", 100, "Attack batch size.")
  flags.DEFINE_integer("repeats", 10, "Timed calls per setting.")


def _compiled_attack(steps: int, loop: str, batch_size: int):
  model = models.get_model("fast_at_mnist")
  variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  x = jax.random.uniform(jax.random.key(1), (batch_size, 28, 28, 1))
  y = jnp.arange(batch_size) % 10

  def attack(variables, x, y, key, eps, step_size):
    loss_fn = losses.make_loss_fn(lambda v: model.apply(variables, v))
    return attacks.pgd(loss_fn, x, y, key, eps=eps, step_size=step_size,
                       steps=steps, loop=loop)

  args = (variables, x, y, jax.random.key(2), 0.3, 0.01)
  compiled, compile_s = timing.compile_timed(attack, *args)
  return (lambda: compiled(*args)), compile_s


def measure_pair(steps: int, batch_size: int, repeats: int) -> dict:
  """Both loop forms of PGD-`steps`, timed in alternation.

  Returns:
    {"unroll": {"median_s", "compile_s"}, "fori": {...},
     "fori_over_unroll": the per-round ratio's median, min and max
     (`timing.paired_ratio`)}.
  """
  calls, out = {}, {}
  for loop in ("unroll", "fori"):
    calls[loop], compile_s = _compiled_attack(steps, loop, batch_size)
    out[loop] = {"compile_s": compile_s}
  times = timing.interleaved_times(calls, repeats)
  for loop, t in times.items():
    out[loop]["median_s"] = float(np.median(t))
  out["fori_over_unroll"] = timing.paired_ratio(times["fori"],
                                                times["unroll"])
  return out


def main(argv):
  del argv
  print(f"backend {jax.default_backend()}, devices {jax.devices()}, "
        f"default loop for an unknown body: {attacks.default_loop()}")
  print("| K | unroll ms | fori ms | fori / unroll | unroll compile s "
        "| fori compile s |")
  print("|---|---|---|---|---|---|")
  for k in map(int, FLAGS.steps):
    r = measure_pair(k, FLAGS.batch_size, FLAGS.repeats)
    u, f = r["unroll"], r["fori"]
    print(f"| {k} | {1e3 * u['median_s']:.1f} | {1e3 * f['median_s']:.1f} | "
          f"{r['fori_over_unroll']['median']:.2f} | {u['compile_s']:.2f} | "
          f"{f['compile_s']:.2f} |")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
