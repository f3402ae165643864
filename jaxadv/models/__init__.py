"""Flax Linen image classifiers used in adversarial-robustness papers.

All models take NHWC float32 images in [0, 1] and return logits
`[B, num_classes]`; `__call__(x, train=False)`. BatchNorm models keep running
statistics in the `batch_stats` collection.
"""

from jaxadv.models import layers
from jaxadv.models import normalize
from jaxadv.models import xla_cpu
from jaxadv.models.cifar_compact import CompactCNN
from jaxadv.models.dm_wide_resnet import DMWideResNet
from jaxadv.models.dm_wide_resnet import DMWideResNet16_2
from jaxadv.models.dm_wide_resnet import DMWideResNet28_10
from jaxadv.models.dm_wide_resnet import DMWideResNet70_16
from jaxadv.models.dm_wide_resnet import DMWideResNetBlock
from jaxadv.models.layers import Conv
from jaxadv.models.linear import LinearSoftmax
from jaxadv.models.linear import sklearn_variables
from jaxadv.models.mnist import FastATMNIST
from jaxadv.models.mnist import MadryCNN
from jaxadv.models.mlp import MLP
from jaxadv.models.normalize import Normalized
from jaxadv.models.mlp import VATMLP
from jaxadv.models.registry import KERNELS
from jaxadv.models.registry import get_model
from jaxadv.models.registry import has_batch_norm
from jaxadv.models.registry import init_model
from jaxadv.models.registry import list_models
from jaxadv.models.registry import register_model
from jaxadv.models.resnet import PreActBlock
from jaxadv.models.torch_import import TORCH_LAYOUTS
from jaxadv.models.torch_import import load_torch_state_dict
from jaxadv.models.resnet import PreActResNet18
from jaxadv.models.resnet import Bottleneck
from jaxadv.models.resnet import ResNet50
from jaxadv.models.wide_resnet import WideBasicBlock
from jaxadv.models.wide_resnet import WideResNet
from jaxadv.models.wide_resnet import WideResNet16_4
from jaxadv.models.wide_resnet import WideResNet28_10
from jaxadv.models.wide_resnet import WideResNet34_10
