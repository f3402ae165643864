"""The results writer: JSON + Markdown, and the environment record.

Every `results.json` an experiment writes is a JSON object with the key
"environment" (`environment()`: library versions, backend, devices,
processes, git commit); a script whose results are a list of records
writes them under "records" (`write_results`). Every Markdown table goes
through `markdown_table`. Every workdir also gets `config.json` and
`environment.json` when the script starts (`write_run_info`). Under
multi-host runs only process 0 writes.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from typing import Any, Iterable, Optional, Sequence

import jax

from jaxadv import evaluation

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _git(*args: str) -> Optional[str]:
  try:
    out = subprocess.run(["git", *args], cwd=_REPO, capture_output=True,
                         text=True, timeout=10, check=True)
  except (OSError, subprocess.SubprocessError):
    return None
  return out.stdout.strip()


@functools.lru_cache(maxsize=None)
def environment() -> dict:
  """Where the numbers come from: `jaxadv.evaluation.environment()` (versions,
  backend, devices) plus the commit.

  Returns:
    That dict with "git_commit" (None outside a git checkout) and
    "git_dirty" (whether tracked files differed from it).
  """
  commit = _git("rev-parse", "HEAD")
  dirty = _git("status", "--porcelain", "--untracked-files=no")
  return {**evaluation.environment(), "git_commit": commit or None,
          "git_dirty": None if dirty is None else bool(dirty)}


def json_dump(obj: Any, path: str) -> None:
  """Writes `obj` as indented JSON, atomically; process 0 only."""
  if jax.process_index() != 0:  # multi-host: process 0 writes the results
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def json_load(path: str, default: Any) -> Any:
  """The JSON at `path`, or `default` when there is none yet."""
  if not os.path.exists(path):
    return default
  with open(path) as f:
    return json.load(f)


def config_dict(config: Any) -> dict:
  """An `ml_collections` config as plain JSON (best effort: what JSON
  cannot hold becomes its string)."""
  if hasattr(config, "to_json_best_effort"):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(config, default=str))


def write_run_info(workdir: str, config: Any) -> None:
  """`WORKDIR/config.json` (the run's config) and `WORKDIR/environment.json`
  (`environment()` plus the command line and the start time), written when
  a run (or its resumption) starts; process 0 only."""
  os.makedirs(workdir, exist_ok=True)
  json_dump(config_dict(config), os.path.join(workdir, "config.json"))
  json_dump({**environment(), "argv": list(sys.argv),
             "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
            os.path.join(workdir, "environment.json"))


def with_environment(results: Any) -> dict:
  """`results` as a JSON object carrying "environment" (a list of records
  goes under "records")."""
  if isinstance(results, dict):
    return {"environment": environment(),
            **{k: v for k, v in results.items() if k != "environment"}}
  return {"environment": environment(), "records": list(results)}


def load_records(path: str) -> list:
  """The records of a `results.json` (also one written as a bare list)."""
  saved = json_load(path, [])
  return saved["records"] if isinstance(saved, dict) else saved


def write_markdown(path: str, text: str) -> None:
  """Writes `text` (newline-terminated) to `path`; process 0 only."""
  if jax.process_index() != 0:
    return
  with open(path, "w") as f:
    f.write(text if text.endswith("\n") else text + "\n")


def write_results(workdir: str, results: Any, markdown: Optional[str] = None,
                  *, name: str = "results", echo: bool = True) -> dict:
  """Writes `WORKDIR/<name>.json` (with the environment) and, when given,
  `WORKDIR/<name>.md`; prints the Markdown when `echo`.

  Returns:
    The JSON object written.
  """
  obj = with_environment(results)
  json_dump(obj, os.path.join(workdir, name + ".json"))
  if markdown is not None:
    write_markdown(os.path.join(workdir, name + ".md"), markdown)
    if echo:
      print(markdown)
  return obj


def markdown_table(header: Sequence[str],
                   rows: Iterable[Sequence[Any]]) -> str:
  """A Markdown table: `| h1 | h2 |`, `|---|---|`, one line per row."""
  lines = ["| " + " | ".join(str(h) for h in header) + " |",
           "|" + "---|" * len(header)]
  for row in rows:
    row = list(row)
    if len(row) != len(header):
      raise ValueError(f"a row has {len(row)} cells for {len(header)} "
                       f"columns: {row}")
    lines.append("| " + " | ".join(str(c) for c in row) + " |")
  return "\n".join(lines)


def pyplot():
  """matplotlib.pyplot with the non-interactive Agg backend."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt
