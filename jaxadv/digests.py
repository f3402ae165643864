"""Content digests of pytrees of arrays: what a run or an evaluation was
started with, for checkpoints and saved verdicts that must not be resumed by
another run."""

from __future__ import annotations

import hashlib
from typing import Any

import jax
import numpy as np


def tree_digest(*trees: Any, header: bytes = b"") -> str:
  """A hex digest of `header` and of every array leaf of `trees`.

  Each leaf contributes its dtype, shape and bytes, in `jax.tree.leaves`
  order, so equal digests mean equal arrays (up to a 128-bit hash).

  Args:
    *trees: pytrees of arrays (numpy, jax, Python scalars).
    header: bytes hashed first (e.g. JSON of settings).

  Returns:
    A 32-character hex string.
  """
  h = hashlib.blake2b(digest_size=16)
  h.update(header)
  for tree in trees:
    for leaf in jax.tree.leaves(tree):
      a = np.ascontiguousarray(np.asarray(leaf))
      h.update(str((a.dtype, a.shape)).encode())
      h.update(a.tobytes())
  return h.hexdigest()
