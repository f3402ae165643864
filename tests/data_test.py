"""Tests for jaxadv.data on the real raw files.

Raw files come from $JAXADV_DATA_DIR (default ``<repo>/../shared/data``);
prepared tfds data goes to a session-scoped temporary folder, so every dataset
is prepared once per test session. When JAXADV_DATA_DIR is unset and the
default folder does not exist, the real-data tests are skipped; when it is set
but wrong, they fail.
"""

from __future__ import annotations

import io
import os
import pathlib
import pickle
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jaxadv import data
from jaxadv.data import builders
from jaxadv.data import checksums
from jaxadv.data import parsers

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
_ENV_DATA_DIR = os.environ.get("JAXADV_DATA_DIR")
DATA_DIR = pathlib.Path(
    _ENV_DATA_DIR or REPO_ROOT / ".." / "shared" / "data"
).resolve()

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]

needs_data = pytest.mark.skipif(
    _ENV_DATA_DIR is None and not DATA_DIR.is_dir(),
    reason=f"raw data folder {DATA_DIR} not found (set JAXADV_DATA_DIR)",
)


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
  return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="session")
def raw_dir() -> pathlib.Path:
  if not DATA_DIR.is_dir():
    pytest.fail(f"JAXADV_DATA_DIR={_ENV_DATA_DIR!r} is not a folder")
  return DATA_DIR


def _load(
    name: str, split: str, tfds_dir: pathlib.Path, raw_dir: pathlib.Path, **kw
):
  return data.load(name, split, data_dir=tfds_dir, manual_dir=raw_dir, **kw)


@pytest.fixture(scope="session")
def mnist(tfds_dir, raw_dir) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  return {
      split: _load("mnist", split, tfds_dir, raw_dir)
      for split in ("train", "test")
  }


@pytest.fixture(scope="session")
def fashion(tfds_dir, raw_dir) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  return {
      split: _load("fashion_mnist", split, tfds_dir, raw_dir)
      for split in ("train", "test")
  }


# ---------------------------------------------------------------------------
# info / argument validation (no data needed).
# ---------------------------------------------------------------------------


def test_info():
  assert data.DATASET_NAMES == (
      "mnist",
      "fashion_mnist",
      "cifar10",
      "cifar10_jpeg",
  )
  i = data.info("mnist")
  assert (i.num_classes, i.image_shape, i.class_names[3]) == (
      10,
      (28, 28, 1),
      "3",
  )
  assert data.info("fashion_mnist").class_names[9] == "Ankle boot"
  for name in ("cifar10", "cifar10_jpeg"):
    i = data.info(name)
    assert (i.image_shape, i.num_train, i.num_test) == (
        (32, 32, 3),
        50000,
        10000,
    )
    assert i.class_names == (
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
  with pytest.raises(
      ValueError, match="mnist, fashion_mnist, cifar10, cifar10_jpeg"
  ):
    data.info("cifar100")


def test_registered_tfds_names_do_not_clash():
  assert data.JaxadvMnist.name == "jaxadv_mnist"
  assert data.JaxadvFashionMnist.name == "jaxadv_fashion_mnist"
  assert data.JaxadvCifar10.name == "jaxadv_cifar10"
  assert data.JaxadvCifar10Jpeg.name == "jaxadv_cifar10_jpeg"
  # tfds' own builders are untouched.
  assert tfds.builder_cls("mnist") is not data.JaxadvMnist
  assert tfds.builder_cls("jaxadv_mnist") is data.JaxadvMnist


def test_load_rejects_bad_name_split_limit(tmp_path):
  with pytest.raises(
      ValueError,
      match="valid names: mnist, fashion_mnist, cifar10, cifar10_jpeg",
  ):
    data.load("svhn", "train", data_dir=tmp_path)
  with pytest.raises(ValueError, match="valid splits: train, test"):
    data.load("mnist", "validation", data_dir=tmp_path)
  with pytest.raises(ValueError, match="limit"):
    data.load("mnist", "test", data_dir=tmp_path, limit=-1)
  assert not list(tmp_path.iterdir())  # Validation happens before any work.


# ---------------------------------------------------------------------------
# MNIST and Fashion-MNIST on the real files.
# ---------------------------------------------------------------------------


@needs_data
@pytest.mark.parametrize("split,n", [("train", 60000), ("test", 10000)])
def test_mnist_shapes_dtypes_ranges(mnist, split, n):
  x, y = mnist[split]
  assert x.shape == (n, 28, 28, 1) and x.dtype == np.float32
  assert y.shape == (n,) and y.dtype == np.int32
  assert x.min() == 0.0 and x.max() == 1.0
  assert set(np.unique(y)) == set(range(10))


@needs_data
def test_mnist_label_counts(mnist):
  assert (
      np.bincount(mnist["test"][1], minlength=10).tolist() == MNIST_TEST_COUNTS
  )
  assert np.bincount(mnist["train"][1], minlength=10).sum() == 60000


@needs_data
@pytest.mark.parametrize("split,prefix", [("train", "train"), ("test", "t10k")])
def test_mnist_matches_raw_idx_files_exactly(mnist, raw_dir, split, prefix):
  """Lossless PNG round trip and original order: x * 255 is the raw IDX data."""
  x, y = mnist[split]
  raw_x = parsers.read_idx_images(
      raw_dir / "mnist" / f"{prefix}-images-idx3-ubyte.gz"
  )
  raw_y = parsers.read_idx_labels(
      raw_dir / "mnist" / f"{prefix}-labels-idx1-ubyte.gz"
  )
  assert np.array_equal(x, raw_x.astype(np.float32) / 255)
  assert np.array_equal(y, raw_y)


@needs_data
def test_mnist_reload_is_fast_and_limit_is_a_prefix(mnist, tfds_dir, raw_dir):
  t0 = time.perf_counter()
  x, y = _load("mnist", "train", tfds_dir, raw_dir)
  dt = time.perf_counter() - t0
  assert dt < 5.0, f"re-loading prepared MNIST train took {dt:.1f}s"
  np.testing.assert_array_equal(x, mnist["train"][0])
  np.testing.assert_array_equal(y, mnist["train"][1])
  xs, ys = _load("mnist", "train", tfds_dir, raw_dir, limit=100)
  assert xs.shape == (100, 28, 28, 1) and ys.shape == (100,)
  np.testing.assert_array_equal(xs, mnist["train"][0][:100])
  np.testing.assert_array_equal(ys, mnist["train"][1][:100])
  x0, y0 = _load("mnist", "test", tfds_dir, raw_dir, limit=0)
  assert x0.shape == (0, 28, 28, 1) and y0.shape == (0,)
  assert (
      _load("mnist", "test", tfds_dir, raw_dir, limit=10**9)[0].shape[0]
      == 10000
  )


@needs_data
def test_limit_without_cache_reads_records_directly(mnist, tfds_dir, raw_dir):
  builder = data.prepare("mnist", data_dir=tfds_dir, manual_dir=raw_dir)
  cache = pathlib.Path(builder.data_dir) / "jaxadv-test-uint8.npz"
  assert cache.is_file()
  hidden = cache.with_suffix(".hidden")
  cache.rename(hidden)
  try:
    x, y = _load("mnist", "test", tfds_dir, raw_dir, limit=50)
    assert not cache.exists()  # Partial reads do not write the cache.
  finally:
    hidden.rename(cache)
  np.testing.assert_array_equal(x, mnist["test"][0][:50])
  np.testing.assert_array_equal(y, mnist["test"][1][:50])


# Run in a fresh interpreter by test_prepared_data_reads_without_tensorflow.
_NO_TF_SCRIPT = """
import importlib.abc
import importlib.util
import sys


class BlockTensorFlow(importlib.abc.MetaPathFinder, importlib.abc.Loader):

  def find_spec(self, name, path=None, target=None):
    if name == "tensorflow" or name.startswith("tensorflow."):
      return importlib.util.spec_from_loader(name, self)
    return None

  def create_module(self, spec):
    raise ModuleNotFoundError(f"No module named {spec.name!r} (blocked)")


sys.meta_path.insert(0, BlockTensorFlow())  # `import tensorflow` now fails.

import numpy as np
import tensorflow_datasets as tfds
from jaxadv import data

tfds_dir, raw_dir = sys.argv[1:3]
ds = tfds.data_source(
    "jaxadv_mnist", split="test", data_dir=tfds_dir, download=False
)
assert len(ds) == 10000, len(ds)
ex = ds[7]
assert ex["image"].shape == (28, 28, 1), ex["image"].shape
assert ex["image"].dtype == np.uint8, ex["image"].dtype
x, y = data.load("mnist", "test", data_dir=tfds_dir, manual_dir=raw_dir)
np.testing.assert_array_equal(ex["image"].astype(np.float32) / 255, x[7])
assert int(ex["label"]) == int(y[7])
batch = ds.__getitems__([0, 1, 2])
assert [int(b["label"]) for b in batch] == y[:3].tolist()
assert "tensorflow" not in sys.modules
print("OK")
"""


@needs_data
def test_prepared_data_reads_without_tensorflow(mnist, tfds_dir, raw_dir):
  """tfds.data_source and data.load work with `import tensorflow` blocked.

  (Blocked with an import hook whose loader fails, rather than with
  ``sys.modules["tensorflow"] = None``: tfds treats a ``tensorflow`` key in
  sys.modules as "TensorFlow is loaded", and etils probes
  ``importlib.util.find_spec("tensorflow")``.)
  """
  env = dict(
      os.environ,
      PYTHONPATH=os.pathsep.join(
          [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
      ),
  )
  proc = subprocess.run(
      [sys.executable, "-c", _NO_TF_SCRIPT, str(tfds_dir), str(raw_dir)],
      capture_output=True,
      text=True,
      env=env,
      timeout=120,
  )
  assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


@needs_data
@pytest.mark.slow  # loads all of Fashion-MNIST (~20 s); CI's slow line
@pytest.mark.parametrize("split,per_class", [("train", 6000), ("test", 1000)])
def test_fashion_mnist(fashion, split, per_class):
  x, y = fashion[split]
  assert x.shape == (10 * per_class, 28, 28, 1) and x.dtype == np.float32
  assert y.dtype == np.int32
  assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() == 1.0
  assert np.bincount(y, minlength=10).tolist() == [per_class] * 10


# ---------------------------------------------------------------------------
# Checksums and missing files.
# ---------------------------------------------------------------------------


@needs_data
def test_checksums_of_shared_files_pass(raw_dir):
  listed = checksums.read_sha256sums(raw_dir / "SHA256SUMS")
  assert set(listed) == set(checksums.KNOWN_SHA256) - {
      "cifar10/cifar-10-python.tar.gz"
  }
  for rel, digest in listed.items():
    dataset, filename = rel.split("/")
    assert digest in checksums.KNOWN_SHA256[rel]
    assert (
        checksums.verify_sha256(
            raw_dir / rel, dataset, filename, raw_dir / dataset
        )
        == digest
    )


@needs_data
def test_corrupted_file_raises(raw_dir, tmp_path, monkeypatch):
  monkeypatch.delenv("JAXADV_DATA_DIR", raising=False)
  (tmp_path / "raw" / "mnist").mkdir(parents=True)
  for f in MNIST_FILES:
    shutil.copy(raw_dir / "mnist" / f, tmp_path / "raw" / "mnist" / f)
  bad = tmp_path / "raw" / "mnist" / "t10k-labels-idx1-ubyte.gz"
  bad.chmod(0o644)
  blob = bytearray(bad.read_bytes())
  blob[len(blob) // 2] ^= 0xFF
  bad.write_bytes(bytes(blob))
  actual = checksums.sha256_of_file(bad)
  with pytest.raises(ValueError) as err:
    data.load(
        "mnist", "test", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "raw"
    )
  msg = str(err.value)
  assert str(bad) in msg and actual in msg
  assert checksums.KNOWN_SHA256["mnist/t10k-labels-idx1-ubyte.gz"][0] in msg
  assert not (tmp_path / "tfds" / "jaxadv_mnist" / "1.0.0").exists()


def test_sha256sums_file_overrides_known_digests(tmp_path):
  folder = tmp_path / "mnist"
  folder.mkdir()
  f = folder / "t10k-labels-idx1-ubyte.gz"
  f.write_bytes(b"not really mnist")
  digest = checksums.sha256_of_file(f)
  with pytest.raises(ValueError, match="SHA-256 mismatch"):
    checksums.verify_sha256(f, "mnist", f.name, folder)
  # Root-level SHA256SUMS, $JAXADV_DATA_DIR layout.
  (tmp_path / "SHA256SUMS").write_text(f"{digest}  mnist/{f.name}\n")
  assert checksums.verify_sha256(f, "mnist", f.name, folder) == digest
  # A per-dataset SHA256SUMS wins over the root one.
  (folder / "SHA256SUMS").write_text(f"# comment\n{'0' * 64} *{f.name}\n")
  with pytest.raises(ValueError, match="0" * 64):
    checksums.verify_sha256(f, "mnist", f.name, folder)
  (folder / "SHA256SUMS").write_text("garbage\n")
  with pytest.raises(ValueError, match="malformed"):
    checksums.verify_sha256(f, "mnist", f.name, folder)


def test_missing_files_error_names_expected_files(tmp_path, monkeypatch):
  monkeypatch.delenv("JAXADV_DATA_DIR", raising=False)
  monkeypatch.setattr(
      builders, "_host_reachable", lambda url, timeout_s=5.0: False
  )
  # Without the embedded copy (the loader's last fallback for MNIST), the
  # missing raw files are named.
  monkeypatch.setattr(builders.JaxadvMnist, "EMBEDDED", False)
  (tmp_path / "raw").mkdir()
  with pytest.raises(FileNotFoundError) as err:
    data.load(
        "mnist", "test", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "raw"
    )
  msg = str(err.value)
  for f in MNIST_FILES:
    assert str(tmp_path / "raw" / "mnist" / f) in msg
  assert "JAXADV_DATA_DIR" in msg and "not reachable" in msg

  # cifar10_jpeg cannot be downloaded: no network access is attempted.
  monkeypatch.setattr(
      builders, "_host_reachable", lambda *a, **k: pytest.fail("network probed")
  )
  with pytest.raises(FileNotFoundError) as err:
    data.load(
        "cifar10_jpeg",
        "test",
        data_dir=tmp_path / "tfds",
        manual_dir=tmp_path / "raw",
    )
  assert str(tmp_path / "raw" / "cifar10_jpeg" / "cifar10_jpeg.zip") in str(
      err.value
  )
  assert "no download URL" in str(err.value) and "JAXADV_DATA_DIR" in str(
      err.value
  )


def test_failed_download_raises_file_not_found(tmp_path, monkeypatch):
  monkeypatch.delenv("JAXADV_DATA_DIR", raising=False)
  monkeypatch.setattr(builders, "_host_reachable", lambda *a, **k: True)

  def broken_download(self, url_or_urls):
    raise ConnectionError("simulated outage")

  monkeypatch.setattr(
      tfds.download.DownloadManager, "download", broken_download
  )
  with pytest.raises(FileNotFoundError, match="simulated outage") as err:
    data.load(
        "fashion_mnist",
        "test",
        data_dir=tmp_path / "tfds",
        manual_dir=tmp_path / "raw",
    )
  assert "fashion-mnist.s3-website" in str(err.value)


# ---------------------------------------------------------------------------
# CIFAR-10 python tarball (synthetic, real format) and CIFAR-10-JPEG (real).
# ---------------------------------------------------------------------------


def _write_cifar_tarball(
    path: pathlib.Path, per_batch: int, rng: np.random.Generator
) -> dict[str, tuple]:
  """Writes a tiny cifar-10-python.tar.gz in the real pickle format."""
  batches = {}
  with tarfile.open(path, "w:gz") as tar:

    def add(name: str, obj) -> None:
      blob = pickle.dumps(obj, protocol=2)
      ti = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
      ti.size = len(blob)
      tar.addfile(ti, io.BytesIO(blob))

    add(
        "batches.meta",
        {
            b"label_names": [c.encode() for c in builders.CIFAR10_CLASS_NAMES],
            b"num_vis": 3072,
        },
    )
    for name in ["test_batch"] + [
        f"data_batch_{i}" for i in (3, 1, 5, 2, 4)
    ]:  # Tar order != split order.
      n = per_batch if name != "test_batch" else 2 * per_batch
      pixels = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
      labels = rng.integers(0, 10, size=n).tolist()
      add(
          name,
          {
              b"batch_label": name.encode(),
              b"labels": labels,
              b"data": pixels,
              b"filenames": [f"img_{i}.png".encode() for i in range(n)],
          },
      )
      batches[name] = (
          pixels.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1),
          np.asarray(labels),
      )
  return batches


def test_cifar10_tarball_builder(tmp_path, monkeypatch):
  monkeypatch.delenv("JAXADV_DATA_DIR", raising=False)
  raw = tmp_path / "raw"
  (raw / "cifar10").mkdir(parents=True)
  tarball = raw / "cifar10" / "cifar-10-python.tar.gz"
  batches = _write_cifar_tarball(
      tarball, per_batch=7, rng=np.random.default_rng(0)
  )
  # Synthetic file: unknown digest until listed in SHA256SUMS.
  with pytest.raises(ValueError, match="SHA-256 mismatch"):
    data.load("cifar10", "train", data_dir=tmp_path / "tfds", manual_dir=raw)
  (raw / "SHA256SUMS").write_text(
      f"{checksums.sha256_of_file(tarball)}  cifar10/cifar-10-python.tar.gz\n"
  )

  x, y = data.load(
      "cifar10", "train", data_dir=tmp_path / "tfds", manual_dir=raw
  )
  want_x = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
  want_y = np.concatenate([batches[f"data_batch_{i}"][1] for i in range(1, 6)])
  assert (
      x.shape == (35, 32, 32, 3)
      and x.dtype == np.float32
      and y.dtype == np.int32
  )
  np.testing.assert_array_equal(x, want_x.astype(np.float32) / 255)
  np.testing.assert_array_equal(y, want_y)
  xt, yt = data.load(
      "cifar10", "test", data_dir=tmp_path / "tfds", manual_dir=raw
  )
  np.testing.assert_array_equal(
      xt, batches["test_batch"][0].astype(np.float32) / 255
  )
  np.testing.assert_array_equal(yt, batches["test_batch"][1])


def test_cifar10_download_path(tmp_path, monkeypatch):
  """Without a local tarball the builder downloads the canonical URL."""
  monkeypatch.delenv("JAXADV_DATA_DIR", raising=False)
  tarball = tmp_path / "downloaded.tar.gz"
  batches = _write_cifar_tarball(
      tarball, per_batch=2, rng=np.random.default_rng(1)
  )
  monkeypatch.setitem(
      checksums.KNOWN_SHA256,
      "cifar10/cifar-10-python.tar.gz",
      (checksums.sha256_of_file(tarball),),
  )
  monkeypatch.setattr(builders, "_host_reachable", lambda *a, **k: True)
  requested = []

  def fake_download(self, url_or_urls):
    requested.append(url_or_urls)
    return {k: tarball for k in url_or_urls}

  monkeypatch.setattr(tfds.download.DownloadManager, "download", fake_download)
  x, y = data.load(
      "cifar10",
      "test",
      data_dir=tmp_path / "tfds",
      manual_dir=tmp_path / "empty",
  )
  assert requested == [
      {"tarball": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"}
  ]
  np.testing.assert_array_equal(y, batches["test_batch"][1])
  assert x.shape == (4, 32, 32, 3)


@pytest.mark.slow  # 6-14 s; CI's slow line
@needs_data
@pytest.mark.parametrize("split,per_class", [("test", 1000), ("train", 5000)])
def test_cifar10_jpeg(tfds_dir, raw_dir, split, per_class):
  x, y = _load("cifar10_jpeg", split, tfds_dir, raw_dir)
  assert (
      x.shape == (10 * per_class, 32, 32, 3)
      and x.dtype == np.float32
      and y.dtype == np.int32
  )
  assert 0.0 <= x.min() and x.max() <= 1.0
  assert np.bincount(y, minlength=10).tolist() == [per_class] * 10
  # Class-interleaved order: record 10 * k + c is file k of class c.
  np.testing.assert_array_equal(y[:20], np.tile(np.arange(10), 2))
  with zipfile.ZipFile(raw_dir / "cifar10_jpeg" / "cifar10_jpeg.zip") as zf:
    for k, c in [(0, 3), (1, 9), (per_class - 1, 0)]:
      name = f"{split}/{builders.CIFAR10_CLASS_NAMES[c]}/{k:04d}.jpg"
      want = np.asarray(Image.open(io.BytesIO(zf.read(name))).convert("RGB"))
      np.testing.assert_array_equal(
          x[10 * k + c], want.astype(np.float32) / 255
      )


# ---------------------------------------------------------------------------
# Batching.
# ---------------------------------------------------------------------------


def _toy(n: int = 103):
  x = np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1) * np.ones(
      (1, 2, 2, 1), np.float32
  )
  y = (np.arange(n) % 10).astype(np.int64)
  return x, y


def _ids(batch) -> list[int]:
  return batch["x"][:, 0, 0, 0].astype(int).tolist()


def test_batches_deterministic_per_seed_and_epoch():
  x, y = _toy()
  a = [_ids(b) for b in data.batches(x, y, 10, seed=3, epoch=2)]
  b = [_ids(b) for b in data.batches(x, y, 10, seed=3, epoch=2)]
  c = [_ids(b) for b in data.batches(x, y, 10, seed=3, epoch=3)]
  d = [_ids(b) for b in data.batches(x, y, 10, seed=4, epoch=2)]
  assert a == b and a != c and a != d
  order = data.epoch_permutation(103, seed=3, epoch=2)
  np.testing.assert_array_equal(
      order, np.random.default_rng([3, 2]).permutation(103)
  )
  assert sum(a, []) == order[:100].tolist()


def test_batches_shapes_dtypes_and_drop_remainder():
  x, y = _toy()
  out = list(data.batches(x, y, 10, seed=0))
  assert len(out) == data.num_batches(103, 10) == 10
  for b in out:
    assert b["x"].shape == (10, 2, 2, 1) and b["x"].dtype == np.float32
    assert b["y"].shape == (10,) and b["y"].dtype == np.int32
    np.testing.assert_array_equal(b["y"], np.asarray(_ids(b)) % 10)
  out = list(data.batches(x, y, 10, seed=0, drop_remainder=False))
  assert len(out) == data.num_batches(103, 10, drop_remainder=False) == 11
  assert [len(b["y"]) for b in out] == [10] * 10 + [3]
  assert sorted(sum((_ids(b) for b in out), [])) == list(range(103))
  assert sum(
      (_ids(b) for b in data.batches(x, y, 50, seed=0, shuffle=False)), []
  ) == list(range(100))


def test_batches_resume_mid_epoch():
  x, y = _toy()
  full = list(data.batches(x, y, 8, seed=11, epoch=5))
  resumed = list(data.batches(x, y, 8, seed=11, epoch=5, start_batch=7))
  assert len(resumed) == len(full) - 7
  for b_full, b_res in zip(full[7:], resumed):
    np.testing.assert_array_equal(b_full["x"], b_res["x"])
    np.testing.assert_array_equal(b_full["y"], b_res["y"])
  assert (
      list(data.batches(x, y, 8, seed=11, epoch=5, start_batch=len(full))) == []
  )


def test_num_batches():
  assert data.num_batches(0, 4) == 0
  assert data.num_batches(8, 4) == 2 and data.num_batches(9, 4) == 2
  assert data.num_batches(9, 4, drop_remainder=False) == 3
  with pytest.raises(ValueError, match="batch_size"):
    data.num_batches(9, 0)
  with pytest.raises(ValueError, match="n must"):
    data.num_batches(-1, 4)


@pytest.mark.parametrize(
    "kwargs,arg",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=2.5), "batch_size"),
        (dict(seed=-1), "seed"),
        (dict(epoch=-2), "epoch"),
        (dict(start_batch=-1), "start_batch"),
        (dict(start_batch=14), "start_batch"),
        (dict(y=np.zeros(5, np.int32)), "same length"),
        (dict(y=np.zeros((103, 1), np.int32)), "y must be 1-D"),
        (dict(y=np.zeros(103, np.float32)), "y must hold integer"),
        (dict(x=np.zeros((103, 2), np.uint8)), "x must be floating"),
    ],
)
def test_batches_validates_arguments_eagerly(kwargs, arg):
  x, y = _toy()
  args = dict(x=x, y=y, batch_size=8, seed=0) | kwargs
  with pytest.raises(ValueError, match=arg):
    data.batches(**args)  # Raises at call time, before iteration.
