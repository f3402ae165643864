"""GANs: minimax / non-saturating losses, DCGAN for 28x28, k-step training.

Goodfellow et al., "Generative Adversarial Nets", NeurIPS 2014; Radford,
Metz & Chintala, "Unsupervised Representation Learning with Deep
Convolutional Generative Adversarial Networks", ICLR 2016.
"""

from jaxadv.gan.dcgan import DCGANDiscriminator
from jaxadv.gan.dcgan import DCGANGenerator
from jaxadv.gan.losses import GENERATOR_LOSSES
from jaxadv.gan.losses import discriminator_loss
from jaxadv.gan.losses import get_generator_loss
from jaxadv.gan.losses import non_saturating_generator_loss
from jaxadv.gan.losses import saturating_generator_loss
from jaxadv.gan.metrics import class_histogram
from jaxadv.gan.metrics import entropy
from jaxadv.gan.metrics import frechet_distance
from jaxadv.gan.metrics import mean_confidence
from jaxadv.gan.training import GANState
from jaxadv.gan.training import create_gan_state
from jaxadv.gan.training import discriminator_update
from jaxadv.gan.training import gan_step
from jaxadv.gan.training import generator_gradient_norms
from jaxadv.gan.training import generator_update
from jaxadv.gan.training import sample
from jaxadv.gan.training import to_pixels
