"""experiments.robust_eval on real data: the `:quick` pipeline of a
robust_training workdir, and checkpoint mode on a PyTorch state_dict trained
here and on an orbax checkpoint of `jaxadv.training.fit`."""

import json
import os
import subprocess
import sys

import pytest

from experiments import robust_eval
from experiments.configs import robust_eval as robust_eval_config


@pytest.mark.slow
def test_quick_robust_eval_trains_restores_and_reports(tmp_path, capsys):
  config = robust_eval_config.get_config("quick")
  config.progress = False
  config.train_workdir = str(tmp_path / "train")
  workdir = str(tmp_path / "eval")
  records = robust_eval.run(config, workdir)
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["records"] == records
  assert [r["method"] for r in records] == list(config.methods)
  for r in records:
    assert r["num_examples"] == config.num_examples
    assert r["ensemble_acc"] <= r["apgd_ce_acc"] <= r["clean_acc"]
    assert r["pgd_or_ensemble_acc"] <= min(r["pgd_acc"], r["ensemble_acc"])
    assert list(r["ensemble_cumulative"]) == ["apgd-ce", "apgd-t", "fab-t",
                                                "square"]
  assert os.path.getsize(os.path.join(workdir,
                                      "robust_acc_by_attack.png")) > 0
  # A second run restores from the finished workdir instead of re-evaluating.
  assert robust_eval.run(config, workdir) == records
  assert "already evaluated" in capsys.readouterr().out


# -- checkpoint mode -----------------------------------------------------------

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_N = 100  # test images of the checkpoint-mode runs


def _torch_fast_at_mnist():
  """The reference fast-AT MNIST net (fast_adversarial/MNIST/mnist_net.py)."""
  from torch import nn  # pylint: disable=import-outside-toplevel
  return nn.Sequential(
      nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(),
      nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
      nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10))


@pytest.fixture(scope="module")
def torch_mnist_checkpoint(tmp_path_factory):
  """(path, PyTorch predictions on the first _N test images, labels) of the
  fast-AT MNIST net trained here in PyTorch (300 Adam steps, batch 100, on
  20k real MNIST training images) and saved with torch.save(state_dict)."""
  torch = pytest.importorskip("torch")
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jaxadv import data  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  x, y = data.load("mnist", "train", limit=20000)
  xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
  yt = torch.from_numpy(y).long()
  net = _torch_fast_at_mnist()
  opt = torch.optim.Adam(net.parameters(), lr=1e-3)
  gen = torch.Generator().manual_seed(0)
  for _ in range(300):
    idx = torch.randint(0, len(xt), (100,), generator=gen)
    loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
  x_test, y_test = data.load("mnist", "test", limit=_N)
  with torch.no_grad():
    preds = net(torch.from_numpy(x_test).permute(0, 3, 1, 2)).argmax(1)
  preds = preds.numpy()
  assert (preds == y_test).mean() > 0.9
  path = str(tmp_path_factory.mktemp("torch") / "model.pth")
  torch.save(net.state_dict(), path)
  return path, preds, np.asarray(y_test)


def _assert_outputs(workdir, records):
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  assert saved["records"] == records
  assert "jax" in saved["environment"]
  for name in ("results.md", "robust_acc_by_attack.png", "details.json"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  (r,) = records
  assert r["ensemble_acc"] <= r["apgd_ce_acc"] <= r["clean_acc"]
  assert r["pgd_acc"] <= r["clean_acc"]
  assert list(r["ensemble_cumulative"]) == ["apgd-ce", "apgd-t", "fab-t",
                                              "square"]
  with open(os.path.join(workdir, "results.md")) as f:
    md = f.read()
  assert "**robust (ensemble)**" in md and r["model"] in md
  return md


@pytest.mark.slow
def test_checkpoint_mode_on_a_pytorch_state_dict(torch_mnist_checkpoint,
                                                 tmp_path):
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jaxadv import data, models  # pylint: disable=import-outside-toplevel
  path, torch_preds, y = torch_mnist_checkpoint
  config = robust_eval_config.get_config("quick")
  config.progress = False
  config.checkpoint = path
  config.model = "fast_at_mnist"
  config.dataset = "mnist"
  config.n_examples = _N
  workdir = str(tmp_path / "eval")
  records = robust_eval.run(config, workdir)
  md = _assert_outputs(workdir, records)
  (r,) = records
  assert r["num_examples"] == _N and r["eps"] == 0.3  # MNIST's default eps
  assert r["pgd_step_size"] == config.pgd.step_size  # MNIST: no eps rule
  assert (r["checkpoint_format"], r["checkpoint_params"]) == ("torch",
                                                              "state_dict")
  # Clean accuracy is the PyTorch model's own: the same predictions.
  assert r["clean_acc"] == float((torch_preds == y).mean())
  model = models.get_model("fast_at_mnist", num_classes=10)
  variables = models.load_torch_state_dict(path, model)
  x, _ = data.load("mnist", "test", limit=_N)
  np.testing.assert_array_equal(
      np.asarray(model.apply(variables, x, train=False)).argmax(1),
      torch_preds)
  assert f"N = {_N} MNIST test images, eps = 0.3" in md


@pytest.mark.slow
def test_checkpoint_mode_command_line(torch_mnist_checkpoint, tmp_path):
  """The issue's command (no --config: it defaults to robust_eval.py), tiny
  budgets, in a subprocess."""
  path, torch_preds, y = torch_mnist_checkpoint
  n = 50
  workdir = str(tmp_path / "cli")
  budget = ["--config.progress=False", "--config.individual=False",
            f"--config.batch_size={n}", "--config.pgd.steps=10",
            "--config.pgd.restarts=1", "--config.apgd.steps=10",
            "--config.apgd.num_targets=2", "--config.fab.steps=10",
            "--config.square.queries=50", f"--config.sanity.subset={n}",
            "--config.sanity.square_queries=20",
            "--config.sanity.more_restarts=2"]
  env = dict(os.environ, PYTHONPATH=_REPO)
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.robust_eval",
       f"--config.checkpoint={path}", "--config.model=fast_at_mnist",
       "--config.dataset=mnist", "--config.eps=0.1",
       f"--config.n_examples={n}", *budget, f"--workdir={workdir}"],
      cwd=_REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(workdir, "results.json")) as f:
    records = json.load(f)["records"]
  _assert_outputs(workdir, records)
  (r,) = records
  assert r["eps"] == 0.1 and r["num_examples"] == n
  assert r["clean_acc"] == float((torch_preds[:n] == y[:n]).mean())
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["checkpoint"] == path


@pytest.mark.slow
def test_checkpoint_mode_on_an_orbax_checkpoint_of_fit(tmp_path):
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from jaxadv import data, evaluation, models, training  # pylint: disable=import-outside-toplevel,g-multiple-import
  x, y = data.load("fashion_mnist", "train", limit=2000)
  model = models.get_model("mlp", num_classes=10)  # BatchNorm: batch_stats
  state = training.create_train_state(model, jax.random.key(0),
                                      (1, 28, 28, 1), optax.adam(1e-3))
  fit_dir = str(tmp_path / "fit")
  # Two passes of 20 batches; `select` keeps the first pass's parameters as
  # "best", so the newest checkpoint's "state" and "best" differ.
  result = training.fit(state, training.natural_step(), x, y, batch_size=100,
                        num_batches=40, seed=0, workdir=fit_dir,
                        checkpoint_every=20, progress=False,
                        epoch_fn=lambda s, e: {"score": -float(e)},
                        select="score")
  best = training.variables_of(result.state)
  assert set(best) == {"params", "batch_stats"}

  config = robust_eval_config.get_config("quick")
  config.progress = False
  config.individual = False
  config.checkpoint = fit_dir  # the manager's folder: its newest step
  config.model = "mlp"
  config.dataset = "fashion_mnist"
  config.n_examples = _N
  workdir = str(tmp_path / "eval")
  records = robust_eval.run(config, workdir)
  md = _assert_outputs(workdir, records)
  (r,) = records
  assert (r["checkpoint_format"], r["checkpoint_params"],
          r["checkpoint_step"]) == ("orbax", "best", 40)
  assert r["eps"] == pytest.approx(0.1)  # Fashion-MNIST's default eps
  assert r["pgd_step_size"] == pytest.approx(0.025)  # eps / 4
  x_test, y_test = data.load("fashion_mnist", "test", limit=_N)
  assert r["clean_acc"] == evaluation.accuracy(model.apply, best, x_test,
                                               y_test)
  assert "Fashion-MNIST test images, eps = 0.1; PGD-20x2, step 0.025" in md
  assert "step 40, 'best' parameters" in md

  # One step folder: that step; the same "best" subtree, no optimizer read.
  config.checkpoint = os.path.join(fit_dir, "20")
  variables, info = robust_eval.load_checkpoint(config, model, (28, 28, 1))
  assert info == {"step": 20, "source": "best", "format": "orbax"}
  jax.tree.map(np.testing.assert_array_equal, variables, best)
  # A checkpoint of another architecture: a clear error naming the fields.
  config.checkpoint = fit_dir
  config.model = "fast_at_mnist"
  with pytest.raises(ValueError, match=r"config\.model"):
    robust_eval.load_checkpoint(
        config, models.get_model("fast_at_mnist", num_classes=10),
        (28, 28, 1))


def test_checkpoint_mode_without_best_uses_the_latest_state(tmp_path):
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from jaxadv import data, models, training  # pylint: disable=import-outside-toplevel,g-multiple-import
  x, y = data.load("mnist", "train", limit=200)
  model = models.get_model("linear_softmax", num_classes=10)
  state = training.create_train_state(model, jax.random.key(0),
                                      (1, 28, 28, 1), optax.sgd(0.1))
  result = training.fit(state, training.natural_step(), x, y, batch_size=50,
                        num_batches=6, seed=0, workdir=str(tmp_path),
                        checkpoint_every=3, progress=False)
  config = robust_eval_config.get_config()
  config.checkpoint = str(tmp_path)
  config.model = "linear_softmax"
  config.dataset = "mnist"
  variables, info = robust_eval.load_checkpoint(config, model, (28, 28, 1))
  assert info == {"step": 6, "source": "state", "format": "orbax"}
  jax.tree.map(np.testing.assert_array_equal, variables,
               training.variables_of(result.state))


def _checkpoint_config(tmp_path, **fields):
  config = robust_eval_config.get_config()
  pth = tmp_path / "model.pth"
  pth.write_bytes(b"")
  config.checkpoint = str(pth)
  config.model = "fast_at_mnist"
  config.dataset = "mnist"
  for k, v in fields.items():
    config[k] = v
  return config


@pytest.mark.parametrize("fields, match", [
    (dict(checkpoint="/nonexistent/model.pth"),
     r"`config\.checkpoint` '/nonexistent/model\.pth' does not exist"),
    (dict(model=None), r"`config\.model` must name"),
    (dict(model="no_such_net"), r"`config\.model` 'no_such_net'"),
    (dict(dataset=None), r"`config\.dataset` must name"),
    (dict(dataset="svhn"), r"`config\.dataset` 'svhn' is unknown"),
    (dict(eps=-0.1), r"`config\.eps` must be > 0"),
    (dict(n_examples=0), r"`config\.n_examples`"),
    (dict(train_workdir="/tmp/x"),
     r"only one of `config\.checkpoint`.*`config\.train_workdir`"),
    (dict(checkpoint=None), r"Set `config\.checkpoint`.*`config\.train_workdir`"),
])
def test_bad_checkpoint_config_names_the_field(tmp_path, fields, match):
  with pytest.raises(ValueError, match=match):
    robust_eval.run(_checkpoint_config(tmp_path, **fields),
                    str(tmp_path / "out"))


def test_unknown_checkpoint_extension(tmp_path):
  config = _checkpoint_config(tmp_path)
  npz = tmp_path / "model.npz"
  npz.write_bytes(b"")
  config.checkpoint = str(npz)
  with pytest.raises(ValueError,
                     match=r"`config\.checkpoint` .*unknown extension '\.npz'"):
    robust_eval.run(config, str(tmp_path / "out"))


def test_checkpoint_fields_are_refused_in_train_workdir_mode(tmp_path):
  config = robust_eval_config.get_config()
  config.train_workdir = str(tmp_path)
  config.eps = 0.2
  with pytest.raises(ValueError, match=r"`config\.eps` is only used with"):
    robust_eval.run(config, str(tmp_path / "out"))


def test_num_examples_and_n_examples_are_one_field():
  config = robust_eval_config.get_config("quick")
  assert config.n_examples == config.num_examples == 100
  config.num_examples = 7
  assert config.n_examples == 7
  config.n_examples = 9
  assert config.num_examples == 9


def test_defaults_per_dataset():
  config = robust_eval_config.get_config()
  for dataset, eps, step in (("mnist", 0.3, 0.01),
                             ("fashion_mnist", 0.1, 0.025),
                             ("cifar10", 8 / 255, 2 / 255)):
    config.dataset = dataset
    e = robust_eval.checkpoint_eps(config)
    assert e == pytest.approx(eps)
    assert robust_eval.pgd_step_size(config, e) == pytest.approx(step)
  config.pgd.eps_fraction = 0.0
  assert robust_eval.pgd_step_size(config, 8 / 255) == config.pgd.step_size
  assert robust_eval._fmt(8 / 255) == "8/255"  # pylint: disable=protected-access
  assert robust_eval._fmt(0.3) == "0.3"  # pylint: disable=protected-access
