"""jaxadv: adversarial attacks, adversarial training and defences in JAX."""

from jaxadv import analysis
from jaxadv import attacks
from jaxadv import data
from jaxadv import defenses
from jaxadv import evaluation
from jaxadv import gan
from jaxadv import losses
from jaxadv import models
from jaxadv import parallel
from jaxadv import training
from jaxadv import transfer

__version__ = "0.1.0"
