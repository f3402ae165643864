"""Every gradient attack under one name and one signature.

`ATTACKS[name](loss_fn, x, y, key, **kwargs) -> x_adv` for each name: the
attacks' own signature, since every attack takes `(loss_fn or logits_fn, x,
y, key, *, eps, ...)`; those that draw no randomness (FGSM, FGM, BIM) ignore
`key`. `kwargs` are the attack's keyword arguments (`eps`, `step_size`,
`steps`, ...). An "attack object" is a `functools.partial` of one:
`attack = functools.partial(attacks.pgd, eps=8 / 255, steps=10)`, then
`attack(loss_fn, x, y, key)`.
"""

from __future__ import annotations

from typing import Callable

import jax

from jaxadv.attacks.apgd import apgd
from jaxadv.attacks.fgsm import fgm
from jaxadv.attacks.fgsm import fgsm
from jaxadv.attacks.fgsm import fgsm_rs
from jaxadv.attacks.pgd import bim
from jaxadv.attacks.pgd import pgd

Attack = Callable[..., jax.Array]
"""`(loss_fn, x [B, ...], y [B], key, **kwargs) -> x_adv [B, ...]`."""


ATTACKS: dict[str, Attack] = {
    "fgsm": fgsm,
    "fgm": fgm,
    "fgsm_rs": fgsm_rs,
    "bim": bim,
    "pgd": pgd,
    "apgd": apgd,
}


def get_attack(name: str) -> Attack:
  """The attack registered as `name`, with the registry's one signature.

  Args:
    name: one of `ATTACKS` ("fgsm", "fgm", "fgsm_rs", "bim", "pgd", "apgd").

  Returns:
    `attack(loss_fn, x, y, key, **kwargs) -> x_adv`.

  Raises:
    ValueError: unknown `name`.
  """
  if name not in ATTACKS:
    raise ValueError(f"name: expected one of {sorted(ATTACKS)}, got {name!r}")
  return ATTACKS[name]
