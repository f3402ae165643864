"""Metrics of Mixup Inference: RIC and the detection gap (Pang et al., 2020).

* **RIC** (robustness improving condition): on adversarial inputs, MI should
  raise the probability of the true class, F_y, and lower that of the
  adversarial (predicted) class, F_y_hat, compared with no MI (lam = 1).
* **Detection gap**: `max F(x) - max MI(x)`, the drop of confidence under MI;
  larger on adversarial than on clean inputs, so it detects attacks. Its
  ROC-AUC (scikit-learn `roc_auc_score`) measures how well.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from sklearn import metrics as sk_metrics


class RIC(NamedTuple):
  """RIC per example and in aggregate for a batch of adversarial inputs."""
  raises_true: np.ndarray      # bool [B]: MI's F_y > the base model's F_y
  lowers_adv: np.ndarray       # bool [B]: MI's F_y_hat < the base model's
  both: np.ndarray             # bool [B]: the condition holds
  mean_true_base: float        # mean F_y without MI
  mean_true_mi: float          # mean F_y with MI
  mean_adv_base: float         # mean F_y_hat without MI
  mean_adv_mi: float           # mean F_y_hat with MI

  def summary(self) -> dict:
    """Fractions of examples meeting each condition and the mean probs."""
    return {"frac_raises_true": float(np.mean(self.raises_true)),
            "frac_lowers_adv": float(np.mean(self.lowers_adv)),
            "frac_both": float(np.mean(self.both)),
            "mean_true_base": self.mean_true_base,
            "mean_true_mi": self.mean_true_mi,
            "mean_adv_base": self.mean_adv_base,
            "mean_adv_mi": self.mean_adv_mi}


def ric(probs_base, probs_mi, y) -> RIC:
  """Robustness improving condition on a batch of adversarial inputs.

  Args:
    probs_base: float [B, C], the model's softmax without MI (lam = 1).
    probs_mi: float [B, C], the softmax under MI.
    y: int [B] true labels.

  Returns:
    `RIC`, with y_hat = argmax of `probs_base` (the adversarial class).

  Raises:
    ValueError: mismatched shapes.
  """
  probs_base, probs_mi, y = (np.asarray(probs_base), np.asarray(probs_mi),
                             np.asarray(y))
  if probs_base.shape != probs_mi.shape or probs_base.ndim != 2:
    raise ValueError(f"`probs_base` and `probs_mi` must both be [B, C]; got "
                     f"{probs_base.shape} and {probs_mi.shape}.")
  if y.shape != probs_base.shape[:1]:
    raise ValueError(f"`y` must be [B] = {probs_base.shape[:1]}; got {y.shape}.")
  rows = np.arange(y.shape[0])
  y_hat = np.argmax(probs_base, -1)
  true_b, true_m = probs_base[rows, y], probs_mi[rows, y]
  adv_b, adv_m = probs_base[rows, y_hat], probs_mi[rows, y_hat]
  raises, lowers = true_m > true_b, adv_m < adv_b
  return RIC(raises, lowers, raises & lowers, float(true_b.mean()),
             float(true_m.mean()), float(adv_b.mean()), float(adv_m.mean()))


def detection_gap(probs_base, probs_mi) -> np.ndarray:
  """`max F(x) - max MI(x)` per example, float [B]."""
  return np.max(np.asarray(probs_base), -1) - np.max(np.asarray(probs_mi), -1)


def detection_auc(gap_clean, gap_adv) -> float:
  """ROC-AUC of the detection gap as a detector of adversarial inputs.

  Args:
    gap_clean: float [Bc], gaps on clean inputs (label 0).
    gap_adv: float [Ba], gaps on adversarial inputs (label 1).

  Returns:
    The area under the ROC curve, in [0, 1] (0.5 = chance).
  """
  gap_clean, gap_adv = np.asarray(gap_clean), np.asarray(gap_adv)
  labels = np.concatenate([np.zeros(gap_clean.size), np.ones(gap_adv.size)])
  scores = np.concatenate([gap_clean.ravel(), gap_adv.ravel()])
  return float(sk_metrics.roc_auc_score(labels, scores))
