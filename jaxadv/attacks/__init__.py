"""Attacks as pure functions: gradient attacks over a per-example
`loss_fn(x, y)`, and the score-based Square attack over `logits_fn(x)`.

The pieces they are built from are public: `jaxadv.attacks.core` (argument
checks, the input gradient, one projected step, restarts),
`jaxadv.projections` (balls and the box) and `jaxadv.loops` (the step loop).

Every attack is called `attack(loss_fn or logits_fn, x, y, key, *, eps,
...)`; `functools.partial(attacks.pgd, eps=8 / 255, steps=10)` is an attack
object with a fixed budget.
"""

from jaxadv.attacks import core
from jaxadv.attacks.apgd import apgd
from jaxadv.attacks.apgd import apgd_logits
from jaxadv.attacks.apgd import checkpoints as apgd_checkpoints
from jaxadv.attacks.eot import eot_pgd
from jaxadv.attacks.fab import fab
from jaxadv.attacks.fab import fab_min_norm
from jaxadv.attacks.fab import project_hyperplane
from jaxadv.attacks.fgsm import fgm
from jaxadv.attacks.fgsm import fgsm
from jaxadv.attacks.fgsm import fgsm_rs
from jaxadv.attacks.pgd import bim
from jaxadv.attacks.pgd import pgd
from jaxadv.attacks.registry import ATTACKS
from jaxadv.attacks.registry import get_attack
from jaxadv.attacks.square import p_schedule as square_p_schedule
from jaxadv.attacks.square import square
