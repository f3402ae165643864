r"""The attack-step loop form: unrolled vs rolled `lax.fori_loop`.

  python -m experiments.benchmarks.loop [--steps=1,7,40] [--batch_size=100]
      [--kernels=xla_cpu,lax]

Prints, for PGD-K on the fast-AT MNIST net with each choice of convolution
kernels, the median time per attack call (after warm-up; the two forms timed
in alternation, their ratio the median of the per-round ratios) and the
compile time of each form on the running backend. The library's default is
`jaxadv.loops.default_unroll()` (unrolled on CPU, rolled on GPU/TPU).
"""

from __future__ import annotations

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from experiments.benchmarks import timing
from jaxadv import attacks
from jaxadv import loops
from jaxadv import losses
from jaxadv import models

FORMS = {"unroll": True, "fori": False}


def _compiled_attack(steps: int, unroll: bool, batch_size: int,
                     kernels: str):
  model = models.get_model("fast_at_mnist", kernels=kernels)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  x = jax.random.uniform(jax.random.key(1), (batch_size, 28, 28, 1))
  y = jnp.arange(batch_size) % 10

  def attack(variables, x, y, key, eps, step_size):
    loss_fn = losses.make_loss_fn(lambda v: model.apply(variables, v))
    return attacks.pgd(loss_fn, x, y, key, eps=eps, step_size=step_size,
                       steps=steps, unroll=unroll)

  args = (variables, x, y, jax.random.key(2), 0.3, 0.01)
  compiled, compile_s = timing.compile_timed(attack, *args)
  return (lambda: compiled(*args)), compile_s


def measure_pair(steps: int, batch_size: int, repeats: int,
                 kernels: str = "xla_cpu") -> dict:
  """Both loop forms of PGD-`steps`, timed in alternation.

  Returns:
    {"kernels", "unroll": {"median_s", "compile_s"}, "fori": {...},
     "fori_over_unroll": the per-round ratio's median, min and max
     (`timing.paired_ratio`)}.
  """
  calls, out = {}, {"kernels": kernels}
  for form, unroll in FORMS.items():
    calls[form], compile_s = _compiled_attack(steps, unroll, batch_size,
                                              kernels)
    out[form] = {"compile_s": compile_s}
  times = timing.interleaved_times(calls, repeats)
  for form, t in times.items():
    out[form]["median_s"] = float(np.median(t))
  out["fori_over_unroll"] = timing.paired_ratio(times["fori"],
                                                times["unroll"])
  return out


def to_markdown(rows: list, batch_size: int) -> str:
  """The loop-form table (rows: `measure_pair` results with "steps")."""
  table = common.markdown_table(
      ("K", "kernels", "unroll ms", "fori ms", "fori / unroll",
       "unroll compile s", "fori compile s"),
      [(r["steps"], r.get("kernels", "-"),
        f"{1e3 * r['unroll']['median_s']:.1f}",
        f"{1e3 * r['fori']['median_s']:.1f}",
        f"{r['fori_over_unroll']['median']:.2f} "
        f"({r['fori_over_unroll']['min']:.2f}-"
        f"{r['fori_over_unroll']['max']:.2f})",
        f"{r['unroll']['compile_s']:.2f}", f"{r['fori']['compile_s']:.2f}")
       for r in rows])
  return "\n".join([
      f"**Attack loop form** (PGD-K on fast_at_mnist, batch {batch_size}; "
      "both forms timed in alternation, the ratio the median of the "
      "per-round ratios, with its range)", "", table, "",
      "Default loop form on this backend (`jaxadv.loops.default_unroll()`): "
      f"{'unroll' if loops.default_unroll() else 'fori'}."])


def main(argv):
  del argv
  flag = flags.FLAGS
  print(f"backend {jax.default_backend()}, devices {jax.devices()}")
  rows = [{"steps": k, **measure_pair(k, flag.batch_size, flag.repeats, kern)}
          for k in map(int, flag.steps) for kern in flag.kernels]
  print(to_markdown(rows, flag.batch_size))


if __name__ == "__main__":
  flags.DEFINE_list("steps", ["1", "7", "40"], "PGD step counts K.")
  flags.DEFINE_integer("batch_size", 100, "Attack batch size.")
  flags.DEFINE_integer("repeats", 10, "Timed calls per setting.")
  flags.DEFINE_list("kernels", ["xla_cpu", "lax"],
                    "Convolution kernels (`jaxadv.models.get_model`).")
  app.run(main)
