"""Inference-time defences: Mixup Inference and randomized input transforms."""

from jaxadv.defenses.adaptive import mi_average_perturbation_pgd
from jaxadv.defenses.adaptive import mi_mixed_space_pgd
from jaxadv.defenses.adaptive import probs_loss_fn
from jaxadv.defenses.input_transforms import TRANSFORMS
from jaxadv.defenses.input_transforms import gaussian_noise
from jaxadv.defenses.input_transforms import random_crop_resize
from jaxadv.defenses.input_transforms import random_resize_pad
from jaxadv.defenses.input_transforms import random_rotation
from jaxadv.defenses.input_transforms import rotate
from jaxadv.defenses.input_transforms import randomized_inference
from jaxadv.defenses.metrics import detection_auc
from jaxadv.defenses.metrics import detection_gap
from jaxadv.defenses.metrics import ric
from jaxadv.defenses.mixup_inference import MIOutput
from jaxadv.defenses.mixup_inference import SamplePool
from jaxadv.defenses.mixup_inference import draw_partners
from jaxadv.defenses.mixup_inference import make_pool
from jaxadv.defenses.mixup_inference import mi_combined
from jaxadv.defenses.mixup_inference import mi_ol
from jaxadv.defenses.mixup_inference import mi_pl
