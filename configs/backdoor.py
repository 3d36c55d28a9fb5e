"""Config for the backdoor suite study (``poisonjax run backdoor``): attacks x defenses over K victims.

Variants:

* ``quick`` -- scikit-learn ``digits`` at their native 8x8 (1,347 train / 450 test images, ships with
  scikit-learn), a two-conv CNN with BatchNorm (``bn_cnn``, 16/32 channels), K=2 victims, 20 epochs,
  2x2 triggers, target class 3 (``narrow_resnet`` is available but about 10x slower on a CPU).
  Why (measured, see tests/vision/backdoor/test_behaviour_quick.py): the former 16x16 / 8-16-channel
  setting gave victims of clean accuracy 0.63-0.80, too weak for repairs to separate anything, and
  target class 0 is where a clean digits model already sends noise-blended images (Adap-Blend's
  clean-model ASR was 0.78); at 8x8 / 16-32 channels the clean model reaches ~0.99 and class 3 is
  no such sink.
  Minutes on a laptop CPU (much longer on a shared, loaded machine).
* ``paper`` -- CIFAR-10 ``cifar10_jpeg_20k`` (10,000 train, 10,000 test), PreAct-ResNet-18, K=2,
  60 epochs SGD with crop/flip augmentation, every attack and defense (BackdoorBench's setting, with
  fewer epochs). Needs an accelerator in practice.

Attack parameters live under ``attack_params.<attack>`` and are passed as keyword arguments to
:mod:`poisonjax.vision.backdoor.attacks` (rates are fractions of the training set; see that module
for which classes each attack poisons). ``target_class`` is shared by every attack.
"""
import ml_collections

from poisonjax.core.validation import check_choice

VARIANTS = ("quick", "paper")

ALL_ATTACKS = ("badnets", "blended", "sig", "wanet", "tact", "adap_blend", "adap_patch", "label_consistent")
DETECTORS = ("activation_clustering", "spectral_signatures", "spectre", "strip", "abl_isolation", "confusion_training")
REPAIRS = ("fine_pruning", "clp", "neural_cleanse", "abl", "i_bau")


def get_config(variant: str = "quick") -> ml_collections.ConfigDict:
    check_choice("variant", variant, VARIANTS)
    quick = variant == "quick"
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0
    c.dataset = "digits8" if quick else "cifar10_20k"    # digits8 | digits16 | mnist16 | cifar10 | cifar10_20k
    c.n_train = 0                       # 0: all training images of the dataset
    c.n_victims = 2
    c.model = "bn_cnn" if quick else "preact_resnet18"   # | narrow_resnet | small_cnn
    c.width = 16 if quick else 64       # base width (bn_cnn: channels (w, 2w); narrow_resnet: (w, 2w, 4w))
    c.target_class = 3 if quick else 0
    c.checkpoint_every = 5              # epochs between runner checkpoints of every victim training (resume mid-cell)
    c.clean_fraction = 0.05             # defender's clean data, as a fraction of the training-set size,
    #                                     taken from the test split (evaluation uses the rest)
    c.attacks = ALL_ATTACKS
    c.defenses = ("none",) + DETECTORS + REPAIRS
    c.train = ml_collections.ConfigDict(dict(
        epochs=20 if quick else 60, batch_size=64 if quick else 128, learning_rate=0.05 if quick else 0.1,
        weight_decay=5e-4, augment=not quick))
    r = 0.10                            # dirty-label rate (BackdoorBench: 10%)
    c.attack_params = ml_collections.ConfigDict(dict(
        badnets=dict(poison_rate=r, trigger_size=2 if quick else 3),
        blended=dict(poison_rate=r, alpha=0.2),
        sig=dict(poison_rate=0.08, delta=20 / 255, freq=6.0, test_delta=60 / 255 if quick else 20 / 255),
        wanet=dict(poison_rate=0.1, k=4, s=1.0 if quick else 0.5, cross_ratio=2.0),
        tact=dict(poison_rate=0.03 if quick else 0.02, cover_rate=0.03 if quick else 0.02, source_classes=(4,) if quick else (1,),
                  trigger_size=2 if quick else 4),
        adap_blend=dict(poison_rate=0.02 if quick else 0.003, cover_rate=0.02 if quick else 0.003, alpha=0.15,
                        test_alpha=0.2),
        adap_patch=dict(poison_rate=0.02 if quick else 0.003, cover_rate=0.04 if quick else 0.006,
                        patch_size=2 if quick else 4, alpha=0.5),
        label_consistent=dict(poison_rate=0.08, eps=8 / 255 if not quick else 16 / 255, steps=10,
                              trigger_size=2 if quick else 3),
    ))
    c.defense_params = ml_collections.ConfigDict(dict(
        activation_clustering=dict(n_components=10, size_threshold=0.35),
        spectral_signatures=dict(multiplier=1.5),           # poison budget = the attack's total rate
        spectre=dict(multiplier=1.5, k=16, alpha=4.0),           # flags 1.5 x the poison budget, like SS
        strip=dict(n_overlay=8 if quick else 16, frr=0.05),
        # confusion factor and lr measured to work on digits16 (BadNets TPR 1.0 / FPR 0.01); the paper
        # uses lambda 20-30 with lr 1e-3 over 6,000 iterations per round on CIFAR-10
        confusion_training=dict(distillation_ratios=(0.2, 0.05) if quick else (0.5, 0.2, 0.04, 0.02, 0.01),
                                lam=3.0, pretrain_epochs=2, confusion_epochs=4 if quick else 10,
                                confusion_copies=8, learning_rate=0.005, confidence=0.5),
        abl_isolation=dict(epochs=5 if quick else 20, isolation_ratio=0.05 if quick else 0.01, gamma=0.5,
                           learning_rate=0.05 if quick else 0.1),
        fine_pruning=dict(max_acc_drop=0.10, finetune_epochs=10 if quick else 20, learning_rate=0.01),
        clp=dict(u=2.5 if quick else 3.0),   # u=3 prunes nothing in a 16+32-channel net (measured)
        neural_cleanse=dict(steps=100 if quick else 500, lam=1e-3, threshold=2.0, finetune_epochs=10 if quick else 20,
                            learning_rate=0.01),
        abl=dict(epochs=5 if quick else 20, learning_rate=5e-4),
        i_bau=dict(rounds=10 if quick else 5, inner_steps=5, radius=2.0 if quick else 10.0, cg_iters=5,
                   learning_rate=1e-3),
    ))
    return c


def sweep():
    """Grid for ``poisonjax sweep backdoor``: BadNets poison rate."""
    return {"attack_params.badnets.poison_rate": [0.01, 0.05, 0.1]}
