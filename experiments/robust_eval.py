r"""PGD-50x10 vs APGD-CE, APGD-T, FAB-T, Square and their ensemble.

On the models of a robust_training workdir:

  python -m experiments.robust_eval --config=experiments/configs/robust_eval.py \
      --config.train_workdir=/tmp/robust_mnist --workdir=/tmp/robust_eval

On any one checkpoint, an orbax checkpoint of `jaxadv.training.fit` (its
`workdir`, or one step folder of it) or a PyTorch `state_dict` (`.pt` /
`.pth`):

  python -m experiments.robust_eval --config=experiments/configs/robust_eval.py \
      --config.checkpoint=model.pth --config.model=fast_at_mnist \
      --config.dataset=mnist --config.eps=0.3 --config.n_examples=1000 \
      --workdir=/tmp/robust_eval_pth

(`--config` defaults to experiments/configs/robust_eval.py; append `:quick`
to it for small budgets; `--config.eps` defaults to the dataset's
`evaluation.DEFAULT_EPS`: 0.3 MNIST, 0.1 Fashion-MNIST, 8/255 CIFAR-10.)

train_workdir mode restores each method of `config.methods` from the
checkpoints of an `experiments.robust_training` workdir (training it there
first if they are missing or unfinished) and evaluates it on the first
`n_examples` MNIST test images; a run started again with the same workdir
skips the methods it has finished. checkpoint mode builds
`jaxadv.models.get_model(config.model, num_classes=...)`, loads the
checkpoint into it (orbax: the "best" parameters when the checkpoint holds
them, else the latest; never the optimizer state; PyTorch:
`jaxadv.models.load_torch_state_dict`) and evaluates it on the first
`n_examples` test images of `config.dataset`, always anew.

Both measure clean, FGSM and PGD-50x10 accuracy (step `pgd.step_size`, or
`pgd.eps_fraction * eps` on non-MNIST datasets in checkpoint mode), the
AutoAttack-style ensemble (APGD-CE -> APGD-T over the top-9 classes ->
FAB-T -> Square, each on the survivors), optionally APGD-T and Square alone,
and the sanity / gradient-masking checks. Writes `WORKDIR/results.json` (one
record per model, with the environment), `WORKDIR/details.json` (per-attack
seconds, checks, config), `WORKDIR/results.md` and
`WORKDIR/robust_acc_by_attack.png`.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import common
from experiments.configs import robust_mnist
from jaxadv import data
from jaxadv import evaluation
from jaxadv import models

ATTACK_COLUMNS = ("clean_acc", "fgsm_acc", "pgd_acc", "apgd_ce_acc",
                  "apgd_t_acc", "square_acc", "ensemble_acc",
                  "pgd_or_ensemble_acc")
DATASET_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST",
                 "cifar10": "CIFAR-10", "cifar10_jpeg": "CIFAR-10 (JPEG)"}
# The default L-inf eps per dataset (the one table: jaxadv.evaluation's).
DEFAULT_EPS = {d: e for (d, norm), e in evaluation.DEFAULT_EPS.items()
               if norm == "linf"}
TORCH_EXTENSIONS = (".pt", ".pth")
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "configs", "robust_eval.py")


_fmt = evaluation.format_eps


def _evaluate_method(name: str, model, variables, x, y, key,
                     config: ml_collections.ConfigDict, eps: float,
                     unroll, step_size: Optional[float] = None) -> dict:
  """All attacks and checks on one model; returns its details record.

  `step_size`: PGD's step (None = `config.pgd.step_size`).
  """
  kw = dict(batch_size=config.batch_size)
  prog = config.progress
  pc = config.pgd
  step = pc.step_size if step_size is None else float(step_size)
  seconds = {}
  t0 = time.perf_counter()
  clean = evaluation.accuracy(model.apply, variables, x, y, **kw)
  fgsm = evaluation.robust_accuracy(model.apply, variables, x, y, key,
                                    attack="fgsm", eps=eps, **kw)
  pgd_flags = evaluation.robust_correct(
      model.apply, variables, x, y, jax.random.fold_in(key, 1), attack="pgd",
      eps=eps, step_size=step, steps=pc.steps, restarts=pc.restarts,
      unroll=unroll, progress=prog, **kw)
  seconds["clean+fgsm+pgd"] = time.perf_counter() - t0
  ak = dict(eps=eps, apgd_steps=config.apgd.steps,
            apgd_restarts=config.apgd.restarts,
            num_targets=config.apgd.num_targets,
            fab_steps=config.fab.steps, fab_restarts=config.fab.restarts,
            square_queries=config.square.queries,
            square_p_init=config.square.p_init, unroll=unroll, progress=prog,
            **kw)
  ens = evaluation.evaluate_robustness(model.apply, variables, x, y,
                                       jax.random.fold_in(key, 2), **ak)
  seconds.update({f"ensemble/{k}": v for k, v in ens["seconds"].items()})
  alone = {}
  if config.individual:
    for i, attack in enumerate(("apgd-t", "square")):
      r = evaluation.evaluate_robustness(
          model.apply, variables, x, y, jax.random.fold_in(key, 3 + i),
          attack_names=(attack,), **ak)
      alone[attack] = r["robust_acc"]
      seconds[f"alone/{attack}"] = r["seconds"][attack]
  res = {"clean_acc": clean, "fgsm_acc": fgsm,
         "pgd_acc": float(pgd_flags.mean())}
  sc = config.sanity
  t0 = time.perf_counter()
  checks = evaluation.sanity_checks(
      model.apply, variables, x, y, jax.random.fold_in(key, 5), res, eps=eps,
      pgd_steps=pc.steps, pgd_step_size=step, pgd_restarts=pc.restarts,
      subset=sc.subset,
      batch_size=config.batch_size, large_eps=sc.large_eps,
      large_eps_max_acc=sc.large_eps_max_acc, ensemble=ens,
      square_queries=sc.square_queries,
      more_steps_factor=sc.more_steps_factor,
      more_restarts=sc.more_restarts, material=sc.material, unroll=unroll)
  seconds["sanity_checks"] = time.perf_counter() - t0
  for c in checks:
    print(f"[{name}] {c}")
  record = {
      "method": name, "eps": eps, "num_examples": len(x), **res,
      "apgd_ce_acc": ens["per_attack"]["apgd-ce"],
      "apgd_t_acc": alone.get("apgd-t"), "square_acc": alone.get("square"),
      "ensemble_acc": ens["robust_acc"],
      "pgd_or_ensemble_acc": float((pgd_flags & ens["robust"]).mean()),
      "ensemble_cumulative": ens["per_attack"],
      "gap_pgd_minus_ensemble": res["pgd_acc"] - ens["robust_acc"],
      "pgd": f"PGD-{pc.steps}x{pc.restarts}, step {_fmt(step)}",
      "pgd_steps": pc.steps, "pgd_restarts": pc.restarts,
      "pgd_step_size": step,
      "apgd_steps": config.apgd.steps, "square_queries": config.square.queries}
  return {"record": record, "seconds": seconds,
          "attacked": ens["attacked"],
          "sanity_checks": [vars(c) for c in checks],
          "fooled_by_counts": {str(k): int(v) for k, v in zip(
              *np.unique(ens["fooled_by"], return_counts=True))}}


def _dataset_name(record: dict) -> str:
  name = record.get("dataset", "mnist")
  return DATASET_NAMES.get(name, name)


def format_table(records: list) -> str:
  """The results as a Markdown table (percentages).

  The title line names the dataset (MNIST when the records have no
  "dataset"). Records of checkpoint mode (with a "checkpoint" key) get a
  "model" first column and the headline, the ensemble's robust accuracy,
  right after clean accuracy with PGD beside it; train_workdir mode's
  records keep the committed column order.
  """
  pct = lambda v: "-" if v is None else f"{100 * v:.2f}"
  r0 = records[0]
  headline = "checkpoint" in r0
  chain = lambda r: " -> ".join(pct(v) for v in
                                r["ensemble_cumulative"].values())
  pgd = f"PGD-{r0['pgd_steps']}x{r0['pgd_restarts']}"
  if headline:
    steps = " -> ".join(r0["ensemble_cumulative"])
    columns = (("model", lambda r: r["method"]),
               ("clean", lambda r: pct(r["clean_acc"])),
               ("**robust (ensemble)**",
                lambda r: f"**{pct(r['ensemble_acc'])}**"),
               (pgd, lambda r: pct(r["pgd_acc"])),
               ("FGSM", lambda r: pct(r["fgsm_acc"])),
               ("APGD-CE", lambda r: pct(r["apgd_ce_acc"])),
               ("APGD-T alone", lambda r: pct(r["apgd_t_acc"])),
               ("Square alone", lambda r: pct(r["square_acc"])),
               (f"cumulative ({steps})", chain))
  else:
    columns = (("method", lambda r: r["method"]),
               ("clean", lambda r: pct(r["clean_acc"])),
               ("FGSM", lambda r: pct(r["fgsm_acc"])),
               (pgd, lambda r: pct(r["pgd_acc"])),
               ("APGD-CE", lambda r: pct(r["apgd_ce_acc"])),
               ("APGD-T alone", lambda r: pct(r["apgd_t_acc"])),
               ("Square alone", lambda r: pct(r["square_acc"])),
               ("ensemble (CE -> T -> Square)", chain))
  columns += (("PGD or ensemble", lambda r: pct(r["pgd_or_ensemble_acc"])),
              ("gap PGD - ensemble",
               lambda r: f"{100 * r['gap_pgd_minus_ensemble']:+.2f}"))
  lines = [f"N = {r0['num_examples']} {_dataset_name(r0)} test images, "
           f"eps = {_fmt(r0['eps'])}; {r0['pgd']}."]
  if headline:
    lines.append(f"Model `{r0['model']}` from `{r0['checkpoint']}` "
                 f"({r0['checkpoint_source']}).")
  table = common.markdown_table([h for h, _ in columns],
                                [[f(r) for _, f in columns] for r in records])
  return "\n".join(lines + ["", table])


def _plot(records: list, path: str) -> None:
  plt = common.pyplot()
  cols = [c for c in ATTACK_COLUMNS
          if any(r[c] is not None for r in records)]
  value = lambda r, c: np.nan if r[c] is None else 100 * r[c]
  pgd = f"PGD-{records[0]['pgd_steps']}x{records[0]['pgd_restarts']}"
  labels = {"clean_acc": "clean", "fgsm_acc": "FGSM", "pgd_acc": pgd,
            "apgd_ce_acc": "APGD-CE", "apgd_t_acc": "APGD-T",
            "square_acc": "Square", "ensemble_acc": "ensemble",
            "pgd_or_ensemble_acc": "PGD or ens."}
  fig, ax = plt.subplots(figsize=(8, 4))
  width = 0.8 / len(records)
  for i, r in enumerate(records):
    xs = np.arange(len(cols)) + i * width
    ax.bar(xs, [value(r, c) for c in cols], width, label=r["method"])
  ax.set_xticks(np.arange(len(cols)) + width * (len(records) - 1) / 2)
  ax.set_xticklabels([labels[c] for c in cols], rotation=20)
  lo = np.nanmin([value(r, c) for r in records for c in cols])
  ax.set_ylim(max(0, lo - 10), 100)
  ax.set_ylabel("accuracy (%)")
  r0 = records[0]
  model = f" {r0['model']}" if "model" in r0 else ""
  ax.set_title(f"{_dataset_name(r0)}{model}, eps={_fmt(r0['eps'])}, "
               f"{r0['num_examples']} test images")
  ax.legend()
  ax.grid(alpha=0.3, axis="y")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


# -- checkpoint mode -----------------------------------------------------------


def _is_step_dir(path: str) -> bool:
  return os.path.basename(os.path.normpath(path)).isdigit() and (
      os.path.exists(os.path.join(path, "_CHECKPOINT_METADATA"))
      or os.path.isdir(os.path.join(path, "default")))


def _restore_orbax(path: str) -> tuple[dict, dict]:
  """The params / batch_stats of an orbax checkpoint of `fit`, untargeted.

  Returns:
    ({"params": ..., ["batch_stats": ...]}, info) with info "step" (the
    checkpoint's batch count) and "source" ("best" or "state").
  """
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  path = os.path.abspath(path)
  if _is_step_dir(path):
    manager_dir, step = os.path.dirname(path), int(os.path.basename(path))
  else:
    manager_dir, step = path, None
  mngr = ocp.CheckpointManager(
      manager_dir, options=ocp.CheckpointManagerOptions(read_only=True,
                                                        create=False))
  try:
    if step is None:
      step = mngr.latest_step()
      if step is None:
        raise ValueError(
            f"`config.checkpoint` {path} holds no orbax checkpoint: expected "
            f"the workdir of jaxadv.training.fit (numbered step folders) or "
            f"one step folder of it.")
    try:
      item = mngr.restore(step, args=ocp.args.StandardRestore())
    except Exception as e:  # orbax/tensorstore raise many kinds  # pylint: disable=broad-except
      raise ValueError(
          f"`config.checkpoint`: step {step} of {manager_dir} does not "
          f"restore as an orbax checkpoint ({type(e).__name__}: "
          f"{str(e)[:300]}).") from e
  finally:
    mngr.close()
  if not isinstance(item, dict) or "state" not in item:
    raise ValueError(f"`config.checkpoint` {path} is not a checkpoint of "
                     f"jaxadv.training.fit (no 'state' item).")
  source = "best" if item.get("best") else "state"
  tree = item[source]
  variables = {"params": tree["params"]}
  batch_stats = tree.get("batch_stats") or item["state"].get("batch_stats")
  if batch_stats:
    variables["batch_stats"] = batch_stats
  return variables, {"step": int(step), "source": source}


def _check_fits(variables: dict, model, input_shape: tuple,
                config: ml_collections.ConfigDict) -> dict:
  """`variables` as float arrays, checked against `model`'s own shapes."""
  abstract = jax.eval_shape(functools.partial(model.init, train=False),
                            jax.random.key(0), jnp.zeros(input_shape))
  expected = {k: v for k, v in abstract.items()
              if k in ("params", "batch_stats")}
  got = jax.tree.map(np.shape, variables)
  want = jax.tree.map(lambda a: tuple(a.shape), expected)
  if got != want:
    raise ValueError(
        f"`config.checkpoint` {config.checkpoint} does not fit "
        f"`config.model` {config.model!r} with {input_shape[1:]} "
        f"{config.dataset} inputs: the checkpoint's variables are "
        f"{str(got)[:600]}, the model's {str(want)[:600]}.")
  return jax.tree.map(lambda a, e: jnp.asarray(a, e.dtype), variables,
                      expected)


def load_checkpoint(config: ml_collections.ConfigDict, model,
                    image_shape: tuple) -> tuple[dict, dict]:
  """The Flax variables of `config.checkpoint` for `model`.

  Args:
    config: `checkpoint`, `model`, `dataset` are read.
    model: the Flax module of `config.model`.
    image_shape: the dataset's (H, W, C).

  Returns:
    (variables, info): info has "format" ("orbax" or "torch"), "source"
    (orbax: "best" or "state"; torch: "state_dict") and, for orbax, "step".

  Raises:
    ValueError: the checkpoint is missing, has an unknown extension, is no
      checkpoint of `fit`, or does not fit the model.
  """
  path = config.checkpoint
  if not os.path.exists(path):
    raise ValueError(f"`config.checkpoint` {path!r} does not exist.")
  input_shape = (1, *image_shape)
  if os.path.isdir(path):
    variables, info = _restore_orbax(path)
    info["format"] = "orbax"
    return _check_fits(variables, model, input_shape, config), info
  ext = os.path.splitext(path)[1].lower()
  if ext not in TORCH_EXTENSIONS:
    raise ValueError(
        f"`config.checkpoint` {path!r} has the unknown extension {ext!r}: "
        f"expected a PyTorch state_dict file ({', '.join(TORCH_EXTENSIONS)}) "
        f"or an orbax checkpoint folder of jaxadv.training.fit.")
  variables = models.load_torch_state_dict(path, model,
                                           input_shape=input_shape)
  return (_check_fits(variables, model, input_shape, config),
          {"format": "torch", "source": "state_dict"})


def checkpoint_eps(config: ml_collections.ConfigDict) -> float:
  """`config.eps`, or the dataset's DEFAULT_EPS when unset."""
  if config.eps is not None:
    return float(config.eps)
  return float(DEFAULT_EPS[config.dataset])


def pgd_step_size(config: ml_collections.ConfigDict, eps: float) -> float:
  """PGD's step in checkpoint mode: `pgd.step_size` on MNIST (or with
  `pgd.eps_fraction` 0), else `pgd.eps_fraction * eps`."""
  if config.dataset == "mnist" or not config.pgd.eps_fraction:
    return float(config.pgd.step_size)
  return float(config.pgd.eps_fraction) * eps


def _check_config(config: ml_collections.ConfigDict) -> None:
  """Raises a ValueError naming the config field that is wrong."""
  if config.checkpoint and config.train_workdir:
    raise ValueError(
        "Set only one of `config.checkpoint` (evaluate one checkpoint) and "
        "`config.train_workdir` (evaluate a robust_training workdir); got "
        f"both: {config.checkpoint!r} and {config.train_workdir!r}.")
  if not config.checkpoint and not config.train_workdir:
    raise ValueError(
        "Set `config.checkpoint` (an orbax checkpoint of jaxadv.training.fit "
        "or a .pt/.pth PyTorch state_dict) or `config.train_workdir` (an "
        "experiments.robust_training workdir).")
  if not isinstance(config.n_examples, int) or config.n_examples < 1:
    raise ValueError(f"`config.n_examples` must be an int >= 1; got "
                     f"{config.n_examples!r}.")
  if config.train_workdir:
    for field in ("model", "dataset", "eps"):
      if config[field] is not None:
        raise ValueError(
            f"`config.{field}` is only used with `config.checkpoint`; "
            f"train_workdir mode takes it from the robust_mnist config "
            f"(`config.train_variant`). Unset it.")
    return
  if not config.model:
    raise ValueError(
        "`config.model` must name the checkpoint's architecture (a "
        f"jaxadv.models.get_model name: {', '.join(models.list_models())}).")
  if config.model not in models.list_models():
    raise ValueError(
        f"`config.model` {config.model!r} is not a registered model; valid: "
        f"{', '.join(models.list_models())}.")
  if not config.dataset:
    raise ValueError(
        "`config.dataset` must name the test set to evaluate on: "
        f"{', '.join(sorted(DEFAULT_EPS))}.")
  if config.dataset not in DEFAULT_EPS:
    raise ValueError(f"`config.dataset` {config.dataset!r} is unknown; "
                     f"valid: {', '.join(sorted(DEFAULT_EPS))}.")
  if config.eps is not None and not config.eps > 0:
    raise ValueError(f"`config.eps` must be > 0; got {config.eps!r}.")
  if not os.path.exists(config.checkpoint):
    raise ValueError(f"`config.checkpoint` {config.checkpoint!r} does not "
                     f"exist.")


def run_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> list:
  """Checkpoint mode of `run`: one model, one record."""
  os.makedirs(workdir, exist_ok=True)
  info = data.info(config.dataset)
  model = models.get_model(config.model, kernels=config.kernels,
                           num_classes=info.num_classes)
  variables, ckpt = load_checkpoint(config, model, info.image_shape)
  where = (f"step {ckpt['step']}, {ckpt['source']!r} parameters"
           if ckpt["format"] == "orbax" else "PyTorch state_dict")
  print(f"[{config.model}] restored {config.checkpoint} ({where})")
  x, y = data.load(config.dataset, "test", data_dir=config.data_dir,
                   manual_dir=config.manual_dir, limit=config.n_examples)
  eps = checkpoint_eps(config)
  step = pgd_step_size(config, eps)
  print(f"jax {jax.__version__}, backend {jax.default_backend()}; "
        f"{config.dataset}: {len(x)} test images, eps {_fmt(eps)}, "
        f"PGD step {_fmt(step)}")
  name = config.model
  details = _evaluate_method(name, model, variables, x, y,
                             jax.random.key(config.seed), config, eps,
                             config.unroll, step_size=step)
  details["record"].update(
      model=config.model, dataset=config.dataset,
      checkpoint=os.path.abspath(config.checkpoint),
      checkpoint_format=ckpt["format"], checkpoint_params=ckpt["source"],
      checkpoint_step=ckpt.get("step"), checkpoint_source=where,
      eps_default=config.eps is None)
  details["config"] = common.results.config_dict(config)
  common.json_dump({name: details}, os.path.join(workdir, "details.json"))
  records = [details["record"]]
  r = records[0]
  print(f"[{name}] clean {r['clean_acc']:.4f} PGD {r['pgd_acc']:.4f} "
        f"ensemble {r['ensemble_acc']:.4f}")
  common.write_results(workdir, records, format_table(records))
  _plot(records, os.path.join(workdir, "robust_acc_by_attack.png"))
  return records


def run(config: ml_collections.ConfigDict, workdir: str) -> list:
  """Evaluates `config.checkpoint`, or every method of `config.methods`.

  Args:
    config: see `experiments/configs/robust_eval.py`.
    workdir: output folder (created).

  Returns:
    The list of result records (also in `workdir/results.json`).

  Raises:
    ValueError: a bad config (the message names the field): neither or
      both of `config.checkpoint` and `config.train_workdir`; in checkpoint
      mode a missing checkpoint, an unknown extension, `config.model` or
      `config.dataset` unset or unknown, or a checkpoint that does not fit
      the model.
  """
  _check_config(config)
  if config.checkpoint:
    return run_checkpoint(config, workdir)
  os.makedirs(workdir, exist_ok=True)
  tc = robust_mnist.get_config(config.train_variant)
  tc.progress = config.progress
  train, val, _ = common.load_train_val_test(tc)
  x, y = data.load(tc.dataset, "test", data_dir=tc.data_dir,
                   manual_dir=tc.manual_dir, limit=config.n_examples)
  print(f"jax {jax.__version__}, backend {jax.default_backend()}; "
        f"{tc.dataset}: {len(x)} test images, eps {tc.eps}")
  model = common.robust.get_model(tc)
  details_path = os.path.join(workdir, "details.json")
  details = common.json_load(details_path, {})
  key = jax.random.key(config.seed)
  for name in config.methods:
    if name in details:
      print(f"[{name}] already evaluated in {workdir}; skipping.")
      continue
    trained = common.robust.train_method(name, tc, train, val,
                                         config.train_workdir)
    print(f"[{name}] restored after {trained.result.batches} training "
          "batches")
    details[name] = _evaluate_method(name, model, trained.variables, x, y,
                                     key, config, float(tc.eps),
                                     tc.eval.unroll)
    details[name]["config"] = config.to_dict()
    common.json_dump(details, details_path)
    r = details[name]["record"]
    print(f"[{name}] PGD {r['pgd_acc']:.4f} ensemble {r['ensemble_acc']:.4f} "
          f"gap {r['gap_pgd_minus_ensemble']:+.4f}")
  records = [details[m]["record"] for m in config.methods]
  common.write_results(workdir, records, format_table(records))
  _plot(records, os.path.join(workdir, "robust_acc_by_attack.png"))
  return records


def _default_config() -> None:
  """`--config` defaults to experiments/configs/robust_eval.py."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.FLAGS.set_default("config", DEFAULT_CONFIG)


if __name__ == "__main__":
  common.run(run, define_extra=_default_config)
