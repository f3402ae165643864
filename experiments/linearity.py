r"""Linearity along the FGSM direction and class-map cross-sections of a CNN.

  python -m experiments.linearity \
      --config=experiments/configs/linearity.py --workdir=/tmp/linearity

Goodfellow, Shlens & Szegedy (2015) and the adversarial-examples lecture:
for a naturally trained CNN (`fast_at_mnist`), every class logit along
`x + t * sign(grad_x L)` for t in [-T, T] (`jaxadv.analysis.logit_scan`),
and, after Warde-Farley & Goodfellow (2016), the predicted class over the
plane `x + a * d1 + b * d2` (`jaxadv.analysis.cross_section`) with
(d1, d2) = (FGSM direction, random sign direction) and = (random, random).

Writes `WORKDIR/results.json` (linear-fit R^2 of the logits along the
scan, where the class first changes along each axis, the fraction of each
plane keeping the clean class), `logit_scan.png`,
`cross_sections_adv_rand.png` and `cross_sections_rand_rand.png`.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import common

from jaxadv import analysis
from jaxadv import evaluation
from jaxadv import losses

RESULT_KEYS = ("config", "clean_acc", "scan", "cross_sections", "seconds")


def _r2(t: np.ndarray, z: np.ndarray) -> np.ndarray:
  """R^2 of the least-squares line through each curve z [..., T] over t [T]."""
  tc = t - t.mean()
  zc = z - z.mean(-1, keepdims=True)
  slope = (zc * tc).sum(-1) / (tc * tc).sum()
  resid = zc - slope[..., None] * tc
  tot = (zc * zc).sum(-1)
  return 1.0 - (resid * resid).sum(-1) / np.maximum(tot, 1e-12)


def _first_change(offsets: np.ndarray, classes: np.ndarray,
                  clean: np.ndarray) -> np.ndarray:
  """Smallest |offset| (either side of 0) where the class differs from clean.

  offsets [T] symmetric around 0; classes [N, T]; clean [N]. NaN when the
  class never changes on the scanned range.
  """
  changed = classes != clean[:, None]
  dist = np.where(changed, np.abs(offsets)[None], np.inf).min(-1)
  return np.where(np.isfinite(dist), dist, np.nan)


def _legend_patches(num_classes: int, cmap):
  import matplotlib.patches as mpatches
  return [mpatches.Patch(color=cmap(c), label=str(c))
          for c in range(num_classes)]


def _plot_scan(ts, logits, x, y, pred, path):
  plt = common.pyplot()
  n = len(x)
  fig, axes = plt.subplots(2, n, figsize=(3.3 * n, 5.2),
                           gridspec_kw={"height_ratios": [3, 1.3]},
                           squeeze=False)
  cmap = plt.get_cmap("tab10")
  for i in range(n):
    ax = axes[0, i]
    for c in range(logits.shape[-1]):
      ax.plot(ts, logits[i, :, c], color=cmap(c), lw=1.6 if c == y[i] else 1,
              label=str(c))
    ax.axvline(0, color="k", lw=0.6, ls=":")
    ax.set_xlabel("t  (x + t sign(grad))")
    ax.set_title(f"true {y[i]}, clean pred {pred[i]}", fontsize=9)
    if i == 0:
      ax.set_ylabel("logit")
    axes[1, i].imshow(x[i, ..., 0], cmap="gray", vmin=0, vmax=1)
    axes[1, i].axis("off")
  axes[0, -1].legend(fontsize=7, ncol=2, title="class", title_fontsize=7)
  fig.suptitle("Logits along the FGSM direction (naturally trained CNN)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _plot_maps(maps, a, b, y, title, xlabel, ylabel, num_classes, path):
  plt = common.pyplot()
  from matplotlib.colors import ListedColormap
  n = len(maps)
  cols = int(np.ceil(np.sqrt(n)))
  rows = int(np.ceil(n / cols))
  fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols + 1.2, 2.3 * rows),
                           squeeze=False, layout="constrained")
  tab = plt.get_cmap("tab10")
  cmap = ListedColormap([tab(c) for c in range(num_classes)])
  extent = (b[0], b[-1], a[-1], a[0])
  for i, ax in enumerate(axes.ravel()):
    if i >= n:
      ax.axis("off")
      continue
    ax.imshow(maps[i], cmap=cmap, vmin=-0.5, vmax=num_classes - 0.5,
              extent=extent, interpolation="nearest", aspect="auto")
    ax.plot(0, 0, "k+", ms=8)
    mid_a, mid_b = len(a) // 2, len(b) // 2
    ax.set_title(f"label {y[i]}, clean pred {maps[i][mid_a, mid_b]}",
                 fontsize=8)
    ax.tick_params(labelsize=6)
    if i % cols == 0:
      ax.set_ylabel(ylabel, fontsize=7)
    if i // cols == rows - 1:
      ax.set_xlabel(xlabel, fontsize=7)
  fig.legend(handles=_legend_patches(num_classes, tab), loc="outside right",
             title="class", fontsize=8)
  fig.suptitle(title, fontsize=10)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict:
  """Trains the CNN, scans its logits and draws the cross-sections.

  Args:
    config: see `experiments/configs/linearity.py`.
    workdir: output folder.

  Returns:
    The results dict (also `workdir/results.json`).
  """
  os.makedirs(workdir, exist_ok=True)
  t_start = time.perf_counter()
  (x, y), (x_test, y_test) = common.load_train_test(config)
  model, variables, _ = common.train_net("cnn", config.cnn, x, y, config,
                                         workdir)
  clean_acc = evaluation.accuracy(model.apply, variables, x_test, y_test,
                                  batch_size=config.eval_batch_size)
  print(f"clean test accuracy {clean_acc:.4f}")
  logits_fn = lambda v: model.apply(variables, v)
  loss_fn = losses.make_loss_fn(logits_fn)
  num_classes = int(y.max()) + 1
  key = jax.random.key(config.seed)

  # Logit scan along the FGSM direction (at the true label).
  xs, ys = x_test[:config.scan_images], y_test[:config.scan_images]
  ts = np.linspace(-config.scan_t_max, config.scan_t_max, config.scan_points,
                   dtype=np.float32)
  d_fgsm = analysis.sign_gradient(loss_fn, jnp.asarray(xs), jnp.asarray(ys))
  scan = np.asarray(jax.jit(analysis.logit_scan, static_argnums=0,
                            static_argnames="clip")(logits_fn, xs, d_fgsm, ts))
  clean_pred = scan[:, config.scan_points // 2].argmax(-1)
  r2 = _r2(ts, np.moveaxis(scan, 1, -1))              # [B, C]
  scan_change = _first_change(ts, scan.argmax(-1), clean_pred)
  _plot_scan(ts, scan, xs, ys, clean_pred, os.path.join(workdir,
                                                        "logit_scan.png"))

  # Cross-sections over a grid of test images.
  xm = x_test[config.scan_images:config.scan_images + config.map_images]
  ym = y_test[config.scan_images:config.scan_images + config.map_images]
  offsets = np.linspace(-config.map_range, config.map_range,
                        config.map_points, dtype=np.float32)
  k1, k2, k3 = jax.random.split(key, 3)
  d_adv = analysis.sign_gradient(loss_fn, jnp.asarray(xm), jnp.asarray(ym))
  r1 = analysis.random_sign(k1, xm.shape)
  r2_dir = analysis.random_sign(k2, xm.shape)
  r3 = analysis.random_sign(k3, xm.shape)
  section = jax.jit(analysis.cross_section, static_argnums=0,
                    static_argnames="clip")
  maps = {"adv_rand": np.asarray(section(logits_fn, xm, d_adv, r1, offsets,
                                         offsets)),
          "rand_rand": np.asarray(section(logits_fn, xm, r2_dir, r3, offsets,
                                          offsets))}
  mid = config.map_points // 2
  clean_map = maps["adv_rand"][:, mid, mid]
  sections = {}
  for name, m in maps.items():
    sections[name] = {
        "clean_class_fraction": float(np.mean(m == clean_map[:, None, None])),
        "classes_per_map": float(np.mean([len(np.unique(mi)) for mi in m])),
        "first_change_axis1": np.nanmean(_first_change(
            offsets, m[:, :, mid], clean_map)).item(),
        "first_change_axis2": np.nanmean(_first_change(
            offsets, m[:, mid, :], clean_map)).item(),
        "never_changes_axis1": float(np.mean(np.isnan(_first_change(
            offsets, m[:, :, mid], clean_map)))),
        "never_changes_axis2": float(np.mean(np.isnan(_first_change(
            offsets, m[:, mid, :], clean_map)))),
    }
  titles = {"adv_rand": ("rows: FGSM direction a, columns: random sign "
                         "direction b", "b (random)", "a (FGSM)"),
            "rand_rand": ("rows: random direction a, columns: random "
                          "direction b", "b (random)", "a (random)")}
  for name, (title, xl, yl) in titles.items():
    _plot_maps(maps[name], offsets, offsets, ym,
               f"Class maps of x + a d1 + b d2, {title} (+ = clean x)", xl, yl,
               num_classes, os.path.join(workdir, f"cross_sections_{name}.png"))

  results = {
      "config": config.to_dict(), "clean_acc": clean_acc,
      "scan": {"t_max": config.scan_t_max,
               "r2_mean": float(r2.mean()), "r2_min": float(r2.min()),
               "r2_per_image": r2.mean(-1).tolist(),
               "first_class_change_t": [None if np.isnan(v) else float(v)
                                        for v in scan_change]},
      "cross_sections": sections,
      "seconds": time.perf_counter() - t_start}
  common.write_results(workdir, results)
  print(results["scan"], "\n", sections)
  return results


if __name__ == "__main__":
  common.run(train_and_evaluate)
