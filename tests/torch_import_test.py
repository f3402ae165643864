"""Models from PyTorch: train a tiny torch model on MNIST, load it, compare.

Each PyTorch module below is the reference architecture of a jaxadv model
(same key names as the reference code), trained a few SGD steps on real
MNIST, saved with `torch.save(state_dict)` and loaded with
`models.load_torch_state_dict`; logits must agree within 1e-5.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxadv import data
from jaxadv import models

torch = pytest.importorskip("torch")
tnn = torch.nn
F = torch.nn.functional
torch.set_num_threads(1)  # the shared CPU: threads only oversubscribe it


def _fast_at_mnist():
  """fast_adversarial/MNIST/mnist_net.py (Wong, Rice & Kolter, 2020)."""
  return tnn.Sequential(
      tnn.Conv2d(1, 16, 4, stride=2, padding=1), tnn.ReLU(),
      tnn.Conv2d(16, 32, 4, stride=2, padding=1), tnn.ReLU(), tnn.Flatten(),
      tnn.Linear(32 * 7 * 7, 100), tnn.ReLU(), tnn.Linear(100, 10))


class _MadryCNN(tnn.Module):
  """A PyTorch port of MadryLab/mnist_challenge's model."""

  def __init__(self):
    super().__init__()
    self.conv1 = tnn.Conv2d(1, 32, 5, padding=2)
    self.conv2 = tnn.Conv2d(32, 64, 5, padding=2)
    self.fc1 = tnn.Linear(7 * 7 * 64, 1024)
    self.fc2 = tnn.Linear(1024, 10)

  def forward(self, x):
    x = F.max_pool2d(F.relu(self.conv1(x)), 2)
    x = F.max_pool2d(F.relu(self.conv2(x)), 2)
    return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


class _PreActLayers(tnn.Module):
  """bn1, conv1 (3x3, stride), bn2, conv2 (3x3): both references' blocks."""

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.bn1 = tnn.BatchNorm2d(cin)
    self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn2 = tnn.BatchNorm2d(cout)
    self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)


class _WideBlock(_PreActLayers):
  """TRADES wideresnet.py BasicBlock (pre-activation)."""

  def __init__(self, cin, cout, stride):
    super().__init__(cin, cout, stride)
    self.equal = cin == cout
    self.convShortcut = None if self.equal else tnn.Conv2d(
        cin, cout, 1, stride, 0, bias=False)

  def forward(self, x):
    if self.equal:
      out = F.relu(self.bn1(x))
    else:
      x = F.relu(self.bn1(x))
      out = x
    out = self.conv2(F.relu(self.bn2(self.conv1(out))))
    return (x if self.equal else self.convShortcut(x)) + out


class _NetworkBlock(tnn.Module):

  def __init__(self, n, cin, cout, stride):
    super().__init__()
    self.layer = tnn.Sequential(*[
        _WideBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
        for i in range(n)])

  def forward(self, x):
    return self.layer(x)


class _WideResNet(tnn.Module):
  """TRADES wideresnet.py, with its unused `sub_block1`, on 1-channel input."""

  def __init__(self, depth=10, widen=1, in_channels=1):
    super().__init__()
    n, ch = (depth - 4) // 6, [16, 16 * widen, 32 * widen, 64 * widen]
    self.conv1 = tnn.Conv2d(in_channels, ch[0], 3, 1, 1, bias=False)
    self.block1 = _NetworkBlock(n, ch[0], ch[1], 1)
    self.sub_block1 = _NetworkBlock(n, ch[0], ch[1], 1)
    self.block2 = _NetworkBlock(n, ch[1], ch[2], 2)
    self.block3 = _NetworkBlock(n, ch[2], ch[3], 2)
    self.bn1 = tnn.BatchNorm2d(ch[3])
    self.fc = tnn.Linear(ch[3], 10)

  def forward(self, x):
    x = self.block3(self.block2(self.block1(self.conv1(x))))
    return self.fc(F.relu(self.bn1(x)).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def mnist():
  x, y = data.load("mnist", "train", limit=256)
  return x, y


def _train(module, x, y, steps=15, lr=2e-3):
  """A few Adam steps (batches of 32) on real MNIST (NCHW), then eval mode."""
  torch.manual_seed(0)
  opt = torch.optim.Adam(module.parameters(), lr=lr)
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  yt = torch.from_numpy(y.astype(np.int64))
  module.train()
  for i in range(steps):
    start = (32 * i) % (len(x) - 31)
    sl = slice(start, start + 32)
    opt.zero_grad()
    F.cross_entropy(module(xt[sl]), yt[sl]).backward()
    opt.step()
  bns = [m for m in module.modules() if isinstance(m, tnn.BatchNorm2d)]
  if bns:  # running statistics = the average over the training batches
    for bn in bns:
      bn.reset_running_stats()
      bn.momentum = None
    with torch.no_grad():
      for start in range(0, len(x) - 31, 32):
        module(xt[start:start + 32])
  return module.eval()


def _torch_logits(module, x):
  with torch.no_grad():
    return module(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()


CASES = {
    "fast_at_mnist": (_fast_at_mnist, lambda: models.get_model("fast_at_mnist")),
    "madry_cnn": (_MadryCNN, lambda: models.get_model("madry_cnn")),
    "wide_resnet_10_1": (_WideResNet,
                         lambda: models.WideResNet(depth=10, widen_factor=1)),
}
INPUT_SHAPES = {"wide_resnet_10_1": (1, 28, 28, 1)}  # MNIST into a CIFAR net


@pytest.mark.parametrize("name", list(CASES))
def test_trained_torch_model_gives_the_same_logits(tmp_path, mnist, name):
  make_torch, make_flax = CASES[name]
  torch.manual_seed(0)
  x, y = mnist
  module = _train(make_torch(), x[:160], y[:160])
  path = tmp_path / "model.pt"
  torch.save(module.state_dict(), path)
  model = make_flax()
  variables = models.load_torch_state_dict(
      path, model, input_shape=INPUT_SHAPES.get(name))
  if name == "wide_resnet_10_1":  # BN statistics moved during training
    assert models.has_batch_norm(variables)
    np.testing.assert_allclose(
        variables["batch_stats"]["bn"]["mean"],
        module.bn1.running_mean.numpy(), rtol=0, atol=0)
  x_test = x[160:]
  expected = _torch_logits(module, x_test)
  got = np.asarray(jax.jit(model.apply)(variables, x_test))
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
  # Trained, not the initialisation: the logits carry signal.
  assert np.mean(np.argmax(expected, -1) == y[160:]) > 0.25


@pytest.mark.slow
def test_preact_resnet18_from_torch(mnist):
  """PreActResNet18 (fast_adversarial preact_resnet.py names), eval mode."""

  class Block(_PreActLayers):

    def __init__(self, cin, cout, stride):
      super().__init__(cin, cout, stride)
      if stride != 1 or cin != cout:
        self.shortcut = tnn.Sequential(
            tnn.Conv2d(cin, cout, 1, stride, bias=False))

    def forward(self, x):
      out = F.relu(self.bn1(x))
      sc = self.shortcut(out) if hasattr(self, "shortcut") else x
      out = self.conv1(out)
      return self.conv2(F.relu(self.bn2(out))) + sc

  class Net(tnn.Module):

    def __init__(self):
      super().__init__()
      self.conv1 = tnn.Conv2d(1, 64, 3, 1, 1, bias=False)
      cin = 64
      for i, (c, s) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)]):
        setattr(self, f"layer{i + 1}",
                tnn.Sequential(Block(cin, c, s), Block(c, c, 1)))
        cin = c
      self.bn = tnn.BatchNorm2d(512)
      self.linear = tnn.Linear(512, 10)

    def forward(self, x):
      x = self.conv1(x)
      for i in range(4):
        x = getattr(self, f"layer{i + 1}")(x)
      return self.linear(F.relu(self.bn(x)).mean(dim=(2, 3)))

  x, y = mnist
  module = _train(Net(), x[:64], y[:64], steps=2)
  model = models.get_model("preact_resnet18")
  # A DataParallel-style prefix is stripped.
  state = {f"module.{k}": v for k, v in module.state_dict().items()}
  variables = models.load_torch_state_dict(state, model,
                                           input_shape=(1, 28, 28, 1))
  got = np.asarray(jax.jit(model.apply)(variables, x[200:216]))
  np.testing.assert_allclose(got, _torch_logits(module, x[200:216]),
                             atol=1e-4, rtol=1e-4)


def test_errors_name_the_key():
  module = _fast_at_mnist()
  state = {k: v.numpy() for k, v in module.state_dict().items()}
  model = models.get_model("fast_at_mnist")
  # A dict of numpy arrays loads without torch.load.
  assert "fc1" in models.load_torch_state_dict(state, model)["params"]
  missing = {k: v for k, v in state.items() if k != "5.weight"}
  with pytest.raises(ValueError, match=r"missing keys \['fc1.weight'\]"):
    models.load_torch_state_dict(missing, model)
  extra = dict(state, **{"8.weight": np.zeros((3, 3), np.float32)})
  with pytest.raises(ValueError, match=r"unexpected keys \['8.weight'\]"):
    models.load_torch_state_dict(extra, model)
  assert "fc2" in models.load_torch_state_dict(extra, model,
                                               strict=False)["params"]
  with pytest.raises(ValueError, match=r"key '7\.(weight|bias)' has shape \(10"):
    models.load_torch_state_dict(state, "fast_at_mnist", num_classes=5)
  with pytest.raises(TypeError, match="model"):
    models.load_torch_state_dict(state, object())
