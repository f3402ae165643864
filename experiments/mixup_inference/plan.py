"""The evaluation plan: which attacks run on how many examples, the result
records and their per-example verdicts, and the adaptive worst case (over
oblivious PGD, EOT-PGD, Pang et al.'s attack and AutoAttack's "rand"
version)."""

from __future__ import annotations

import os

import jax
import numpy as np

RESULT_KEYS = ("model", "defense", "attack", "targeted", "mode", "steps",
               "eps", "acc")


def attack_examples(config, steps: int) -> int:
  """How many test examples the `steps`-step attacks run on: the entry of
  `config.eval.examples_by_steps` ((steps, n) pairs) for `steps`, else
  `config.eval.num_examples`. Long attacks may run on fewer examples; every
  attack of one step count (oblivious, EOT, the paper's, the worst case)
  uses the same first n, so their per-example verdicts line up."""
  by_steps = dict((int(s), int(n)) for s, n in
                  (config.eval.get("examples_by_steps") or ()))
  n = by_steps.get(int(steps), int(config.eval.num_examples))
  if n < 1:
    raise ValueError(f"config.eval.examples_by_steps: expected a positive "
                     f"number of examples for {steps} steps, got {n}.")
  return n


def attack_settings(config) -> list[tuple[bool, int, float]]:
  """(targeted, steps, eps) of the main table and the eps sweep, deduplicated."""
  ec = config.eval
  settings = [(t, s, float(ec.eps)) for t in ec.targeted for s in ec.steps]
  settings += [(False, int(ec.sweep_steps), float(e)) for e in ec.sweep_eps]
  return list(dict.fromkeys(settings))


RAND_ATTACK = "apgd_rand"  # the record name of AutoAttack's "rand" version


def rand_enabled(config) -> bool:
  """Whether AutoAttack's "rand" version runs (`config.autoattack_rand`)."""
  rc = config.get("autoattack_rand")
  return rc is not None and bool(rc.enabled)


def rand_examples(config) -> int:
  """How many test examples AutoAttack's "rand" version runs on: the most
  any untargeted attack at the main eps runs on (their first n are a prefix
  of these, so its verdicts join every untargeted worst case there)."""
  eps = float(config.eval.eps)
  ns = [attack_examples(config, s) for t, s, e in attack_settings(config)
        if not t and e == eps]
  return max(ns) if ns else int(config.eval.num_examples)


def rand_record(model, defense, config, acc=0.0,
                num_examples: int | None = None) -> dict:
  """The record of AutoAttack's "rand" version against `defense`: adaptive,
  untargeted, at the main eps; `steps` = its APGD iterations."""
  return _record(model, defense, RAND_ATTACK, False, "adaptive",
                 config.autoattack_rand.apgd_steps, config.eval.eps, acc,
                 num_examples)


def _record(model, defense, attack, targeted, mode, steps, eps, acc,
            num_examples: int | None = None) -> dict:
  """A result record (RESULT_KEYS, plus how many examples `acc` is over)."""
  r = {"model": model, "defense": defense, "attack": attack,
       "targeted": bool(targeted), "mode": mode, "steps": int(steps),
       "eps": float(eps), "acc": float(acc)}
  if num_examples is not None:
    r["num_examples"] = int(num_examples)
  return r


def _rkey(r: dict) -> tuple:
  return tuple(r[k] for k in RESULT_KEYS[:-1])


def _skey(r: dict) -> str:
  """A record's key as a string (the name of its per-example array)."""
  return "|".join(str(v) for v in _rkey(r))


class PerExample:
  """Per-example correctness of every attack record, kept on disk.

  `WORKDIR/per_example.npz` maps a record's key to a bool [num_examples]
  array, so the worst case over attacks can be formed after a resume.
  """

  def __init__(self, path: str):
    self.path = path
    self.arrays: dict = {}
    if os.path.exists(path):
      with np.load(path) as f:
        self.arrays = {k: f[k] for k in f.files}

  def __contains__(self, record: dict) -> bool:
    return _skey(record) in self.arrays

  def get(self, record: dict):
    return self.arrays.get(_skey(record))

  def put(self, record: dict, correct: np.ndarray) -> None:
    self.arrays[_skey(record)] = np.asarray(correct, bool)

  def save(self) -> None:
    if jax.process_index() != 0:  # multi-host: process 0 writes
      return
    tmp = self.path + ".tmp.npz"
    np.savez(tmp, **self.arrays)
    os.replace(tmp, self.path)  # atomic: a kill leaves the old file whole


# Attacks whose per-example verdicts make up the adaptive worst case, at the
# worst case's own (targeted, steps, eps). The untargeted settings at the
# main eps also take AutoAttack's "rand" version (`rand_record`: one record
# of its own step count, on `rand_examples` >= n examples; its first n
# verdicts join).
WORST_CASE_OF = (("pgd", "oblivious"), ("eot_pgd", "adaptive"),
                 ("pgd_mixed_avg", "adaptive"), ("pgd_mixed_space", "adaptive"))


def worst_case_records(name: str, config, per_example: PerExample) -> list:
  """Adaptive `worst_case` records: an example counts as robust only if it
  survives every attack run against that defence (oblivious PGD on the base
  model, EOT-PGD through the defence, for MI both forms of Pang et al.'s
  attack and,
  untargeted at the main eps, AutoAttack's "rand" version when enabled).

  An adaptive attacker knows the defence and may use any attack, per
  example; the oblivious one included. EOT alone can be weaker than the
  transfer attack against MI-PL (its partner class follows the discrete
  prediction, which the averaged gradient does not see).
  """
  out = []
  for targeted, steps, eps in attack_settings(config):
    for d in config.defenses:
      if d == "none":
        continue
      parts = [per_example.get(_record(name, d, a, targeted, m, steps, eps, 0))
               for a, m in WORST_CASE_OF]
      n = attack_examples(config, steps)
      parts = [p for p in parts if p is not None and len(p) == n]
      if len(parts) < 2:
        continue
      if (not targeted and eps == float(config.eval.eps)
          and rand_enabled(config)):
        rand = per_example.get(rand_record(name, d, config))
        if rand is not None and len(rand) >= n:
          parts.append(rand[:n])
      correct = np.logical_and.reduce(parts)
      out.append(_record(name, d, "worst_case", targeted, "adaptive", steps,
                         eps, float(np.mean(correct)), len(correct)))
  return out


def _upsert(records: list, done: set, record: dict) -> None:
  """Adds `record`, replacing (in place) one with the same key: a re-run
  attack (e.g. after `examples_by_steps` changed) supersedes the old one."""
  key = _rkey(record)
  if key in done:
    for i, r in enumerate(records):
      if _rkey(r) == key:
        records[i] = record
        return
  records.append(record)
  done.add(key)
