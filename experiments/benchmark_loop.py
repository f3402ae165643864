r"""Measures the attack-step loop form: unrolled vs `lax.fori_loop`.

  python -m experiments.benchmark_loop [--steps=1,7,40] [--batch_size=100]

Prints, for PGD-K on the fast-AT MNIST net, the median time per attack call
(after warm-up) and the compile time of each form on the running backend, and
the form `jaxadv.attacks.default_loop()` picks there.
"""

from __future__ import annotations


from absl import app
from absl import flags
import jax
import jax.numpy as jnp

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


def measure(steps: int, loop: str, batch_size: int, repeats: int) -> dict:
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
  return {"median_s": timing.median_seconds(lambda: compiled(*args), repeats),
          "compile_s": compile_s}


def main(argv):
  del argv
  print(f"backend {jax.default_backend()}, devices {jax.devices()}, "
        f"default loop for an unknown body: {attacks.default_loop()}")
  print("| K | unroll ms | fori ms | fori / unroll | unroll compile s "
        "| fori compile s |")
  print("|---|---|---|---|---|---|")
  for k in map(int, FLAGS.steps):
    u = measure(k, "unroll", FLAGS.batch_size, FLAGS.repeats)
    f = measure(k, "fori", FLAGS.batch_size, FLAGS.repeats)
    print(f"| {k} | {1e3 * u['median_s']:.1f} | {1e3 * f['median_s']:.1f} | "
          f"{f['median_s'] / u['median_s']:.2f} | {u['compile_s']:.2f} | "
          f"{f['compile_s']:.2f} |")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
