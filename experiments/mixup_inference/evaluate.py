"""The evaluation: defences, the jitted attacks of one model, the table's
attacks and the analysis of Pang et al. (lam curves, RIC, detection)."""

from __future__ import annotations

import time
import zlib
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from experiments.mixup_inference import plan
from experiments.mixup_inference.plan import PerExample
from jaxadv import attacks
from jaxadv import defenses
from jaxadv import evaluation
from jaxadv import losses
from jaxadv import parallel

MI_DEFENSES = ("mi_pl", "mi_ol", "mi_combined")
BASELINES = ("gaussian", "rotation", "xie", "guo")
DEFENSE_NAMES = ("none",) + BASELINES + MI_DEFENSES
# The record name of each adaptive job's attack.
ATTACK_OF_MODE = {"adaptive": "eot_pgd", "paper": "pgd_mixed_avg",
                  "paper_code": "pgd_mixed_space"}


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
  chunk = mc.chunk_size  # None = one vmap over all copies

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


def copies(name: str, config: ml_collections.ConfigDict,
           max_samples: int | None = None) -> int:
  """Model forwards per input of one draw of defence `name` (its mixed
  copies / transforms, capped at `max_samples` as in `make_defense`, plus
  the base prediction MI-PL and MI-Combined take)."""
  cap = (lambda n: n) if max_samples is None else (
      lambda n: max(1, min(n, max_samples)))
  bc, mc = config.baselines, config.mi
  if name == "none":
    return 1
  if name in BASELINES:
    return cap(bc.num_samples)
  return {"mi_pl": cap(mc.pl_num_samples) + 1,
          "mi_ol": cap(mc.ol_num_samples),
          "mi_combined": (cap(mc.combined_num_samples_pl)
                          + cap(mc.combined_num_samples_ol) + 1)}[name]


def log_probs_attacked_capped(full: Callable, capped: Callable) -> Callable:
  """`(variables, x, key) -> log-probabilities` of the defence `full`, whose
  derivatives (and the value computed alongside them) are those of `capped`.

  An attack that differentiates it (every APGD iterate: loss, gradient and
  the misclassification check come from one `jax.grad` call) sees the capped
  defence (at most `max_samples` of its draws, as `config.adaptive`); every
  plain call (the clean and post-attack verdicts of
  `jaxadv.evaluation.evaluate_randomized`) is the deployed defence. Same
  key, same draws up to the cap.
  """
  log = lambda p: jnp.log(p + 1e-12)

  @jax.custom_jvp
  def f(variables, x, key):
    return log(full(variables, x, key))

  @f.defjvp
  def f_jvp(primals, tangents):
    variables, x, key = primals
    return jax.jvp(lambda z: log(capped(variables, z, key)), (x,),
                   (tangents[1],))

  return f


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
    self.host_variables = variables  # unreplicated (evaluate_randomized
                                     # places them on the local devices)
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
    unroll = self.config.eval.unroll

    def build():
      def fn(v, x, y, key, eps):
        loss_fn = losses.make_loss_fn(
            lambda z: apply_fn(v, z, train=False), "ce")
        return attacks.pgd(loss_fn, x, y, key, eps=eps,
                           step_size=factor * eps, steps=steps,
                           targeted=targeted, unroll=unroll)
      return fn
    fn = self._jit(("pgd", steps, targeted), build)
    return self._run(lambda i, xb, yb: fn(self.variables, xb, yb, key,
                                          jnp.float32(eps)), (x, y))

  def adaptive(self, defense, x, y, key, *, eps, steps, targeted,
               eot_samples: int | None = None, max_samples="config"):
    """EOT-PGD through the defence: every step's gradient averaged over
    `eot_samples` fresh draws of the defence (default
    `config.adaptive.eot_samples`), each draw with at most `max_samples` of
    its mixed copies / transforms (default `config.adaptive.max_samples`;
    None = all N, the defence as deployed)."""
    ac, factor = self.config.adaptive, self.config.eval.step_size_factor
    draws = int(ac.eot_samples if eot_samples is None else eot_samples)
    cap = ac.max_samples if max_samples == "config" else max_samples

    def build():
      probs_fn = make_defense(defense, self.config, self.model.apply,
                              self.pools, mi_ol_lam=self.mi_ol_lam,
                              max_samples=cap)

      def fn(v, x, y, key, eps):
        loss_fn = defenses.probs_loss_fn(lambda z, k: probs_fn(v, z, k))
        return attacks.eot_pgd(loss_fn, x, y, key, eps=eps,
                               step_size=factor * eps, steps=steps,
                               eot_samples=draws, targeted=targeted,
                               unroll=ac.unroll)
      return fn
    fn = self._jit(("eot", defense, steps, targeted, draws, cap), build)
    return self._run(lambda i, xb, yb: fn(self.variables, xb, yb, key,
                                          jnp.float32(eps)), (x, y))

  def rand_apply_fn(self, defense: str) -> Callable:
    """`(variables, x, key) -> log-probabilities` of `defense` for
    AutoAttack's "rand" version; with `config.autoattack_rand.max_samples`,
    the attack differentiates the capped defence and every verdict is the
    deployed one (`log_probs_attacked_capped`). Cached: jit keys on it."""
    cap = self.config.autoattack_rand.max_samples

    def build():
      full = self._defense(defense)
      if cap is None:
        return lambda v, x, k: jnp.log(full(v, x, k) + 1e-12)
      return log_probs_attacked_capped(
          full, self._defense(defense, max_samples=cap))
    key = ("rand_fn", defense, cap)
    if key not in self._cache:
      self._cache[key] = build()
    return self._cache[key]

  def rand_batch_size(self, defense: str, n: int) -> int:
    """`config.autoattack_rand.batch_size`, or (None) as many inputs as
    keep the images per gradient of the EOT-PGD job (eval.batch_size x
    adaptive eot_samples x max_samples copies): `eot_samples` draws of
    `copies` each per input. At most `n`; a multiple of the local device
    count where it is at least that."""
    rc, ac = self.config.autoattack_rand, self.config.adaptive
    ec = self.config.eval
    if rc.get("batch_size"):
      b = int(rc.batch_size)
    else:
      budget = ec.batch_size * ac.eot_samples * copies(
          defense, self.config, ac.max_samples)
      b = budget // (rc.eot_samples * copies(defense, self.config,
                                              rc.max_samples))
    b = max(1, min(b, n))
    m = jax.local_device_count()
    return b - b % m if b >= m else b

  def autoattack_rand(self, defense, x, y, key, *, eps) -> dict:
    """AutoAttack's "rand" version (`jaxadv.evaluation.evaluate_randomized`:
    APGD-CE then APGD-DLR, EOT over `eot_samples` draws, verdicts on fresh
    draws of the deployed defence) against `defense`, with x_adv."""
    rc, unroll = self.config.autoattack_rand, self.config.adaptive.unroll
    return evaluation.evaluate_randomized(
        self.rand_apply_fn(defense), self.host_variables, x, y, key, eps=eps,
        apgd_steps=rc.apgd_steps, eot_samples=rc.eot_samples,
        batch_size=self.rand_batch_size(defense, len(x)), unroll=unroll,
        return_adv=True)

  def _paper_setting(self, defense):
    mc = self.config.mi
    partners = "pl" if defense == "mi_pl" else "ol"
    lam = {"mi_pl": mc.pl_lam, "mi_ol": self.mi_ol_lam,
           "mi_combined": mc.combined_lam_ol}[defense]
    return partners, lam, self.pools[partners]

  def paper_adaptive(self, defense, x, y, key, *, eps, steps, targeted,
                     code: bool = False):
    """Pang et al.'s adaptive attack: the mean of per-partner PGD
    perturbations in input space ("pgd_mixed_avg"), or with `code` the
    authors' released version (PGD on the mixed images with the gradient
    averaged over partners, `defenses.mi_mixed_space_pgd`:
    "pgd_mixed_space")."""
    ac = self.config.adaptive
    factor = self.config.eval.step_size_factor
    partners, lam, pool = self._paper_setting(defense)
    apply_fn = self.model.apply
    attack = (defenses.mi_mixed_space_pgd if code
              else defenses.mi_average_perturbation_pgd)

    def build():
      def fn(v, x, y, key, eps):
        return attack(
            lambda z: apply_fn(v, z, train=False), x, y, pool, key, lam=lam,
            eps=eps, step_size=factor * eps, steps=steps,
            num_partners=ac.paper_num_partners, partners=partners,
            targeted=targeted, unroll=ac.unroll)
      return fn
    fn = self._jit(("paper", code, defense, steps, targeted), build)
    return self._run(lambda i, xb, yb: fn(self.variables, xb, yb, key,
                                          jnp.float32(eps)), (x, y))


def evaluate_model(name: str, ev: Evaluator, config, test, targets_all,
                   records: list, save: Callable, key,
                   per_example: PerExample,
                   rand_details: dict | None = None) -> dict:
  """Fills `records` for model `name` (skipping those already there) and
  keeps every attack's per-example verdicts in `per_example`; AutoAttack's
  "rand" version also puts, per defence, its clean accuracy (a fresh draw
  on its examples), per-attack accuracies and seconds into `rand_details`.
  Returns the seconds per job."""
  ec = config.eval
  done = {plan._rkey(r) for r in records}
  x_clean, y_clean = test[0][:ec.clean_examples], test[1][:ec.clean_examples]
  timings = {}

  # Clean accuracy of every defence.
  for d in config.defenses:
    rec = plan._record(name, d, "none", False, "oblivious", 0, 0.0, 0.0,
                  len(y_clean))
    if plan._rkey(rec) in done:
      continue
    t0 = time.perf_counter()
    pred = ev.predict(d, x_clean, jax.random.fold_in(key, 1))
    rec["acc"] = float(np.mean(pred == y_clean))
    timings[f"clean/{d}"] = time.perf_counter() - t0
    records.append(rec)
    save()

  settings = plan.attack_settings(config)
  jobs = []
  for targeted, steps, eps in settings:
    jobs.append(("oblivious", None, targeted, steps, eps))
    for d in config.defenses:
      if d != "none":  # EOT-PGD on a deterministic model is PGD: the
        jobs.append(("adaptive", d, targeted, steps, eps))  # oblivious job.
      if (d in MI_DEFENSES and steps in config.adaptive.paper_steps
          and eps == float(ec.eps)):
        jobs.append(("paper", d, targeted, steps, eps))
        jobs.append(("paper_code", d, targeted, steps, eps))
  if plan.rand_enabled(config):  # untargeted, at the main eps
    jobs += [("autoattack_rand", d, False,
              int(config.autoattack_rand.apgd_steps), float(ec.eps))
             for d in config.defenses if d != "none"]

  def examples(mode, steps):
    return (plan.rand_examples(config) if mode == "autoattack_rand"
            else plan.attack_examples(config, steps))

  def pending(job):
    mode, d, targeted, steps, eps = job
    if mode == "autoattack_rand":
      recs = [plan.rand_record(name, d, config)]
    elif mode == "oblivious":
      recs = [plan._record(name, dd, "pgd", targeted, "oblivious", steps, eps, 0)
              for dd in config.defenses]
    else:
      recs = [plan._record(name, d, ATTACK_OF_MODE[mode], targeted,
                           "adaptive", steps, eps, 0)]
    n = examples(mode, steps)
    return any(plan._rkey(r) not in done or r not in per_example
               or len(per_example.get(r)) != n for r in recs)

  jobs = [j for j in jobs if pending(j)]
  for i, (mode, d, targeted, steps, eps) in enumerate(
      tqdm.tqdm(jobs, desc=f"attacks on {name}", disable=not config.progress)):
    n = examples(mode, steps)
    x, y = test[0][:n], test[1][:n]
    y_att = targets_all[:n] if targeted else y
    akey = jax.random.fold_in(key, zlib.crc32(
        f"{mode}/{d}/{targeted}/{steps}".encode()) % 2**31)
    t0 = time.perf_counter()
    if mode == "autoattack_rand":
      res = ev.autoattack_rand(d, x, y, akey, eps=eps)
      timings[f"{mode}/{d}/u{steps}/{eps}"] = time.perf_counter() - t0
      _check_ball(res["x_adv"], x, eps)
      rec = plan.rand_record(name, d, config, res["robust_acc"], n)
      per_example.put(rec, res["robust"])
      plan._upsert(records, done, rec)
      if rand_details is not None:
        rc = config.autoattack_rand
        rand_details[d] = {
            "clean_acc": res["clean_acc"], "robust_acc": res["robust_acc"],
            "per_attack": res["per_attack"], "attacked": res["attacked"],
            "seconds": res["seconds"], "num_examples": n,
            "apgd_steps": int(rc.apgd_steps),
            "eot_samples": int(rc.eot_samples),
            "max_samples": rc.max_samples,
            "batch_size": ev.rand_batch_size(d, n)}
      per_example.save()
      save()
      continue
    if mode == "oblivious":
      x_adv = ev.oblivious(x, y_att, akey, eps=eps, steps=steps,
                           targeted=targeted)
    elif mode == "adaptive":
      x_adv = ev.adaptive(d, x, y_att, akey, eps=eps, steps=steps,
                          targeted=targeted)
    else:
      x_adv = ev.paper_adaptive(d, x, y_att, akey, eps=eps, steps=steps,
                                targeted=targeted, code=mode == "paper_code")
    attack_seconds = time.perf_counter() - t0
    _check_ball(x_adv, x, eps)
    evaluated = config.defenses if mode == "oblivious" else (d,)
    for dd in evaluated:
      pred = ev.predict(dd, x_adv, jax.random.fold_in(key, 7))
      correct = pred == y
      acc = float(np.mean(correct))
      if mode == "oblivious":
        recs = [plan._record(name, dd, "pgd", targeted, "oblivious", steps, eps,
                        acc, n)]
        if dd == "none":  # EOT over no randomness is PGD itself.
          recs.append(plan._record(name, dd, "pgd", targeted, "adaptive", steps,
                              eps, acc, n))
      else:
        recs = [plan._record(name, dd, ATTACK_OF_MODE[mode], targeted,
                             "adaptive", steps, eps, acc, n)]
      for r in recs:
        per_example.put(r, correct)
        plan._upsert(records, done, r)
    timings[f"{mode}/{d}/{'t' if targeted else 'u'}{steps}/{eps}"] = (
        attack_seconds)
    per_example.save()
    save()

  for r in plan.worst_case_records(name, config, per_example):
    plan._upsert(records, done, r)
  save()
  return timings


def eot_draws_study(name: str, ev: Evaluator, config, test, key,
                    rows: list, save: Callable) -> None:
  """How EOT-PGD's adaptive accuracy moves with its number of draws.

  For every defence of `config.eot_draws.defenses` and every draw count of
  `config.eot_draws.draws`, untargeted EOT-PGD-`steps` at `config.eval.eps`
  on the first `num_examples` test examples, every step's gradient averaged
  over that many fresh draws of the defence, each draw the defence as
  deployed (all N copies; `max_samples` caps it when set). Appends to `rows`
  (resumable: rows already there are skipped) {"model", "defense",
  "eot_samples", "max_samples", "copies", "steps", "num_examples", "acc",
  "seconds"}; the verdicts are the deployed defence's (fresh draws).
  """
  dc, ec = config.eot_draws, config.eval
  n = min(int(dc.num_examples), len(test[1]))
  x, y = test[0][:n], test[1][:n]
  eps, steps = float(ec.eps), int(dc.steps)
  cap = dc.get("max_samples")
  done = {(r["model"], r["defense"], r["eot_samples"]) for r in rows}
  for d in dc.defenses:
    for draws in dc.draws:
      if (name, d, int(draws)) in done:
        continue
      akey = jax.random.fold_in(key, zlib.crc32(
          f"draws/{d}/{draws}".encode()) % 2**31)
      t0 = time.perf_counter()
      x_adv = ev.adaptive(d, x, y, akey, eps=eps, steps=steps,
                          targeted=False, eot_samples=int(draws),
                          max_samples=cap)
      seconds = time.perf_counter() - t0
      _check_ball(x_adv, x, eps)
      pred = ev.predict(d, x_adv, jax.random.fold_in(key, 7))
      rows.append({"model": name, "defense": d, "eot_samples": int(draws),
                   "max_samples": cap, "copies": copies(d, config, cap),
                   "steps": steps, "num_examples": n,
                   "acc": float(np.mean(pred == y)), "seconds": seconds})
      save()


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
