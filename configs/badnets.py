"""Config for the BadNets / label-flipping study on digits (``poisonjax run badnets``).

Variants: ``quick`` (K=4 victims, about a minute on a laptop CPU) and ``paper`` (K=8, longer training,
rates 1/5/10/20%).
"""
import ml_collections

from poisonjax.core.validation import check_choice

VARIANTS = ("quick", "paper")


def get_config(variant: str = "quick") -> ml_collections.ConfigDict:
    check_choice("variant", variant, VARIANTS)
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0
    c.dataset = "digits"
    c.n_victims = 4 if variant == "quick" else 8   # victims trained (vmapped) per cell
    c.rate = 0.10                       # fraction of the training set poisoned
    c.target_class = 0
    c.trigger_size = 3
    c.attacks = ("none", "label_flip", "badnets")
    c.train = ml_collections.ConfigDict(dict(epochs=30 if variant == "quick" else 60, batch_size=64,
                                             learning_rate=1e-2, channels=(16, 32), hidden=64))
    c.checkpoint_every = 5              # epochs between checkpoints of a cell's victim training (resume mid-cell)
    c.rates = (0.10,) if variant == "quick" else (0.01, 0.05, 0.10, 0.20)
    return c


def sweep():
    """Grid for ``poisonjax sweep badnets``: poison rate x trigger size."""
    return {"rate": [0.01, 0.05, 0.10, 0.20], "trigger_size": [2, 3]}
