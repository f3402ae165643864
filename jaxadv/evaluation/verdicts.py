"""Resumable evaluations: per-example verdicts saved as they are found.

A long robustness evaluation (PGD with restarts on 10,000 images, the
AutoAttack-style ensemble) runs in rounds (a restart, an attack, a target
class), each round over the examples still robust at its start, in
batches whose keys depend only on (round, batch). `VerdictLog` keeps the
per-example arrays (`correct`, `fooled_by`, ...), the round in progress,
its survivors and its next batch in one file, `<workdir>/<kind>-<id>.npz`,
rewritten atomically (a temporary file, then `os.replace`) after every
batch. A killed evaluation called again with the same arguments and
`workdir` finds the file, skips the finished rounds and batches and gives
the same verdicts as an uninterrupted run. `<id>` is a hash of everything
the verdicts depend on (the settings, the key, the inputs, the labels and
the model's variables), so another evaluation in the same folder gets its
own file and never resumes from a foreign one.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterator, Mapping, Optional

import jax
import numpy as np

from jaxadv import digests


def fingerprint(settings: Mapping[str, Any], key: jax.Array, *arrays: Any
                ) -> str:
  """A hex digest of `settings` (JSON-able), `key` and arrays / pytrees.

  Args:
    settings: the evaluation's options (numbers, strings, sequences).
    key: its PRNG key.
    *arrays: the inputs, labels, model variables (any pytrees of arrays).

  Returns:
    A 32-character hex string.
  """
  header = (json.dumps(settings, sort_keys=True, default=str).encode() +
            np.asarray(jax.random.key_data(key)).tobytes())
  return digests.tree_digest(*arrays, header=header)


class VerdictLog:
  """The per-example state of a round-based evaluation, on disk as it goes.

  Usage: `log = VerdictLog(workdir, kind, digest, correct=..., ...)`, with
  `digest` a function returning the evaluation's `fingerprint` (called only
  with a `workdir`: hashing the inputs costs a pass over them); for
  each round in order, `idx = log.start_round(r, survivors)` and then
  `for i in log.batches(r, n_batches)`, updating `log.arrays` and calling
  `log.commit(r, i + 1)` after each batch; `log.finish()` at the end. With
  `workdir=None` nothing is written and every round and batch runs.

  Attributes:
    arrays: the per-example numpy arrays (updated in place by the caller).
    meta: a JSON-able dict saved with them (per-attack counts, seconds).
  """

  def __init__(self, workdir: Optional[str], kind: str,
               digest: Callable[[], str], **arrays: np.ndarray):
    self.arrays = dict(arrays)
    self.meta: dict = {}
    self._round, self._next, self._idx = 0, 0, None
    self.path = None
    if workdir is None:
      return
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(os.fspath(workdir), f"{kind}-{digest()}.npz")
    if os.path.exists(self.path):
      with np.load(self.path, allow_pickle=False) as f:
        for name in self.arrays:
          self.arrays[name] = np.array(f[f"a_{name}"])
        self.meta = json.loads(str(f["meta"]))
        self._round, self._next = int(f["round"]), int(f["next"])
        self._idx = np.array(f["idx"]) if f["has_idx"] else None

  @property
  def resumed(self) -> bool:
    """Whether a previous run's progress was found."""
    return self._round > 0 or self._next > 0 or self._idx is not None

  def start_round(self, r: int, survivors: np.ndarray) -> np.ndarray:
    """The examples round `r` attacks: `survivors` when it starts now, the
    saved ones when it was interrupted (the arrays moved on since)."""
    if r == self._round and self._idx is not None:
      return self._idx
    if r >= self._round:
      self._round, self._next, self._idx = r, 0, np.asarray(survivors)
      self._save()
    return np.asarray(survivors)

  def done(self, r: int) -> bool:
    """Whether round `r` finished in a previous run."""
    return r < self._round

  def batches(self, r: int, n_batches: int) -> Iterator[int]:
    """The batch indices of round `r` still to run."""
    start = self._next if r == self._round else 0
    return iter(range(start, n_batches))

  def commit(self, r: int, next_batch: int) -> None:
    """Saves the arrays after a batch: round `r` resumes at `next_batch`."""
    self._round, self._next = r, next_batch
    self._save()

  def finish(self, rounds: int) -> None:
    """Marks every round done."""
    self._round, self._next, self._idx = rounds, 0, None
    self._save()

  def _save(self) -> None:
    if self.path is None:
      return
    tmp = self.path + ".tmp.npz"
    payload = {f"a_{k}": v for k, v in self.arrays.items()}
    np.savez(tmp, **payload, meta=np.array(json.dumps(self.meta)),
             round=np.int64(self._round), next=np.int64(self._next),
             has_idx=np.bool_(self._idx is not None),
             idx=(self._idx if self._idx is not None
                  else np.zeros(0, np.int64)))
    os.replace(tmp, self.path)
