"""Every gradient attack under one name and one signature.

`ATTACKS[name](loss_fn, x, y, key, **kwargs) -> x_adv` for each name; the
attacks that draw no randomness (FGSM, FGM, BIM) ignore `key`. `kwargs` are
the attack's own keyword arguments (`eps`, `step_size`, `steps`, ...).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax

from jaxadv.attacks.apgd import apgd
from jaxadv.attacks.fgsm import fgm
from jaxadv.attacks.fgsm import fgsm
from jaxadv.attacks.fgsm import fgsm_rs
from jaxadv.attacks.pgd import bim
from jaxadv.attacks.pgd import pgd
from jaxadv.types import LossFn

Attack = Callable[..., jax.Array]
"""`(loss_fn, x [B, ...], y [B], key, **kwargs) -> x_adv [B, ...]`."""


def _keyless(fn: Callable[..., jax.Array]) -> Attack:
  """`fn(loss_fn, x, y, **kw)` as `attack(loss_fn, x, y, key, **kw)`."""
  @functools.wraps(fn)
  def attack(loss_fn: LossFn, x: jax.Array, y: jax.Array, key: jax.Array,
             **kwargs: Any) -> jax.Array:
    del key  # deterministic attack
    return fn(loss_fn, x, y, **kwargs)
  return attack


ATTACKS: dict[str, Attack] = {
    "fgsm": _keyless(fgsm),
    "fgm": _keyless(fgm),
    "fgsm_rs": fgsm_rs,
    "bim": _keyless(bim),
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
