"""Whole-split, in-memory loading of the jaxadv datasets (no TensorFlow).

`load` prepares a dataset with the tfds builders of `jaxadv.data.builders`
(once, into an ``array_record`` cache), reads the split back with
`tfds.core.DatasetBuilder.as_data_source`, decodes the images with Pillow and
returns numpy arrays. The decoded uint8 arrays are also cached as
``<prepared dataset folder>/jaxadv-<split>-uint8.npz`` so later loads skip
image decoding.

Folders:

* Prepared data: ``data_dir`` argument, else ``$JAXADV_TFDS_DIR``, else the
  tfds default (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
* Raw files: ``manual_dir`` argument, else ``$JAXADV_DATA_DIR``: a folder
  with one sub-folder per dataset (``mnist/``, ``fashion_mnist/``,
  ``cifar10/``, ``cifar10_jpeg/``). Missing raw files are downloaded where a
  canonical URL exists; offline, MNIST's come last from the copy embedded in
  the package (``jaxadv/data/embedded/mnist/``, `builders.EMBEDDED_DIR`).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import tempfile

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from jaxadv.data import builders as builders_lib

#: Environment variable naming the folder for prepared (tfds) data.
TFDS_DIR_ENV = "JAXADV_TFDS_DIR"
#: Environment variable naming the folder with the raw files.
DATA_DIR_ENV = builders_lib.DATA_DIR_ENV

#: Public dataset names accepted by `load` and `info`.
DATASET_NAMES: tuple[str, ...] = tuple(builders_lib.BUILDERS)
#: Split names accepted by `load`.
SPLITS: tuple[str, ...] = ("train", "test")

_DECODE_CHUNK = 8192
_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Static description of a dataset.

  Attributes:
    name: Public name, e.g. ``"mnist"``.
    num_classes: Number of classes; labels are ints in ``[0, num_classes)``.
    image_shape: ``(H, W, C)`` of one image, e.g. ``(28, 28, 1)``.
    class_names: Human-readable name of each label, indexed by label.
    num_train: Number of examples in the ``"train"`` split.
    num_test: Number of examples in the ``"test"`` split.
  """

  name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  class_names: tuple[str, ...]
  num_train: int
  num_test: int


_INFOS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        "mnist", 10, (28, 28, 1), builders_lib.MNIST_CLASS_NAMES, 60000, 10000
    ),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist",
        10,
        (28, 28, 1),
        builders_lib.FASHION_MNIST_CLASS_NAMES,
        60000,
        10000,
    ),
    "cifar10": DatasetInfo(
        "cifar10",
        10,
        (32, 32, 3),
        builders_lib.CIFAR10_CLASS_NAMES,
        50000,
        10000,
    ),
    "cifar10_jpeg": DatasetInfo(
        "cifar10_jpeg",
        10,
        (32, 32, 3),
        builders_lib.CIFAR10_CLASS_NAMES,
        50000,
        10000,
    ),
}


def _check_name(name: str) -> None:
  if name not in builders_lib.BUILDERS:
    raise ValueError(
        f"Unknown dataset name {name!r}; valid names:"
        f" {', '.join(DATASET_NAMES)}."
    )


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(
        f"Unknown split {split!r}; valid splits: {', '.join(SPLITS)}."
    )


def info(name: str) -> DatasetInfo:
  """Returns the static description of a dataset (nothing is read from disk).

  Args:
    name: One of ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``,
      ``"cifar10_jpeg"``.

  Returns:
    A frozen `DatasetInfo`.

  Raises:
    ValueError: If ``name`` is unknown (the message lists the valid names).
  """
  _check_name(name)
  return _INFOS[name]


def _resolve_dirs(
    name: str,
    data_dir: str | os.PathLike[str] | None,
    manual_dir: str | os.PathLike[str] | None,
) -> tuple[str | None, str | None]:
  if data_dir is None:
    data_dir = os.environ.get(TFDS_DIR_ENV) or None
  if manual_dir is None:
    manual_dir = os.environ.get(DATA_DIR_ENV) or None
  data = (
      os.path.expanduser(os.fspath(data_dir)) if data_dir is not None else None
  )
  manual = (
      os.path.join(os.path.expanduser(os.fspath(manual_dir)), name)
      if manual_dir is not None
      else None
  )
  return data, manual


def prepare(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    manual_dir: str | os.PathLike[str] | None = None,
) -> tfds.core.DatasetBuilder:
  """Prepares a dataset (once) as ``array_record`` files; returns its builder.

  A no-op apart from constructing the builder when the dataset is already
  prepared in ``data_dir``. The builder can be read without TensorFlow with
  ``builder.as_data_source(split)``.

  Args:
    name: Public dataset name (see `DATASET_NAMES`).
    data_dir: Folder for prepared data; default ``$JAXADV_TFDS_DIR``, else
      the tfds default (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
    manual_dir: Folder containing the per-dataset raw-file folders
      (``<manual_dir>/<name>/...``); default ``$JAXADV_DATA_DIR``, else
      ``<tfds data root>/downloads/manual``.

  Returns:
    The prepared `tfds.core.DatasetBuilder` (registered tfds name
    ``jaxadv_<name>``).

  Raises:
    ValueError: Unknown ``name``, or a raw file fails its SHA-256 check.
    FileNotFoundError: Raw files are neither local nor downloadable.
  """
  _check_name(name)
  data, manual = _resolve_dirs(name, data_dir, manual_dir)
  builder = builders_lib.BUILDERS[name](data_dir=data)
  if manual is None:
    # tfds' default manual folder is shared by all datasets, and the MNIST and
    # Fashion-MNIST files have the same names: use one sub-folder per dataset.
    manual = os.path.join(
        os.fspath(builder.data_dir_root), "downloads", "manual", name
    )
  builder.download_and_prepare(
      file_format="array_record",
      download_config=tfds.download.DownloadConfig(
          manual_dir=manual, try_download_gcs=False
      ),
  )
  return builder


def _decode_image(data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as im:
    mode = "L" if shape[-1] == 1 else "RGB"
    if im.mode != mode:
      im = im.convert(mode)
    arr = np.asarray(im, dtype=np.uint8)
  return arr.reshape(shape)


def _read_split_uint8(
    builder: tfds.core.DatasetBuilder,
    split: str,
    count: int,
    shape: tuple[int, int, int],
) -> tuple[np.ndarray, np.ndarray]:
  """Reads the first ``count`` records: uint8 [count, H, W, C], int32 [count].

  Uses batched ``__getitems__`` reads of the data source, keeps the image
  bytes undecoded (`tfds.decode.SkipDecoding`) and decodes them with Pillow,
  so the pixels do not depend on whether OpenCV is installed.
  """
  source = builder.as_data_source(
      split=split, decoders={"image": tfds.decode.SkipDecoding()}
  )
  images = np.empty((count, *shape), dtype=np.uint8)
  labels = np.empty((count,), dtype=np.int32)
  for start in range(0, count, _DECODE_CHUNK):
    stop = min(start + _DECODE_CHUNK, count)
    records = source.__getitems__(list(range(start, stop)))
    for i, record in enumerate(records, start=start):
      images[i] = _decode_image(record["image"], shape)
      labels[i] = record["label"]
  return images, labels


def _cache_path(builder: tfds.core.DatasetBuilder, split: str) -> str:
  return os.path.join(os.fspath(builder.data_dir), f"jaxadv-{split}-uint8.npz")


def _load_cache(
    path: str, n: int, shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray] | None:
  try:
    with np.load(path, allow_pickle=False) as f:
      images, labels = f["images"], f["labels"]
  except (OSError, KeyError, ValueError):
    return None
  if (
      images.shape != (n, *shape)
      or images.dtype != np.uint8
      or labels.shape != (n,)
  ):
    _log.warning("Ignoring stale decoded-array cache %s", path)
    return None
  return images, labels.astype(np.int32, copy=False)


def _save_cache(path: str, images: np.ndarray, labels: np.ndarray) -> None:
  folder = os.path.dirname(path)
  try:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
      with os.fdopen(fd, "wb") as f:
        np.savez(f, images=images, labels=labels)
      os.replace(tmp, path)  # Atomic: readers never see a partial file.
    except BaseException:
      os.unlink(tmp)
      raise
  except OSError as e:  # E.g. a read-only data_dir: the cache is optional.
    _log.warning("Could not write decoded-array cache %s: %s", path, e)


def load(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    manual_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Loads a whole split into memory.

  Prepares the dataset on first use (see `prepare`), then returns the
  examples in the stored order (the raw files' order; class-interleaved for
  ``cifar10_jpeg``). Decoded arrays are cached next to the prepared data, so
  only the first full load of a split decodes images.

  Args:
    name: ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"`` or
      ``"cifar10_jpeg"``.
    split: ``"train"`` or ``"test"``.
    data_dir: Folder for prepared data; default ``$JAXADV_TFDS_DIR``, else
      the tfds default (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
    manual_dir: Folder containing the per-dataset raw-file folders
      (``<manual_dir>/<name>/...``); default ``$JAXADV_DATA_DIR``, else
      ``<tfds data root>/downloads/manual``.
    limit: If set, only the first ``limit`` examples (``>= 0``; values larger
      than the split are clipped).

  Returns:
    ``(x, y)``: x float32 [N, H, W, C] with pixel values in [0, 1] (uint8
    divided by 255; MNIST is [N, 28, 28, 1], CIFAR-10 [N, 32, 32, 3]) and y
    int32 [N] class labels in ``[0, num_classes)``.

  Raises:
    ValueError: Unknown ``name``/``split`` (the message lists the valid
      ones), bad ``limit``, or a raw file fails its SHA-256 check.
    FileNotFoundError: Raw files are neither local, downloadable nor
      embedded (MNIST); the message lists the expected paths.
  """
  _check_name(name)
  _check_split(split)
  if limit is not None and (
      isinstance(limit, bool)
      or not isinstance(limit, (int, np.integer))
      or limit < 0
  ):
    raise ValueError(f"limit must be None or an int >= 0, got {limit!r}.")
  builder = prepare(name, data_dir=data_dir, manual_dir=manual_dir)
  shape = _INFOS[name].image_shape
  n = builder.info.splits[split].num_examples
  count = n if limit is None else min(int(limit), n)

  cache = _cache_path(builder, split)
  arrays = _load_cache(cache, n, shape) if os.path.exists(cache) else None
  if arrays is not None:
    images, labels = arrays[0][:count], arrays[1][:count]
  else:
    images, labels = _read_split_uint8(builder, split, count, shape)
    if count == n:
      _save_cache(cache, images, labels)

  x = images.astype(np.float32)
  np.divide(x, np.float32(255.0), out=x)
  return x, np.ascontiguousarray(labels, dtype=np.int32)
