"""GAN losses from discriminator logits (Goodfellow et al., NeurIPS 2014).

With `D(x) = sigmoid(l(x))` the discriminator's probability that `x` is real
and `l` its logit, the minimax game is

    min_G max_D  E_x log D(x) + E_z log(1 - D(G(z))).

Every loss here is written with `log_sigmoid` of the logits,
`log D = log_sigmoid(l)` and `log(1 - D) = log_sigmoid(-l)`, so it stays
finite and accurate when D saturates. Each maps logits `[B]` (or `[B, 1]`) to
a per-example loss `[B]` that the player minimises.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

GeneratorLoss = Callable[[jax.Array], jax.Array]


def _flat(logits: jax.Array, name: str) -> jax.Array:
  if logits.ndim == 2 and logits.shape[-1] == 1:
    logits = logits[:, 0]
  if logits.ndim != 1:
    raise ValueError(f"`{name}` must be discriminator logits of shape [B] or "
                     f"[B, 1]; got shape {logits.shape}.")
  return logits


def discriminator_loss(real_logits: jax.Array,
                       fake_logits: jax.Array) -> jax.Array:
  """The discriminator's minimax loss, `-log D(x) - log(1 - D(G(z)))`.

  Goodfellow et al., 2014, eq. (1): D ascends the value function, i.e.
  minimises this binary cross-entropy (real = 1, generated = 0).

  Args:
    real_logits: float [B] (or [B, 1]), D's logits on real images.
    fake_logits: float [B] (or [B, 1]), D's logits on generated images (the
      same B).

  Returns:
    float [B], in nats.

  Raises:
    ValueError: logits of another shape, or batches of different sizes.
  """
  real = _flat(real_logits, "real_logits")
  fake = _flat(fake_logits, "fake_logits")
  if real.shape != fake.shape:
    raise ValueError(f"`real_logits` and `fake_logits` must have the same "
                     f"batch size; got {real.shape} and {fake.shape}.")
  return -jax.nn.log_sigmoid(real) - jax.nn.log_sigmoid(-fake)


def saturating_generator_loss(fake_logits: jax.Array) -> jax.Array:
  """The minimax generator loss `log(1 - D(G(z)))` (minimised by G).

  Goodfellow et al., 2014, eq. (1). Its gradient with respect to the logit
  is `-D(G(z))`: it vanishes when D confidently rejects the samples, which
  is the state early in training ("saturation").

  Args:
    fake_logits: float [B] (or [B, 1]), D's logits on generated images.

  Returns:
    float [B], <= 0.

  Raises:
    ValueError: logits of another shape.
  """
  return jax.nn.log_sigmoid(-_flat(fake_logits, "fake_logits"))


def non_saturating_generator_loss(fake_logits: jax.Array) -> jax.Array:
  """The non-saturating generator loss `-log D(G(z))`.

  Goodfellow et al., 2014, Sec. 3: the same fixed point as the minimax loss,
  but its logit gradient is `-(1 - D(G(z)))`, close to -1 exactly when D
  rejects the samples.

  Args:
    fake_logits: float [B] (or [B, 1]), D's logits on generated images.

  Returns:
    float [B], >= 0.

  Raises:
    ValueError: logits of another shape.
  """
  return -jax.nn.log_sigmoid(_flat(fake_logits, "fake_logits"))


GENERATOR_LOSSES: dict[str, GeneratorLoss] = {
    "saturating": saturating_generator_loss,
    "non_saturating": non_saturating_generator_loss,
}


def get_generator_loss(name: str) -> GeneratorLoss:
  """The generator loss by name: "saturating" or "non_saturating".

  Raises:
    ValueError: unknown name.
  """
  if name not in GENERATOR_LOSSES:
    raise ValueError(f"`generator_loss` must be one of "
                     f"{sorted(GENERATOR_LOSSES)}; got {name!r}.")
  return GENERATOR_LOSSES[name]


def mean_probability(logits: jax.Array) -> jax.Array:
  """Mean of `D = sigmoid(logits)` over the batch (a float32 scalar)."""
  return jnp.mean(jax.nn.sigmoid(_flat(logits, "logits")))
