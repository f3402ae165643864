"""Attacks as pure functions: gradient attacks over a per-example
`loss_fn(x, y)`, and the score-based Square attack over `logits_fn(x)`."""

from jaxadv.attacks._loop import default_loop
from jaxadv.attacks._loop import run_loop
from jaxadv.attacks._projections import clip_box
from jaxadv.attacks._projections import l2_norm
from jaxadv.attacks._projections import project
from jaxadv.attacks._projections import random_init
from jaxadv.attacks.apgd import apgd
from jaxadv.attacks.apgd import apgd_logits
from jaxadv.attacks.apgd import checkpoints as apgd_checkpoints
from jaxadv.attacks.eot import eot_pgd
from jaxadv.attacks.fgsm import fgm
from jaxadv.attacks.fgsm import fgsm
from jaxadv.attacks.fgsm import fgsm_rs
from jaxadv.attacks.pgd import bim
from jaxadv.attacks.pgd import pgd
from jaxadv.attacks.square import p_schedule as square_p_schedule
from jaxadv.attacks.square import square

ATTACKS = {
    "fgsm": fgsm,
    "fgm": fgm,
    "fgsm_rs": fgsm_rs,
    "bim": bim,
    "pgd": pgd,
    "apgd": apgd,
}
