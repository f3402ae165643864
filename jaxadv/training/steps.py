"""The training step skeleton and the trainers built on it.

Every trainer is `make_step(perturb, ...)`: a pure function
`step(state, batch, key) -> (state, metrics)` meant for `jax.jit`, with
`batch = {"x": float32 [B, H, W, C] in [0, 1], "y": int32 [B]}`. A step
derives its key once, `step_key(key, state) = fold_in(key, state.step)`,
asks the trainer's `perturb` what to train on (a `Perturbation`: inputs,
labels, `delta`, optional mixing and per-example weights), builds the loss
from the state in one place and makes ONE `jax.value_and_grad` over
(params, delta), which gives the parameter gradient and the perturbation
gradient together. Trainers differ only in how `delta` (and mixing) is
produced:

* natural: `delta = 0`;
* PGD AT (Madry et al., 2018): K PGD steps against the current parameters;
* FGSM-RS (Wong, Rice & Kolter, 2020): one step of size alpha from U(-eps, eps);
* free AT (Shafahi et al., 2019): `delta` lives in the state, the minibatch is
  replayed `replays` times, and each replay's single backward pass also
  updates it, `delta <- clip(delta + eps * sign(g_delta), -eps, eps)`
  (`make_step(..., replays=m, next_delta=...)`);
* mixup (Zhang et al., 2018) and interpolated AT (Lamb et al., 2019): a
  `Mix`; the (possibly perturbed) inputs are mixed with a permutation of the
  batch and the loss with the same permutation of the labels,
  `lam * CE(logits, y) + (1 - lam) * CE(logits, y[perm])`, the cross-entropy
  against the mixed one-hot targets;
* VAT (Miyato et al., 2018; `jaxadv.training.vat`): `delta = 0` plus a
  `regularizer`, an extra loss term (the LDS) prepared from the state.

Every trainer takes `augment`, a `(key, x) -> x` training augmentation (e.g.
`functools.partial(jaxadv.augment.crop_flip, padding=4)`), applied inside the
step to the clean batch before anything else, with the key
`fold_in(step_key, AUGMENT_KEY)`: free AT's replays see one draw and its
`delta` lives in the augmented image's coordinates, as in the official code.

The attacks of PGD AT and FGSM-RS take `attack_bn`, the BatchNorm mode of
their forward passes (`ATTACK_BN`; docs/cifar10.md lists what each
reference does): "update" (the default: batch statistics, and every attack
forward updates the running averages, as PyTorch's `model.train()` in
Wong et al.'s scripts and the TF code of Madry et al. do), "batch" (batch
statistics, running averages untouched: only the update's forward moves
them) or "eval" (running averages, as `model.eval()` while crafting).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxadv import validation
from jaxadv import attacks
from jaxadv import losses
from jaxadv.attacks import core as attack_core
from jaxadv import loops
from jaxadv import projections
from jaxadv.training.state import TrainState
from jaxadv.training.state import apply_model
from jaxadv.training.state import current_attack_params
from jaxadv.types import Batch
from jaxadv.types import Metrics
from jaxadv.types import PyTree

StepFn = Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]
"""`step(state, batch, key) -> (state, metrics)`."""

Augment = Callable[[jax.Array, jax.Array], jax.Array]
"""`(key, x [B, H, W, C]) -> x`, a training augmentation (`jaxadv.augment`)."""

AUGMENT_KEY = 0x61756721
"""The augmentation key of a step is `fold_in(step_key(key, state), AUGMENT_KEY)`
(a constant no trainer folds in itself, so its draws are independent of the
perturbation's)."""

ATTACK_BN = ("update", "batch", "eval")
"""BatchNorm modes of a training attack's forward passes (`pgd_at_step`,
`fgsm_rs_step`): "update" (their default) = batch statistics, each forward
updates the running averages (PyTorch `model.train()`, the references);
"batch" = batch statistics, running averages untouched; "eval" = the
running averages. `iat_step`'s attack runs "batch"."""


class Mix(NamedTuple):
  """One mixup draw for a batch (Zhang et al., 2018)."""
  lam: jax.Array   # float32 [] or [B], the weight of the original example
  perm: jax.Array  # int32 [B], the partner of each example


class Perturbation(NamedTuple):
  """What one update trains on: `clip(x + delta, 0, 1)`, optionally mixed.

  Attributes:
    x: float32 [B, ...] clean inputs in [0, 1].
    y: int32 [B] labels.
    delta: float32, the shape of `x`: the perturbation (a constant of the
      update; its gradient is still computed, for free AT).
    mix: when given, the inputs and the labels are mixed with `mix.perm`
      and `mix.lam`; the loss is `lam * CE(y) + (1 - lam) * CE(y[perm])`.
    weights: float32 [B] per-example loss weights (the loss is the batch
      mean of `weights * loss`); None = uniform.
    batch_stats: the BatchNorm running statistics the update's forward pass
      starts from (those after the attack's own updates, `attack_bn=
      "update"`); None = `state.batch_stats`.
  """
  x: jax.Array
  y: jax.Array
  delta: jax.Array
  mix: Optional[Mix] = None
  weights: Optional[jax.Array] = None
  batch_stats: Any = None


class Penalty(NamedTuple):
  """An extra loss term of one update, prepared from the state (VAT's LDS).

  Attributes:
    loss: `params -> (term float32 [], metrics)`: the term is added to the
      mean cross-entropy; the metrics (scalars) join the step's.
    batch_stats: BatchNorm statistics to keep after the update instead of
      those of the loss's forward pass; None keeps the loss pass's.
  """
  loss: Callable[[PyTree], tuple[jax.Array, Metrics]]
  batch_stats: Any = None


Perturb = Callable[[TrainState, Batch, jax.Array], Perturbation]
"""`(state, batch, key) -> Perturbation`, at the current parameters."""

Regularizer = Callable[[TrainState, Batch, jax.Array], Penalty]
"""`(state, batch, key) -> Penalty`, at the current parameters."""

NextDelta = Callable[[TrainState, jax.Array, jax.Array], jax.Array]
"""`(state before the update, delta, g_delta) -> the next state.delta`."""


def step_key(key: jax.Array, state: TrainState) -> jax.Array:
  """The key of one step: `jax.random.fold_in(key, state.step)`.

  Args:
    key: the run's root key (the same at every step).
    state: the state before the step.

  Returns:
    A key that differs at every step (a resumed run redraws the same keys).
  """
  return jax.random.fold_in(key, state.step)


def draw_mix(key: jax.Array, batch_size: int, alpha: float) -> Mix:
  """`lam ~ Beta(alpha, alpha)` and a random pairing of the batch.

  Args:
    key: PRNG key.
    batch_size: B, static.
    alpha: the Beta parameter, > 0.

  Returns:
    A `Mix` with a float32 scalar `lam` and an int32 [B] permutation.
  """
  k_lam, k_perm = jax.random.split(key)
  lam = jax.random.beta(k_lam, alpha, alpha).astype(jnp.float32)
  return Mix(lam, jax.random.permutation(k_perm, batch_size))


def _mixed(mix: Mix, a: jax.Array) -> jax.Array:
  lam = _bcast(mix.lam, a.ndim) if jnp.ndim(mix.lam) else mix.lam
  return lam * a + (1.0 - lam) * a[mix.perm]


def _loss_fn(state: TrainState, p: Perturbation, penalty: Optional[Penalty]):
  """The loss of one update, `(params, delta) -> (loss, aux)`, from the state.

  `aux` is (logits, the loss pass's batch_stats, metrics without accuracy).
  """
  def loss_fn(params, delta):
    inputs = jnp.clip(p.x + delta, 0.0, 1.0)
    if p.mix is not None:
      inputs = _mixed(p.mix, inputs)
    logits, batch_stats = apply_model(state, params, inputs, train=True)
    per_example = losses.cross_entropy(logits, p.y)
    if p.mix is not None:
      per_example = (p.mix.lam * per_example + (1.0 - p.mix.lam) *
                     losses.cross_entropy(logits, p.y[p.mix.perm]))
    if p.weights is not None:
      per_example = p.weights * per_example
    loss = jnp.mean(per_example)
    metrics = {"loss": loss}
    if penalty is not None:
      term, extra = penalty.loss(params)
      metrics = {"loss": loss + term, "ce": loss, **extra}
    return metrics["loss"], (logits, batch_stats, metrics)

  return loss_fn


def _update(state: TrainState, p: Perturbation, penalty: Optional[Penalty],
            next_delta: Optional[NextDelta]) -> tuple[TrainState, Metrics]:
  """One optimizer update: ONE `jax.value_and_grad` over (params, delta).

  The perturbation gradient comes out of the same backward pass as the
  parameter gradient (unused, XLA prunes it under jit).
  """
  loss_state = (state if p.batch_stats is None else
                state.replace(batch_stats=p.batch_stats))
  grad_fn = jax.value_and_grad(_loss_fn(loss_state, p, penalty),
                               argnums=(0, 1), has_aux=True)
  delta = jax.lax.stop_gradient(p.delta)
  (_, (logits, batch_stats, metrics)), (g_params, g_delta) = grad_fn(
      state.params, delta)
  if penalty is not None and penalty.batch_stats is not None:
    batch_stats = penalty.batch_stats
  new = state.apply_gradients(grads=g_params, batch_stats=batch_stats)
  if next_delta is not None:
    new = new.replace(delta=next_delta(state, delta, g_delta))
  target = p.y
  if p.mix is not None:  # mixup accuracy: agreement with the dominant label
    target = jnp.where(p.mix.lam >= 0.5, p.y, p.y[p.mix.perm])
  metrics["accuracy"] = jnp.mean(jnp.argmax(logits, -1) == target)
  return new, metrics


def _check_unroll(unroll: Optional[bool]) -> None:
  if unroll is not None and not isinstance(unroll, bool):
    raise TypeError(f"unroll: expected True, False or None, got {unroll!r}")


def _check_augment(augment: Optional[Augment]) -> None:
  if augment is not None and not callable(augment):
    raise TypeError(f"augment: expected None or a callable (key, x) -> x, "
                    f"got {augment!r}")


def augmented(batch: Batch, key: jax.Array,
              augment: Optional[Augment]) -> Batch:
  """`batch` with `x <- augment(fold_in(key, AUGMENT_KEY), x)`; as is for None.

  Args:
    batch: {"x": float32 [B, H, W, C], "y": int32 [B]}.
    key: the step's key (`step_key`).
    augment: `(key, x) -> x`, or None.

  Returns:
    The batch to train on (the same object when `augment` is None).
  """
  if augment is None:
    return batch
  x = augment(jax.random.fold_in(key, AUGMENT_KEY), batch["x"])
  return {**batch, "x": x}


def make_step(perturb: Perturb, *, regularizer: Optional[Regularizer] = None,
              replays: Optional[int] = None,
              next_delta: Optional[NextDelta] = None,
              unroll: Optional[bool] = None,
              augment: Optional[Augment] = None,
              requires: tuple[str, ...] = ()) -> StepFn:
  """The one step skeleton every trainer is built from.

  Per step: `key = step_key(key, state)`; with `augment`, the batch's
  images become `augment(fold_in(key, AUGMENT_KEY), x)` (once per step,
  before the replays); then (`replays` times, when
  given) `perturb` and `regularizer` at the current parameters, and ONE
  `jax.value_and_grad` over (params, delta) of

      mean(weights * CE(model(mix(clip(x + delta, 0, 1))), y))  [+ penalty]

  followed by the optimizer update (and `state.delta <- next_delta(...)`).

  Args:
    perturb: `(state, batch, key) -> Perturbation`: what to train on.
    regularizer: `(state, batch, key) -> Penalty`: an extra loss term
      (VAT's LDS); with it the metrics also hold "ce", the cross-entropy.
    replays: None = one update per step; an int m >= 1 replays the batch m
      times in a `jaxadv.loops.run_loop` (free AT), `state.step` advancing
      by m and the metrics averaged over the replays (static).
    next_delta: `(state, delta, g_delta) -> new state.delta`, called with
      the state before each update (free AT's ascent); None leaves
      `state.delta` alone.
    unroll: the replay loop's form: True unrolled, False rolled, None
      `jaxadv.loops.default_unroll()`.
    augment: `(key, x) -> x`, a training augmentation applied to the clean
      images inside the step (e.g. `functools.partial(
      jaxadv.augment.crop_flip, padding=4)`); None = none, and the step's
      keys are exactly those without it.
    requires: the `state.attack_params` the step needs non-zero ("eps",
      "step_size"); `training.fit` warns when one is 0 (the step would
      silently train naturally, or never leave its random start). Kept as
      `step.requires`.

  Returns:
    `step(state, batch, key) -> (state, metrics)`; metrics "loss" and
    "accuracy" (float32 scalars), plus the penalty's.

  Raises:
    ValueError, TypeError: `replays < 1`, `replays` with a `regularizer`
      (the replay loop averages "loss" and "accuracy" only), bad `unroll`,
      an `augment` that is not callable.
  """
  if replays is not None:
    validation.check_count(replays, "replays", 1)
    if regularizer is not None:
      raise ValueError("`replays` with a `regularizer` is not supported.")
  _check_unroll(unroll)
  _check_augment(augment)

  def update(state: TrainState, batch: Batch, key: jax.Array):
    p = perturb(state, batch, key)
    penalty = None if regularizer is None else regularizer(state, batch, key)
    return _update(state, p, penalty, next_delta)

  def step(state: TrainState, batch: Batch, key: jax.Array):
    key = step_key(key, state)
    batch = augmented(batch, key, augment)
    if replays is None:
      return update(state, batch, key)

    def replay(_, carry):
      state, total = carry
      state, metrics = update(state, batch, key)
      return state, jax.tree.map(jnp.add, total, metrics)

    zeros = {"loss": jnp.float32(0), "accuracy": jnp.float32(0)}
    state, total = loops.run_loop(replays, replay, (state, zeros),
                                  unroll=unroll)
    return state, jax.tree.map(lambda v: v / replays, total)

  step.requires = tuple(requires)
  return step


def _check_attack_options(norm: str, steps: Optional[int] = None,
                          unroll: Optional[bool] = None,
                          attack_bn: str = "batch") -> None:
  """Checks a trainer's static attack options when it is built, not traced."""
  validation.check_choice(norm, "norm", projections.NORMS)
  if steps is not None:
    validation.check_count(steps, "steps", 0)
  _check_unroll(unroll)
  validation.check_choice(attack_bn, "attack_bn", ATTACK_BN)


def _attack_loss_fn(state: TrainState, attack_bn: str = "batch"
                    ) -> losses.LossFn:
  """The attack's loss at the current parameters, for `attack_bn` "batch"
  (BN on batch statistics, no update), "eval" (BN on running averages) or
  "update" on a model without BatchNorm (nothing to update: the same)."""
  train = attack_bn != "eval"

  def logits_fn(x):
    return apply_model(state, state.params, x, train=train)[0]
  return losses.make_loss_fn(logits_fn, "ce")


def _ascent_updating_bn(state: TrainState, x: jax.Array, y: jax.Array,
                        delta: jax.Array, *, eps, step_size, steps: int,
                        norm: str, unroll: Optional[bool]):
  """`steps` ascent steps from `delta`, each forward updating the BN stats.

  The forward passes run in train mode (batch statistics), so the deltas
  are those of `attacks.pgd` / `attacks.fgsm_rs` from the same start; what
  differs is that every forward also moves the running averages, threaded
  through the loop, as PyTorch's `model.train()` does while crafting.

  Returns:
    (delta after the steps, batch_stats after `steps` updates).
  """
  def body(_, carry):
    d, stats = carry
    at = state.replace(batch_stats=stats)

    def total(d):
      logits, new_stats = apply_model(at, state.params, x + d, train=True)
      return jnp.sum(losses.cross_entropy(logits, y)), new_stats

    g, stats = jax.grad(total, has_aux=True)(d)
    d = attack_core.ascend(x, d, g, eps=eps, step_size=step_size, norm=norm)
    return d, stats

  return loops.run_loop(steps, body, (delta, state.batch_stats),
                        unroll=unroll)


def clean_inputs(state: TrainState, batch: Batch, key: jax.Array
                 ) -> Perturbation:
  """The `Perturb` of natural training: `delta = 0`."""
  del state, key
  return Perturbation(batch["x"], batch["y"], jnp.zeros_like(batch["x"]))


def _pgd(*, steps: int, norm: str, random_start: bool,
         unroll: Optional[bool], attack_bn: str = "batch") -> Perturb:
  """K PGD steps (eps, step size from `state.attack_params`) as a `Perturb`."""
  def perturb(state, batch, key):
    x, y = batch["x"], batch["y"]
    eps, step_size = current_attack_params(state)
    if attack_bn == "update" and state.batch_stats:
      # `attacks.pgd`'s one run starts from the key `fold_in(key, 0)`.
      delta = attack_core.start(jax.random.fold_in(key, 0), x, eps, norm,
                                random_start)
      delta, stats = _ascent_updating_bn(
          state, x, y, delta, eps=eps, step_size=step_size, steps=steps,
          norm=norm, unroll=unroll)
      return Perturbation(x, y, delta, batch_stats=stats)
    x_adv = attacks.pgd(_attack_loss_fn(state, attack_bn), x, y, key,
                        eps=eps, step_size=step_size, steps=steps, norm=norm,
                        random_start=random_start, unroll=unroll)
    return Perturbation(x, y, x_adv - x)

  return perturb


def natural_step(*, augment: Optional[Augment] = None) -> StepFn:
  """Natural (standard) training: `delta = 0`.

  Args:
    augment: `(key, x) -> x` training augmentation (`make_step`), or None.

  Returns:
    `step(state, batch, key) -> (state, metrics)`.
  """
  return make_step(clean_inputs, augment=augment)


def pgd_at_step(*, steps: int, norm: str = "linf", random_start: bool = True,
                unroll: Optional[bool] = None, attack_bn: str = "update",
                augment: Optional[Augment] = None) -> StepFn:
  """K-PGD adversarial training (Madry et al., 2018).

  Each step runs `steps` PGD steps (eps and step size from
  `state.attack_params`, pixel units) on the current parameters, then one
  update on the adversarial batch: about `steps + 1` forward-backward passes.

  Args:
    steps: K, the static number of PGD steps.
    norm: "linf" or "l2".
    random_start: uniform start in the ball.
    unroll: unroll the step loop (True), roll it (False) or None
      (`jaxadv.loops.default_unroll()`: unrolled on CPU only).
    attack_bn: the BatchNorm mode of the K attack forwards (`ATTACK_BN`):
      "update" (default, as the references, Madry et al.'s TF code and Wong
      et al.'s `train_pgd.py`: batch statistics, K + 1 running-average
      updates per step), "batch" (batch statistics, running averages
      untouched by the attack: one update per step, the update's) or
      "eval" (running averages; one update). The perturbation is the same
      for "update" and "batch". Models without BatchNorm ignore it.
    augment: `(key, x) -> x` training augmentation (`make_step`), or None.

  Returns:
    `step(state, batch, key) -> (state, metrics)`; the metrics are those of
    the adversarial batch.

  Raises:
    ValueError, TypeError: `steps < 0`, unknown `norm` or `attack_bn`, bad
      `unroll` or `augment`.
  """
  _check_attack_options(norm, steps, unroll, attack_bn)
  return make_step(_pgd(steps=steps, norm=norm, random_start=random_start,
                        unroll=unroll, attack_bn=attack_bn), augment=augment,
                   requires=("eps", "step_size") if steps else ("eps",))


def fgsm_rs_step(*, norm: str = "linf", attack_bn: str = "update",
                 augment: Optional[Augment] = None) -> StepFn:
  """FGSM-RS "fast" adversarial training (Wong, Rice & Kolter, 2020).

  `delta0 ~ U(-eps, eps)`, one step of size `state.attack_params["step_size"]`
  (alpha; 1.25 eps in the paper, 0.375 for eps 0.3 on MNIST), then one update:
  two forward-backward passes per step.

  Args:
    norm: "linf" or "l2".
    attack_bn: the BatchNorm mode of the attack's forward (`ATTACK_BN`):
      "update" (default, as Wong et al.'s `train_fgsm.py`, `model.train()`
      throughout: two running-average updates per step), "batch" (one, the
      update's; the same perturbation) or "eval" (running averages; one).
    augment: `(key, x) -> x` training augmentation (`make_step`), or None.

  Returns:
    `step(state, batch, key) -> (state, metrics)`.

  Raises:
    ValueError, TypeError: unknown `norm` or `attack_bn`, bad `augment`.
  """
  _check_attack_options(norm, attack_bn=attack_bn)

  def perturb(state, batch, key):
    x, y = batch["x"], batch["y"]
    eps, step_size = current_attack_params(state)
    if attack_bn == "update" and state.batch_stats:
      delta = attack_core.start(key, x, eps, norm, True)
      delta, stats = _ascent_updating_bn(
          state, x, y, delta, eps=eps, step_size=step_size, steps=1,
          norm=norm, unroll=None)
      return Perturbation(x, y, delta, batch_stats=stats)
    x_adv = attacks.fgsm_rs(_attack_loss_fn(state, attack_bn), x, y, key,
                            eps=eps, step_size=step_size, norm=norm)
    return Perturbation(x, y, x_adv - x)

  return make_step(perturb, augment=augment, requires=("eps", "step_size"))


def _free_delta(state: TrainState, batch: Batch, key: jax.Array
                ) -> Perturbation:
  """Free AT's `Perturb`: the persistent `state.delta` (no randomness)."""
  del key
  x, y = batch["x"], batch["y"]
  if state.delta is None or state.delta.shape != x.shape:
    raise ValueError(
        "free AT needs `state.delta` with the fixed batch shape "
        f"{x.shape} (create_train_state(..., delta_shape=...), drop the "
        f"last partial batch); got "
        f"{None if state.delta is None else state.delta.shape}.")
  return Perturbation(x, y, state.delta)


def _free_ascent(state: TrainState, delta: jax.Array, g_delta: jax.Array
                 ) -> jax.Array:
  """`clip(delta + eps * sign(g_delta), -eps, eps)`, eps at `state.step`."""
  eps, _ = current_attack_params(state)
  return jnp.clip(delta + eps * jnp.sign(g_delta), -eps, eps)


def free_at_step(*, replays: int, unroll: Optional[bool] = None,
                 augment: Optional[Augment] = None) -> StepFn:
  """Free adversarial training (Shafahi et al., NeurIPS 2019).

  Replays the minibatch `replays` (m) times. Each replay is ONE
  `jax.value_and_grad` over (params, delta): the parameter gradient updates
  the model, and the delta gradient updates the perturbation,
  `delta <- clip(delta + eps * sign(g_delta), -eps, eps)`. `state.delta`
  (fixed batch shape) is carried over to the next minibatch, never reset. Run
  for `epochs / m` passes over the data to match natural training's cost.

  BatchNorm: every replay's one forward pass is in train mode and updates
  the running averages (m updates per minibatch), as in the official code
  (Shafahi et al.'s TF `free_train.py` and the PyTorch `main_free.py`).
  With `augment`, the minibatch is augmented once per step: the m replays
  see one draw, and `delta` lives in the augmented image's coordinates.

  Args:
    replays: m, static.
    unroll: unroll the replay loop (True), roll it (False) or None
      (`jaxadv.loops.default_unroll()`).
    augment: `(key, x) -> x` training augmentation (`make_step`), or None.

  Returns:
    `step(state, batch, key) -> (state, metrics)`; `state.step` advances by
    `replays`; metrics are averaged over the replays.

  Raises:
    ValueError, TypeError: `replays < 1`, bad `unroll` or `augment`; at
      trace time,
      when `state.delta` is missing or its shape differs from the batch's.
  """
  return make_step(_free_delta, replays=replays, next_delta=_free_ascent,
                   unroll=unroll, augment=augment, requires=("eps",))


def _check_alpha(alpha: float) -> None:
  if not alpha > 0:
    raise ValueError(f"`alpha` (the Beta(alpha, alpha) mixup parameter) must "
                     f"be > 0; got {alpha}.")


def mixup_step(*, alpha: float = 1.0,
               augment: Optional[Augment] = None) -> StepFn:
  """Mixup training (Zhang, Cisse, Dauphin & Lopez-Paz, ICLR 2018).

  Per step: `lam ~ Beta(alpha, alpha)` and a random permutation `perm` of
  the batch (`draw_mix` with the step key); trains on
  `x~ = lam x + (1 - lam) x[perm]` with targets
  `y~ = lam onehot(y) + (1 - lam) onehot(y[perm])`. One forward-backward pass,
  the cost of a natural step.

  Args:
    alpha: the Beta parameter (1.0 in the paper for CIFAR; 0.2-0.4 for small
      networks). Python float.
    augment: `(key, x) -> x` training augmentation (`make_step`), or None.

  Returns:
    `step(state, batch, key) -> (state, metrics)`; "accuracy" is the
    agreement with the dominant label of each mixed pair.

  Raises:
    ValueError: `alpha <= 0`.
  """
  _check_alpha(alpha)

  def perturb(state, batch, key):
    p = clean_inputs(state, batch, key)
    return p._replace(mix=draw_mix(key, p.x.shape[0], alpha))

  return make_step(perturb, augment=augment)


def iat_step(*, alpha: float = 1.0, steps: int = 10, adv_ratio: float = 0.5,
             norm: str = "linf", random_start: bool = True,
             unroll: Optional[bool] = None, attack_bn: str = "batch",
             augment: Optional[Augment] = None) -> StepFn:
  """Interpolated adversarial training (Lamb, Verma, Kannala & Bengio, 2019).

  Per step: PGD (`steps` steps, eps and step size from `state.attack_params`,
  pixel units) on the clean batch against the current parameters, then ONE
  update on the concatenation [clean batch, adversarial batch], each half
  mixed with its own `lam ~ Beta(alpha, alpha)` and permutation; the clean
  mixup loss has weight `1 - adv_ratio` and the adversarial one `adv_ratio`.
  About `steps + 2` forward-backward passes of one batch.

  Args:
    alpha: mixup Beta parameter.
    steps: PGD steps for the adversarial half (10 in the paper), static.
    adv_ratio: weight of the adversarial mixup loss, in [0, 1] (0.5 = 1:1).
    norm: "linf" or "l2".
    random_start: PGD's uniform random start.
    unroll: unroll the step loop (True), roll it (False) or None
      (`jaxadv.loops.default_unroll()`: unrolled on CPU only).
    attack_bn: the BatchNorm mode of the PGD forwards (`ATTACK_BN`):
      "batch" (default: batch statistics, running averages untouched),
      "eval" (running averages: Pang et al.'s released IAT code runs the
      attack under `model.eval()`) or "update".
    augment: `(key, x) -> x` training augmentation (`make_step`), or None.

  Returns:
    `step(state, batch, key) -> (state, metrics)`; metrics of the doubled
    batch [clean, adversarial].

  Raises:
    ValueError, TypeError: `alpha <= 0`, `adv_ratio` outside [0, 1],
      `steps < 0`, unknown `norm` or `attack_bn`, bad `unroll`.
  """
  _check_alpha(alpha)
  _check_attack_options(norm, steps, unroll)
  validation.check_choice(attack_bn, "attack_bn", ATTACK_BN)
  if not 0.0 <= adv_ratio <= 1.0:
    raise ValueError(f"`adv_ratio` must be in [0, 1]; got {adv_ratio}.")
  pgd = _pgd(steps=steps, norm=norm, random_start=random_start, unroll=unroll,
             attack_bn=attack_bn)

  def perturb(state, batch, key):
    x, y = batch["x"], batch["y"]
    k_pgd, k_clean, k_adv = jax.random.split(key, 3)
    delta = jax.lax.stop_gradient(pgd(state, batch, k_pgd).delta)
    b = x.shape[0]
    clean_mix, adv_mix = draw_mix(k_clean, b, alpha), draw_mix(k_adv, b, alpha)
    # One mix over the doubled batch: each half pairs only within itself.
    mix = Mix(lam=jnp.concatenate([jnp.full((b,), clean_mix.lam),
                                   jnp.full((b,), adv_mix.lam)]),
              perm=jnp.concatenate([clean_mix.perm, adv_mix.perm + b]))
    weights = 2.0 * jnp.concatenate([jnp.full((b,), 1.0 - adv_ratio),
                                     jnp.full((b,), adv_ratio)])
    return Perturbation(jnp.concatenate([x, x]), jnp.concatenate([y, y]),
                        jnp.concatenate([jnp.zeros_like(x), delta]),
                        mix=mix, weights=weights)

  return make_step(perturb, augment=augment,
                   requires=("eps", "step_size") if steps else ("eps",))


def _bcast(lam: jax.Array, ndim: int) -> jax.Array:
  """Per-example lam [B] -> [B, 1, ..., 1] for the inputs (rank `ndim`)."""
  return lam.reshape(lam.shape + (1,) * (ndim - 1))
