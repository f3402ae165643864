"""Parsers of the raw dataset files (pure numpy and Pillow, no TensorFlow).

IDX files (MNIST, Fashion-MNIST), the CIFAR-10 python tarball, and PNG
encoding of decoded images for the tfds records.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile

import numpy as np
from PIL import Image

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
