"""PyTorch reference: the PreActResNet-18 natural training step on the same cores.

Informational: it puts the JAX rows of the CIFAR-10 benchmark beside what
PyTorch's CPU kernels do for the same step (XLA:CPU's convolution gradients
are known to be slow). The network is fast_adversarial's
`preact_resnet.py` (Wong et al. 2020), the step theirs: SGD momentum 0.9,
weight decay 5e-4, cross-entropy, `model.train()`; float32, batch NCHW.
torch comes from the optional `bench` extra; jaxadv never imports it.
"""

from __future__ import annotations

import numpy as np

from experiments.benchmarks import timing


def preact_resnet18(num_classes: int = 10):
  """fast_adversarial's PreActResNet18 (bias-free convolutions, the final
  BatchNorm), the layout of `jaxadv.models.PreActResNet18`."""
  import torch  # pylint: disable=g-import-not-at-top
  nn, F = torch.nn, torch.nn.functional

  class Block(nn.Module):

    def __init__(self, cin, cout, stride):
      super().__init__()
      self.bn1 = nn.BatchNorm2d(cin)
      self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.bn2 = nn.BatchNorm2d(cout)
      self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.shortcut = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                       if stride != 1 or cin != cout else None)

    def forward(self, x):
      out = F.relu(self.bn1(x))
      shortcut = self.shortcut(out) if self.shortcut is not None else x
      out = self.conv1(out)
      out = self.conv2(F.relu(self.bn2(out)))
      return out + shortcut

  class Net(nn.Module):

    def __init__(self):
      super().__init__()
      self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
      blocks, cin = [], 64
      for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        blocks += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
      self.layers = nn.Sequential(*blocks)
      self.bn = nn.BatchNorm2d(512)
      self.linear = nn.Linear(512, num_classes)

    def forward(self, x):
      out = F.relu(self.bn(self.layers(self.conv1(x))))
      return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))

  return Net()


def natural_step_seconds(x: np.ndarray, y: np.ndarray, *, warmup: int,
                         repeats: int) -> dict:
  """Times PyTorch's PreActResNet-18 natural training step.

  Args:
    x: float32 [B, 32, 32, 3] images in [0, 1] (NHWC, transposed here).
    y: int [B] labels.
    warmup: untimed steps first.
    repeats: timed steps.

  Returns:
    {"call_s" (median), "round_s" (every timed step), "threads"
    (`torch.get_num_threads()`), "torch" (version), "batch_size"}.
  """
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model = preact_resnet18().train()
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9,
                        weight_decay=5e-4)
  xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  yt = torch.from_numpy(np.asarray(y, np.int64))

  def step():
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(xt), yt)
    loss.backward()
    opt.step()
    return float(loss)

  times = timing.interleaved_times({"step": step}, repeats, warmup=warmup,
                                   rewarm=0)["step"]
  return {"call_s": float(np.median(times)), "round_s": times,
          "threads": torch.get_num_threads(), "torch": torch.__version__,
          "batch_size": int(len(x))}


def to_markdown(res: dict, jax_natural_s: float | None) -> list[str]:
  """The reference line: PyTorch's step time and JAX's over it."""
  ratio = ("" if jax_natural_s is None else
           f"; jaxadv's natural step of the same net takes "
           f"{jax_natural_s / res['call_s']:.2f}x that")
  return [f"**PyTorch reference** (informational): PreActResNet-18 natural "
          f"step, batch {res['batch_size']}, torch {res['torch']} with "
          f"{res['threads']} threads: {1e3 * res['call_s']:.0f} ms "
          f"(median of {len(res['round_s'])}){ratio}."]
