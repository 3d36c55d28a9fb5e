"""Witches' Brew (Geiping et al., ICLR 2021): targeted clean-label poisoning by gradient matching.

Variants: ``quick`` (digits, SmallCNN, a couple of minutes on a laptop CPU), ``mnist`` (the MNIST
subset), ``paper`` (the shared ``cifar10_jpeg_20k`` set: 10,000 training images, 1,000 test images from the full
test set; small ResNet, 1% budget = 100 poisons, eps 16/255, 250 steps, R = 8; ``--config.budget=0.005``
for the paper's sub-1% setting; ``--config.dataset=cifar10`` for the 2,000-image subset).
"""
import ml_collections

from poisonjax.core.validation import check_choice

VARIANTS = ("quick", "mnist", "paper")


def get_config(variant: str = "quick") -> ml_collections.ConfigDict:
    check_choice("variant", variant, VARIANTS)
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0
    c.dataset = "digits"          # digits | mnist | cifar10 | cifar10_20k
    c.n_train = 0                 # 0 = all (mnist/cifar10 stratified subsets)
    c.n_test = 500
    c.model = "convnet"           # convnet | small_cnn | small_resnet | mlp (convnet fits the training set;
                                  # small_cnn's global pooling underfits and is barely poisonable)
    c.budget = 0.05               # fraction of the training set that is poisoned
    c.epsilon = 64 / 255          # digits are 8x8 with 17 grey levels: a larger radius than CIFAR's 16/255
    c.craft_steps = 120
    c.restarts = 1
    c.ensemble = 1                # surrogate models trained from different seeds
    c.surrogate_checkpoints = [5, 10, 20]  # epochs at which each surrogate is kept (M = ensemble x len)
    c.poison_selection = "max_gradient"  # max_gradient (Witches' Brew) | random
    c.alignment_models = 2        # fresh clean models at which the gradient alignment is re-measured
    c.step_size = 0.1             # signed-Adam step, as a fraction of epsilon
    c.flip = False                # differentiable augmentation during crafting
    c.crop = 0
    c.trials = 8                  # independent (target, adversarial class) pairs
    c.n_victims = 2                 # victims retrained from scratch per trial
    c.victim_chunk = 0            # victims trained at once (0 = all trials x victims in one vmap; less = less memory)
    c.trial_chunk = 0             # trials crafted at once (0 = all in one vmap; less = less memory, same poisons)
    c.train = ml_collections.ConfigDict({"epochs": 20, "batch_size": 128, "lr": 0.01})
    c.transfer = ml_collections.ConfigDict({"enabled": True, "fc_steps": 200, "fc_lr": 0.02, "fc_beta": 0.0,
                                            "head_steps": 200, "n_victims": 2})
    if variant == "mnist":
        c.dataset = "mnist"
        c.n_train = 2000
        c.n_test = 1000
        c.budget = 0.01
        c.epsilon = 32 / 255
        c.craft_steps = 200
        c.restarts = 4
        c.ensemble = 2
        c.trials = 8
        c.n_victims = 4
        c.train.epochs = 20
        c.surrogate_checkpoints = [5, 10, 20]
    elif variant == "paper":
        c.dataset = "cifar10_20k"
        c.n_train = 0
        c.n_test = 1000
        c.model = "small_resnet"      # also: convnet
        c.budget = 0.01
        c.epsilon = 16 / 255
        c.craft_steps = 250
        c.restarts = 8
        c.ensemble = 2
        c.flip = True
        c.crop = 2
        c.trials = 10
        c.n_victims = 4
        c.victim_chunk = 8
        c.trial_chunk = 1             # all 10 trials at once asked an H200 for 172 GiB (8 restarts x 8 surrogates)
        c.train.epochs = 30
        c.surrogate_checkpoints = [5, 10, 20, 30]
    return c
