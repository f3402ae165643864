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
defences, and AutoAttack's "rand" version (APGD-CE + APGD-DLR with EOT,
`jaxadv.evaluation.evaluate_randomized`) for every randomized defence,
untargeted at the main eps. Writes:

* `WORKDIR/results.json`: records with keys model, defense, attack,
  targeted, mode, steps, eps, acc (`mode` is oblivious or adaptive; clean
  accuracy has attack "none", steps 0, eps 0; the rand version has attack
  "apgd_rand", steps its APGD steps; the adaptive worst case "worst_case");
* `WORKDIR/results.md`: the tables; `WORKDIR/details.json`: RIC, detection
  gaps and their ROC-AUC, the lam analysis, timings, the rand version's
  clean and per-attack accuracies;
* plots: `acc_vs_lam.png`, `probs_vs_lam.png`, `acc_vs_eps.png`.

Several hosts: the same command in every process with
`--coordinator_address=HOST:PORT --num_processes=P --process_id=i`.

Started again with the same workdir, it resumes: trained models from their
checkpoints, evaluation from the records already written.

Modules: `train` (the mixup / IAT models), `evaluate` (the defences, the
jitted attacks of one model, the evaluation of the table and the lam /
RIC / detection analysis), `plan` (which attacks run on how many examples,
the records and their per-example verdicts, the adaptive worst case),
`report` (Markdown tables and plots), `run` (`train_and_evaluate`, the
whole job) and `__main__` (the command line).
"""

from experiments.mixup_inference.run import train_and_evaluate
