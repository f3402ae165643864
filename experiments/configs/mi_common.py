"""Shared defaults of the Mixup Inference experiments (mi_*.py variants).

Not a runnable config by itself: `mi_mnist.py`, `mi_fashion_mnist.py` and
`mi_cifar10.py` start from `base_config()` and override the dataset, model
and budgets.
"""

import ml_collections


def chunk_size_for(batch_size: int, images: int = 1024) -> int:
  """Copies of a `batch_size` batch per `lax.map` step for ~`images` images
  per step (what jaxadv chose on CPU before `chunk_size` became explicit)."""
  return max(1, images // batch_size)


def _model(**kwargs) -> ml_collections.ConfigDict:
  base = dict(step="mixup", alpha=1.0, epochs=6.0, optimizer="adam",
              schedule="cyclic", learning_rate=5e-3, weight_decay=0.0,
              eps=0.0, step_size=0.0, steps=0, adv_ratio=0.5,
              eps_ramp_epochs=0.0, mi_ol_lam=0.5,
              unroll=ml_collections.config_dict.placeholder(bool))
  base.update(kwargs)
  return ml_collections.ConfigDict(base)


def base_config() -> ml_collections.ConfigDict:
  """MNIST-sized defaults; Pang et al. (2020) for the defences."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.dataset = "mnist"
  config.data_dir = ml_collections.config_dict.placeholder(str)
  config.manual_dir = ml_collections.config_dict.placeholder(str)
  config.model = "fast_at_mnist"
  # The XLA:CPU convolutions (`jaxadv.models.xla_cpu`), as the committed
  # MNIST runs used; "lax" = the library default.
  config.kernels = "xla_cpu"
  config.batch_size = 128
  config.train_limit = ml_collections.config_dict.placeholder(int)
  config.checkpoint_every = 500
  config.progress = True
  # Data parallelism: devices to split every batch over (None = all; the
  # batch sizes must be divisible by it). `--config.num_devices=1` = one.
  config.num_devices = ml_collections.config_dict.placeholder(int)

  # Trained models: mixup (Zhang et al., 2018, alpha 1) and interpolated AT
  # (Lamb et al., 2019: mixup on clean and PGD inputs, 1:1). MI-OL uses lam
  # 0.5 on mixup models and 0.6 on IAT models (Pang et al., 2020).
  config.models = ("mixup", "iat")
  config.mixup = _model(step="mixup", epochs=6.0)
  # IAT's PGD runs rolled (`unroll=False`), as in the committed MNIST runs
  # (the CPU default for the fast-AT net's attack bodies then).
  config.iat = _model(step="iat", epochs=6.0, eps=0.1, step_size=0.025,
                      steps=10, eps_ramp_epochs=1.0, mi_ol_lam=0.6,
                      unroll=False)

  # Defences, Pang et al. (2020) Sec. 4 / Appendix.
  config.defenses = ("none", "gaussian", "rotation", "xie", "guo", "mi_pl",
                     "mi_ol", "mi_combined")
  config.baselines = ml_collections.ConfigDict(dict(
      num_samples=50, sigma=0.05, max_degrees=20.0, min_fraction=0.75))
  config.mi = ml_collections.ConfigDict(dict(
      pl_pool_size=1000, ol_pool_size=10000, pl_lam=0.5, pl_num_samples=10,
      ol_num_samples=30, combined_lam_pl=0.5, combined_lam_ol=0.5,
      combined_threshold=0.2, combined_num_samples_pl=5,
      combined_num_samples_ol=15,
      # Mixed copies (and baseline draws) evaluated at once, `lax.map` steps
      # of `chunk_size` copies of the batch; None = all N x B in one vmap
      # (for GPU/TPU). On CPU ~1,024 images per step stay in cache:
      # max(1, 1024 // eval.batch_size) copies (`chunk_size_for`).
      chunk_size=chunk_size_for(500)))

  # Attacks. eps in pixel units; step size = step_size_factor * eps (2/255
  # at 8/255 on CIFAR = 1/4). The main table runs every (targeted, steps) at
  # `eps`; the sweep runs untargeted PGD-`sweep_steps` at every `sweep_eps`.
  # The long attacks run on the first n of those examples, (steps, n)
  # pairs in `examples_by_steps`, so the full table fits a CPU budget
  # (every attack of one step count uses the same n; () = all).
  # The oblivious PGD runs rolled (`unroll=False`; None = the backend
  # default).
  config.eval = ml_collections.ConfigDict(dict(
      num_examples=500, clean_examples=10000, batch_size=500,
      eps=0.05, steps=(10, 50, 200), targeted=(False, True),
      examples_by_steps=((50, 200), (200, 100)),
      sweep_eps=(0.02, 0.05, 0.1, 0.2, 0.3), sweep_steps=10,
      step_size_factor=0.25, unroll=False))
  # Adaptive attacks. EOT-PGD draws `eot_samples` fresh copies of the
  # defence's randomness per step, each with at most `max_samples` of the
  # defence's own draws (mixed copies / transforms), and uses the rolled loop
  # (`unroll=False`: 200-step EOT graphs are too large to unroll). The
  # paper's own adaptive attack averages `num_partners` PGD perturbations on
  # mixed inputs.
  config.adaptive = ml_collections.ConfigDict(dict(
      eot_samples=1, max_samples=8, unroll=False, paper_num_partners=5,
      paper_steps=(10, 50)))
  # AutoAttack's "rand" version (Croce & Hein, 2020;
  # `jaxadv.evaluation.evaluate_randomized`): APGD-CE then APGD-DLR,
  # `apgd_steps` each, every iterate's loss and gradient averaged over
  # `eot_samples` draws of the defence; against every randomized defence,
  # untargeted at `eval.eps`, on the examples of the untargeted attacks there
  # (the most of them, `plan.rand_examples`). Its verdicts (fresh draws of
  # the deployed defence, as in AutoAttack) join the adaptive worst case of
  # those settings. `max_samples` caps the defence's own draws inside the
  # attack (None = its full N); the verdicts always use the full N. 1 = each
  # of the 20 EOT draws is one draw of the defence's randomness (one mixed
  # copy / one transform): 20 per iterate, against EOT-PGD's 8; the full N
  # (30 for MI-OL, 50 for the baselines) would make every iterate 30-50x
  # dearer, hours per model on CPU. `batch_size` None = as many inputs as
  # keep the images per gradient of the EOT-PGD job.
  config.autoattack_rand = ml_collections.ConfigDict(dict(
      enabled=True, apgd_steps=100, eot_samples=20, max_samples=1,
      batch_size=ml_collections.config_dict.placeholder(int)))
  # The strength of EOT against its number of draws (issue #21): untargeted
  # EOT-PGD-`steps` at eval.eps on the first `num_examples` test examples,
  # every step's gradient averaged over `draws` fresh draws of the defence,
  # each draw the defence as deployed (`max_samples` None: all N copies).
  # Written to details.json ("eot_draws") and results.md.
  config.eot_draws = ml_collections.ConfigDict(dict(
      enabled=True, draws=(1, 4, 20), steps=10, num_examples=200,
      defenses=("mi_pl", "mi_ol", "mi_combined"),
      max_samples=ml_collections.config_dict.placeholder(int)))
  # The analysis of Pang et al.: accuracy and F_y / F_y_hat against lam.
  config.analysis = ml_collections.ConfigDict(dict(
      lams=(0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0), num_examples=500))
  return config


def make_quick(config: ml_collections.ConfigDict) -> None:
  """Shrinks a config in place for a smoke run (MNIST: 10 minutes on 2 CPU
  cores shared with other jobs, 5 of them AutoAttack's rand version, mostly
  its compilation)."""
  config.train_limit = 4000
  config.mixup.epochs = 2.0
  config.iat.epochs = 1.0
  config.iat.steps = 3
  config.iat.eps_ramp_epochs = 0.0
  config.baselines.num_samples = 8
  config.mi.pl_pool_size = 200
  config.mi.ol_pool_size = 1000
  config.mi.ol_num_samples = 10
  config.eval.num_examples = 100
  config.eval.clean_examples = 200
  config.eval.batch_size = 100
  config.mi.chunk_size = chunk_size_for(config.eval.batch_size)
  config.eval.steps = (10,)
  config.eval.targeted = (False, True)
  config.eval.sweep_eps = (0.05,)
  config.adaptive.max_samples = 4
  config.adaptive.paper_num_partners = 2
  config.adaptive.paper_steps = (10,)
  config.autoattack_rand.apgd_steps = 5
  config.autoattack_rand.eot_samples = 2
  config.analysis.lams = (0.4, 0.6, 0.8, 1.0)
  config.analysis.num_examples = 100
  config.eot_draws.draws = (1, 2)
  config.eot_draws.steps = 3
  config.eot_draws.num_examples = 20


def make_pgd10(config: ml_collections.ConfigDict) -> None:
  """The full protocol with PGD-10 only (on MNIST the long attacks took 15
  of the full config's 35 minutes)."""
  config.eval.steps = (10,)
  config.adaptive.paper_steps = (10,)
