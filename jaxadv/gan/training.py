"""GAN training state and steps: k discriminator updates per generator update.

Goodfellow et al., NeurIPS 2014, Algorithm 1: for each generator update, `k`
discriminator updates on fresh real minibatches and fresh noise, then one
generator update on fresh noise. Adam (2e-4, beta1 0.5) as in DCGAN (Radford
et al., 2016) is the usual optimizer for both players.

Real images come in as pixels in [0, 1] and are mapped to the generator's
tanh range [-1, 1]. BatchNorm runs on batch statistics in both networks
(real and generated batches pass through D separately, as in the DCGAN
reference code); running statistics are updated by each network's own
update only.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxadv import validation
from jaxadv.gan import losses as gan_losses
from jaxadv.training.state import TrainState
from jaxadv.training.state import apply_model
from jaxadv.training.state import create_train_state


class GANState(flax.struct.PyTreeNode):
  """Both players' training states.

  Attributes:
    step: int32 [], generator updates done.
    generator: the generator's `TrainState` (params, Adam state, BN stats).
    discriminator: the discriminator's `TrainState`.
  """
  step: jax.Array
  generator: TrainState
  discriminator: TrainState


def create_gan_state(generator: nn.Module, discriminator: nn.Module,
                     key: jax.Array, *, latent_dim: int,
                     image_shape: Sequence[int],
                     tx_generator: optax.GradientTransformation,
                     tx_discriminator: optax.GradientTransformation
                     ) -> GANState:
  """Initialises both networks and their optimizers.

  Args:
    generator: `G(z [B, latent_dim], train) -> images [B, H, W, C]`.
    discriminator: `D(images, train) -> logits [B]`.
    key: PRNG key of the initialisation.
    latent_dim: size of z.
    image_shape: (H, W, C) of one image.
    tx_generator: the generator's optimizer (DCGAN: Adam 2e-4, b1 0.5).
    tx_discriminator: the discriminator's optimizer (the same in DCGAN).

  Returns:
    A `GANState` at step 0.

  Raises:
    TypeError, ValueError: `latent_dim` not a positive int.
  """
  validation.check_count(latent_dim, "latent_dim", 1)

  @jax.jit  # one compilation instead of op-by-op eager initialisation
  def create(key):
    k_g, k_d = jax.random.split(key)
    return GANState(
        step=jnp.zeros((), jnp.int32),
        generator=create_train_state(generator, k_g, (1, latent_dim),
                                     tx_generator),
        discriminator=create_train_state(discriminator, k_d,
                                         (1,) + tuple(image_shape),
                                         tx_discriminator))

  return create(key)


def sample(state: GANState, z: jax.Array, *, train: bool = True) -> jax.Array:
  """Generated images in [-1, 1] for latent codes z [B, latent_dim].

  `train=True` normalises with the batch's own statistics (the DCGAN
  reference code never switches G to eval mode); running statistics are not
  changed either way.
  """
  return apply_model(state.generator, state.generator.params, z,
                     train=train)[0]


def to_pixels(images: jax.Array) -> jax.Array:
  """[-1, 1] generator images -> pixels in [0, 1]."""
  return jnp.clip((images + 1.0) / 2.0, 0.0, 1.0)


def _fake_logits(state: GANState, g_params, z):
  """D's logits on G(z) (both in train mode) and G's new BN statistics."""
  fake, g_stats = apply_model(state.generator, g_params, z, train=True)
  logits, _ = apply_model(state.discriminator, state.discriminator.params,
                          fake, train=True)
  return logits, g_stats


def discriminator_update(state: GANState, x: jax.Array, z: jax.Array
                         ) -> tuple[GANState, dict]:
  """One discriminator update on real `x` [B, H, W, C] in [-1, 1] and G(z)."""
  fake = jax.lax.stop_gradient(sample(state, z))
  d = state.discriminator

  def loss_fn(params):
    real_logits, stats = apply_model(d, params, x, train=True)
    fake_logits, _ = apply_model(d.replace(batch_stats=stats), params, fake,
                                 train=True)
    loss = jnp.mean(gan_losses.discriminator_loss(real_logits, fake_logits))
    return loss, (real_logits, fake_logits, stats)

  (loss, (real_logits, fake_logits, stats)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(d.params)
  d = d.apply_gradients(grads=grads, batch_stats=stats)
  metrics = {"d_loss": loss,
             "d_real": gan_losses.mean_probability(real_logits),
             "d_fake": gan_losses.mean_probability(fake_logits)}
  return state.replace(discriminator=d), metrics


def generator_update(state: GANState, z: jax.Array, generator_loss: str
                     ) -> tuple[GANState, dict]:
  """One generator update on `generator_loss` of D(G(z))."""
  loss_of = gan_losses.get_generator_loss(generator_loss)
  g = state.generator

  def loss_fn(params):
    logits, stats = _fake_logits(state, params, z)
    return jnp.mean(loss_of(logits)), stats

  (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(g.params)
  g = g.apply_gradients(grads=grads, batch_stats=stats)
  metrics = {"g_loss": loss, "g_grad_norm": optax.tree.norm(grads)}
  return state.replace(generator=g, step=state.step + 1), metrics


def gan_step(*, latent_dim: int, k: int = 1,
             generator_loss: str = "non_saturating"):
  """A GAN training step: `k` discriminator updates, then one generator update.

  Goodfellow et al., 2014, Algorithm 1 (k = 1 in their experiments; DCGAN,
  Radford et al., 2016, also k = 1).

  Args:
    latent_dim: size of z ~ N(0, I), static.
    k: discriminator updates per generator update, static.
    generator_loss: "non_saturating" (`-log D(G(z))`, the default in
      practice) or "saturating" (`log(1 - D(G(z)))`, the minimax loss).

  Returns:
    `step(state, batch, key) -> (state, metrics)`: `batch["x"]` is float32
    [k * B, H, W, C] pixels in [0, 1], cut into k real minibatches of B; each
    update draws its own noise from `fold_in(key, state.step)`. Metrics:
    "d_loss" (mean over the k updates), "d_real", "d_fake" (mean D on real /
    generated images in the last D update), "g_loss", "g_grad_norm" (global
    L2 norm of the generator's parameter gradient).

  Raises:
    ValueError, TypeError: bad `k` / `latent_dim` / `generator_loss`; at
      trace time, a batch not divisible by `k`.
  """
  validation.check_count(latent_dim, "latent_dim", 1)
  validation.check_count(k, "k", 1)
  gan_losses.get_generator_loss(generator_loss)

  def step(state: GANState, batch: dict, key: jax.Array):
    x = batch["x"]
    if x.shape[0] % k:
      raise ValueError(f"the batch ({x.shape[0]} images) must hold k={k} "
                       f"minibatches of equal size.")
    b = x.shape[0] // k
    x = (2.0 * x - 1.0).reshape((k, b) + x.shape[1:])
    key = jax.random.fold_in(key, state.step)
    keys = jax.random.split(key, k + 1)
    d_loss = jnp.float32(0.0)
    for i in range(k):  # k is small: unrolled
      z = jax.random.normal(keys[i], (b, latent_dim))
      state, d_metrics = discriminator_update(state, x[i], z)
      d_loss = d_loss + d_metrics["d_loss"] / k
    z = jax.random.normal(keys[k], (b, latent_dim))
    state, g_metrics = generator_update(state, z, generator_loss)
    metrics = {**d_metrics, "d_loss": d_loss, **g_metrics}
    return state, metrics

  return step


def generator_gradient_norms(state: GANState, z: jax.Array) -> dict:
  """The generator's gradient magnitude under both losses, at one state.

  One forward pass of D(G(z)) and one backward pass per loss (`jax.vjp`).
  Under the saturating loss the logit gradient is `-D(G(z))`, under the
  non-saturating one `-(1 - D(G(z)))` (Goodfellow et al., 2014, Sec. 3).

  Args:
    state: the GAN state.
    z: float32 [B, latent_dim].

  Returns:
    float32 scalars: "saturating" and "non_saturating" (global L2 norm of
    d mean-loss / d generator params), "logit_saturating" and
    "logit_non_saturating" (mean |d loss / d logit|), "d_fake" (mean
    D(G(z))).
  """
  def logits_fn(params):
    return _fake_logits(state, params, z)[0]

  logits, vjp_fn = jax.vjp(logits_fn, state.generator.params)
  out = {"d_fake": gan_losses.mean_probability(logits)}
  for name, loss_of in gan_losses.GENERATOR_LOSSES.items():
    dloss_dlogit = jax.grad(lambda l: jnp.mean(loss_of(l)))(logits)
    (grads,) = vjp_fn(dloss_dlogit)
    out[name] = optax.tree.norm(grads)
    out[f"logit_{name}"] = jnp.mean(jnp.abs(dloss_dlogit)) * logits.shape[0]
  return out
