"""Training: the shared step skeleton, trainers (VAT included), schedules, the loop."""

from jaxadv.training.loop import TrainResult
from jaxadv.training.loop import TrainingDivergedError
from jaxadv.training.loop import fit
from jaxadv.training.schedules import cyclic
from jaxadv.training.schedules import make_schedule
from jaxadv.training.schedules import piecewise
from jaxadv.training.state import TrainState
from jaxadv.training.state import apply_model
from jaxadv.training.state import create_train_state
from jaxadv.training.state import current_attack_params
from jaxadv.training.state import variables_of
from jaxadv.training.steps import fgsm_rs_step
from jaxadv.training.steps import free_at_step
from jaxadv.training.steps import iat_step
from jaxadv.training.steps import make_step
from jaxadv.training.steps import mixup_step
from jaxadv.training.steps import natural_step
from jaxadv.training.steps import pgd_at_step
from jaxadv.training.vat import kl_divergence
from jaxadv.training.vat import lds_loss
from jaxadv.training.vat import vat_step
from jaxadv.training.vat import virtual_adversarial_perturbation
