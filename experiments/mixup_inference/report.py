"""The Mixup Inference experiment's Markdown tables and plots."""

from __future__ import annotations

import os

import numpy as np

from experiments import common
from experiments.mixup_inference import plan


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


def rand_acc(records, model: str, defense: str, eps: float,
             steps: int | None = None) -> float | None:
  """AutoAttack's "rand" version against `defense` (untargeted, at `eps`;
  `steps` APGD steps, else any), or None (not run, or results from before
  it)."""
  match = dict(model=model, defense=defense, attack=plan.RAND_ATTACK,
               mode="adaptive", targeted=False, eps=float(eps))
  if steps is not None:
    match["steps"] = int(steps)
  return _acc(records, **match)


def _rand_note(config) -> str:
  """The rand version's budget, for the table's caption."""
  rc = config.get("autoattack_rand")
  if rc is None:
    return ""
  draws = ("the full defence" if rc.max_samples is None else
           f"at most {rc.max_samples} of the defence's mixed copies / "
           "transforms")
  return (f" (APGD-CE + APGD-DLR, {rc.apgd_steps} steps each, every iterate "
          f"averaged over {rc.eot_samples} draws, each of {draws}; verdicts "
          "on fresh draws of the deployed defence)")


def format_tables(records: list, config) -> str:
  """Markdown: per model, the main table (with AutoAttack's "rand" version
  beside the adaptive worst case) and the eps sweep."""
  ec = config.eval
  pct = lambda a: "-" if a is None else f"{100 * a:.1f}"
  lines = []
  n_rand = plan.rand_examples(config)
  for model in config.models:
    has_rand = any(r["attack"] == plan.RAND_ATTACK and r["model"] == model
                   for r in records)
    rand_col = has_rand or plan.rand_enabled(config)
    cols = [(t, s) for t in ec.targeted for s in ec.steps]
    lines.append(f"\n**{model} model, {config.dataset}, eps {ec.eps}** "
                 "(accuracy %, oblivious / adaptive; adaptive = per-example "
                 "worst case over oblivious PGD, EOT-PGD and both forms of "
                 "Pang et al.'s attack" + (", and in the untargeted columns AutoAttack's "
                             "rand version" if has_rand else "") +
                 "; `(eot ...)` = EOT-PGD alone; `[avg ...]` = the mean of "
                 "per-partner PGD perturbations alone; `[code ...]` = Pang "
                 "et al.'s attack as their code runs it (PGD on the mixed "
                 "images), alone" +
                 ("; AutoAttack rand = AutoAttack's rand version alone, "
                  "untargeted" + _rand_note(config) + ": robust only if "
                  "right clean and after each attack" if rand_col else "")
                 + ")\n")
    def head(t, s):
      n = plan.attack_examples(config, s)
      return (f"{'targeted' if t else 'untargeted'} PGD-{s}" +
              (f" (n = {n})" if n != ec.num_examples else ""))
    lines.append(f"Clean accuracy on {ec.clean_examples} test images, attacks "
                 f"on the first {ec.num_examples} (fewer where a column says "
                 "n).\n")
    heads = [head(t, s) for t, s in cols]
    if rand_col:
      heads = ["AutoAttack rand" + (f" (n = {n_rand})" if n_rand !=
                                    ec.num_examples else "")] + heads
    lines.append("| defence | clean | " + " | ".join(heads) + " |")
    lines.append("|---" * (len(heads) + 2) + "|")
    for d in config.defenses:
      row = [d, pct(_acc(records, model=model, defense=d, attack="none"))]
      if rand_col:
        rc = config.get("autoattack_rand")
        row.append(pct(rand_acc(records, model, d, ec.eps,
                                None if rc is None else rc.apgd_steps)))
      for t, s in cols:
        base = dict(model=model, defense=d, targeted=t, steps=s, eps=float(
            ec.eps))
        obl = _acc(records, mode="oblivious", attack="pgd", **base)
        cell = f"{pct(obl)} / {pct(adaptive_acc(records, **base))}"
        if d != "none":
          cell += f" (eot {pct(_acc(records, attack='eot_pgd', **base))})"
        for attack, tag in (("pgd_mixed_avg", "avg"),
                            ("pgd_mixed_space", "code")):
          paper = _acc(records, attack=attack, **base)
          if paper is not None:
            cell += f" [{tag} {pct(paper)}]"
        row.append(cell)
      lines.append("| " + " | ".join(row) + " |")
    lines.append(f"\n**{model} model: untargeted PGD-{ec.sweep_steps} vs eps** "
                 "(oblivious / adaptive worst case" +
                 (f"; at eps {ec.eps} the worst case includes AutoAttack's "
                  "rand version" if has_rand else "") + ")\n")
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


def plots(details: dict, records: list, config, workdir: str) -> None:
  plt = common.pyplot()
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


def format_eot_draws(details: dict, config) -> str:
  """Markdown: EOT-PGD's adaptive accuracy against its number of draws
  (`details["eot_draws"]`, from `evaluate.eot_draws_study`), per model and
  defence; "" when it did not run."""
  rows = details.get("eot_draws") or []
  if not rows:
    return ""
  draws = sorted({r["eot_samples"] for r in rows})
  r0 = rows[0]
  cap = ("all N copies (the defence as deployed)" if r0["max_samples"] is None
         else f"at most {r0['max_samples']} copies")
  lines = [f"\n**EOT-PGD against its number of draws** (untargeted "
           f"EOT-PGD-{r0['steps']} at eps {config.eval.eps} on the first "
           f"{r0['num_examples']} test examples; every step's gradient "
           f"averaged over that many draws, each of {cap}; accuracy %, "
           "seconds in brackets)\n",
           "| model | defence | copies per draw | " + " | ".join(
               f"{k} draws" for k in draws) + " |",
           "|---" * (len(draws) + 3) + "|"]
  keys = list(dict.fromkeys((r["model"], r["defense"]) for r in rows))
  for model, d in keys:
    cells = {r["eot_samples"]: r for r in rows
             if r["model"] == model and r["defense"] == d}
    some = next(iter(cells.values()))
    lines.append(f"| {model} | {d} | {some['copies']} | " + " | ".join(
        f"{100 * cells[k]['acc']:.1f} ({cells[k]['seconds']:.0f} s)"
        if k in cells else "-" for k in draws) + " |")
  return "\n".join(lines)

