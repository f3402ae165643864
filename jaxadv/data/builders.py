"""TensorFlow-Datasets builders for the image datasets used by jaxadv.

Four `tfds.core.GeneratorBasedBuilder` subclasses are defined here:

=================  ===========================  ==============================
public name        registered tfds name         raw files
=================  ===========================  ==============================
``mnist``          ``jaxadv_mnist``             4 IDX ``*.gz`` files
``fashion_mnist``  ``jaxadv_fashion_mnist``     4 IDX ``*.gz`` files
``cifar10``        ``jaxadv_cifar10``           ``cifar-10-python.tar.gz``
``cifar10_jpeg``   ``jaxadv_cifar10_jpeg``      ``cifar10_jpeg.zip``
=================  ===========================  ==============================

TFDS already registers builders called ``mnist``, ``fashion_mnist`` and
``cifar10`` and refuses a second class with the same name, hence the
``jaxadv_`` prefix of the registered names.

Every builder yields ``{"image": uint8 [H, W, C], "label": ClassLabel}``
examples, stored in the original order of the raw files (shuffling is
disabled, so record ``i`` of the prepared split is example ``i`` of the raw
split; ``cifar10_jpeg`` is interleaved by class, see its docstring).

Raw files are looked up in a *manual folder* first (the ``manual_dir`` of the
`tfds.download.DownloadConfig`, which `jaxadv.data.load` sets to
``$JAXADV_DATA_DIR/<public name>``). Missing files are downloaded from the
canonical URL with the tfds download manager; ``cifar10_jpeg`` has no URL.
When a file is neither local nor downloadable (no network), MNIST falls back
to the copy of its four canonical IDX files embedded in the package
(``jaxadv/data/embedded/mnist/``, `EMBEDDED_DIR`): the last fallback, so
``$JAXADV_DATA_DIR`` and the download come first and nothing else changes.
Every raw file is verified against known SHA-256 digests (hard-coded below, or
from a ``SHA256SUMS`` file in the data folder) before it is parsed.

Checksums live in `jaxadv.data.checksums` and the raw-file parsers in
`jaxadv.data.parsers`. Preparation and reading only need numpy and Pillow: images are encoded as
PNG with Pillow (the JPEG bytes of ``cifar10_jpeg`` are stored unchanged), and
the prepared ``array_record`` files are read with `tfds.data_source`, so
TensorFlow is never imported.
"""

from __future__ import annotations

import logging
import os
import socket
import urllib.parse
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from jaxadv.data.checksums import verify_sha256
from jaxadv.data.parsers import encode_png
from jaxadv.data.parsers import read_cifar10_tarball
from jaxadv.data.parsers import read_idx_images
from jaxadv.data.parsers import read_idx_labels

#: Environment variable naming the folder with the raw files. It contains one
#: sub-folder per dataset: ``mnist/``, ``fashion_mnist/``, ``cifar10/``,
#: ``cifar10_jpeg/``.
DATA_DIR_ENV = "JAXADV_DATA_DIR"

#: Raw files shipped with the package, one sub-folder per dataset: MNIST's
#: four canonical IDX files (about 11 MB, checked against `KNOWN_SHA256`),
#: the last fallback of `_JaxadvBuilder._resolve_raw_files`.
EMBEDDED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            "embedded")

_log = logging.getLogger(__name__)

MNIST_CLASS_NAMES: tuple[str, ...] = tuple(str(i) for i in range(10))
FASHION_MNIST_CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_CLASS_NAMES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

_CIFAR10_TARBALL = "cifar-10-python.tar.gz"
_CIFAR10_JPEG_ZIP = "cifar10_jpeg.zip"


# ---------------------------------------------------------------------------
# Builders.
# ---------------------------------------------------------------------------


def _host_reachable(url: str, timeout_s: float = 5.0) -> bool:
  """Quick connectivity probe, so offline machines fail fast.

  The tfds downloader retries for minutes before giving up when a host is
  unreachable. This opens (and closes) one TCP connection to the URL's host
  instead. When an HTTP(S) proxy is configured the probe is skipped (a
  direct connection may be blocked while the proxy works).

  Args:
    url: Any URL on the host.
    timeout_s: Connection timeout in seconds.

  Returns:
    True if the host accepted a connection (or a proxy is configured).
  """
  if any(
      os.environ.get(v)
      for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
  ):
    return True
  parts = urllib.parse.urlsplit(url)
  port = parts.port or (443 if parts.scheme == "https" else 80)
  try:
    with socket.create_connection((parts.hostname, port), timeout=timeout_s):
      return True
  except OSError:
    return False


def _manual_dir_of(
    dl_manager: tfds.download.DownloadManager,
) -> epath.Path | None:
  """The manual folder of a download manager, whether or not it exists."""
  try:
    return dl_manager.manual_dir  # Public API; raises if absent or empty.
  except (AssertionError, ValueError):
    folder = getattr(dl_manager, "_manual_dir", None)
    return epath.Path(folder) if folder is not None else None


class _JaxadvBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Common raw-file resolution for the jaxadv builders (not registered)."""

  #: Public jaxadv name, e.g. ``"mnist"`` (the tfds name is ``jaxadv_<..>``).
  PUBLIC_NAME: ClassVar[str] = ""
  #: Raw file names, keyed by role.
  RAW_FILES: ClassVar[Mapping[str, str]] = {}
  #: Base URL for downloads, or None when the files cannot be downloaded.
  BASE_URL: ClassVar[str | None] = None
  #: Whether `EMBEDDED_DIR/<PUBLIC_NAME>/` ships the raw files.
  EMBEDDED: ClassVar[bool] = False

  def _candidate_dirs(
      self, dl_manager: tfds.download.DownloadManager
  ) -> list[epath.Path]:
    """Folders searched for raw files, in order."""
    dirs: list[epath.Path] = []
    manual = _manual_dir_of(dl_manager)
    if manual is not None:
      dirs.append(manual)
    env = os.environ.get(DATA_DIR_ENV)
    if env:
      env_dir = epath.Path(env).expanduser() / self.PUBLIC_NAME
      if env_dir not in dirs:
        dirs.append(env_dir)
    return dirs

  def _missing_files_error(
      self,
      dl_manager: tfds.download.DownloadManager,
      missing: Sequence[str],
      reason: str,
  ) -> FileNotFoundError:
    dirs = self._candidate_dirs(dl_manager)
    where = (
        dirs[0] if dirs else epath.Path(f"${DATA_DIR_ENV}") / self.PUBLIC_NAME
    )
    expected = "\n".join(f"  {where / f}" for f in self.RAW_FILES.values())
    looked = "\n".join(f"  {d}" for d in dirs) or "  (no folder configured)"
    first_file = next(iter(self.RAW_FILES.values()))
    example = f"/path/to/data/{self.PUBLIC_NAME}/{first_file}"
    return FileNotFoundError(
        f"Raw files for dataset {self.PUBLIC_NAME!r} are missing "
        f"({', '.join(missing)}) {reason}.\n"
        f"Expected these files:\n{expected}\n"
        f"Folders searched:\n{looked}\n"
        f"Put the files there, or set the environment variable {DATA_DIR_ENV} "
        "(or pass manual_dir=) to a folder that contains a "
        f"'{self.PUBLIC_NAME}/' sub-folder with these files, e.g. "
        f"`export {DATA_DIR_ENV}=/path/to/data` with {example}."
    )

  def _download(
      self,
      dl_manager: tfds.download.DownloadManager,
      missing: Mapping[str, str],
  ) -> dict[str, epath.Path]:
    """Downloads the `missing` ``{role: file name}`` from `BASE_URL`.

    Raises:
      FileNotFoundError: No URL, the host unreachable, or the download
        failed (the message lists the expected files and folders).
    """
    if self.BASE_URL is None:
      raise self._missing_files_error(
          dl_manager,
          list(missing.values()),
          "and this dataset has no download URL",
      )
    urls = {
        role: self.BASE_URL + filename for role, filename in missing.items()
    }
    if not _host_reachable(self.BASE_URL):
      raise self._missing_files_error(
          dl_manager,
          list(missing.values()),
          f"and {self.BASE_URL} is not reachable (no network?)",
      )
    try:
      downloaded = dl_manager.download(urls)
    except Exception as e:  # pylint: disable=broad-exception-caught
      raise self._missing_files_error(
          dl_manager,
          list(missing.values()),
          f"and downloading them from {self.BASE_URL} failed"
          f" ({type(e).__name__}: {e})",
      ) from e
    return {role: epath.Path(downloaded[role]) for role in missing}

  @classmethod
  def embedded_dir(cls) -> epath.Path | None:
    """The folder of the raw files shipped with the package, or None when
    this dataset has none (or the package was installed without them)."""
    if not cls.EMBEDDED:
      return None
    folder = epath.Path(EMBEDDED_DIR) / cls.PUBLIC_NAME
    if all((folder / f).is_file() for f in cls.RAW_FILES.values()):
      return folder
    return None

  def _resolve_raw_files(
      self, dl_manager: tfds.download.DownloadManager
  ) -> dict[str, epath.Path]:
    """Finds (or downloads) and checksums every raw file.

    Order: the manual folder, ``$JAXADV_DATA_DIR/<name>``, the download from
    `BASE_URL`, and last the embedded copy (`embedded_dir`), which is always
    checked against `KNOWN_SHA256`.

    Returns:
      ``{role: path}`` for every entry of `RAW_FILES`.

    Raises:
      FileNotFoundError: If a file is neither local, downloadable nor
        embedded.
      ValueError: If a file fails its SHA-256 check.
    """
    dirs = self._candidate_dirs(dl_manager)
    paths: dict[str, epath.Path] = {}
    folders: dict[str, epath.Path | None] = {}
    missing: dict[str, str] = {}
    for role, filename in self.RAW_FILES.items():
      for d in dirs:
        if (d / filename).is_file():
          paths[role], folders[role] = d / filename, d
          break
      else:
        missing[role] = filename
    if missing:
      try:
        downloaded = self._download(dl_manager, missing)
      except FileNotFoundError as e:
        embedded = self.embedded_dir()
        if embedded is None:
          raise
        _log.warning(
            "%s; using the copy embedded in jaxadv (%s).",
            str(e).split("\n", 1)[0].rstrip("."), embedded)
        # folder None: the embedded files always meet KNOWN_SHA256.
        downloaded = {role: embedded / f for role, f in missing.items()}
      for role, path in downloaded.items():
        paths[role], folders[role] = path, None
    for role, filename in self.RAW_FILES.items():
      verify_sha256(paths[role], self.PUBLIC_NAME, filename, folders[role])
    return paths


class _IdxBuilder(_JaxadvBuilder, skip_registration=True):
  """Shared code of the MNIST-format (IDX) builders (not registered)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial jaxadv release."}
  RAW_FILES = _MNIST_FILES
  CLASS_NAMES: ClassVar[tuple[str, ...]] = ()
  DESCRIPTION: ClassVar[str] = ""
  HOMEPAGE: ClassVar[str] = ""

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(
                shape=(28, 28, 1), dtype=np.uint8, encoding_format="png"
            ),
            "label": tfds.features.ClassLabel(names=list(self.CLASS_NAMES)),
        }),
        supervised_keys=("image", "label"),
        homepage=self.HOMEPAGE,
        disable_shuffling=True,
    )

  def _split_generators(
      self, dl_manager: tfds.download.DownloadManager
  ) -> dict[str, Any]:
    paths = self._resolve_raw_files(dl_manager)
    return {
        split: self._generate_examples(
            images_path=paths[f"{split}_images"],
            labels_path=paths[f"{split}_labels"],
        )
        for split in ("train", "test")
    }

  def _generate_examples(
      self, images_path: epath.Path, labels_path: epath.Path
  ) -> Iterator[tuple[int, dict[str, Any]]]:
    images = read_idx_images(images_path)
    labels = read_idx_labels(labels_path)
    if len(images) != len(labels):
      raise ValueError(
          f"{images_path} has {len(images)} images but {labels_path} has "
          f"{len(labels)} labels"
      )
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": encode_png(image), "label": int(label)}


class JaxadvMnist(_IdxBuilder):
  """MNIST handwritten digits, 28x28x1, 60k train / 10k test."""

  name = "jaxadv_mnist"
  PUBLIC_NAME = "mnist"
  BASE_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
  EMBEDDED = True
  CLASS_NAMES = MNIST_CLASS_NAMES
  DESCRIPTION = "The MNIST database of handwritten digits (jaxadv builder)."
  HOMEPAGE = "http://yann.lecun.com/exdb/mnist/"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Optional. Place train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,"
      " t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz in the manual"
      " folder ($JAXADV_DATA_DIR/mnist); otherwise they are downloaded from"
      f" {BASE_URL} or, offline, taken from the copy embedded in jaxadv"
      " (jaxadv/data/embedded/mnist)."
  )


class JaxadvFashionMnist(_IdxBuilder):
  """Fashion-MNIST (Zalando), 28x28x1, 60k train / 10k test."""

  name = "jaxadv_fashion_mnist"
  PUBLIC_NAME = "fashion_mnist"
  BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
  CLASS_NAMES = FASHION_MNIST_CLASS_NAMES
  DESCRIPTION = "Fashion-MNIST article images (jaxadv builder)."
  HOMEPAGE = "https://github.com/zalandoresearch/fashion-mnist"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Optional. Place train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
      "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz in the manual "
      "folder ($JAXADV_DATA_DIR/fashion_mnist); otherwise they are downloaded "
      f"from {BASE_URL}."
  )


def _cifar10_info(builder: tfds.core.DatasetBuilder, description: str, *,
                  encoding_format: str) -> tfds.core.DatasetInfo:
  """The DatasetInfo both CIFAR-10 builders share (32x32x3 uint8, 10 classes)."""
  return tfds.core.DatasetInfo(
      builder=builder,
      description=description,
      features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(
              shape=(32, 32, 3), dtype=np.uint8,
              encoding_format=encoding_format),
          "label": tfds.features.ClassLabel(names=list(CIFAR10_CLASS_NAMES)),
      }),
      supervised_keys=("image", "label"),
      homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
      disable_shuffling=True,
  )


class JaxadvCifar10(_JaxadvBuilder):
  """CIFAR-10 from the canonical python tarball, 32x32x3, 50k train / 10k test.

  Train examples are ``data_batch_1`` .. ``data_batch_5`` in order, test
  examples ``test_batch``; images are stored losslessly as PNG.
  """

  name = "jaxadv_cifar10"
  PUBLIC_NAME = "cifar10"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial jaxadv release."}
  RAW_FILES = {"tarball": _CIFAR10_TARBALL}
  BASE_URL = "https://www.cs.toronto.edu/~kriz/"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Optional. Place {_CIFAR10_TARBALL} in the manual folder "
      "($JAXADV_DATA_DIR/cifar10); otherwise it is downloaded from "
      f"{BASE_URL}{_CIFAR10_TARBALL}."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return _cifar10_info(
        self, "CIFAR-10 tiny images, from the python tarball (jaxadv builder).",
        encoding_format="png")

  def _split_generators(
      self, dl_manager: tfds.download.DownloadManager
  ) -> dict[str, Any]:
    tarball = self._resolve_raw_files(dl_manager)["tarball"]
    return {
        split: self._generate_examples(tarball=tarball, split=split)
        for split in ("train", "test")
    }

  def _generate_examples(
      self, tarball: epath.Path, split: str
  ) -> Iterator[tuple[int, dict[str, Any]]]:
    images, labels = read_cifar10_tarball(tarball, split)
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": encode_png(image), "label": int(label)}


class JaxadvCifar10Jpeg(_JaxadvBuilder):
  """CIFAR-10 re-encoded as JPEG (quality 75), from ``cifar10_jpeg.zip``.

  The zip holds ``train/<class>/NNNN.jpg`` (5000 per class) and
  ``test/<class>/NNNN.jpg`` (1000 per class). The JPEG bytes are stored
  unchanged. Example order interleaves the classes: ``0000.jpg`` of every
  class in `CIFAR10_CLASS_NAMES` order, then ``0001.jpg``, ...; so any prefix
  of a split is class-balanced (record ``10 * k + c`` is file ``k`` of class
  ``c``). There is no download URL: the zip must be provided.
  """

  name = "jaxadv_cifar10_jpeg"
  PUBLIC_NAME = "cifar10_jpeg"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial jaxadv release."}
  RAW_FILES = {"zip": _CIFAR10_JPEG_ZIP}
  BASE_URL = None
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Required. Place {_CIFAR10_JPEG_ZIP} in the manual folder "
      "($JAXADV_DATA_DIR/cifar10_jpeg). It cannot be downloaded."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return _cifar10_info(
        self, "CIFAR-10 re-encoded as JPEG q75 (jaxadv builder).",
        encoding_format="jpeg")

  def _split_generators(
      self, dl_manager: tfds.download.DownloadManager
  ) -> dict[str, Any]:
    path = self._resolve_raw_files(dl_manager)["zip"]
    return {
        split: self._generate_examples(path=path, split=split)
        for split in ("train", "test")
    }

  def _generate_examples(
      self, path: epath.Path, split: str
  ) -> Iterator[tuple[int, dict[str, Any]]]:
    class_index = {c: i for i, c in enumerate(CIFAR10_CLASS_NAMES)}
    with zipfile.ZipFile(os.fspath(path)) as zf:
      entries: list[tuple[int, zipfile.ZipInfo, int]] = []
      for zinfo in zf.infolist():
        parts = zinfo.filename.split("/")
        if zinfo.is_dir() or len(parts) != 3 or parts[0] != split:
          continue
        _, cls, fname = parts
        stem, ext = os.path.splitext(fname)
        if (
            cls not in class_index
            or ext.lower() not in (".jpg", ".jpeg")
            or not stem.isdigit()
        ):
          raise ValueError(f"{path}: unexpected member {zinfo.filename!r}")
        label = class_index[cls]
        entries.append((int(stem) * len(class_index) + label, zinfo, label))
      if not entries:
        raise ValueError(f"{path}: no '{split}/<class>/NNNN.jpg' members")
      entries.sort(key=lambda e: e[0])
      for key, zinfo, label in entries:
        yield key, {"image": zf.read(zinfo), "label": label}


#: Builder class for each public dataset name.
BUILDERS: dict[str, type[_JaxadvBuilder]] = {
    cls.PUBLIC_NAME: cls
    for cls in (
        JaxadvMnist,
        JaxadvFashionMnist,
        JaxadvCifar10,
        JaxadvCifar10Jpeg,
    )
}
