"""The optimizers of the CIFAR-10 adversarial-training references (optax).

Every CIFAR-10 reference trains with SGD, momentum 0.9 and L2 weight decay
added to the gradient before the momentum ("coupled" decay, not AdamW's):

| reference | code | weight decay | decayed |
| --- | --- | --- | --- |
| Wong, Rice & Kolter 2020 (fast AT; FGSM-RS, PGD-7, free) | locuslab/fast_adversarial `CIFAR10/train_{fgsm,pgd,free}.py`: `torch.optim.SGD(model.parameters(), lr, momentum=0.9, weight_decay=5e-4)` | 5e-4 | every parameter (`decay="all"`) |
| Shafahi et al. 2019 (free AT) | ashafahi/free_adv_train `free_train.py`: `MomentumOptimizer(lr, 0.9)` on `mean_xent + 2e-4 * sum(l2_loss(DW))` | 2e-4 | conv and dense kernels only (`decay="kernels"`) |
| Madry et al. 2018 (PGD AT) | MadryLab/cifar10_challenge `train.py`, `model.py` `_decay` (variables named `DW`) | 2e-4 | conv and dense kernels only (`decay="kernels"`) |
| Shafahi et al., PyTorch port (ImageNet) | mahyarnajibi/FreeAdversarialTraining `main_free.py`: `torch.optim.SGD(..., weight_decay=1e-4)` | 1e-4 | every parameter (`decay="all"`) |

TF's `weight_decay * tf.nn.l2_loss(w)` is `weight_decay / 2 * ||w||^2`, whose
gradient `weight_decay * w` is what `optax.add_decayed_weights` adds, and
TF's `MomentumOptimizer` and `torch.optim.SGD` (dampening 0) both keep
`v <- momentum * v + g`, `w <- w - lr * v`, which is `optax.sgd`'s update.
"""

from __future__ import annotations

from typing import Any, Union

import jax
import optax

from jaxadv import validation

DECAY = ("all", "kernels")
"""What `sgd`'s weight decay applies to: "all" parameters (PyTorch's
`weight_decay`) or only the "kernels" (leaves of rank >= 2: conv and dense
weights, not biases or BatchNorm scales and offsets; the TF references)."""


def kernels_mask(params: Any) -> Any:
  """True for the leaves of rank >= 2 (conv and dense kernels), else False.

  Args:
    params: a parameter pytree.

  Returns:
    A pytree of bools of the structure of `params` (an optax mask): biases,
    BatchNorm scales and offsets (rank 1) and scalars are False.
  """
  return jax.tree.map(lambda p: getattr(p, "ndim", 0) >= 2, params)


def sgd(learning_rate: Union[float, optax.Schedule], *,
        momentum: float = 0.9, weight_decay: float = 0.0,
        decay: str = "all", nesterov: bool = False
        ) -> optax.GradientTransformation:
  """SGD with momentum and coupled L2 weight decay (the CIFAR references).

  The update is `g <- g + weight_decay * w` (on the leaves `decay` names),
  `v <- momentum * v + g`, `w <- w - lr * v`: `torch.optim.SGD(...,
  momentum, weight_decay)` for `decay="all"` (Wong et al. 2020, fast AT:
  weight decay 5e-4), and TF's `MomentumOptimizer` on `loss + weight_decay *
  sum(l2_loss(kernel))` for `decay="kernels"` (Madry et al. 2018 and
  Shafahi et al. 2019, free AT: 2e-4). The module docstring has the table
  with the sources.

  Args:
    learning_rate: a float or an optax schedule (`jaxadv.training.schedules`).
    momentum: the momentum (0.9 in every reference); 0 = plain SGD.
    weight_decay: the L2 coefficient (>= 0).
    decay: "all" or "kernels" (`DECAY`).
    nesterov: Nesterov momentum (no reference uses it).

  Returns:
    An `optax.GradientTransformation`. With `decay="all"` it is exactly
    `optax.chain(optax.add_decayed_weights(weight_decay),
    optax.sgd(learning_rate, momentum=momentum))`.

  Raises:
    ValueError: negative `weight_decay` or `momentum`, unknown `decay`.
  """
  validation.check_nonnegative(weight_decay, "weight_decay")
  validation.check_nonnegative(momentum, "momentum")
  validation.check_choice(decay, "decay", DECAY)
  mask = None if decay == "all" else kernels_mask
  return optax.chain(
      optax.add_decayed_weights(weight_decay, mask=mask),
      optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov))
