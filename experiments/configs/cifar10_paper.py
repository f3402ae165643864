r"""Paper-scale CIFAR-10 adversarial training at eps 8/255, for a GPU.

One variant per reference, each the reference script's recipe (its source
beside every number below); all run through the main job:

FGSM-RS, "fast AT" (Wong, Rice & Kolter 2020; locuslab/fast_adversarial
`CIFAR10/train_fgsm.py` defaults): PreActResNet-18, 15 epochs, batch 128,
SGD momentum 0.9, weight decay 5e-4 on every parameter, cyclic lr
0 -> 0.2 -> 0 (`CyclicLR`, peak at half the run), random start U(-eps, eps),
alpha 10/255. Reported: 83.81% clean, 46.06% PGD-50x10, 12 minutes on one
GPU (with apex O2 half precision).
  python -m experiments.robust_training \
      --config=experiments/configs/cifar10_paper.py:fgsm_rs \
      --workdir=/tmp/c10_fgsm_rs

PGD-7 AT (Madry et al. 2018, in Wong et al.'s `CIFAR10/train_pgd.py`
defaults): PreActResNet-18, 15 epochs, the same SGD and cyclic lr, 7 steps
of 2/255 from a random start. Reported for PGD-7 AT: 87.30% clean, 45.80%
PGD in 4,966 minutes with Madry et al.'s WRN-32-10 and 80k-update
schedule (Shafahi et al. 2019, Table 1); Wong et al. 2020 (Table 4) list a
PreActResNet-18 PGD-7 run with about 82.5% clean / 50.7% PGD-50x10 in
about 69 minutes (quoted from memory, not re-checked here).
  python -m experiments.robust_training \
      --config=experiments/configs/cifar10_paper.py:pgd \
      --workdir=/tmp/c10_pgd

Free AT (Shafahi et al. 2019; ashafahi/free_adv_train `free_train.py`,
`config.py` defaults): m = 8 replays, step eps, 80,000 optimizer updates
(replays count) of batch 128, lr 0.1 -> 0.01 at 40k -> 0.001 at 60k,
momentum 0.9, weight decay 2e-4 on conv and dense kernels only, random crop
of the image padded by 2 pixels (to 36 x 36) and flip. The paper's network
is Madry et al.'s WRN-32-10 (leaky ReLU, per-image standardisation); this
uses the registered WRN-34-10 (Zhang et al. / Rice et al. layout,
46.2M parameters) behind a per-channel `Normalized`. Reported: 85.96%
clean, 46.33% PGD-20 (Shafahi et al. 2019, Table 1), 785 minutes.
  python -m experiments.robust_training \
      --config=experiments/configs/cifar10_paper.py:free \
      --workdir=/tmp/c10_free

Common to all three: the network sees `(x - mean) / std` (CIFAR-10's
per-channel statistics, `jaxadv.models.Normalized`) while eps, the box and
the attacks stay in [0, 1] pixels; augmentation inside the jitted step
(`jaxadv.augment.crop_flip`, per example); BatchNorm as the reference code
(`attack_bn="update"`: every attack forward updates the running averages,
PyTorch's `model.train()`; free AT's m replays each update them; eval
mode at test time; docs/cifar10.md). Evaluation: clean and PGD-50 (step
2/255) x 10 restarts on the whole test set (Wong et al.'s
`evaluate_pgd(test_loader, model, 50, 10)`), the AutoAttack-style ensemble
on the first 1,000, the sanity checks on the first 1,000. Deviations from
the references: 1,000 training images are held out for the per-epoch PGD
check (the references train on all 50,000); float32 (TF32 on recent GPUs)
unless `--config.<method>.compute_dtype=bfloat16` (bf16 compute, float32
master weights; the fast-AT scripts ran apex O2 fp16).

Data: `cifar10` (the real CIFAR-10; the python tarball in
`$JAXADV_DATA_DIR/cifar10/`). Offline with only ../shared/data, add
`--config.dataset=cifar10_jpeg` (the JPEG q75 re-encoding, not
bit-identical to CIFAR-10: report it under that name).
"""

import ml_collections

placeholder = ml_collections.config_dict.placeholder

EPS = 8 / 255


def method(**kwargs) -> ml_collections.ConfigDict:
  """One training recipe (`experiments/common/training.py` lists the fields)."""
  base = dict(
      step=placeholder(str), optimizer="sgd", schedule="cyclic",
      learning_rate=0.2, peak_fraction=0.5,
      boundaries=(0.5, 0.75), momentum=0.9, weight_decay=5e-4,
      weight_decay_on="all", epochs=15.0, total_updates=placeholder(int),
      step_size=0.0, steps=0, replays=1, select_best=False,
      eps_ramp_epochs=0.0, unroll=placeholder(bool), augment="crop_flip",
      augment_padding=4, attack_bn="update", compute_dtype=placeholder(str))
  base.update(kwargs)
  return ml_collections.ConfigDict(base)


def base_config() -> ml_collections.ConfigDict:
  """The fields `experiments.robust_training` reads, CIFAR-10 defaults."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.dataset = "cifar10"
  config.data_dir = placeholder(str)
  config.manual_dir = placeholder(str)
  config.model = "preact_resnet18"
  config.model_kwargs = ml_collections.ConfigDict()
  config.kernels = "lax"
  config.normalize = "cifar10"
  config.eps = EPS
  config.batch_size = 128
  config.train_limit = placeholder(int)
  config.test_limit = placeholder(int)
  config.val_size = 1000
  config.val_pgd_steps = 10
  config.val_pgd_step_size = 2 / 255
  config.methods = ()
  config.best_of = ml_collections.ConfigDict()
  config.eval = ml_collections.ConfigDict(dict(
      pgd_steps=50, pgd_step_size=2 / 255, pgd_restarts=10, batch_size=500,
      sanity_subset=1000, unroll=placeholder(bool),
      pgd_examples=placeholder(int), autoattack_examples=1000,
      autoattack=ml_collections.ConfigDict(dict(
          apgd_steps=100, num_targets=9, square_queries=5000))))
  config.checkpoint_every = 500
  config.progress = True
  config.num_devices = placeholder(int)
  return config


def fgsm_rs() -> ml_collections.ConfigDict:
  """Wong et al. 2020, `train_fgsm.py`: alpha 10/255, 15 epochs, lr 0.2."""
  return method(step="fgsm_rs", step_size=10 / 255)


def pgd() -> ml_collections.ConfigDict:
  """PGD-7 AT, step 2/255 (Wong et al.'s `train_pgd.py` defaults)."""
  return method(step="pgd", steps=7, step_size=2 / 255)


def free() -> ml_collections.ConfigDict:
  """Shafahi et al. 2019, `free_train.py`: m 8, 80k updates, piecewise."""
  return method(step="free", replays=8, total_updates=80_000,
                schedule="piecewise", learning_rate=0.1,
                boundaries=(0.5, 0.75), weight_decay=2e-4,
                weight_decay_on="kernels", augment_padding=2)


VARIANTS = {"fgsm_rs": fgsm_rs, "pgd": pgd, "free": free}
MODELS = {"fgsm_rs": "preact_resnet18", "pgd": "preact_resnet18",
          "free": "wide_resnet34_10"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: "fgsm_rs" (default), "pgd" or "free"."""
  name = arg or "fgsm_rs"
  if name not in VARIANTS:
    raise ValueError(f"unknown variant {name!r}; valid: {sorted(VARIANTS)}.")
  config = base_config()
  config.model = MODELS[name]
  config.methods = (name,)
  config[name] = VARIANTS[name]()
  return config
