"""PADHASH (Li et al., IEEE TMM 2025): clean-label gradient-matching poisoning of deep hashing.

Variants: ``quick`` (digits, 16-bit CSQ on the small CNN, a few minutes on a laptop CPU),
``mnist`` (MNIST subset), ``paper`` (the shared ``cifar10_jpeg_20k`` set: 10,000 training images, 1,000 test queries from the full
test set; 32-bit CSQ on the small ResNet, ``--config.method=dpn`` / ``--config.bits=64`` for the other
cells; eps 16/255, 0.5% poisons (50 images) and a 0.25-1% sweep, gray-box 10%/20% surrogates, black-box
ensemble, transfer matrix). ``--config.dataset=cifar10`` runs it on the 2,000-image subset instead.
"""
import ml_collections

from poisonjax.core.validation import check_choice

VARIANTS = ("quick", "mnist", "paper")


def get_config(variant: str = "quick") -> ml_collections.ConfigDict:
    check_choice("variant", variant, VARIANTS)
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0
    c.dataset = "digits"
    c.n_train = 0
    c.n_test = 500
    c.method = "csq"                 # victim hashing loss: csq | dpn
    c.backbone = "small_cnn"         # victim (and gray-box surrogate) backbone
    c.bits = 16
    c.centers = "auto"               # auto | hadamard | bernoulli
    c.budget = 0.05                  # fraction of the training set poisoned (all from the target class)
    c.epsilon = 64 / 255             # digits are 8x8 with 17 grey levels (CIFAR-10: 16/255)
    c.alpha = 0.3                    # strict-loss weight (0 = Witches' Brew); the paper's range is 0.05-0.3
    c.normalize_strict = True        # magnitude term times ||G_v|| (scale-free; False = the paper's formula verbatim)
    c.craft_steps = 150
    c.restarts = 1
    c.step_size = 0.1
    c.flip = False
    c.crop = 0
    c.surrogate_fraction = 0.2       # gray-box surrogate: share of the training data it saw
    c.surrogate_members = 1          # surrogates per architecture (different seeds)
    c.surrogate_checkpoints = [1, 2, 4, 6]  # kept along training (full-data epochs); M = members x len
    c.triggers = 8
    c.n_victims = 2                    # victims retrained per trigger
    c.victim_chunk = 0               # victims trained at once (0 = all triggers x victims in one vmap; less = less memory)
    c.trial_chunk = 0                # triggers crafted at once (0 = all in one vmap; less = less memory, same poisons)
    c.queries = 200                  # ordinary queries for mAP
    c.topk = 40
    c.threshold = 0.3
    c.train = ml_collections.ConfigDict({"epochs": 6, "batch_size": 128, "lr": 0.01})
    # victims/surrogates fine-tune a backbone pretrained (as a classifier) on a public share of the data
    c.pretrain = ml_collections.ConfigDict({"enabled": True, "fraction": 0.2, "epochs": 40})
    # extra studies (off in quick tests, on in the paper variant)
    c.gray_box_fractions = [0.1, 0.2]
    c.blackbox_backbones = ["small_resnet", "mlp"]
    c.run_settings = True            # gray-box 10%/20% and black-box, WB vs PADHASH
    c.transfer_victims = ["small_resnet:16", "small_cnn:32"]   # backbone:bits
    c.run_transfer = True
    c.budget_sweep = [0.02, 0.05, 0.08]
    c.run_budget_sweep = True
    if variant == "mnist":
        c.dataset = "mnist"
        c.n_train = 2000
        c.n_test = 500
        c.budget = 0.01
        c.bits = 32
        c.triggers = 8
        c.n_victims = 2
        c.train.epochs = 6
        c.surrogate_checkpoints = [1, 2, 4, 6]
        c.transfer_victims = ["small_resnet:32", "small_cnn:64"]
        c.budget_sweep = [0.005, 0.01, 0.02]
    elif variant == "paper":
        c.dataset = "cifar10_20k"    # 10,000 training images; n_test: a stratified 1,000 of the 10,000 test images
        c.n_train = 0
        c.n_test = 1000
        c.backbone = "small_resnet"
        c.bits = 32
        c.budget = 0.005             # 50 poisons of 10,000 (the paper stays under 1% of CIFAR-10's 50,000)
        c.epsilon = 16 / 255
        c.craft_steps = 250
        c.restarts = 4
        c.flip = True
        c.crop = 2
        c.surrogate_fraction = 0.1
        c.surrogate_members = 2
        c.triggers = 10
        c.n_victims = 2
        c.victim_chunk = 4           # victims trained at once; bounds memory (0 = all 20 at once, fine on a GPU)
        c.trial_chunk = 2            # all 10 triggers at once asked an H200 for 43 GiB; 2 at a time ~9 GiB
        c.queries = 500
        c.train.epochs = 15
        c.surrogate_checkpoints = [2, 5, 10, 15]
        c.pretrain.epochs = 30
        c.blackbox_backbones = ["small_cnn", "mlp"]
        c.transfer_victims = ["small_cnn:32", "small_resnet:64"]
        c.budget_sweep = [0.0025, 0.005, 0.01]
    return c
