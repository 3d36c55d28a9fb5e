"""The survey's classic attack families against their baselines (``poisonjax run classics``, issue 22).

Variants: ``quick`` (8x8 digits everywhere, tiny budgets of steps; minutes on a CPU) and ``paper``
(MNIST subsets, more trials, victims and steps; the issue's CIFAR-10 20k MetaPoison run is not
configured here).
"""
import ml_collections

from poisonjax.core.validation import check_choice

VARIANTS = ("quick", "paper")
FAMILIES = ("feature_space", "availability", "bilevel", "influence", "label_flipping")


def get_config(variant: str = "quick") -> ml_collections.ConfigDict:
    check_choice("variant", variant, VARIANTS)
    quick = variant == "quick"
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0
    c.dataset = "digits" if quick else "mnist"
    c.n_train = 0 if quick else 2000          # mnist subset sizes (digits: all 1,347 / 450)
    c.n_test = 0 if quick else 1000
    c.families = FAMILIES
    c.feature_space = ml_collections.ConfigDict(dict(trials=4 if quick else 10, budget=0.05, eps=64 / 255 if quick else 32 / 255,
                                                     steps=100 if quick else 200, n_victims=2))
    c.availability = ml_collections.ConfigDict(dict(eps_values=(8 / 255, 16 / 255), model="mlp", rounds=8 if quick else 15,
                                                    pgd_steps=10, victim_epochs=15 if quick else 30,
                                                    n_victims=2 if quick else 4))
    c.bilevel = ml_collections.ConfigDict(dict(trials=4 if quick else 8, budget=0.05 if quick else 0.01,
                                               eps=64 / 255 if quick else 32 / 255, steps=30 if quick else 100,
                                               unroll=2, checkpoints=(2, 4, 6, 8), epochs=8 if quick else 15,
                                               n_victims=2 if quick else 4, witches_brew_steps=40 if quick else 200))
    c.influence = ml_collections.ConfigDict(dict(pos=7, neg=1, k=10, eps=0.25, iters=3, l2=1e-2, targets=2))
    c.label_flipping = ml_collections.ConfigDict(dict(pos=7, neg=1, budgets=(0.05, 0.10, 0.20), rounds=2, l2=1e-2))
    return c
