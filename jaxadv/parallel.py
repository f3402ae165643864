"""Data parallelism over devices and hosts: one mesh axis, global-view jit.

Mechanism: `jax.jit` with a `jax.sharding.Mesh` of one axis, `"data"`, and
`NamedSharding`s (GSPMD, "global-view SPMD"). The global batch, and free
AT's `state.delta` (which has the batch's shape), are split along `"data"`;
parameters, optimizer state, BatchNorm statistics and the PRNG key are
replicated. The training steps of `jaxadv.training.steps` then run UNCHANGED:
they are written for one global batch, and XLA partitions them, inserting
the all-reduce of the parameter gradient (a mean over the global batch is a
sum of per-device partial sums) and of any BatchNorm moment, so BatchNorm
statistics are those of the global batch on every device, exactly as on one
device. Free AT still makes ONE `value_and_grad` per replay; each device
holds the `delta` rows of its own examples.

Why not `jax.pmap`: its documentation now points users to `jax.shard_map`
and `jax.jit` with shardings (pmap is implemented on top of them); pmap needs
a per-device (leading-axis) rewrite of every step with explicit
`lax.pmean`s, which BatchNorm, mixup's batch permutation and IAT's
concatenation would each have to get right by hand. Global-view jit needs
none of that and gives the same numbers as one device up to float
summation order.

Multi-host: call `jax.distributed.initialize(...)` first; `make_mesh` then
spans the devices of every process (the same number from each), and every
process runs the same program on the same global batch (the data order of
`jaxadv.data.batches` is a pure function of the seed), of which each device
keeps its own slice.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

from jaxadv import validation

DATA_AXIS = "data"


def make_mesh(num_devices: Optional[int] = None, *,
              devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A one-axis (`"data"`) mesh of `num_devices` devices.

  Args:
    num_devices: how many devices; None (or 0) = all of them. With several
      processes it must be a multiple of `jax.process_count()`, and the first
      `num_devices / process_count` local devices of every process are used.
    devices: the devices to choose from (default `jax.devices()`, the devices
      of every process).

  Returns:
    A `jax.sharding.Mesh` with the single axis `"data"` (axis type Auto:
    XLA propagates shardings through unannotated code).

  Raises:
    ValueError: `num_devices` negative, larger than the devices available,
      or not a multiple of the process count.
  """
  devices = list(jax.devices() if devices is None else devices)
  if num_devices in (None, 0):
    num_devices = len(devices)
  validation.check_count(num_devices, "num_devices", 1)
  if num_devices > len(devices):
    raise ValueError(f"`num_devices` is {num_devices} but only "
                     f"{len(devices)} device(s) are available: {devices}.")
  processes = sorted({d.process_index for d in devices})
  if num_devices % len(processes):
    raise ValueError(f"`num_devices` ({num_devices}) must be a multiple of "
                     f"the number of processes ({len(processes)}).")
  per_process = num_devices // len(processes)
  chosen = [d for p in processes
            for d in [d for d in devices if d.process_index == p][:per_process]]
  if len(chosen) != num_devices:
    raise ValueError(f"`num_devices` ({num_devices}) needs {per_process} "
                     f"devices in every process; some have fewer.")
  return Mesh(np.array(chosen), (DATA_AXIS,),
              axis_types=(jax.sharding.AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Arrays split along their leading (batch) axis over `"data"`."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """Arrays held whole on every device of `mesh`."""
  return NamedSharding(mesh, PartitionSpec())


def _put(a: Any, sharding: NamedSharding) -> Any:
  """`a` (numpy, a local or a global jax.Array) placed with `sharding`.

  Every process must pass the same global value (the global view).
  """
  if isinstance(a, jax.Array):
    if a.sharding == sharding:
      return a
    if not sharding.is_fully_addressable and jax.dtypes.issubdtype(
        a.dtype, jax.dtypes.prng_key):
      return a  # device_put cannot; jit places an uncommitted key itself
    if not a.is_fully_addressable and sharding.is_fully_addressable:
      if not a.is_fully_replicated:
        raise ValueError("cannot make a multi-process array that is split "
                         "over processes local; gather it with `to_host`.")
      a = a.addressable_data(0)  # a replicated global array, made local
  return jax.device_put(a, sharding)


def check_batch_size(batch_size: int, mesh: Mesh,
                     name: str = "batch_size") -> None:
  """Raises ValueError unless `batch_size` splits evenly over `mesh`."""
  if batch_size % mesh.size:
    raise ValueError(
        f"`{name}` ({batch_size}) must be divisible by the number of devices "
        f"in the mesh ({mesh.size}) to split the batch over them.")


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Splits every array of `batch` along its leading axis over the mesh.

  Args:
    batch: a pytree of arrays [B, ...] (numpy or jax), the GLOBAL batch; with
      several processes every process passes the same values.
    mesh: from `make_mesh`.

  Returns:
    The same pytree of global `jax.Array`s, sharded `P("data")`.

  Raises:
    ValueError: a leading dimension not divisible by `mesh.size`.
  """
  sharding = batch_sharding(mesh)

  def put(a):
    check_batch_size(np.shape(a)[0], mesh, "batch")
    return _put(a, sharding)
  return jax.tree.map(put, batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places every array of `tree` whole on every device of `mesh`."""
  sharding = replicated(mesh)
  return jax.tree.map(lambda a: _put(a, sharding), tree)


def state_sharding(state: Any, mesh: Mesh) -> Any:
  """The shardings of a `TrainState`: all replicated but `delta` (batch-split).

  Args:
    state: a `jaxadv.training.TrainState`.
    mesh: from `make_mesh`.

  Returns:
    A pytree of `NamedSharding`s with the structure of `state`.
  """
  shardings = jax.tree.map(lambda _: replicated(mesh), state)
  if getattr(state, "delta", None) is not None:
    shardings = shardings.replace(delta=batch_sharding(mesh))
  return shardings


def shard_state(state: Any, mesh: Mesh) -> Any:
  """Places a `TrainState` on `mesh` as `state_sharding` says.

  Raises:
    ValueError: free AT's `delta` batch size not divisible by `mesh.size`.
  """
  if getattr(state, "delta", None) is not None:
    check_batch_size(state.delta.shape[0], mesh, "state.delta's batch size")
  return jax.tree.map(_put, state, state_sharding(state, mesh))


def jit_step(step_fn: Callable, state: Any, mesh: Mesh, *,
             donate: bool = True) -> Callable:
  """`jax.jit(step_fn)` with the data-parallel shardings of `state`'s layout.

  In: (`state_sharding(state)`, batch split over `"data"`, key replicated);
  out: (`state_sharding(state)`, metrics replicated). The arguments must
  already be placed (`shard_state`, `shard_batch`); `data_parallel` does it.
  """
  shardings = state_sharding(state, mesh)
  return jax.jit(step_fn,
                 in_shardings=(shardings, batch_sharding(mesh),
                               replicated(mesh)),
                 out_shardings=(shardings, replicated(mesh)),
                 donate_argnums=(0,) if donate else ())


def data_parallel(step_fn: Callable, mesh: Mesh, *, donate: bool = True
                  ) -> Callable:
  """Runs a training step `(state, batch, key) -> (state, metrics)` on `mesh`.

  The step is jitted with the batch split over `"data"`, the state placed by
  `state_sharding` (replicated; `delta` split) and the key and metrics
  replicated. XLA adds the cross-device gradient (and BatchNorm) reductions;
  the result equals the one-device step on the same global batch up to float
  summation order.

  Args:
    step_fn: a step of `jaxadv.training.steps` (or any with that signature).
    mesh: from `make_mesh`.
    donate: donate the input state's buffers (do not reuse it afterwards).

  Returns:
    `step(state, batch, key) -> (state, metrics)`, taking host (numpy) or
    device batches; the state is placed on the mesh on first use.

  Raises:
    ValueError (when called): a batch size not divisible by `mesh.size`.
  """
  compiled: dict = {}

  def step(state, batch, key):
    treedef = jax.tree.structure(state)
    if treedef not in compiled:
      compiled[treedef] = jit_step(step_fn, state, mesh, donate=donate)
    state = jax.tree.map(_put, state, state_sharding(state, mesh))
    return compiled[treedef](state, shard_batch(batch, mesh),
                             _put(key, replicated(mesh)))

  return step


def batch_parallel(fn: Callable, mesh: Mesh, *,
                   batch_argnums: Sequence[int]) -> Callable:
  """Jits a per-example function with its batch split over the mesh.

  For attacks, evaluation and Mixup Inference: the arguments at
  `batch_argnums` (pytrees of [B, ...] arrays) are split along B, all other
  arguments (variables, sample pools, keys, eps) replicated, and every output
  (arrays with a leading B) is split along B. Examples are independent, so
  XLA runs each device's share with no communication (Mixup Inference's
  N x B forward becomes N x B / n per device).

  Args:
    fn: `fn(*args) -> pytree of [B, ...] arrays`, jittable.
    mesh: from `make_mesh`.
    batch_argnums: positions of the batch arguments.

  Returns:
    The jitted function; call it with host or device arrays. Convert its
    outputs with `to_host` (they may span several processes).
  """
  batch_argnums = tuple(batch_argnums)
  jitted = jax.jit(fn, out_shardings=batch_sharding(mesh))

  def wrapped(*args):
    args = [shard_batch(a, mesh) if i in batch_argnums else replicate(a, mesh)
            for i, a in enumerate(args)]
    return jitted(*args)

  return wrapped


def to_host(tree: Any) -> Any:
  """numpy copies of the (possibly multi-process) arrays of `tree`.

  A global array split over several processes is gathered from all of them
  (every process must call this together); others are copied directly.
  """
  def get(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
      if a.is_fully_replicated:
        return np.asarray(a.addressable_data(0))
      return np.asarray(multihost_utils.process_allgather(a, tiled=True))
    return np.asarray(a)
  return jax.tree.map(get, tree)


def describe(mesh: Mesh) -> str:
  """One line per process: the device layout of `mesh`, for logs."""
  devices = list(mesh.devices.flat)
  lines = [f"mesh {dict(mesh.shape)} on {jax.default_backend()}: "
           f"{len(devices)} device(s) in {jax.process_count()} process(es) "
           f"(this is process {jax.process_index()}); batch split over "
           f"'{DATA_AXIS}', parameters replicated"]
  for p in sorted({d.process_index for d in devices}):
    mine = [d for d in devices if d.process_index == p]
    lines.append(f"  process {p}: {[str(d) for d in mine]}")
  return "\n".join(lines)


def placement(variables: Any, batch_size: int,
              mesh: Optional[Mesh] = None
              ) -> tuple[Any, Callable[[np.ndarray], jax.Array]]:
  """Spreads each batch over `mesh`, by default all local devices.

  Every example is attacked independently, so XLA partitions the whole
  attack along the batch with no communication; `variables` are replicated.
  Without a mesh, a batch size that the local devices do not divide runs
  on one device.

  Args:
    variables: the model's variables (any pytree of arrays).
    batch_size: the fixed batch size that will be placed.
    mesh: a `'data'` mesh (`make_mesh`); None = all local devices.

  Returns:
    `(variables replicated, put)` where `put(a)` places one batch array
    `[batch_size, ...]`, sharded along its first axis.

  Raises:
    ValueError: `batch_size` not divisible by the size of a given `mesh`.
  """
  if mesh is None:
    devices = jax.local_devices()
    if len(devices) == 1 or batch_size % len(devices):
      return replicate(variables, make_mesh(
          1, devices=devices)), jnp.asarray
    mesh = make_mesh(devices=devices)
  check_batch_size(batch_size, mesh)
  return (replicate(variables, mesh),
          lambda a: shard_batch(a, mesh))


def padded_batches(idx: np.ndarray, batch_size: int):
  """Splits `idx` into fixed-size batches, padding the last one.

  Args:
    idx: int [N] indices (N >= 1).
    batch_size: the size of every yielded batch.

  Yields:
    `(chunk int [batch_size], n)`: the next indices, the last chunk padded
    by repeating its first index, and `n` the number of real entries.
  """
  for start in range(0, len(idx), batch_size):
    chunk = idx[start:start + batch_size]
    n = len(chunk)
    if n < batch_size:
      chunk = np.concatenate([chunk, np.full(batch_size - n, chunk[0])])
    yield chunk, n


def fitted_batch_size(n: int, batch_size: int, *, multiple: int = 1,
                      buckets: int = 16) -> int:
  """A batch size for `n` examples that wastes little on padding.

  `n` examples in batches of at most `batch_size` need
  `k = ceil(n / batch_size)` batches; this returns the smallest of
  `buckets` sizes (`batch_size * j / buckets` for j = 1..buckets, each
  rounded up to a multiple of `multiple` where that stays within
  `batch_size`) that still fits `n` in `k` batches. The few sizes bound the number of
  compilations of a fixed-shape attack, while the shrinking sets of an
  ensemble's survivors (620 of 1,000 at batch 500: two batches of 320, not
  two of 500) are not padded to full batches.

  Args:
    n: the number of examples (>= 1).
    batch_size: the largest batch (>= 1).
    multiple: every size returned is a multiple of this (the local device
      count, so that batches shard evenly).
    buckets: how many sizes there are (>= 1; 1 = always `batch_size`).

  Returns:
    int in [1, batch_size].

  Raises:
    ValueError: a count below 1.
  """
  for value, name in ((n, "n"), (batch_size, "batch_size"),
                      (multiple, "multiple"), (buckets, "buckets")):
    if int(value) != value or value < 1:
      raise ValueError(f"`{name}` must be an integer >= 1; got {value!r}.")
  need = -(-n // -(-n // batch_size))              # ceil(n / k)
  round_up = lambda v: -(-v // multiple) * multiple
  for j in range(1, buckets + 1):
    size = -(-batch_size * j // buckets)
    if round_up(size) <= batch_size:
      size = round_up(size)
    if size >= need:
      return size
  return batch_size
