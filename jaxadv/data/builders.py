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
Every raw file is verified against known SHA-256 digests (hard-coded below, or
from a ``SHA256SUMS`` file in the data folder) before it is parsed.

Preparation and reading only need numpy and Pillow: images are encoded as
PNG with Pillow (the JPEG bytes of ``cifar10_jpeg`` are stored unchanged), and
the prepared ``array_record`` files are read with `tfds.data_source`, so
TensorFlow is never imported.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import socket
import tarfile
import urllib.parse
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

#: Environment variable naming the folder with the raw files. It contains one
#: sub-folder per dataset: ``mnist/``, ``fashion_mnist/``, ``cifar10/``,
#: ``cifar10_jpeg/``.
DATA_DIR_ENV = "JAXADV_DATA_DIR"

#: Name of the optional checksum file (``sha256sum`` format) in a data folder.
SHA256SUMS_FILENAME = "SHA256SUMS"

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

#: Accepted SHA-256 digests of raw files, keyed by ``<dataset>/<file name>``.
#: For the IDX files two digests are accepted: the file as served by the
#: canonical URL (digest from the tfds checksum registry) and the re-gzipped
#: copy in the shared data folder (same content, different gzip header and
#: compression level).
KNOWN_SHA256: dict[str, tuple[str, ...]] = {
    "mnist/train-images-idx3-ubyte.gz": (
        "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    "mnist/train-labels-idx1-ubyte.gz": (
        "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    "mnist/t10k-images-idx3-ubyte.gz": (
        "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    "mnist/t10k-labels-idx1-ubyte.gz": (
        "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
    "fashion_mnist/train-images-idx3-ubyte.gz": (
        "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    ),
    "fashion_mnist/train-labels-idx1-ubyte.gz": (
        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    ),
    "fashion_mnist/t10k-images-idx3-ubyte.gz": (
        "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    ),
    "fashion_mnist/t10k-labels-idx1-ubyte.gz": (
        "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    ),
    "cifar10/cifar-10-python.tar.gz": (
        "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    ),
    "cifar10_jpeg/cifar10_jpeg.zip": (
        "42965d26d1d6aa5e045c0ed428e25f0ff14acc5bf087afab86818805ca8dc64e",
    ),
}

_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

_CIFAR10_TARBALL = "cifar-10-python.tar.gz"
_CIFAR10_JPEG_ZIP = "cifar10_jpeg.zip"


# ---------------------------------------------------------------------------
# Checksums.
# ---------------------------------------------------------------------------


def sha256_of_file(
    path: os.PathLike[str] | str, chunk_bytes: int = 1 << 20
) -> str:
  """Returns the SHA-256 hex digest of a file.

  Args:
    path: File to hash.
    chunk_bytes: Read size in bytes.

  Returns:
    Lower-case hex digest (64 characters).
  """
  digest = hashlib.sha256()
  with open(os.fspath(path), "rb") as f:
    while chunk := f.read(chunk_bytes):
      digest.update(chunk)
  return digest.hexdigest()


def read_sha256sums(path: os.PathLike[str] | str) -> dict[str, str]:
  """Parses a ``sha256sum``-style file into ``{relative path: digest}``.

  Lines look like ``<64 hex digits>  <relative path>`` (a ``*`` before the
  path, binary mode, is accepted). Blank lines and ``#`` comments are
  skipped; malformed lines raise.

  Args:
    path: The ``SHA256SUMS`` file.

  Returns:
    Mapping from the path as written (``/`` separators, no leading ``./``)
    to the lower-case digest.

  Raises:
    ValueError: If a line is malformed.
  """
  sums: dict[str, str] = {}
  text = epath.Path(path).read_text()
  for lineno, line in enumerate(text.splitlines(), start=1):
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    parts = line.split(maxsplit=1)
    digest = parts[0].lower()
    if (
        len(parts) != 2
        or len(digest) != 64
        or any(c not in "0123456789abcdef" for c in digest)
    ):
      raise ValueError(f"{path}:{lineno}: malformed SHA256SUMS line: {line!r}")
    name = parts[1].strip().lstrip("*").replace("\\", "/")
    while name.startswith("./"):
      name = name[2:]
    sums[name] = digest
  return sums


def expected_sha256(
    dataset: str, filename: str, folder: os.PathLike[str] | str | None
) -> tuple[tuple[str, ...], str]:
  """Returns the accepted digests of a raw file and where they come from.

  A ``SHA256SUMS`` file takes precedence over the hard-coded digests:
  ``<folder>/SHA256SUMS`` listing ``<filename>``, then
  ``<folder>/../SHA256SUMS`` listing ``<dataset>/<filename>`` (the layout of
  ``$JAXADV_DATA_DIR``). Otherwise `KNOWN_SHA256` is used.

  Args:
    dataset: Public dataset name, e.g. ``"mnist"``.
    filename: Raw file name, e.g. ``"t10k-images-idx3-ubyte.gz"``.
    folder: Folder holding the raw file, or None for a downloaded file.

  Returns:
    ``(digests, source)``: the accepted lower-case hex digests (possibly
    empty when the file is unknown) and a human-readable source.
  """
  if folder is not None:
    folder = epath.Path(folder)
    candidates = (
        (folder / SHA256SUMS_FILENAME, filename),
        (folder.parent / SHA256SUMS_FILENAME, f"{dataset}/{filename}"),
    )
    for sums_path, key in candidates:
      if sums_path.is_file():
        sums = read_sha256sums(sums_path)
        if key in sums:
          return (sums[key],), os.fspath(sums_path)
  return (
      KNOWN_SHA256.get(f"{dataset}/{filename}", ()),
      "jaxadv.data.builders.KNOWN_SHA256",
  )


def verify_sha256(
    path: os.PathLike[str] | str,
    dataset: str,
    filename: str,
    folder: os.PathLike[str] | str | None,
) -> str:
  """Checks a raw file against its accepted SHA-256 digests.

  Args:
    path: The file to check.
    dataset: Public dataset name, e.g. ``"mnist"``.
    filename: Raw file name used to look up the digest.
    folder: Folder in which to look for ``SHA256SUMS`` (see
      `expected_sha256`), or None.

  Returns:
    The actual digest.

  Raises:
    ValueError: If the digest is not an accepted one; the message names the
      file, the expected and the actual digest.
  """
  expected, source = expected_sha256(dataset, filename, folder)
  actual = sha256_of_file(path)
  if actual not in expected:
    raise ValueError(
        f"SHA-256 mismatch for {os.fspath(path)}: expected "
        f"{' or '.join(expected) if expected else '<no known digest>'} "
        f"(from {source}), actual {actual}. The file is corrupt, truncated "
        "or not the expected file; delete it and get a fresh copy (or, for "
        "a deliberately different file, list its digest in a "
        f"{SHA256SUMS_FILENAME} file next to it)."
    )
  return actual


# ---------------------------------------------------------------------------
# Raw file parsers (pure numpy, no TensorFlow).
# ---------------------------------------------------------------------------


def read_idx_images(path: os.PathLike[str] | str) -> np.ndarray:
  """Reads a gzipped IDX3 image file (MNIST format).

  Args:
    path: ``*-images-idx3-ubyte.gz`` file.

  Returns:
    uint8 array [N, rows, cols, 1].

  Raises:
    ValueError: If the header or size is wrong.
  """
  with gzip.open(os.fspath(path), "rb") as f:
    raw = f.read()
  header = np.frombuffer(raw, dtype=">u4", count=4)
  if len(raw) < 16 or header[0] != 0x00000803:
    raise ValueError(
        f"{path}: not an IDX3 uint8 image file (magic {header[0]:#x})"
    )
  n, rows, cols = (int(v) for v in header[1:])
  if len(raw) != 16 + n * rows * cols:
    raise ValueError(
        f"{path}: expected {16 + n * rows * cols} bytes, got {len(raw)}"
    )
  return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows, cols, 1)


def read_idx_labels(path: os.PathLike[str] | str) -> np.ndarray:
  """Reads a gzipped IDX1 label file (MNIST format).

  Args:
    path: ``*-labels-idx1-ubyte.gz`` file.

  Returns:
    uint8 array [N].

  Raises:
    ValueError: If the header or size is wrong.
  """
  with gzip.open(os.fspath(path), "rb") as f:
    raw = f.read()
  header = np.frombuffer(raw, dtype=">u4", count=2)
  if len(raw) < 8 or header[0] != 0x00000801:
    raise ValueError(
        f"{path}: not an IDX1 uint8 label file (magic {header[0]:#x})"
    )
  n = int(header[1])
  if len(raw) != 8 + n:
    raise ValueError(f"{path}: expected {8 + n} bytes, got {len(raw)}")
  return np.frombuffer(raw, dtype=np.uint8, offset=8)


def read_cifar10_tarball(
    path: os.PathLike[str] | str, split: str
) -> tuple[np.ndarray, np.ndarray]:
  """Reads one split of the CIFAR-10 python tarball.

  The tarball holds ``cifar-10-batches-py/data_batch_{1..5}`` (train, in
  that order) and ``cifar-10-batches-py/test_batch``: pickled dicts with
  ``b"data"`` (uint8 [N, 3072], channel-major) and ``b"labels"`` (list of
  int). The pickles are only loaded after the tarball's SHA-256 was checked.

  Args:
    path: ``cifar-10-python.tar.gz``.
    split: ``"train"`` or ``"test"``.

  Returns:
    ``(images, labels)``: uint8 [N, 32, 32, 3] and int64 [N].

  Raises:
    ValueError: If a batch is missing or malformed.
  """
  names = (
      [f"data_batch_{i}" for i in range(1, 6)]
      if split == "train"
      else ["test_batch"]
  )
  found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
  with tarfile.open(os.fspath(path), "r:*") as tar:
    for member in tar:
      base = member.name.rsplit("/", 1)[-1]
      if not member.isfile() or base not in names:
        continue
      f = tar.extractfile(member)
      assert f is not None
      batch = pickle.load(f, encoding="bytes")
      data = np.asarray(batch[b"data"], dtype=np.uint8)
      labels = np.asarray(batch[b"labels"], dtype=np.int64)
      if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise ValueError(
            f"{path}:{member.name}: malformed batch, data {data.shape}, "
            f"{len(labels)} labels"
        )
      found[base] = (data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels)
  missing = [n for n in names if n not in found]
  if missing:
    raise ValueError(f"{path}: missing CIFAR-10 batches {missing}")
  images = np.concatenate([found[n][0] for n in names])
  labels = np.concatenate([found[n][1] for n in names])
  return images, labels


def encode_png(image: np.ndarray) -> bytes:
  """Encodes a uint8 [H, W, C] image (C in {1, 3}) as PNG bytes with Pillow."""
  if image.shape[-1] == 1:
    image = image[..., 0]
  buf = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(image)).save(
      buf, format="PNG", compress_level=6
  )
  return buf.getvalue()


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

  def _resolve_raw_files(
      self, dl_manager: tfds.download.DownloadManager
  ) -> dict[str, epath.Path]:
    """Finds (or downloads) and checksums every raw file.

    Returns:
      ``{role: path}`` for every entry of `RAW_FILES`.

    Raises:
      FileNotFoundError: If a file is neither local nor downloadable.
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
      for role in missing:
        paths[role], folders[role] = epath.Path(downloaded[role]), None
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
  CLASS_NAMES = MNIST_CLASS_NAMES
  DESCRIPTION = "The MNIST database of handwritten digits (jaxadv builder)."
  HOMEPAGE = "http://yann.lecun.com/exdb/mnist/"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Optional. Place train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,"
      " t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz in the manual"
      " folder ($JAXADV_DATA_DIR/mnist); otherwise they are downloaded from"
      f" {BASE_URL}."
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
