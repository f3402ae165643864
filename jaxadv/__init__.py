"""jaxadv: adversarial attacks, adversarial training and defences in JAX.

The subpackages load on first use (`jaxadv.data`, `jaxadv.defenses`, ...
are imported when first accessed), so `import jaxadv.attacks` loads only
JAX, Flax and the attacks, not tensorflow-datasets or scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# The one source of the version (setup.cfg reads it: `attr: jaxadv.__version__`).
__version__ = "0.1.0"

#: The public subpackages and modules, imported on first access.
SUBMODULES = (
    "analysis", "attacks", "augment", "data", "defenses", "evaluation", "gan",
    "loops", "losses", "metrics", "models", "parallel", "projections",
    "training", "transfer", "types", "validation",
)

__all__ = list(SUBMODULES) + ["__version__"]


def __getattr__(name: str):
  if name in SUBMODULES:
    module = importlib.import_module(f"{__name__}.{name}")
    globals()[name] = module
    return module
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(SUBMODULES))


if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
  from jaxadv import analysis  # noqa: F401
  from jaxadv import attacks  # noqa: F401
  from jaxadv import augment  # noqa: F401
  from jaxadv import data  # noqa: F401
  from jaxadv import defenses  # noqa: F401
  from jaxadv import evaluation  # noqa: F401
  from jaxadv import gan  # noqa: F401
  from jaxadv import loops  # noqa: F401
  from jaxadv import losses  # noqa: F401
  from jaxadv import metrics  # noqa: F401
  from jaxadv import models  # noqa: F401
  from jaxadv import parallel  # noqa: F401
  from jaxadv import projections  # noqa: F401
  from jaxadv import training  # noqa: F401
  from jaxadv import transfer  # noqa: F401
  from jaxadv import types  # noqa: F401
  from jaxadv import validation  # noqa: F401
