"""DMWideResNet against a PyTorch re-implementation of RobustBench's.

`_TorchDMWideResNet` below follows RobustBench's
`robustbench/model_zoo/architectures/dm_wide_resnet.py` (module names,
explicit asymmetric padding of stride-2 convs, a shortcut exactly when the
channel count changes, applied to the activated input). Its weights,
BatchNorm running statistics and normalisation constants are randomised,
its `state_dict` saved with `torch.save` and loaded with
`models.load_torch_state_dict`; the Flax logits on real CIFAR-10 test images
must match PyTorch's.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import data
from jaxadv import models

torch = pytest.importorskip("torch")
tnn = torch.nn
F = torch.nn.functional
torch.set_num_threads(1)  # the shared CPU: threads only oversubscribe it

MEAN = (0.45, 0.52, 0.39)  # not CIFAR-10's, so the constants are exercised
STD = (0.21, 0.30, 0.26)


class _TorchBlock(tnn.Module):
  """RobustBench `_Block`: BN-act-conv(pad by hand)-BN-act-conv + shortcut."""

  def __init__(self, c_in, c_out, stride, act):
    super().__init__()
    self.batchnorm_0 = tnn.BatchNorm2d(c_in)
    self.relu_0 = act()
    self.conv_0 = tnn.Conv2d(c_in, c_out, 3, stride, padding=0, bias=False)
    self.batchnorm_1 = tnn.BatchNorm2d(c_out)
    self.relu_1 = act()
    self.conv_1 = tnn.Conv2d(c_out, c_out, 3, 1, padding=1, bias=False)
    self.has_shortcut = c_in != c_out
    self.shortcut = (tnn.Conv2d(c_in, c_out, 1, stride, padding=0, bias=False)
                     if self.has_shortcut else None)
    self.stride = stride

  def forward(self, x):
    out = self.relu_0(self.batchnorm_0(x))
    if self.has_shortcut:
      x = out
    # F.pad's 4-tuple is (left, right, top, bottom).
    out = F.pad(out, (1, 1, 1, 1) if self.stride == 1 else (0, 1, 0, 1))
    out = self.conv_1(self.relu_1(self.batchnorm_1(self.conv_0(out))))
    return (self.shortcut(x) if self.has_shortcut else x) + out


class _TorchBlockGroup(tnn.Module):

  def __init__(self, n, c_in, c_out, stride, act):
    super().__init__()
    self.block = tnn.Sequential(*[
        _TorchBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1,
                    act) for i in range(n)])

  def forward(self, x):
    return self.block(x)


class _TorchDMWideResNet(tnn.Module):
  """RobustBench `DMWideResNet` (mean / std as non-persistent buffers)."""

  def __init__(self, depth=28, width=10, act=tnn.SiLU, mean=MEAN, std=STD,
               num_classes=10):
    super().__init__()
    self.register_buffer("mean", torch.tensor(mean).view(3, 1, 1),
                         persistent=False)
    self.register_buffer("std", torch.tensor(std).view(3, 1, 1),
                         persistent=False)
    n, ch = (depth - 4) // 6, [16, 16 * width, 32 * width, 64 * width]
    self.init_conv = tnn.Conv2d(3, ch[0], 3, 1, padding=1, bias=False)
    self.layer = tnn.Sequential(
        _TorchBlockGroup(n, ch[0], ch[1], 1, act),
        _TorchBlockGroup(n, ch[1], ch[2], 2, act),
        _TorchBlockGroup(n, ch[2], ch[3], 2, act))
    self.batchnorm = tnn.BatchNorm2d(ch[3])
    self.relu = act()
    self.logits = tnn.Linear(ch[3], num_classes)
    self.num_channels = ch[3]

  def forward(self, x):
    out = self.layer(self.init_conv((x - self.mean) / self.std))
    out = F.avg_pool2d(self.relu(self.batchnorm(out)), 8)
    return self.logits(out.view(-1, self.num_channels))


def _randomised(module, seed=0):
  """Random weights, BN affine parameters and BN running statistics."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in module.modules():
      if isinstance(m, tnn.Conv2d):
        fan_in = m.weight[0].numel()
        m.weight.copy_(torch.randn(m.weight.shape, generator=gen) *
                       (2.0 / fan_in) ** 0.5)
      elif isinstance(m, tnn.BatchNorm2d):
        c = m.num_features
        m.weight.copy_(0.5 + torch.rand(c, generator=gen))
        m.bias.copy_(0.2 * torch.randn(c, generator=gen))
        m.running_mean.copy_(0.3 * torch.randn(c, generator=gen))
        m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
        m.num_batches_tracked.fill_(123)
      elif isinstance(m, tnn.Linear):
        m.weight.copy_(0.3 * torch.randn(m.weight.shape, generator=gen))
        m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
  return module.eval()


@pytest.fixture(scope="module")
def cifar():
  x, y = data.load("cifar10_jpeg", "test", limit=8)
  return x, y


def _torch_logits(module, x):
  with torch.no_grad():
    return module(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()


CASES = {  # name -> (depth, width, torch activation, flax activation)
    "wrn16_2_swish": (16, 2, tnn.SiLU, jax.nn.swish),
    # width 1: the first group's first block keeps 16 channels, no shortcut.
    "wrn10_1_relu": (10, 1, tnn.ReLU, jax.nn.relu),
}


@pytest.mark.parametrize("name", list(CASES))
def test_logits_match_torch_reference(tmp_path, cifar, name):
  depth, width, t_act, f_act = CASES[name]
  module = _randomised(_TorchDMWideResNet(depth, width, t_act))
  path = tmp_path / "dm_wrn.pt"
  state = module.state_dict()
  assert "mean" not in state  # as in RobustBench: not part of checkpoints
  torch.save(state, path)
  model = models.DMWideResNet(depth=depth, width=width, activation=f_act,
                              mean=MEAN, std=STD)
  variables = models.load_torch_state_dict(path, model)
  np.testing.assert_array_equal(
      variables["batch_stats"]["layer_1_block_0"]["batchnorm_0"]["var"],
      module.layer[1].block[0].batchnorm_0.running_var.numpy())
  x, y = cifar
  expected = _torch_logits(module, x)
  apply = jax.jit(model.apply)
  got = np.asarray(apply(variables, x))
  assert got.shape == (8, 10)
  assert np.std(expected) > 0.1  # the logits vary: a non-trivial comparison
  np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)

  # A DataParallel checkpoint whose fork keeps mean / std as persistent
  # [1, 3, 1, 1] buffers loads to the same variables.
  wrapped = {f"module.{k}": v for k, v in state.items()}
  wrapped["module.mean"] = torch.tensor(MEAN).view(1, 3, 1, 1)
  wrapped["module.std"] = torch.tensor(STD).view(1, 3, 1, 1)
  torch.save({"state_dict": wrapped}, path)
  again = models.load_torch_state_dict(path, model)
  jax.tree.map(np.testing.assert_array_equal, again, variables)
  if name == "wrn16_2_swish":  # train mode (batch statistics) agrees too
    module.train()
    expected_train = _torch_logits(module, x)
    got_train, _ = model.apply(variables, x, train=True,
                               mutable=["batch_stats"])
    np.testing.assert_allclose(got_train, expected_train, atol=1e-4,
                               rtol=1e-4)


def test_mean_std_buffers_must_match_the_model():
  module = _TorchDMWideResNet(10, 1)
  state = dict(module.state_dict())
  state["mean"] = torch.tensor(MEAN).view(1, 3, 1, 1)
  state["std"] = torch.tensor(STD).view(1, 3, 1, 1)
  with pytest.raises(ValueError, match=r"mean=\(0\.45, 0\.52, 0\.39\)"):
    models.load_torch_state_dict(state, models.DMWideResNet(depth=10, width=1))
  variables = models.load_torch_state_dict(
      state, models.DMWideResNet(depth=10, width=1, mean=MEAN, std=STD))
  assert models.has_batch_norm(variables)


def test_missing_keys_are_named():
  state = dict(_TorchDMWideResNet(10, 1).state_dict())
  del state["layer.2.block.0.shortcut.weight"]
  with pytest.raises(ValueError, match=r"layer_2_block_0\.shortcut\.weight"):
    models.load_torch_state_dict(state, models.DMWideResNet(depth=10, width=1))


def _count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("name, depth, width, expected", [
    ("dm_wide_resnet16_2", 16, 2, None),
    ("dm_wide_resnet28_10", 28, 10, 36_479_194),
    ("dm_wide_resnet70_16", 70, 16, 266_796_506),
])
def test_registered_parameter_counts(name, depth, width, expected):
  model = models.get_model(name)
  assert isinstance(model, models.DMWideResNet)
  assert (model.depth, model.width, model.activation) == (depth, width,
                                                          jax.nn.swish)
  abstract = jax.eval_shape(
      functools.partial(model.init, train=False), jax.random.key(0),
      jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
  with torch.device("meta"):  # shapes only, no memory
    reference = _TorchDMWideResNet(depth, width)
  torch_params = sum(p.numel() for p in reference.parameters())
  torch_stats = sum(b.numel() for n, b in reference.named_buffers()
                    if n.endswith(("running_mean", "running_var")))
  assert _count(abstract["params"]) == torch_params
  assert _count(abstract["batch_stats"]) == torch_stats
  if expected is not None:
    assert torch_params == expected
