"""Config for the T-Core study (``poisonjax run tcore``): threats x attacks x defenses x adaptation modes.

Variants:

* ``quick`` -- CPU minutes: the clean SimCLR encoder of :func:`poisonjax.vision.ssl.simclr.get_or_pretrain`
  (narrow width 8, 1 epoch) if it is cached under ``encoder.cache_dir`` (``encoder.source="auto"``),
  else a randomly initialised narrow ResNet (said in the report; ``"simclr"`` pre-trains when absent,
  ``"random"`` always uses the random one), a
  1,000-image subset of the 8,000-image adaptation split and 500 of the 2,000 evaluation images,
  the dataset threat with BadNets and Blended, defenses none / T-Core / Activation Clustering /
  Spectral Signatures / CLP, linear-probe mode, K=1.
* ``paper`` -- the full grid: 8,000 / 2,000, the four threats, the seven dataset attacks of the
  backdoor suite and the encoder attacks BadEncoder and DRUPE (from :mod:`poisonjax.vision.ssl` when
  that module provides them), every applicable defense, both modes, K=2. Needs an accelerator.

Attack parameters are ``attack_params.<attack>`` keyword arguments of
:mod:`poisonjax.vision.backdoor.attacks` (rates = fractions of the adaptation set); ``target_class`` is
the dataset attack's target, ``encoder_target_class`` the encoder attack's (threat
``both_different`` uses both; ``both_same`` uses ``target_class`` for both). ``tcore`` holds every
constant of :class:`poisonjax.vision.tcore.TCoreConfig`.
"""
import ml_collections

from poisonjax.core.validation import check_choice

VARIANTS = ("quick", "paper")
THREATS = ("dataset", "encoder", "both_same", "both_different")
DATASET_ATTACKS = ("badnets", "blended", "sig", "wanet", "tact", "adap_blend", "adap_patch")
ENCODER_ATTACKS = ("badencoder", "drupe")
DEFENSES = ("none", "tcore", "activation_clustering", "spectral_signatures", "strip", "clp")


def get_config(variant: str = "quick") -> ml_collections.ConfigDict:
    check_choice("variant", variant, VARIANTS)
    quick = variant == "quick"
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0
    c.n_adapt = 1000 if quick else 8000      # rows of the 8,000-image adaptation split used
    c.n_eval = 500 if quick else 2000        # rows of the 2,000-image evaluation split used
    c.n_victims = 1 if quick else 2
    c.threats = ("dataset",) if quick else THREATS
    c.attacks = ("badnets", "blended") if quick else DATASET_ATTACKS
    c.encoder_attacks = () if quick else ENCODER_ATTACKS
    c.defenses = ("none", "tcore", "activation_clustering", "spectral_signatures", "clp") if quick else DEFENSES
    c.modes = ("linear",) if quick else ("linear", "finetune")
    c.target_class = 0
    c.encoder_target_class = 0 if quick else 1
    c.encoder_trigger_size = 4                # BadEncoder / DRUPE trigger: white square in the bottom-right corner
    #                                           (the BadEncoder paper uses 10x10 on CIFAR-10)
    c.encoder = ml_collections.ConfigDict(dict(
        source="auto" if quick else "simclr",  # simclr | auto (cached SimCLR encoder, else random) | random
        variant="quick" if quick else "paper",
        arch="narrow", width=8 if quick else 32, epochs=1 if quick else 0,  # 0: the ssl module's default
        cache_dir="",                        # "" -> $POISONJAX_CACHE or ~/.cache/poisonjax/encoders
    ))
    c.train = ml_collections.ConfigDict(dict(
        head_epochs=30, head_lr=1e-2,        # linear probe (Adam)
        ft_epochs=5 if quick else 20, ft_lr=0.01, ft_batch_size=64 if quick else 128, augment=not quick))
    r = 0.10                                  # dirty-label rate (BackdoorBench's 10%)
    c.attack_params = ml_collections.ConfigDict(dict(
        badnets=dict(poison_rate=r, trigger_size=3),
        blended=dict(poison_rate=r, alpha=0.2),
        sig=dict(poison_rate=0.08, delta=20 / 255, freq=6.0),
        wanet=dict(poison_rate=0.1, k=4, s=0.5, cross_ratio=2.0),
        tact=dict(poison_rate=0.02, cover_rate=0.02, source_classes=(1,), trigger_size=4),
        adap_blend=dict(poison_rate=0.003, cover_rate=0.003, alpha=0.15, test_alpha=0.2),
        adap_patch=dict(poison_rate=0.003, cover_rate=0.006, patch_size=4, alpha=0.5),
    ))
    c.defense_params = ml_collections.ConfigDict(dict(
        activation_clustering=dict(n_components=10, size_threshold=0.35),
        spectral_signatures=dict(multiplier=1.5),
        strip=dict(n_overlay=8 if quick else 16, frr=0.05, clean_fraction=0.05),
        clp=dict(u=3.0),
    ))
    c.tcore = ml_collections.ConfigDict(dict(
        seed_fraction=0.01, n_depths=3, dbscan_min_samples=5, dbscan_eps_quantile=0.5, knn_k=10,
        expand_rounds=2, expand_growth=0.05, confusion_weight=5.0, confusion_steps=200, confusion_lr=1e-2,
        target_accuracy=0.2, unlearn_lr=0.002, max_unlearn_steps=500, mask_l1=1e-3, mask_steps=100 if quick else 200,
        mask_lr=0.05, channel_fraction=0.1, max_seed_batch=256 if quick else 512,
        per_class=0.02, per_class_rounds=5, global_growth=0.02, global_rounds=5, loss_growth=0.05, until=0.9,
        head_epochs=30 if quick else 50, head_lr=1e-2, ft_epochs=5 if quick else 20, ft_lr=0.01,
        ft_batch_size=64 if quick else 128, augment=not quick))
    return c


def sweep():
    """Grid for ``poisonjax sweep tcore``: the dataset attack's poison rate."""
    return {"attack_params.badnets.poison_rate": [0.05, 0.1, 0.2]}
