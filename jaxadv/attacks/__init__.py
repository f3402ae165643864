"""Gradient attacks as pure functions over a per-example `loss_fn(x, y)`."""

from jaxadv.attacks._loop import default_loop
from jaxadv.attacks._loop import run_loop
from jaxadv.attacks._projections import clip_box
from jaxadv.attacks._projections import l2_norm
from jaxadv.attacks._projections import project
from jaxadv.attacks._projections import random_init
from jaxadv.attacks.eot import eot_pgd
from jaxadv.attacks.fgsm import fgm
from jaxadv.attacks.fgsm import fgsm
from jaxadv.attacks.fgsm import fgsm_rs
from jaxadv.attacks.pgd import bim
from jaxadv.attacks.pgd import pgd

ATTACKS = {
    "fgsm": fgsm,
    "fgm": fgm,
    "fgsm_rs": fgsm_rs,
    "bim": bim,
    "pgd": pgd,
}
