r"""Measures the convolution kernels: lax and `jaxadv.models.xla_cpu`'s.

  python -m experiments.benchmarks.conv [--models=fast_at_mnist,madry_cnn]
      [--impls=lax,xla_cpu,im2col,im2col_grad,explicit] [--attack_batch=500]
      [--train_batch=128] [--single_channels=1,3,8,16,32]

"lax" and "xla_cpu" are `get_model(kernels=...)`'s two choices ("xla_cpu"
picks one of the XLA:CPU kernels per conv shape, `xla_cpu.conv`); "im2col",
"im2col_grad" and "explicit" force one of them for every conv
(`conv_fn=xla_cpu.conv2d_im2col`, `conv2d_im2col_grad`, `conv2d`).

For each model and conv implementation, prints the median time (after a
warm-up call; compile time in brackets) of a forward pass alone (at the
attack batch), a PGD-10 attack, unrolled and as `lax.fori_loop`, and of a
natural and a free-AT (m = `--replays`, unrolled and rolled) training
step. The implementations are interleaved `--rounds`
times, so a busy machine slows all of them alike. This is what
`xla_cpu.conv`'s choice per conv shape is based on.

With `--single_channels`, it first times one 4x4 / 2 convolution (padding 1,
the fast-AT net's shape; 28x28 input for up to 8 channels, 14x14 above)
per input-channel count: its forward pass and its input gradient, for each
implementation, interleaved. "im2col"'s input gradient is col2im and
"explicit"'s a canonical conv on the space-to-depth grid, the two forms
`conv2d_im2col_grad` chooses between at `xla_cpu.FEW_CHANNELS`.
"""

from __future__ import annotations


import functools

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.benchmarks import timing
from jaxadv import attacks
from jaxadv import losses
from jaxadv import models
from jaxadv import training
from jaxadv.models import layers
from jaxadv.models import xla_cpu

FLAGS = flags.FLAGS

# impl -> get_model keyword arguments.
IMPLS = {
    "lax": {"kernels": "lax"},
    "xla_cpu": {"kernels": "xla_cpu"},
    "im2col": {"conv_fn": xla_cpu.conv2d_im2col},
    "im2col_grad": {"conv_fn": xla_cpu.conv2d_im2col_grad},
    "explicit": {"conv_fn": xla_cpu.conv2d},
}
# impl -> one convolution `(x, kernel, strides, pads) -> y`.
CONV_FNS = {"lax": layers.lax_conv, "xla_cpu": xla_cpu.conv,
            "im2col": xla_cpu.conv2d_im2col,
            "im2col_grad": xla_cpu.conv2d_im2col_grad,
            "explicit": xla_cpu.conv2d}


def _define_flags() -> None:
  flags.DEFINE_list("models", ["fast_at_mnist", "madry_cnn"], "Models.")
  flags.DEFINE_list("impls", ["lax", "xla_cpu", "im2col", "im2col_grad",
                              "explicit"], f"Conv impls: {list(IMPLS)}.")
  flags.DEFINE_integer("attack_batch", 500, "PGD batch size.")
  flags.DEFINE_integer("train_batch", 128, "Training batch size.")
  flags.DEFINE_integer("steps", 10, "PGD steps.")
  flags.DEFINE_integer("replays", 8, "Free-AT replays m.")
  flags.DEFINE_integer("repeats", 5, "Timed calls per setting and round.")
  flags.DEFINE_integer("rounds", 2, "Interleaved rounds over the impls.")
  flags.DEFINE_list("single_channels", [],
                    "Input channels for the single-conv table (none: skip).")


def _time(fn, *args, repeats: int) -> tuple[float, float]:
  """(median seconds per call after a warm-up call, compile seconds)."""
  compiled, compile_s = timing.compile_timed(fn, *args)
  return timing.median_seconds(lambda: compiled(*args), repeats), compile_s


def measure(model_name: str, impl: str, *, attack_batch: int,
            train_batch: int, steps: int, replays: int,
            repeats: int) -> dict:
  """Times PGD and training steps of `model_name` with the kernels `impl`
  (a key of `IMPLS`)."""
  model = models.get_model(model_name, **IMPLS[impl])
  x = jax.random.uniform(jax.random.key(1), (attack_batch, 28, 28, 1))
  y = jnp.arange(attack_batch) % 10
  variables = model.init(jax.random.key(0), x[:1])
  out = {"forward": _time(model.apply, variables, x,
                          repeats=repeats)}
  for loop, unroll in (("unroll", True), ("fori", False)):
    def attack(variables, x, y, key, unroll=unroll):
      loss_fn = losses.make_loss_fn(lambda v: model.apply(variables, v))
      return attacks.pgd(loss_fn, x, y, key, eps=0.3, step_size=0.01,
                         steps=steps, unroll=unroll)
    out[f"pgd_{loop}"] = _time(attack, variables, x, y,
                               jax.random.key(2), repeats=repeats)
  batch = {"x": x[:train_batch], "y": y[:train_batch]}
  steps_fns = {"natural": (training.natural_step(), False),
               "free_unroll": (training.free_at_step(replays=replays,
                                                     unroll=True), True),
               "free_fori": (training.free_at_step(replays=replays,
                                                   unroll=False), True)}
  for name, (step, free) in steps_fns.items():
    state = training.create_train_state(
        model, jax.random.key(0), (1, 28, 28, 1), optax.sgd(0.01, 0.9),
        eps=0.3, delta_shape=batch["x"].shape if free else None)
    fn = lambda s, b, k, step=step: step(s, b, k)[0]
    out[name] = _time(fn, state, batch, jax.random.key(3), repeats=repeats)
  return out


def _single_conv(conv_fn, x, kernel):
  return conv_fn(x, kernel, (2, 2), ((1, 1), (1, 1)))


def measure_single(channels: list[int], impls: list[str], batch: int,
                   repeats: int) -> dict:
  """ms per forward pass and per input gradient of one 4x4 / 2 conv.

  Returns `{(c_in, impl): (forward_ms, input_grad_ms)}`, each the median of
  `repeats` interleaved calls after a warm-up call.
  """
  calls = {}
  for c_in in channels:
    hw, c_out = (28, 16) if c_in <= 8 else (14, 2 * c_in)
    x = jax.random.normal(jax.random.key(1), (batch, hw, hw, c_in))
    kernel = jax.random.normal(jax.random.key(2), (4, 4, c_in, c_out))
    g = jax.random.normal(jax.random.key(3), (batch, hw // 2, hw // 2, c_out))
    for impl in impls:
      conv = functools.partial(_single_conv, CONV_FNS[impl])
      fwd = jax.jit(conv)
      grad = jax.jit(lambda x, k, g, conv=conv: jax.vjp(
          lambda a: conv(a, k), x)[1](g)[0])
      calls[(c_in, impl, "forward")] = (
          lambda f=fwd, x=x, k=kernel: f(x, k))
      calls[(c_in, impl, "input_grad")] = (
          lambda f=grad, x=x, k=kernel, g=g: f(x, k, g))
  med = timing.interleaved_medians(calls, repeats)
  return {(c, impl): (1e3 * med[(c, impl, "forward")],
                      1e3 * med[(c, impl, "input_grad")])
          for c, impl, _ in calls}


def main(argv):
  del argv
  print(f"backend {jax.default_backend()}, devices {jax.devices()}")
  if FLAGS.single_channels:
    channels = [int(c) for c in FLAGS.single_channels]
    res = measure_single(channels, FLAGS.impls, FLAGS.attack_batch,
                         FLAGS.repeats * FLAGS.rounds)
    print(f"\nOne 4x4 / 2 conv at batch {FLAGS.attack_batch}: forward / "
          f"input gradient, ms (xla_cpu.FEW_CHANNELS = "
          f"{xla_cpu.FEW_CHANNELS})\n")
    print("| C_in | " + " | ".join(FLAGS.impls) + " |")
    print("|---" * (len(FLAGS.impls) + 1) + "|")
    for c in channels:
      print(f"| {c} | " + " | ".join(
          f"{res[(c, i)][0]:.2f} / {res[(c, i)][1]:.2f}"
          for i in FLAGS.impls) + " |")
  cols = ["forward", "pgd_unroll", "pgd_fori", "natural", "free_unroll",
          "free_fori"]
  for model_name in FLAGS.models:
    res = {impl: [] for impl in FLAGS.impls}
    for _ in range(FLAGS.rounds):
      for impl in FLAGS.impls:
        res[impl].append(measure(
            model_name, impl, attack_batch=FLAGS.attack_batch,
            train_batch=FLAGS.train_batch, steps=FLAGS.steps,
            replays=FLAGS.replays, repeats=FLAGS.repeats))
    print(f"\n{model_name}: PGD-{FLAGS.steps} at batch {FLAGS.attack_batch}, "
          f"training steps at batch {FLAGS.train_batch} (free: m = "
          f"{FLAGS.replays}); ms per call, median "
          f"over {FLAGS.rounds} rounds (compile s in brackets)\n")
    print("| impl | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for impl, rounds in res.items():
      cells = []
      for c in cols:
        ms = 1e3 * float(np.median([r[c][0] for r in rounds]))
        first = float(np.median([r[c][1] for r in rounds]))
        cells.append(f"{ms:.1f} ({first:.1f})")
      print(f"| {impl} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
