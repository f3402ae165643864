"""Sample-quality measures of a generator through a classifier of real data.

A classifier trained on the real images labels the generated ones: a
generator covering every class gives a near-uniform predicted-class
histogram (entropy close to log 10 = 2.30 nats for 10 classes), and
recognisable samples give confident predictions. The Frechet distance
between Gaussians fitted to the classifier's penultimate-layer features of
real and generated images is the FID recipe (Heusel et al., NeurIPS 2017)
with this classifier in place of Inception.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg


def class_histogram(probs: np.ndarray) -> np.ndarray:
  """Fraction of samples predicted as each class.

  Args:
    probs: float [N, C] class probabilities (rows summing to 1).

  Returns:
    float64 [C], summing to 1.

  Raises:
    ValueError: `probs` not of shape [N, C] with N >= 1.
  """
  probs = np.asarray(probs)
  if probs.ndim != 2 or probs.shape[0] < 1:
    raise ValueError(f"`probs` must have shape [N, C] with N >= 1; got "
                     f"{probs.shape}.")
  counts = np.bincount(np.argmax(probs, -1), minlength=probs.shape[1])
  return counts / counts.sum()


def entropy(histogram: np.ndarray) -> float:
  """Shannon entropy in nats of a distribution (0 log 0 = 0).

  Raises:
    ValueError: negative entries or a sum other than 1.
  """
  h = np.asarray(histogram, np.float64)
  if np.any(h < 0) or not np.isclose(h.sum(), 1.0, atol=1e-6):
    raise ValueError(f"`histogram` must be a probability vector; got sum "
                     f"{h.sum():.6g}, min {h.min():.3g}.")
  nz = h[h > 0]
  return float(-np.sum(nz * np.log(nz))) + 0.0  # no -0.0


def mean_confidence(probs: np.ndarray) -> float:
  """Mean over samples of the largest class probability."""
  return float(np.mean(np.max(np.asarray(probs), -1)))


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
  """Frechet distance between Gaussians fitted to two feature sets.

  `||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})` (Dowson & Landau,
  1982; FID, Heusel et al., 2017), with the matrix square root from
  `scipy.linalg.sqrtm` (its tiny imaginary part from rounding dropped).

  Args:
    features_a: float [N_a, F], N_a >= 2.
    features_b: float [N_b, F], N_b >= 2, the same F.

  Returns:
    The distance (>= 0 up to rounding), in squared feature units.

  Raises:
    ValueError: mismatched feature sizes or fewer than two samples.
  """
  a = np.asarray(features_a, np.float64)
  b = np.asarray(features_b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise ValueError(f"`features_a` and `features_b` must be [N, F] with the "
                     f"same F; got {a.shape} and {b.shape}.")
  if len(a) < 2 or len(b) < 2:
    raise ValueError("each feature set needs at least two samples.")
  mu_a, mu_b = a.mean(0), b.mean(0)
  cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  with warnings.catch_warnings():  # dead ReLU features: singular covariances
    warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.all(np.isfinite(covmean)):  # regularise, as FID code does
      offset = 1e-6 * np.eye(a.shape[1])
      covmean = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
  covmean = np.real(covmean)
  return float(np.sum((mu_a - mu_b) ** 2) +
               np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))
