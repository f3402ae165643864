"""Test configuration: real data comes from $JAXADV_DATA_DIR.

When the variable is unset, `<repo>/../shared/data` is used if it exists
(the layout of CI and the development machines).
"""

import os
import pathlib

import pytest

_DEFAULT = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
if "JAXADV_DATA_DIR" not in os.environ and _DEFAULT.is_dir():
  os.environ["JAXADV_DATA_DIR"] = str(_DEFAULT.resolve())


def _train_mnist_mlp():
  """A small MLP (784-64-10) trained naturally on 2,000 real MNIST images.

  Its `apply` takes `variables["grad"]` in {0., 1.}: 0 passes the input
  through `stop_gradient`, the same forward with masked (zero) input
  gradients. Both models share one `apply`, so jitted attacks compile once.
  """
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from jaxadv import data

  def apply(variables, x, train=False):
    del train
    g = variables["grad"]
    x = g * x + (1.0 - g) * jax.lax.stop_gradient(x)
    h = jax.nn.relu(x.reshape(x.shape[0], -1) @ variables["w1"] +
                    variables["b1"])
    return h @ variables["w2"] + variables["b2"]

  x, y = data.load("mnist", "train", limit=2000)
  x_test, y_test = data.load("mnist", "test", limit=500)
  k1, k2 = jax.random.split(jax.random.key(0))
  params = {"w1": jax.random.normal(k1, (784, 64)) / 28.0,
            "b1": jnp.zeros(64),
            "w2": jax.random.normal(k2, (64, 10)) / 8.0,
            "b2": jnp.zeros(10), "grad": jnp.float32(1.0)}
  opt = optax.adam(3e-3)

  @jax.jit
  def step(params, opt_state, xb, yb):
    def loss(p):
      return optax.softmax_cross_entropy_with_integer_labels(
          apply(p, xb), yb).mean()
    g = jax.grad(loss)(params)
    g["grad"] = jnp.zeros_like(g["grad"])
    updates, opt_state = opt.update(g, opt_state)
    return optax.apply_updates(params, updates), opt_state

  opt_state = opt.init(params)
  for epoch in range(4):
    perm = np.random.default_rng(epoch).permutation(len(x))
    for i in range(0, len(x), 100):
      idx = perm[i:i + 100]
      params, opt_state = step(params, opt_state, x[idx], y[idx])
  return apply, params, x_test, y_test.astype(np.int32)


@pytest.fixture(scope="session")
def mnist_mlp():
  """(apply, variables, x_test [500, 28, 28, 1], y_test) of a natural MLP."""
  return _train_mnist_mlp()
