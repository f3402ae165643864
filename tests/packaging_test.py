"""The package as a user installs it: metadata, lazy imports, embedded MNIST.

* setup.cfg is the one place of the metadata (version from
  `jaxadv.__version__`), Python >= 3.11, the LICENSE file is the Apache-2.0
  text it declares, and the runtime dependencies are exactly what jaxadv/
  imports (array_record with tensorflow-datasets' own platform marker).
* `import jaxadv.attacks` loads neither scikit-learn, tensorflow-datasets
  nor matplotlib (fresh interpreters).
* MNIST's four IDX files ship in the package, checksummed, as the data
  loader's last fallback: with no `$JAXADV_DATA_DIR` and no network the
  builders take them; the slow test runs the README's main-job command
  (`:quick`) that way, from a fresh tfds folder, through the CLI, and checks
  the workdir's metrics, TensorBoard files, config and environment.
"""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

import jaxadv
from jaxadv.data import builders
from jaxadv.data import checksums

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _setup_cfg() -> configparser.ConfigParser:
  cfg = configparser.ConfigParser()
  cfg.read(ROOT / "setup.cfg")
  return cfg


def _requirements(text: str) -> list[str]:
  return [l.strip() for l in text.splitlines()
          if l.strip() and not l.strip().startswith("#")]


def _name(requirement: str) -> str:
  """The normalised distribution name of a requirement line."""
  name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)
  return re.sub(r"[-_.]+", "-", name).lower()


# --------------------------------------------------------------- metadata ----

def test_metadata_in_one_place_with_one_version(tmp_path):
  cfg = _setup_cfg()
  assert cfg["metadata"]["version"].strip() == "attr: jaxadv.__version__"
  assert re.fullmatch(r"\d+\.\d+\.\d+", jaxadv.__version__)
  assert cfg["options"]["python_requires"].strip() == ">=3.11"
  classifiers = _requirements(cfg["metadata"]["classifiers"])
  assert "Programming Language :: Python :: 3 :: Only" in classifiers
  assert "Programming Language :: Python :: 3.11" in classifiers
  # pyproject.toml only names the build backend; requirements.txt only
  # installs the package.
  pyproject = (ROOT / "pyproject.toml").read_text()
  assert "[project]" not in pyproject and "setuptools" in pyproject
  reqs = _requirements((ROOT / "requirements.txt").read_text())
  assert reqs == ["-e .[experiments]"]
  # The installed metadata (`pip install -e .`) says the same. Read from
  # another folder: a stale jaxadv.egg-info in the checkout would shadow it.
  code = ("import importlib.metadata as m, json\n"
          "d = m.metadata('jaxadv')\n"
          "print(json.dumps([d['Version'], d['Requires-Python']]))")
  out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                       check=True, capture_output=True, text=True,
                       timeout=60).stdout
  assert json.loads(out) == [jaxadv.__version__, ">=3.11"]


def test_license_file_is_the_declared_apache_2():
  cfg = _setup_cfg()
  assert cfg["metadata"]["license"].strip() == "Apache-2.0"
  assert cfg["metadata"]["license_files"].strip() == "LICENSE"
  text = (ROOT / "LICENSE").read_text()
  assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
  assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
  assert "END OF TERMS AND CONDITIONS" in text


def _third_party_imports() -> set[str]:
  """Top-level modules imported anywhere in jaxadv/ (outside jaxadv)."""
  mods = set()
  for path in (ROOT / "jaxadv").rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        mods.update(a.name.split(".")[0] for a in node.names)
      elif isinstance(node, ast.ImportFrom) and node.level == 0:
        mods.add(node.module.split(".")[0])
  stdlib = set(sys.stdlib_module_names) | {"__future__"}
  return {m for m in mods if m not in stdlib and m != "jaxadv"}


# Imported only inside functions that need them, from an extra.
_OPTIONAL = {"torch": "torch"}
# Required without being imported: tfds reads array_record files with it,
# and imports importlib_resources without declaring it (for Python >= 3.9).
_INDIRECT = {"array-record", "importlib-resources"}


def test_runtime_dependencies_are_what_the_library_imports():
  cfg = _setup_cfg()
  declared = {_name(r) for r in _requirements(cfg["options"]["install_requires"])}
  dists = importlib.metadata.packages_distributions()
  imported = set()
  for mod in _third_party_imports():
    if mod in _OPTIONAL:
      continue
    names = {_name(d) for d in dists.get(mod, [])}
    assert names, f"jaxadv imports {mod!r}, installed by no distribution"
    assert names & declared, f"{mod!r} ({names}) is not in install_requires"
    imported |= names & declared
  assert declared - imported == _INDIRECT
  for unused in ("chex", "ml-collections", "absl-py", "matplotlib"):
    assert unused not in declared
  extras = {k: {_name(r) for r in _requirements(v)}
            for k, v in cfg["options.extras_require"].items()}
  assert "chex" in extras["test"]
  # The tests run the experiments: the test extra holds their extra.
  assert extras["experiments"] <= extras["test"]
  assert "tensorboard" in extras["test"]
  assert extras["torch"] == {"torch"}


def test_tfds_needs_importlib_resources_it_does_not_declare():
  """Why install_requires keeps importlib_resources (`_INDIRECT`)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  src = pathlib.Path(tfds.core.dataset_builder.__file__).read_text()
  assert "importlib_resources" in src
  declared = [r for r in importlib.metadata.requires("tensorflow-datasets")
              if _name(r) == "importlib-resources"]
  assert all("python_version" in r for r in declared)


def test_array_record_has_tfds_platform_marker():
  ours = [r for r in _requirements(_setup_cfg()["options"]["install_requires"])
          if _name(r) == "array-record"]
  tfds = [r for r in importlib.metadata.requires("tensorflow-datasets")
          if _name(r) == "array-record"]
  assert len(ours) == 1 and len(tfds) == 1
  marker = lambda r: r.split(";", 1)[1].strip().replace("'", '"')
  assert marker(ours[0]) == marker(tfds[0])


def test_embedded_mnist_is_package_data():
  cfg = _setup_cfg()
  assert cfg["options.package_data"]["jaxadv.data"].strip() == (
      "embedded/mnist/*.gz")


# ----------------------------------------------------------- lazy imports ----

def test_import_attacks_loads_no_heavy_dependency():
  code = ("import json, sys\nimport jaxadv.attacks\n"
          "print(json.dumps(sorted(m for m in ('sklearn', "
          "'tensorflow_datasets', 'matplotlib', 'tensorflow', 'orbax', "
          "'tensorboardX', 'torch') if m in sys.modules)))")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                       capture_output=True, text=True, timeout=120).stdout
  assert json.loads(out.strip().splitlines()[-1]) == []


def test_subpackages_load_on_first_access():
  code = ("import sys\nimport jaxadv\n"
          "assert 'jaxadv.data' not in sys.modules\n"
          "assert jaxadv.data.info('mnist').num_classes == 10\n"
          "from jaxadv import defenses\n"
          "assert 'sklearn' in sys.modules and defenses is jaxadv.defenses\n"
          "assert set(jaxadv.SUBMODULES) <= set(dir(jaxadv))\n"
          "try:\n  jaxadv.nope\nexcept AttributeError:\n  print('ok')\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                       capture_output=True, text=True, timeout=120).stdout
  assert out.strip().splitlines()[-1] == "ok"
  for name in jaxadv.SUBMODULES:
    assert (ROOT / "jaxadv" / name).is_dir() or (
        ROOT / "jaxadv" / f"{name}.py").is_file(), name


# ----------------------------------------------------------- embedded MNIST --

def test_embedded_mnist_files_pass_their_checksums():
  folder = pathlib.Path(builders.EMBEDDED_DIR) / "mnist"
  assert builders.JaxadvMnist.embedded_dir() == folder
  total = 0
  for filename in builders.JaxadvMnist.RAW_FILES.values():
    path = folder / filename
    total += path.stat().st_size
    digest = checksums.sha256_of_file(path)
    assert digest in checksums.KNOWN_SHA256[f"mnist/{filename}"]
  assert 10_000_000 < total < 12_000_000  # about 11 MB
  # Only MNIST ships its files.
  assert builders.JaxadvFashionMnist.embedded_dir() is None
  assert builders.JaxadvCifar10.embedded_dir() is None


class _DownloadManager:
  """Just what `_resolve_raw_files` asks a tfds download manager for."""

  def __init__(self, manual_dir=None, fail=False):
    self._manual_dir = manual_dir
    self._fail = fail
    self.downloads = []

  @property
  def manual_dir(self):
    raise AssertionError("no manual folder")

  def download(self, urls):
    self.downloads.append(urls)
    if self._fail:
      raise OSError("connection refused")
    raise AssertionError("must not download")


def _builder(tmp_path):
  return builders.JaxadvMnist(data_dir=str(tmp_path / "tfds"))


def test_offline_without_data_dir_falls_back_to_embedded(tmp_path,
                                                         monkeypatch):
  monkeypatch.delenv(builders.DATA_DIR_ENV, raising=False)
  monkeypatch.setattr(builders, "_host_reachable", lambda *a, **k: False)
  paths = _builder(tmp_path)._resolve_raw_files(
      _DownloadManager(manual_dir=str(tmp_path / "nothing")))
  folder = pathlib.Path(builders.EMBEDDED_DIR) / "mnist"
  assert {k: pathlib.Path(os.fspath(v)) for k, v in paths.items()} == {
      k: folder / f for k, f in builders.JaxadvMnist.RAW_FILES.items()}


def test_failed_download_falls_back_to_embedded(tmp_path, monkeypatch):
  monkeypatch.delenv(builders.DATA_DIR_ENV, raising=False)
  monkeypatch.setattr(builders, "_host_reachable", lambda *a, **k: True)
  dl = _DownloadManager(fail=True)
  paths = _builder(tmp_path)._resolve_raw_files(dl)
  assert len(dl.downloads) == 1  # the download came first
  assert all(os.fspath(p).startswith(builders.EMBEDDED_DIR)
             for p in paths.values())


def test_data_dir_comes_before_embedded(tmp_path, monkeypatch):
  shared = os.environ.get(builders.DATA_DIR_ENV)
  if not shared or not os.path.isdir(os.path.join(shared, "mnist")):
    pytest.skip("no $JAXADV_DATA_DIR/mnist")
  monkeypatch.setattr(builders, "_host_reachable", lambda *a, **k: False)
  paths = _builder(tmp_path)._resolve_raw_files(_DownloadManager())
  assert all(os.fspath(p).startswith(os.path.join(shared, "mnist"))
             for p in paths.values())


def test_no_embedded_copy_keeps_the_error(tmp_path, monkeypatch):
  monkeypatch.delenv(builders.DATA_DIR_ENV, raising=False)
  monkeypatch.setattr(builders, "_host_reachable", lambda *a, **k: False)
  b = builders.JaxadvFashionMnist(data_dir=str(tmp_path / "tfds"))
  with pytest.raises(FileNotFoundError, match="not reachable"):
    b._resolve_raw_files(_DownloadManager())


# The README's main-job command, `:quick`, offline: `_host_reachable` is
# False (the tfds download is never tried), no $JAXADV_DATA_DIR, a fresh
# tfds folder, so MNIST is prepared from the embedded files.
_OFFLINE_MAIN = r"""
import runpy, sys
from jaxadv.data import builders
builders._host_reachable = lambda *a, **k: False
sys.argv = ["experiments.robust_training"] + sys.argv[1:]
runpy.run_module("experiments.robust_training", run_name="__main__",
                 alter_sys=True)
"""


@pytest.mark.slow  # ~4 min: MNIST prepared from scratch, then the :quick job
def test_main_job_runs_offline_from_embedded_mnist(tmp_path):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=import-outside-toplevel
  from jaxadv import metrics  # pylint: disable=import-outside-toplevel
  env = {k: v for k, v in os.environ.items()
         if k not in (builders.DATA_DIR_ENV, "TFDS_DATA_DIR")}
  env["JAXADV_TFDS_DIR"] = str(tmp_path / "tfds")
  env["HOME"] = str(tmp_path / "home")  # no ~/tensorflow_datasets either
  env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
  workdir = tmp_path / "quick"
  proc = subprocess.run(
      [sys.executable, "-c", _OFFLINE_MAIN,
       "--config=experiments/configs/robust_mnist.py:quick",
       f"--workdir={workdir}", "--config.progress=False"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert "embedded in jaxadv" in proc.stderr
  saved = json.loads((workdir / "results.json").read_text())
  methods = [r["method"] for r in saved["records"]]
  assert methods == ["natural", "fgsm_rs", "free", "pgd"]
  config = json.loads((workdir / "config.json").read_text())
  assert config["dataset"] == "mnist" and config["train_limit"] == 6000
  environment = json.loads((workdir / "environment.json").read_text())
  assert environment["jax"] and environment["backend"]
  assert environment["device_count"] >= 1
  details = json.loads((workdir / "details.json").read_text())
  for m in methods:
    d = workdir / "metrics" / m
    lines = metrics.read(str(d))
    steps = [l["step"] for l in lines if l["kind"] == "step"]
    assert steps and steps == sorted(set(steps))  # one line per logged step
    assert {"loss", "accuracy", "eps", "learning_rate",
            "step_seconds"} <= set(lines[0]["scalars"])
    epochs = [l for l in lines if l["kind"] == "epoch"]
    assert epochs and all("val_pgd_acc" in l["scalars"] for l in epochs)
    assert metrics.history(str(d)) == details[m]["history"]
    assert list(d.glob("events.out.tfevents.*"))
    acc = event_accumulator.EventAccumulator(
        str(d), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"step/loss", "step/learning_rate", "step/eps",
            "epoch/val_pgd_acc"} <= tags
    assert [e.step for e in acc.Scalars("step/loss")] == steps
