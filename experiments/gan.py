r"""DCGAN on MNIST / Fashion-MNIST, judged by a classifier of the real data.

  python -m experiments.gan --config=experiments/configs/gan.py:mnist \
      --workdir=/tmp/gan_mnist

Writes to WORKDIR:
* `results.json`: the keys of `RESULT_KEYS` (sample quality of
  `num_samples` generated images through the classifier: predicted-class
  histogram, its entropy in nats, mean confidence, Frechet distance in the
  classifier's penultimate features vs the real test set, and the same
  distance between real training and real test images for scale);
* `details.json`: per-step losses, per-epoch quality, gradient probes;
  `early_grad_norm_*` / `early_d_fake` are means over the second half of
  the probe window (generator updates grad_probe_steps/2 .. grad_probe_steps)
  of the trained run, both losses' gradients at the same states;
* `samples_epoch<E>.png` (a fixed-z grid after each epoch),
  `interpolation.png`, `losses.png`, `generator_gradients.png`,
  `class_histogram.png`.
A killed run started again with the same workdir resumes from the last
finished epoch.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from PIL import Image
from tqdm.auto import tqdm

from experiments import common
from jaxadv import data
from jaxadv import evaluation
from jaxadv import gan
from jaxadv import models

RESULT_KEYS = (
    "dataset", "generator_loss", "k", "latent_dim", "features", "batch_size",
    "epochs", "generator_steps", "train_seconds", "classifier_test_acc",
    "num_samples", "class_histogram", "class_entropy", "max_entropy",
    "all_classes_present", "mean_confidence", "real_test_mean_confidence",
    "frechet_distance", "frechet_distance_real_train_vs_test",
    "early_grad_norm_saturating", "early_grad_norm_non_saturating",
    "early_d_fake")
_CKPT = "gan_checkpoint.msgpack"


# ----------------------------------------------------------- the judge ----

def train_classifier(config, train, test, workdir):
  """A naturally trained classifier of the real data (the judge)."""
  cc = config.classifier
  num_classes = data.info(config.dataset).num_classes
  model = models.get_model(cc.model, kernels=config.kernels,
                           num_classes=num_classes)
  section = {"step": "natural", "epochs": cc.epochs, "schedule": "constant",
             "learning_rate": cc.learning_rate}
  trained = common.train_model(
      "classifier", section, model, train[0], train[1],
      key=jax.random.fold_in(jax.random.key(config.seed), 99),
      batch_size=cc.batch_size, seed=config.seed, workdir=workdir,
      progress=config.progress)
  acc = evaluation.accuracy(model.apply, trained.variables, test[0], test[1])
  return model, trained.variables, acc


def make_judge(model, variables, feature_layer: str = "fc1"):
  """x [B, H, W, C] in [0, 1] -> (class probs [B, C], features [B, F]).

  The features are the ReLU of the penultimate Dense layer `feature_layer`.
  """
  @jax.jit
  def judge(x):
    logits, inter = model.apply(
        variables, x,
        capture_intermediates=lambda m, _: m.name == feature_layer,
        mutable=["intermediates"])
    feats = inter["intermediates"][feature_layer]["__call__"][0]
    return jax.nn.softmax(logits), jax.nn.relu(feats)
  return judge


def judge_all(judge, x: np.ndarray,
              batch: int) -> tuple[np.ndarray, np.ndarray]:
  probs, feats = [], []
  for i in range(0, len(x), batch):
    p, f = judge(jnp.asarray(x[i:i + batch]))
    probs.append(np.asarray(p))
    feats.append(np.asarray(f))
  return np.concatenate(probs), np.concatenate(feats)


def sample_quality(probs: np.ndarray, feats: np.ndarray,
                   real_feats: np.ndarray) -> dict:
  hist = gan.class_histogram(probs)
  return {"class_histogram": hist.tolist(),
          "class_entropy": gan.entropy(hist),
          "all_classes_present": bool(np.all(hist > 0)),
          "mean_confidence": gan.mean_confidence(probs),
          "frechet_distance": gan.frechet_distance(real_feats, feats)}


# ------------------------------------------------------------- samples ----

def generate(sample_fn, state, key, n: int, latent_dim: int,
             batch: int) -> np.ndarray:
  """n generated images as pixels in [0, 1], float32 [n, H, W, C]."""
  out = []
  for i in range(0, n, batch):
    z = jax.random.normal(jax.random.fold_in(key, i), (min(batch, n - i),
                                                       latent_dim))
    out.append(np.asarray(sample_fn(state, z)))
  return np.concatenate(out)


def _tile(images: np.ndarray, rows: int, cols: int, pad: int = 2) -> np.ndarray:
  """[rows * cols, H, W, 1] in [0, 1] -> one 2-D image with `pad` gaps."""
  h, w = images.shape[1:3]
  canvas = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad), np.float32)
  for i, img in enumerate(images[:rows * cols]):
    r, c = divmod(i, cols)
    canvas[pad + r * (h + pad):pad + r * (h + pad) + h,
           pad + c * (w + pad):pad + c * (w + pad) + w] = img[..., 0]
  return canvas


def _save_png(canvas: np.ndarray, path: str, scale: int = 2) -> None:
  img = Image.fromarray((255 * np.clip(canvas, 0, 1)).astype(np.uint8))
  img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(path)


def interpolation(sample_fn, state, key, rows: int, steps: int,
                  latent_dim: int) -> np.ndarray:
  """rows x steps images along straight lines between random z pairs."""
  k0, k1 = jax.random.split(key)
  z0 = jax.random.normal(k0, (rows, 1, latent_dim))
  z1 = jax.random.normal(k1, (rows, 1, latent_dim))
  t = jnp.linspace(0.0, 1.0, steps)[None, :, None]
  z = ((1 - t) * z0 + t * z1).reshape(rows * steps, latent_dim)
  return np.asarray(sample_fn(state, z))


# --------------------------------------------------------------- plots ----

def _plots(details: dict, record: dict, workdir: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  curves = details["curves"]
  steps = np.arange(1, len(curves["d_loss"]) + 1)

  def smooth(v, w=25):
    v = np.asarray(v)
    if len(v) < w:
      return v
    return np.convolve(v, np.ones(w) / w, mode="valid")

  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
  for name, color in (("d_loss", "C0"), ("g_loss", "C3")):
    ax1.plot(steps, curves[name], alpha=0.2, color=color)
    s = smooth(curves[name])
    ax1.plot(steps[len(steps) - len(s):], s, label=name, color=color)
  ax1.set_xlabel("generator updates")
  ax1.set_ylabel("loss (nats)")
  ax1.legend()
  ax1.grid(alpha=0.3)
  for name in ("d_real", "d_fake"):
    s = smooth(curves[name])
    ax2.plot(steps[len(steps) - len(s):], s, label=name.replace(
        "d_real", "D(x)").replace("d_fake", "D(G(z))"))
  ax2.set_xlabel("generator updates")
  ax2.set_ylabel("mean discriminator output")
  ax2.legend()
  ax2.grid(alpha=0.3)
  fig.suptitle(f"{record['dataset']} DCGAN ({record['generator_loss']} G loss)")
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "losses.png"), dpi=110)
  plt.close(fig)

  fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
  for ax, run in zip(axes, ("non_saturating", "saturating")):
    probes = details["grad_probes"][run]
    x = [p["step"] for p in probes]
    ax.plot(x, [p["saturating"] for p in probes],
            label="saturating  log(1 - D(G(z)))")
    ax.plot(x, [p["non_saturating"] for p in probes],
            label="non-saturating  -log D(G(z))")
    ax.set_yscale("log")
    ax.set_xlabel("generator updates")
    ax.set_title(f"trained with the {run.replace('_', '-')} loss")
    ax.grid(alpha=0.3, which="both")
    twin = ax.twinx()
    twin.plot(x, [p["d_fake"] for p in probes], color="gray", ls=":",
              label="D(G(z))")
    twin.set_ylim(0, 1)
    twin.set_ylabel("D(G(z))", color="gray")
  axes[0].set_ylabel("||d loss / d theta_G||_2")
  axes[0].legend(loc="lower right", fontsize=8)
  fig.suptitle(f"{record['dataset']}: generator gradient norm early in "
               f"training, both losses at the same states")
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "generator_gradients.png"), dpi=110)
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(6, 3.5))
  hist = record["class_histogram"]
  ax.bar(range(len(hist)), hist)
  ax.axhline(1 / len(hist), color="gray", ls="--")
  ax.set_xticks(range(len(hist)))
  ax.set_xticklabels(data.info(record["dataset"]).class_names, rotation=45,
                     fontsize=8)
  ax.set_ylabel("fraction of samples")
  ax.set_title(f"classifier's labels of {record['num_samples']} samples: "
               f"entropy {record['class_entropy']:.3f} nats")
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "class_histogram.png"), dpi=110)
  plt.close(fig)


# ------------------------------------------------------------ training ----

def _new_state(config, image_shape):
  tx = lambda: optax.adam(config.learning_rate, b1=config.b1)  # noqa: E731
  return gan.create_gan_state(
      gan.DCGANGenerator(features=config.features, channels=image_shape[-1]),
      gan.DCGANDiscriminator(features=config.features),
      jax.random.key(config.seed), latent_dim=config.latent_dim,
      image_shape=image_shape, tx_generator=tx(), tx_discriminator=tx())


def _probe_run(config, state, x, y, loss: str, key, z_probe, probe, steps,
               progress: bool) -> list:
  """Trains `steps` generator updates with `loss`; gradient norms of both."""
  step_fn = jax.jit(gan.gan_step(latent_dim=config.latent_dim, k=config.k,
                                 generator_loss=loss), donate_argnums=(0,))
  probes = []
  it = data.batches(x, y, config.k * config.batch_size, seed=config.seed + 1,
                    epoch=0)
  for t in tqdm(range(steps), desc=f"probe {loss}", disable=not progress):
    if t % config.grad_probe_every == 0:
      probes.append({"step": t, **{k: float(v) for k, v in
                                   probe(state, z_probe).items()}})
    state, _ = step_fn(state, next(it), key)
  return probes


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict:
  """Trains the judge and the GAN, writes samples, plots and results.

  Args:
    config: see `experiments/configs/gan.py`.
    workdir: output folder (created).

  Returns:
    The results record (also `workdir/results.json`).
  """
  os.makedirs(workdir, exist_ok=True)
  train = data.load(config.dataset, "train", data_dir=config.data_dir,
                    manual_dir=config.manual_dir, limit=config.train_limit)
  test = data.load(config.dataset, "test", data_dir=config.data_dir,
                   manual_dir=config.manual_dir, limit=config.test_limit)
  x, y = train
  image_shape = x.shape[1:]
  print(f"{config.dataset}: {len(x)} train, {len(test[0])} test images")

  clf, clf_vars, clf_acc = train_classifier(config, train, test, workdir)
  print(f"[classifier] test accuracy {clf_acc:.4f}")
  judge = make_judge(clf, clf_vars)
  real_probs, real_feats = judge_all(judge, test[0], config.sample_batch)
  n_ref = min(len(x), len(test[0]))
  _, train_feats = judge_all(
      judge, x[np.random.default_rng(config.seed).permutation(len(x))[:n_ref]],
      config.sample_batch)

  key = jax.random.key(config.seed)
  sample_fn = jax.jit(lambda s, z: gan.to_pixels(gan.sample(s, z)))
  probe = jax.jit(gan.generator_gradient_norms)
  z_probe = jax.random.normal(jax.random.fold_in(key, 7),
                              (config.grad_probe_batch, config.latent_dim))
  z_grid = jax.random.normal(jax.random.fold_in(key, 8),
                             (config.grid ** 2, config.latent_dim))
  step_fn = jax.jit(gan.gan_step(latent_dim=config.latent_dim, k=config.k,
                                 generator_loss=config.generator_loss),
                    donate_argnums=(0,))
  per_epoch = data.num_batches(len(x), config.k * config.batch_size)
  if config.steps_per_epoch:
    per_epoch = min(per_epoch, config.steps_per_epoch)

  state = _new_state(config, image_shape)
  details: dict[str, Any] = {"curves": {k: [] for k in (
      "d_loss", "g_loss", "d_real", "d_fake", "g_grad_norm")},
                             "epochs": [], "grad_probes": {},
                             "train_seconds": 0.0}
  ckpt = os.path.join(workdir, _CKPT)
  start_epoch = 0
  if os.path.exists(ckpt):
    with open(ckpt, "rb") as f:
      saved = flax.serialization.msgpack_restore(f.read())
    state = flax.serialization.from_state_dict(state, saved["state"])
    with open(os.path.join(workdir, "details.json")) as f:
      details = json.load(f)
    start_epoch = len(details["epochs"])
    print(f"[gan] resumed from {workdir} after epoch {start_epoch}")

  probes = details["grad_probes"].setdefault(config.generator_loss, [])
  for epoch in range(start_epoch, config.epochs):
    t0 = time.perf_counter()
    metrics = []
    bar = tqdm(total=per_epoch, desc=f"gan epoch {epoch}",
               disable=not config.progress, mininterval=1.0)
    gstep = epoch * per_epoch
    for i, batch in enumerate(data.batches(x, y, config.k * config.batch_size,
                                           seed=config.seed, epoch=epoch)):
      if i >= per_epoch:
        break
      if (gstep < config.grad_probe_steps and
          gstep % config.grad_probe_every == 0):
        probes.append({"step": gstep, **{k: float(v) for k, v in
                                         probe(state, z_probe).items()}})
      state, m = step_fn(state, batch, key)
      metrics.append(m)
      gstep += 1
      bar.update(1)
      if i % 50 == 49:
        bar.set_postfix(d_loss=f"{float(m['d_loss']):.3f}",
                        g_loss=f"{float(m['g_loss']):.3f}")
    bar.close()
    jax.block_until_ready(state)
    details["train_seconds"] += time.perf_counter() - t0
    for k in details["curves"]:
      details["curves"][k].extend(float(m[k]) for m in metrics)
    _save_png(_tile(np.asarray(sample_fn(state, z_grid)), config.grid,
                    config.grid),
              os.path.join(workdir, f"samples_epoch{epoch:02d}.png"))
    probs, feats = judge_all(judge, generate(
        sample_fn, state, jax.random.fold_in(key, 1000 + epoch),
        config.epoch_samples, config.latent_dim, config.sample_batch),
        config.sample_batch)
    q = sample_quality(probs, feats, real_feats)
    details["epochs"].append({"epoch": epoch, "generator_steps": gstep, **q})
    print(f"[gan] epoch {epoch}: entropy {q['class_entropy']:.3f} nats, "
          f"confidence {q['mean_confidence']:.3f}, FD "
          f"{q['frechet_distance']:.2f} ({config.epoch_samples} samples)")
    tmp = ckpt + ".tmp"
    with open(tmp, "wb") as f:
      f.write(flax.serialization.msgpack_serialize(
          {"state": flax.serialization.to_state_dict(state)}))
    common.json_dump(details, os.path.join(workdir, "details.json"))
    os.replace(tmp, ckpt)

  other = "saturating" if config.generator_loss == "non_saturating" else (
      "non_saturating")
  if other not in details["grad_probes"]:
    details["grad_probes"][other] = _probe_run(
        config, _new_state(config, image_shape), x, y, other, key, z_probe,
        probe, config.grad_probe_steps, config.progress)

  images = generate(sample_fn, state, jax.random.fold_in(key, 2000),
                    config.num_samples, config.latent_dim, config.sample_batch)
  probs, feats = judge_all(judge, images, config.sample_batch)
  q = sample_quality(probs, feats, real_feats)
  strip = interpolation(sample_fn, state, jax.random.fold_in(key, 3000),
                        config.interp_rows, config.interp_steps,
                        config.latent_dim)
  _save_png(_tile(strip, config.interp_rows, config.interp_steps),
            os.path.join(workdir, "interpolation.png"))
  early = details["grad_probes"][config.generator_loss]
  early = early[len(early) // 2:]  # the second half of the probe window
  record = {
      "dataset": config.dataset, "generator_loss": config.generator_loss,
      "k": int(config.k), "latent_dim": int(config.latent_dim),
      "features": int(config.features), "batch_size": int(config.batch_size),
      "epochs": int(config.epochs),
      "generator_steps": len(details["curves"]["g_loss"]),
      "train_seconds": float(details["train_seconds"]),
      "classifier_test_acc": float(clf_acc),
      "num_samples": int(config.num_samples), **q,
      "max_entropy": float(np.log(len(q["class_histogram"]))),
      "real_test_mean_confidence": gan.mean_confidence(real_probs),
      "frechet_distance_real_train_vs_test": gan.frechet_distance(
          real_feats, train_feats),
      "early_grad_norm_saturating": float(np.mean(
          [p["saturating"] for p in early])),
      "early_grad_norm_non_saturating": float(np.mean(
          [p["non_saturating"] for p in early])),
      "early_d_fake": float(np.mean([p["d_fake"] for p in early])),
  }
  record = {k: record[k] for k in RESULT_KEYS}
  details["record"] = record
  common.json_dump(details, os.path.join(workdir, "details.json"))
  common.write_results(workdir, record)
  _plots(details, record, workdir)
  print(json.dumps({k: v for k, v in record.items()
                    if k != "class_histogram"}, indent=1))
  return record


if __name__ == "__main__":
  common.run(train_and_evaluate)
