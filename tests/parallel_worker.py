"""Subprocess worker of tests/parallel_test.py (device count fixed at start).

  XLA_FLAGS=--xla_force_host_platform_device_count=4 \
      python tests/parallel_worker.py single OUT_DIR [TRAINER,...] [adam]
  XLA_FLAGS=--xla_force_host_platform_device_count=2 \
      python tests/parallel_worker.py multihost OUT_DIR PROCESS_ID PORT

`single` trains the given trainers (default: natural, free_at) for
50 optimizer updates (SGD with momentum, or Adam) on one device (the plain
`fit` path) and on a 4-device mesh, and runs robust accuracy and Mixup
Inference on 1- and 4-device meshes; `multihost` is one of two
processes (2 devices each, loopback coordinator) training natural and free
AT on the 4-device global mesh. Results go to OUT_DIR as JSON and npz.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax

if __name__ == "__main__" and sys.argv[1] == "multihost":
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{sys.argv[4]}",
                             num_processes=2, process_id=int(sys.argv[3]))

import flax.linen as nn  # pylint: disable=g-import-not-at-top
import numpy as np
import optax

from jaxadv import data
from jaxadv import defenses
from jaxadv import evaluation
from jaxadv import models
from jaxadv import parallel
from jaxadv import training

BATCH = 64
UPDATES = 50
EPS = 0.3


class TinyBN(nn.Module):
  """conv -> BatchNorm -> relu -> dense: checks cross-device BN statistics."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(8, (3, 3), strides=(2, 2), use_bias=False)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.Dense(10)(nn.relu(x).reshape((x.shape[0], -1)))


TRAINERS = {  # name -> (step builder, replays per batch, model name)
    "natural": (lambda: training.natural_step(), 1, "fast_at_mnist"),
    "pgd_at": (lambda: training.pgd_at_step(steps=3), 1, "fast_at_mnist"),
    "fgsm_rs": (lambda: training.fgsm_rs_step(), 1, "fast_at_mnist"),
    "free_at": (lambda: training.free_at_step(replays=2), 2, "fast_at_mnist"),
    # 4 devices: stopped half-way and resumed from the checkpoint.
    "free_at_resume": (lambda: training.free_at_step(replays=2), 2,
                       "fast_at_mnist"),
    "mixup": (lambda: training.mixup_step(alpha=1.0), 1, "fast_at_mnist"),
    "iat": (lambda: training.iat_step(steps=2), 1, "fast_at_mnist"),
    "natural_bn": (lambda: training.natural_step(), 1, "tiny_bn"),
}


OPTIMIZERS = {"sgd": optax.sgd(0.05, momentum=0.9), "adam": optax.adam(1e-3)}
DEFAULT_TRAINERS = ("natural", "free_at")


def _model(name):
  return TinyBN() if name == "tiny_bn" else models.get_model(name)


def train(name, x, y, mesh, optimizer="sgd", workdir=None):
  """50 updates of trainer `name`; "*_resume" on a mesh: stopped half-way,
  then resumed from its checkpoint in `workdir`."""
  build, replays, model_name = TRAINERS[name]

  def run(num_batches):
    state = training.create_train_state(
        _model(model_name), jax.random.key(0), (1, 28, 28, 1),
        OPTIMIZERS[optimizer], eps=EPS, step_size=0.1,
        delta_shape=(BATCH, 28, 28, 1) if replays > 1 else None)
    return training.fit(state, build(), x, y, batch_size=BATCH,
                        num_batches=num_batches, seed=0, progress=False,
                        mesh=mesh, workdir=workdir)

  total = UPDATES // replays
  if name.endswith("_resume") and mesh is not None:
    run(total // 2)  # the "killed" run: its last checkpoint is at total // 2
  else:
    workdir = None
  return run(total)


def _flat(state):
  tree = {"params": state.params}
  if state.batch_stats:
    tree["batch_stats"] = state.batch_stats
  leaves = jax.tree_util.tree_leaves_with_path(parallel.to_host(tree))
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}


def _compare(a: dict, b: dict) -> dict:
  """Max abs difference, relative to the largest |parameter| (the bar), and
  the stricter per-leaf version (relative to each leaf's largest entry)."""
  diff = {k: float(np.max(np.abs(a[k] - b[k]))) for k in a}
  scale = {k: float(np.max(np.abs(a[k]))) for k in a}
  worst = max(diff, key=lambda k: diff[k] / max(scale[k], 1e-12))
  return {"max_abs_diff": max(diff.values()),
          "max_rel_diff": max(diff.values()) / max(scale.values()),
          "max_leaf_rel_diff": diff[worst] / max(scale[worst], 1e-12),
          "worst_leaf": worst}


def single(out_dir, trainers=DEFAULT_TRAINERS, optimizer="sgd"):
  x, y = data.load("mnist", "train", limit=BATCH * 25)
  x_test, y_test = data.load("mnist", "test", limit=256)
  mesh4 = parallel.make_mesh(4)
  report = {"devices": len(jax.devices()), "layout": parallel.describe(mesh4),
            "optimizer": optimizer, "train": {}}
  saved = {}
  for name in ("natural",) + tuple(t for t in trainers if t != "natural"):
    t0 = time.perf_counter()
    r1 = train(name, x, y, None, optimizer)
    r4 = train(name, x, y, mesh4, optimizer,
               workdir=os.path.join(out_dir, f"ckpt_{name}"))
    p1, p4 = _flat(r1.state), _flat(r4.state)
    entry = _compare(p1, p4)
    entry["updates"] = int(r4.state.step)
    entry["loss_1"] = r1.history[-1]["loss"]
    entry["loss_4"] = r4.history[-1]["loss"]
    entry["seconds"] = time.perf_counter() - t0
    entry["train_seconds_1"] = r1.train_seconds
    entry["train_seconds_4"] = r4.train_seconds
    if r4.state.delta is not None:
      entry["delta_shards"] = [list(s.data.shape) for s in
                               r4.state.delta.addressable_shards]
    report["train"][name] = entry
    if name in ("natural", "free_at"):
      saved.update({f"{name}/{k}": v for k, v in p4.items()})
    if name == "natural":
      variables = training.variables_of(r1.state)
      apply_fn = r1.state.apply_fn

  try:
    training.fit(r4.state, TRAINERS["natural"][0](), x, y, batch_size=66,
                 num_batches=1, seed=0, progress=False, mesh=mesh4)
  except ValueError as e:
    report["bad_batch_error"] = str(e)

  # Robust accuracy: PGD-5 x 2 restarts on 1 vs 4 devices.
  t0 = time.perf_counter()
  correct = {}
  for n in (1, 4):
    correct[n] = evaluation.robust_correct(
        apply_fn, variables, x_test, y_test, jax.random.key(3), attack="pgd",
        eps=0.1, step_size=0.03, steps=5, restarts=2, batch_size=128,
        mesh=parallel.make_mesh(n))
  report["robust"] = {"acc_1": float(correct[1].mean()),
                      "acc_4": float(correct[4].mean()),
                      "disagreements": int(np.sum(correct[1] != correct[4])),
                      "seconds": time.perf_counter() - t0}
  t0 = time.perf_counter()

  # Mixup Inference (MI-OL, N = 8, all N x B copies in one forward).
  pool = defenses.make_pool(x, y, size=200, key=jax.random.key(4))

  def mi(v, xb, pool, key):
    return defenses.mi_ol(lambda z: apply_fn(v, z, train=False), xb, pool,
                          key, num_samples=8, chunk_size=None)

  outs = {}
  for n in (1, 4):
    m = parallel.make_mesh(n)
    fn = parallel.batch_parallel(mi, m, batch_argnums=(1,))
    outs[n] = fn(variables, x_test[:128], pool, jax.random.key(5))
    if n == 4:
      placed = (parallel.replicate(variables, m),
                parallel.shard_batch(x_test[:128], m),
                parallel.replicate(pool, m), jax.random.key(5))
      hlo = jax.jit(mi, out_shardings=parallel.batch_sharding(m)).lower(
          *placed).compile().as_text()
      report["mi_collectives"] = [op for op in ("all-gather", "all-reduce",
                                                "all-to-all")
                                  if op in hlo]
      report["mi_probs_shards"] = [list(s.data.shape) for s in
                                   outs[n].probs.addressable_shards]
  p1, p4 = (parallel.to_host(outs[n].probs) for n in (1, 4))
  report["mi"] = {"max_abs_diff": float(np.max(np.abs(p1 - p4))),
                  "same_prediction": bool(np.all(p1.argmax(-1) ==
                                                 p4.argmax(-1))),
                  "seconds": time.perf_counter() - t0}
  np.savez(os.path.join(out_dir, "single.npz"), **saved)
  with open(os.path.join(out_dir, "single.json"), "w") as f:
    json.dump(report, f, indent=2)


def multihost(out_dir, process_id):
  x, y = data.load("mnist", "train", limit=BATCH * 25)
  mesh = parallel.make_mesh()
  report = {"layout": parallel.describe(mesh),
            "process_count": jax.process_count(),
            "local_devices": len(jax.local_devices())}
  saved = {}
  for name in ("natural", "free_at"):
    result = train(name, x, y, mesh)
    saved.update({f"{name}/{k}": v for k, v in _flat(result.state).items()})
  if process_id == 0:
    np.savez(os.path.join(out_dir, "multihost.npz"), **saved)
    with open(os.path.join(out_dir, "multihost.json"), "w") as f:
      json.dump(report, f, indent=2)


if __name__ == "__main__":
  if sys.argv[1] == "single":
    names = tuple(sys.argv[3].split(",")) if len(sys.argv) > 3 else (
        DEFAULT_TRAINERS)
    single(sys.argv[2], names, sys.argv[4] if len(sys.argv) > 4 else "sgd")
  else:
    multihost(sys.argv[2], int(sys.argv[3]))
