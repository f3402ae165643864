"""Datasets for jaxadv: MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-10-JPEG.

Whole splits are held in RAM as numpy arrays::

    from jaxadv import data

    # x: float32 [60000, 28, 28, 1] in [0, 1]; y: int32 [60000].
    x, y = data.load("mnist", "train")
    for step, batch in enumerate(data.batches(x, y, 128, seed=0, epoch=3)):
        ...  # batch["x"]: float32 [128, 28, 28, 1], batch["y"]: int32 [128]

Datasets are prepared once with tensorflow-datasets builders (registered as
``jaxadv_mnist``, ``jaxadv_fashion_mnist``, ``jaxadv_cifar10`` and
``jaxadv_cifar10_jpeg``) into ``array_record`` files and read back without
TensorFlow. Raw files come from ``$JAXADV_DATA_DIR/<name>/`` (or the
``manual_dir`` argument) and are SHA-256 checked; prepared data goes to
``$JAXADV_TFDS_DIR`` (or the ``data_dir`` argument, else
``~/tensorflow_datasets``). See `jaxadv.data.loading` for details.
"""

from jaxadv.data.batching import batches
from jaxadv.data.batching import epoch_permutation
from jaxadv.data.batching import num_batches
from jaxadv.data.builders import JaxadvCifar10
from jaxadv.data.builders import JaxadvCifar10Jpeg
from jaxadv.data.builders import JaxadvFashionMnist
from jaxadv.data.builders import JaxadvMnist
from jaxadv.data.loading import DATASET_NAMES
from jaxadv.data.loading import SPLITS
from jaxadv.data.loading import DatasetInfo
from jaxadv.data.loading import info
from jaxadv.data.loading import load
from jaxadv.data.loading import prepare

__all__ = [
    "DATASET_NAMES",
    "SPLITS",
    "DatasetInfo",
    "JaxadvCifar10",
    "JaxadvCifar10Jpeg",
    "JaxadvFashionMnist",
    "JaxadvMnist",
    "batches",
    "epoch_permutation",
    "info",
    "load",
    "num_batches",
    "prepare",
]
