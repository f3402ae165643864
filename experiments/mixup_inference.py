r"""Mixup Inference (Pang, Xu & Zhu, ICLR 2020) against oblivious and adaptive PGD.

  python -m experiments.mixup_inference \
      --config=experiments/configs/mi_mnist.py --workdir=/tmp/mi_mnist

Trains the models of `config.models` (mixup, interpolated AT), then evaluates
the table of the paper: rows model x defence (none, Gaussian noise, rotation,
Xie, Guo, MI-PL, MI-OL, MI-Combined); columns clean accuracy and untargeted /
targeted PGD-K, each **oblivious** (PGD on the base model, then the defence)
and **adaptive** (EOT-PGD through the defence itself, gradients averaged
over fresh draws of its randomness at every step). The paper's own adaptive
attack (mean of PGD perturbations over mixed inputs) is added for the MI
defences. Writes:

* `WORKDIR/results.json`: records with keys model, defense, attack,
  targeted, mode, steps, eps, acc (`mode` is oblivious or adaptive; clean
  accuracy has attack "none", steps 0, eps 0);
* `WORKDIR/results.md`: the tables; `WORKDIR/details.json`: RIC, detection
  gaps and their ROC-AUC, the lam analysis, timings;
* plots: `acc_vs_lam.png`, `probs_vs_lam.png`, `acc_vs_eps.png`.

Several hosts: the same command in every process with
`--coordinator_address=HOST:PORT --num_processes=P --process_id=i`.

Started again with the same workdir, it resumes: trained models from their
checkpoints, evaluation from the records already written.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from typing import Any, Callable

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np
import optax
import tqdm

from experiments.robust_training import _json_dump
from experiments.robust_training import define_multihost_flags
from experiments.robust_training import maybe_initialize_distributed
from jaxadv import attacks
from jaxadv import data
from jaxadv import defenses
from jaxadv import losses
from jaxadv import models
from jaxadv import parallel
from jaxadv import training

RESULT_KEYS = ("model", "defense", "attack", "targeted", "mode", "steps",
               "eps", "acc")
MI_DEFENSES = ("mi_pl", "mi_ol", "mi_combined")
BASELINES = ("gaussian", "rotation", "xie", "guo")
DEFENSE_NAMES = ("none",) + BASELINES + MI_DEFENSES

# step name -> builder from the model's config section
STEPS = {
    "mixup": lambda c: training.mixup_step(alpha=c.alpha),
    "iat": lambda c: training.iat_step(alpha=c.alpha, steps=c.steps,
                                       adv_ratio=c.adv_ratio),
    "natural": lambda c: training.natural_step(),
}
OPTIMIZERS = {
    "adam": lambda lr, c: optax.adam(lr),
    "sgd": lambda lr, c: optax.chain(optax.add_decayed_weights(c.weight_decay),
                                     optax.sgd(lr, momentum=0.9)),
}


def _json_load(path: str, default: Any) -> Any:
  if not os.path.exists(path):
    return default
  with open(path) as f:
    return json.load(f)


# --------------------------------------------------------------------------
# Training


def train_model(name: str, config: ml_collections.ConfigDict, x, y,
                workdir: str, num_classes: int, mesh=None):
  """Trains model `name` (config section `config[name]`); resumable; data
  parallel over `mesh` when given."""
  mc = config[name]
  if mc.step not in STEPS:
    raise ValueError(f"unknown step {mc.step!r} for model {name!r}; valid: "
                     f"{sorted(STEPS)}.")
  model = models.get_model(config.model, num_classes=num_classes)
  per_epoch = data.num_batches(len(x), config.batch_size)
  num_batches = max(1, int(round(mc.epochs * per_epoch)))
  lr = training.make_schedule(mc.schedule, total_steps=num_batches,
                              learning_rate=mc.learning_rate)
  key = jax.random.fold_in(jax.random.key(config.seed),
                           list(config.models).index(name))
  state = training.create_train_state(
      model, key, (1,) + tuple(x.shape[1:]), OPTIMIZERS[mc.optimizer](lr, mc),
      eps=mc.eps, step_size=mc.step_size,
      eps_ramp_steps=int(round(mc.eps_ramp_epochs * per_epoch)))
  result = training.fit(
      state, STEPS[mc.step](mc), x, y, batch_size=config.batch_size,
      num_batches=num_batches, seed=config.seed,
      workdir=os.path.join(workdir, "checkpoints", name),
      checkpoint_every=config.checkpoint_every, desc=f"train {name}",
      progress=config.progress, mesh=mesh)
  return model, training.variables_of(result.state), result


# --------------------------------------------------------------------------
# Defences: (variables, x, key) -> probs [B, C]


def make_defense(name: str, config: ml_collections.ConfigDict, apply_fn,
                 pools: dict, *, mi_ol_lam: float,
                 max_samples: int | None = None) -> Callable:
  """The defence `name` as `probs(variables, x, key) -> [B, C]`.

  With `max_samples`, every random average uses at most that many draws
  (used inside the adaptive attacks, where each step re-draws anyway). MI-PL
  and MI-OL also take an optional traced `lam` overriding their mixing
  weight (the lam analysis).
  """
  cap = (lambda n: n) if max_samples is None else (
      lambda n: max(1, min(n, max_samples)))
  bc, mc = config.baselines, config.mi
  chunk = {-1: "auto", 0: None}.get(mc.chunk_size, mc.chunk_size)

  def logits_fn(variables):
    return lambda x: apply_fn(variables, x, train=False)

  if name == "none":
    return lambda v, x, key: jax.nn.softmax(logits_fn(v)(x), -1)
  if name in BASELINES:
    kwargs = {"gaussian": {"sigma": bc.sigma},
              "rotation": {"max_degrees": bc.max_degrees},
              "xie": {"min_fraction": bc.min_fraction},
              "guo": {"min_fraction": bc.min_fraction}}[name]
    return lambda v, x, key: defenses.randomized_inference(
        logits_fn(v), x, key, transform=name,
        num_samples=cap(bc.num_samples), chunk_size=chunk, **kwargs)
  if name == "mi_pl":
    return lambda v, x, key, lam=mc.pl_lam: defenses.mi_pl(
        logits_fn(v), x, pools["pl"], key, lam=lam,
        num_samples=cap(mc.pl_num_samples), chunk_size=chunk).probs
  if name == "mi_ol":
    return lambda v, x, key, lam=mi_ol_lam: defenses.mi_ol(
        logits_fn(v), x, pools["ol"], key, lam=lam,
        num_samples=cap(mc.ol_num_samples), chunk_size=chunk).probs
  if name == "mi_combined":
    return lambda v, x, key: defenses.mi_combined(
        logits_fn(v), x, pools["pl"], key, pool_ol=pools["ol"],
        lam_pl=mc.combined_lam_pl, lam_ol=mc.combined_lam_ol,
        threshold=mc.combined_threshold,
        num_samples_pl=cap(mc.combined_num_samples_pl),
        num_samples_ol=cap(mc.combined_num_samples_ol),
        chunk_size=chunk).probs
  raise ValueError(f"unknown defense {name!r}; valid: {DEFENSE_NAMES}.")


def _batched(fn: Callable, arrays: tuple, batch_size: int,
             put: Callable = np.asarray) -> np.ndarray:
  """Applies jitted `fn(index, *batch)` over fixed-size batches (last one
  padded); `index` numbers the batches; `put` places each batch array (e.g.
  split over devices)."""
  n = len(arrays[0])
  out = []
  for index, start in enumerate(range(0, n, batch_size)):
    chunk = [a[start:start + batch_size] for a in arrays]
    pad = batch_size - len(chunk[0])
    if pad:
      chunk = [np.concatenate([c, np.repeat(c[-1:], pad, 0)]) for c in chunk]
    out.append(
        parallel.to_host(fn(index, *map(put, chunk)))[:batch_size - pad])
  return np.concatenate(out)


class Evaluator:
  """Jitted defences and attacks for one trained model, cached by signature.

  With a `mesh`, every batch (and so MI's N x B forward) is split over its
  devices and the variables are replicated.
  """

  def __init__(self, config, model, variables, pools, mi_ol_lam, mesh=None):
    self.config, self.model, self.variables = config, model, variables
    self.pools, self.mi_ol_lam = pools, mi_ol_lam
    self._cache: dict = {}
    self.put = np.asarray
    self.multiple = 1 if mesh is None else mesh.size
    if mesh is not None:
      parallel.check_batch_size(config.eval.batch_size, mesh,
                                "config.eval.batch_size")
      self.variables = parallel.replicate(variables, mesh)
      self.put = lambda a: parallel.shard_batch(a, mesh)

  def _run(self, fn: Callable, arrays: tuple) -> np.ndarray:
    """`_batched` with `config.eval.batch_size`, or one batch of the data
    (rounded up to the device count) when there is less: a 100-example
    attack is not padded to a 500-example batch."""
    n, m = len(arrays[0]), self.multiple
    batch_size = min(self.config.eval.batch_size, -(-n // m) * m)
    return _batched(fn, arrays, batch_size, self.put)

  def _jit(self, signature, build):
    if signature not in self._cache:
      self._cache[signature] = jax.jit(build())
    return self._cache[signature]

  def _defense(self, defense: str, **kwargs) -> Callable:
    return make_defense(defense, self.config, self.model.apply, self.pools,
                        mi_ol_lam=self.mi_ol_lam, **kwargs)

  def predict(self, defense: str, x: np.ndarray, key) -> np.ndarray:
    """Predicted labels of the full (evaluation-time) defence; batch i uses
    `fold_in(key, i)`."""
    fn = self._jit(("probs", defense), lambda: (
        lambda v, x, k: jnp.argmax(self._defense(defense)(v, x, k), -1)))
    return self._run(
        lambda i, xb: fn(self.variables, xb, jax.random.fold_in(key, i)),
        (x,))

  def probs(self, defense: str, x: np.ndarray, key, lam) -> np.ndarray:
    """MI-PL / MI-OL probabilities at mixing weight `lam` (traced), [n, C]."""
    fn = self._jit(("mi_lam", defense), lambda: self._defense(defense))
    return self._run(lambda i, xb: fn(self.variables, xb, key,
                                      jnp.float32(lam)), (x,))

  def oblivious(self, x, y, key, *, eps, steps, targeted) -> np.ndarray:
    """PGD on the base model (the defence is not seen by the attack)."""
    apply_fn = self.model.apply
    factor = self.config.eval.step_size_factor

    def build():
      def fn(v, x, y, key, eps):
        loss_fn = losses.make_loss_fn(
            lambda z: apply_fn(v, z, train=False), "ce")
        return attacks.pgd(loss_fn, x, y, key, eps=eps,
                           step_size=factor * eps, steps=steps,
                           targeted=targeted)
      return fn
    fn = self._jit(("pgd", steps, targeted), build)
    return self._run(lambda i, xb, yb: fn(self.variables, xb, yb, key,
                                          jnp.float32(eps)), (x, y))

  def adaptive(self, defense, x, y, key, *, eps, steps, targeted):
    """EOT-PGD through the defence (capped draws per step)."""
    ac, factor = self.config.adaptive, self.config.eval.step_size_factor

    def build():
      probs_fn = make_defense(defense, self.config, self.model.apply,
                              self.pools, mi_ol_lam=self.mi_ol_lam,
                              max_samples=ac.max_samples)

      def fn(v, x, y, key, eps):
        loss_fn = defenses.probs_loss_fn(lambda z, k: probs_fn(v, z, k))
        return attacks.eot_pgd(loss_fn, x, y, key, eps=eps,
                               step_size=factor * eps, steps=steps,
                               eot_samples=ac.eot_samples, targeted=targeted,
                               loop=ac.loop)
      return fn
    fn = self._jit(("eot", defense, steps, targeted), build)
    return self._run(lambda i, xb, yb: fn(self.variables, xb, yb, key,
                                          jnp.float32(eps)), (x, y))

  def paper_adaptive(self, defense, x, y, key, *, eps, steps, targeted):
    """Pang et al.'s adaptive attack: mean PGD perturbation on mixed inputs."""
    ac, mc = self.config.adaptive, self.config.mi
    factor = self.config.eval.step_size_factor
    partners = "pl" if defense == "mi_pl" else "ol"
    lam = {"mi_pl": mc.pl_lam, "mi_ol": self.mi_ol_lam,
           "mi_combined": mc.combined_lam_ol}[defense]
    pool = self.pools[partners]
    apply_fn = self.model.apply

    def build():
      def fn(v, x, y, key, eps):
        return defenses.mi_average_perturbation_pgd(
            lambda z: apply_fn(v, z, train=False), x, y, pool, key, lam=lam,
            eps=eps, step_size=factor * eps, steps=steps,
            num_partners=ac.paper_num_partners, partners=partners,
            targeted=targeted, loop=ac.loop)
      return fn
    fn = self._jit(("paper", defense, steps, targeted), build)
    return self._run(lambda i, xb, yb: fn(self.variables, xb, yb, key,
                                          jnp.float32(eps)), (x, y))


# --------------------------------------------------------------------------
# Evaluation plan


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


# Attacks whose per-example verdicts make up the adaptive worst case.
WORST_CASE_OF = (("pgd", "oblivious"), ("eot_pgd", "adaptive"),
                 ("pgd_mixed_avg", "adaptive"))


def worst_case_records(name: str, config, per_example: PerExample) -> list:
  """Adaptive `worst_case` records: an example counts as robust only if it
  survives every attack run against that defence (oblivious PGD on the base
  model, EOT-PGD through the defence and, for MI, Pang et al.'s attack).

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


def evaluate_model(name: str, ev: Evaluator, config, test, targets_all,
                   records: list, save: Callable, key,
                   per_example: PerExample) -> dict:
  """Fills `records` for model `name` (skipping those already there) and
  keeps every attack's per-example verdicts in `per_example`."""
  ec = config.eval
  done = {_rkey(r) for r in records}
  x_clean, y_clean = test[0][:ec.clean_examples], test[1][:ec.clean_examples]
  timings = {}

  # Clean accuracy of every defence.
  for d in config.defenses:
    rec = _record(name, d, "none", False, "oblivious", 0, 0.0, 0.0,
                  len(y_clean))
    if _rkey(rec) in done:
      continue
    t0 = time.perf_counter()
    pred = ev.predict(d, x_clean, jax.random.fold_in(key, 1))
    rec["acc"] = float(np.mean(pred == y_clean))
    timings[f"clean/{d}"] = time.perf_counter() - t0
    records.append(rec)
    save()

  settings = attack_settings(config)
  jobs = []
  for targeted, steps, eps in settings:
    jobs.append(("oblivious", None, targeted, steps, eps))
    for d in config.defenses:
      if d != "none":  # EOT-PGD on a deterministic model is PGD: the
        jobs.append(("adaptive", d, targeted, steps, eps))  # oblivious job.
      if (d in MI_DEFENSES and steps in config.adaptive.paper_steps
          and eps == float(ec.eps)):
        jobs.append(("paper", d, targeted, steps, eps))

  def pending(job):
    mode, d, targeted, steps, eps = job
    if mode == "oblivious":
      recs = [_record(name, dd, "pgd", targeted, "oblivious", steps, eps, 0)
              for dd in config.defenses]
    else:
      attack = {"adaptive": "eot_pgd", "paper": "pgd_mixed_avg"}[mode]
      recs = [_record(name, d, attack, targeted, "adaptive", steps, eps, 0)]
    n = attack_examples(config, steps)
    return any(_rkey(r) not in done or r not in per_example
               or len(per_example.get(r)) != n for r in recs)

  jobs = [j for j in jobs if pending(j)]
  for i, (mode, d, targeted, steps, eps) in enumerate(
      tqdm.tqdm(jobs, desc=f"attacks on {name}", disable=not config.progress)):
    n = attack_examples(config, steps)
    x, y = test[0][:n], test[1][:n]
    y_att = targets_all[:n] if targeted else y
    akey = jax.random.fold_in(key, zlib.crc32(
        f"{mode}/{d}/{targeted}/{steps}".encode()) % 2**31)
    t0 = time.perf_counter()
    if mode == "oblivious":
      x_adv = ev.oblivious(x, y_att, akey, eps=eps, steps=steps,
                           targeted=targeted)
    elif mode == "adaptive":
      x_adv = ev.adaptive(d, x, y_att, akey, eps=eps, steps=steps,
                          targeted=targeted)
    else:
      x_adv = ev.paper_adaptive(d, x, y_att, akey, eps=eps, steps=steps,
                                targeted=targeted)
    attack_seconds = time.perf_counter() - t0
    _check_ball(x_adv, x, eps)
    evaluated = config.defenses if mode == "oblivious" else (d,)
    for dd in evaluated:
      pred = ev.predict(dd, x_adv, jax.random.fold_in(key, 7))
      correct = pred == y
      acc = float(np.mean(correct))
      if mode == "oblivious":
        recs = [_record(name, dd, "pgd", targeted, "oblivious", steps, eps,
                        acc, n)]
        if dd == "none":  # EOT over no randomness is PGD itself.
          recs.append(_record(name, dd, "pgd", targeted, "adaptive", steps,
                              eps, acc, n))
      else:
        attack = "eot_pgd" if mode == "adaptive" else "pgd_mixed_avg"
        recs = [_record(name, dd, attack, targeted, "adaptive", steps, eps,
                        acc, n)]
      for r in recs:
        per_example.put(r, correct)
        _upsert(records, done, r)
    timings[f"{mode}/{d}/{'t' if targeted else 'u'}{steps}/{eps}"] = (
        attack_seconds)
    per_example.save()
    save()

  for r in worst_case_records(name, config, per_example):
    _upsert(records, done, r)
  save()
  return timings


def _check_ball(x_adv, x, eps) -> None:
  """Every adversarial example is in the L-inf ball and the box."""
  dist = float(np.max(np.abs(x_adv - x)))
  if dist > eps + 1e-5 or x_adv.min() < 0 or x_adv.max() > 1:
    raise RuntimeError(f"attack left the eps-ball or the box: max |delta| = "
                       f"{dist} for eps {eps}.")


def analyse(name: str, ev: Evaluator, config, test, key) -> dict:
  """RIC, detection gaps and their ROC-AUC, and the lam curves (oblivious
  untargeted PGD-`sweep_steps` at the main eps; adaptive EOT against MI-PL
  for the detector's AUC too)."""
  ac, ec = config.analysis, config.eval
  n = min(ac.num_examples, ec.num_examples)
  x, y = test[0][:n], test[1][:n]
  eps, steps = float(ec.eps), int(ec.sweep_steps)
  x_adv = ev.oblivious(x, y, jax.random.fold_in(key, 11), eps=eps,
                       steps=steps, targeted=False)
  out = {"eps": eps, "steps": steps, "num_examples": n, "lam": {}}
  rows = np.arange(n)
  base_clean = ev.probs("mi_pl", x, key, lam=1.0)
  base_adv = ev.probs("mi_pl", x_adv, key, lam=1.0)
  yhat_c, yhat_a = base_clean.argmax(-1), base_adv.argmax(-1)
  for d in ("mi_pl", "mi_ol"):
    curves = {k: [] for k in ("acc_clean", "acc_adv", "fy_clean", "fyhat_clean",
                              "fy_adv", "fyhat_adv")}
    for lam in ac.lams:
      pc = ev.probs(d, x, jax.random.fold_in(key, 1), lam=lam)
      pa = ev.probs(d, x_adv, jax.random.fold_in(key, 2), lam=lam)
      curves["acc_clean"].append(float(np.mean(pc.argmax(-1) == y)))
      curves["acc_adv"].append(float(np.mean(pa.argmax(-1) == y)))
      curves["fy_clean"].append(float(pc[rows, y].mean()))
      curves["fyhat_clean"].append(float(pc[rows, yhat_c].mean()))
      curves["fy_adv"].append(float(pa[rows, y].mean()))
      curves["fyhat_adv"].append(float(pa[rows, yhat_a].mean()))
    out["lam"][d] = {"lams": list(ac.lams), **curves}
  mc = config.mi
  lams = {"mi_pl": mc.pl_lam, "mi_ol": ev.mi_ol_lam}
  out["ric"], out["detection"], gap_clean = {}, {}, {}
  for d, lam in lams.items():
    p_adv = ev.probs(d, x_adv, jax.random.fold_in(key, 3), lam=lam)
    p_clean = ev.probs(d, x, jax.random.fold_in(key, 4), lam=lam)
    out["ric"][d] = defenses.ric(base_adv, p_adv, y).summary()
    gap_clean[d] = defenses.detection_gap(base_clean, p_clean)
    gap_a = defenses.detection_gap(base_adv, p_adv)
    out["detection"][d] = {
        "mean_gap_clean": float(gap_clean[d].mean()),
        "mean_gap_adv_oblivious": float(gap_a.mean()),
        "auc_oblivious": defenses.detection_auc(gap_clean[d], gap_a)}
  # The detector against an adaptive attacker (EOT-PGD through MI-PL).
  x_adp = ev.adaptive("mi_pl", x, y, jax.random.fold_in(key, 12), eps=eps,
                      steps=steps, targeted=False)
  base_adp = ev.probs("mi_pl", x_adp, key, lam=1.0)
  gap_adp = defenses.detection_gap(
      base_adp, ev.probs("mi_pl", x_adp, jax.random.fold_in(key, 5),
                         lam=mc.pl_lam))
  out["detection"]["mi_pl"]["mean_gap_adv_adaptive"] = float(gap_adp.mean())
  out["detection"]["mi_pl"]["auc_adaptive"] = defenses.detection_auc(
      gap_clean["mi_pl"], gap_adp)
  return out


# --------------------------------------------------------------------------
# Reporting


def _acc(records, **match) -> float | None:
  for r in records:
    if all(r[k] == v for k, v in match.items()):
      return r["acc"]
  return None


def adaptive_acc(records, defense: str, **match) -> float | None:
  """The adaptive number of a cell: the per-example worst case over the
  attacks when it exists, else EOT-PGD (PGD itself for no defence)."""
  if defense == "none":
    return _acc(records, mode="adaptive", attack="pgd", defense=defense,
                **match)
  worst = _acc(records, mode="adaptive", attack="worst_case",
               defense=defense, **match)
  if worst is not None:
    return worst
  return _acc(records, mode="adaptive", attack="eot_pgd", defense=defense,
              **match)


def format_tables(records: list, config) -> str:
  """Markdown: per model, the main table and the eps sweep."""
  ec = config.eval
  pct = lambda a: "-" if a is None else f"{100 * a:.1f}"
  lines = []
  for model in config.models:
    cols = [(t, s) for t in ec.targeted for s in ec.steps]
    lines.append(f"\n**{model} model, {config.dataset}, eps {ec.eps}** "
                 "(accuracy %, oblivious / adaptive; adaptive = per-example "
                 "worst case over oblivious PGD, EOT-PGD and Pang et al.'s "
                 "attack; `(eot ...)` = EOT-PGD alone; `[paper ...]` = Pang "
                 "et al.'s adaptive attack alone)\n")
    def head(t, s):
      n = attack_examples(config, s)
      return (f"{'targeted' if t else 'untargeted'} PGD-{s}" +
              (f" (n = {n})" if n != ec.num_examples else ""))
    lines.append(f"Clean accuracy on {ec.clean_examples} test images, attacks "
                 f"on the first {ec.num_examples} (fewer where a column says "
                 "n).\n")
    lines.append("| defence | clean | " + " | ".join(
        head(t, s) for t, s in cols) + " |")
    lines.append("|---" * (len(cols) + 2) + "|")
    for d in config.defenses:
      row = [d, pct(_acc(records, model=model, defense=d, attack="none"))]
      for t, s in cols:
        base = dict(model=model, defense=d, targeted=t, steps=s, eps=float(
            ec.eps))
        obl = _acc(records, mode="oblivious", attack="pgd", **base)
        cell = f"{pct(obl)} / {pct(adaptive_acc(records, **base))}"
        if d != "none":
          cell += f" (eot {pct(_acc(records, attack='eot_pgd', **base))})"
        paper = _acc(records, attack="pgd_mixed_avg", **base)
        if paper is not None:
          cell += f" [paper {pct(paper)}]"
        row.append(cell)
      lines.append("| " + " | ".join(row) + " |")
    lines.append(f"\n**{model} model: untargeted PGD-{ec.sweep_steps} vs eps** "
                 "(oblivious / adaptive worst case)\n")
    lines.append("| defence | " + " | ".join(
        f"eps {e}" for e in ec.sweep_eps) + " |")
    lines.append("|---" * (len(ec.sweep_eps) + 1) + "|")
    for d in config.defenses:
      row = [d]
      for e in ec.sweep_eps:
        base = dict(model=model, defense=d, targeted=False,
                    steps=int(ec.sweep_steps), eps=float(e))
        obl = _acc(records, mode="oblivious", attack="pgd", **base)
        row.append(f"{pct(obl)} / {pct(adaptive_acc(records, **base))}")
      lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines)


def _plots(details: dict, records: list, config, workdir: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  names = [m for m in config.models if m in details.get("analysis", {})]
  if not names:
    return
  fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.8),
                           squeeze=False)
  for ax, m in zip(axes[0], names):
    a = details["analysis"][m]
    for d, style in (("mi_pl", "-"), ("mi_ol", "--")):
      c = a["lam"][d]
      ax.plot(c["lams"], 100 * np.array(c["acc_clean"]), "b" + style,
              label=f"{d} clean")
      ax.plot(c["lams"], 100 * np.array(c["acc_adv"]), "r" + style,
              label=f"{d} adversarial")
    ax.set_title(f"{m}: accuracy vs lam (oblivious PGD-{a['steps']}, "
                 f"eps {a['eps']})", fontsize=9)
    ax.set_xlabel("lam (weight of the input)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "acc_vs_lam.png"), dpi=110)
  plt.close(fig)

  fig, axes = plt.subplots(2, len(names), figsize=(5 * len(names), 7),
                           squeeze=False)
  for j, m in enumerate(names):
    a = details["analysis"][m]
    for i, d in enumerate(("mi_pl", "mi_ol")):
      ax, c = axes[i][j], a["lam"][d]
      ax.plot(c["lams"], c["fy_clean"], "b-", label="F_y, clean")
      ax.plot(c["lams"], c["fy_adv"], "r-", label="F_y, adversarial")
      ax.plot(c["lams"], c["fyhat_adv"], "r--",
              label="F_y_hat (adversarial class)")
      ax.set_title(f"{m}, {d}: probabilities vs lam", fontsize=9)
      ax.set_xlabel("lam")
      ax.set_ylim(-0.02, 1.02)
      ax.grid(alpha=0.3)
      ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "probs_vs_lam.png"), dpi=110)
  plt.close(fig)

  ec = config.eval
  fig, axes = plt.subplots(1, len(config.models),
                           figsize=(5 * len(config.models), 3.8), squeeze=False)
  for ax, m in zip(axes[0], config.models):
    for i, d in enumerate(config.defenses):
      color = f"C{i}"
      for mode, style in (("oblivious", "-"), ("adaptive", "--")):
        get = (adaptive_acc if mode == "adaptive" else
               lambda r, **k: _acc(r, mode="oblivious", attack="pgd", **k))
        ys = [get(records, model=m, defense=d, targeted=False,
                  steps=int(ec.sweep_steps), eps=float(e))
              for e in ec.sweep_eps]
        if all(v is not None for v in ys):
          ax.plot(ec.sweep_eps, 100 * np.array(ys), color=color,
                  linestyle=style, marker="o", ms=3,
                  label=d if mode == "oblivious" else None)
    ax.set_title(f"{m}: PGD-{ec.sweep_steps} (solid oblivious, dashed "
                 "adaptive worst case)", fontsize=9)
    ax.set_xlabel("eps (pixels in [0, 1])")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "acc_vs_eps.png"), dpi=110)
  plt.close(fig)


# --------------------------------------------------------------------------


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> list:
  """Trains the models and evaluates every defence under every attack.

  Args:
    config: see `experiments/configs/mi_common.py` and `mi_mnist.py`.
    workdir: output folder (created): checkpoints, results and plots.

  Returns:
    The result records (also in `workdir/results.json`).
  """
  os.makedirs(workdir, exist_ok=True)
  mesh = parallel.make_mesh(config.num_devices)
  print(f"jax {jax.__version__}, backend {jax.default_backend()}")
  print(parallel.describe(mesh))
  for d in config.defenses:
    if d not in DEFENSE_NAMES:
      raise ValueError(f"unknown defense {d!r}; valid: {DEFENSE_NAMES}.")
  x, y = data.load(config.dataset, "train", data_dir=config.data_dir,
                   manual_dir=config.manual_dir, limit=config.train_limit)
  x_test, y_test = data.load(config.dataset, "test", data_dir=config.data_dir,
                             manual_dir=config.manual_dir)
  num_classes = data.info(config.dataset).num_classes
  # A fixed random order of the test set, so every subset is class-balanced
  # in expectation (MNIST's test file is not shuffled by writer).
  order = np.random.default_rng(config.seed).permutation(len(x_test))
  test = (x_test[order], y_test[order])
  print(f"{config.dataset}: {len(x)} train, {len(x_test)} test; clean "
        f"accuracy on {min(config.eval.clean_examples, len(x_test))}, attacks "
        f"on {config.eval.num_examples}")
  key = jax.random.key(config.seed)
  pools = {
      "pl": defenses.make_pool(x, y, size=config.mi.pl_pool_size,
                               key=jax.random.fold_in(key, 101),
                               num_classes=num_classes),
      "ol": defenses.make_pool(x, y, size=config.mi.ol_pool_size,
                               key=jax.random.fold_in(key, 102),
                               num_classes=num_classes)}
  shift = np.asarray(jax.random.randint(jax.random.fold_in(key, 103),
                                        (len(test[1]),), 1, num_classes))
  targets = ((test[1] + shift) % num_classes).astype(np.int32)

  results_path = os.path.join(workdir, "results.json")
  details_path = os.path.join(workdir, "details.json")
  records = _json_load(results_path, [])
  details = _json_load(details_path, {"analysis": {}, "timings": {},
                                      "train": {}})
  save = lambda: _json_dump(records, results_path)
  per_example = PerExample(os.path.join(workdir, "per_example.npz"))

  for name in config.models:
    model, variables, result = train_model(name, config, x, y, workdir,
                                           num_classes, mesh)
    details["train"][name] = {"seconds": result.train_seconds,
                              "batches": result.batches,
                              "config": config[name].to_dict()}
    ev = Evaluator(config, model, variables, pools, config[name].mi_ol_lam,
                   mesh)
    timings = evaluate_model(name, ev, config, test, targets, records, save,
                             jax.random.fold_in(key, 200 +
                                                list(config.models).index(name)),
                             per_example)
    details["timings"].setdefault(name, {}).update(timings)
    if name not in details["analysis"]:
      details["analysis"][name] = analyse(name, ev, config, test,
                                          jax.random.fold_in(key, 300))
    _json_dump(details, details_path)

  table = format_tables(records, config)
  analysis_md = format_analysis(details, config)
  if jax.process_index() == 0:  # multi-host: process 0 writes the results
    _plots(details, records, config, workdir)
    with open(os.path.join(workdir, "results.md"), "w") as f:
      f.write(table + "\n\n" + analysis_md + "\n")
  print(table)
  print(analysis_md)
  return records


def format_analysis(details: dict, config) -> str:
  """RIC and detection-gap summary as Markdown."""
  lines = ["| model | MI | frac. RIC holds | F_y base -> MI | F_y_hat base "
           "-> MI | gap clean | gap adv (obl.) | AUC obl. | AUC adaptive |",
           "|---|---|---|---|---|---|---|---|---|"]
  for m in config.models:
    a = details["analysis"].get(m)
    if not a:
      continue
    for d in ("mi_pl", "mi_ol"):
      r, g = a["ric"][d], a["detection"][d]
      auc_adp = g.get("auc_adaptive")
      lines.append(
          f"| {m} | {d} | {r['frac_both']:.2f} | {r['mean_true_base']:.3f} -> "
          f"{r['mean_true_mi']:.3f} | {r['mean_adv_base']:.3f} -> "
          f"{r['mean_adv_mi']:.3f} | {g['mean_gap_clean']:.3f} | "
          f"{g['mean_gap_adv_oblivious']:.3f} | {g['auc_oblivious']:.3f} | "
          f"{'-' if auc_adp is None else f'{auc_adp:.3f}'} |")
  return "\n".join(lines)


FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Output directory.")
  config_flags.DEFINE_config_file(
      "config", None, "Experiment configuration file.", lock_config=True)
  flags.mark_flags_as_required(["config", "workdir"])
  define_multihost_flags()


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  maybe_initialize_distributed()
  train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
