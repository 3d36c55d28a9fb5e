"""Config for the VGAE link-prediction poisoning study (``poisonjax run vgae_attack``).

The victim is a VGAE (encoder 32-16, Adam lr 0.005, 200 epochs, no dropout) on an 85/5/10 edge split
of Planetoid Cora (or Citeseer / an SBM graph); the attacks flip ``rate * |E_train|`` pairs of the
training graph. See :mod:`poisonjax.graph.vgae_attacks`.

Variants:
* ``quick``: a 300-node, 3-block SBM graph (identity features, no data files), 10%, victim lr 0.01 / 100 epochs, meta-gradients
  through the full 100-step training horizon, a quarter of the budget flipped per meta-gradient,
  2 victim seeds; a few minutes on a laptop CPU. (A horizon much shorter than the victim's training
  makes the exact meta-gradient myopic and weak: on small graphs 50 of 100 steps gave no effect.)
* ``paper``: Cora, rates 5/10/20%, the paper's victim (lr 0.005, 200 epochs) unrolled over all 200
  steps, 1/10 of the budget per meta-gradient, 5 seeds (hours on a CPU).
* ``cora_fast``: the ``paper`` setting without the exact unrolled attacks: the first-order meta
  attacks (A-Meta) on the sparse / low-rank fast path (``vgae_attacks.vgae_meta_grad_fast``) along the
  victim's full 200-step trajectory, 1/10 of the budget per meta-gradient, next to the one-shot,
  random, DICE and PGD baselines; 3 victim seeds; attack loss ``rank`` (a scale-invariant AUC
  surrogate, see ``vgae_attacks.outer_link_loss``; ``--config.meta_loss=bce`` for the paper's BCE).
* ``cora_whitebox``: the authors' threat model, in which the attack loss is the link BCE on the *test*
  pairs with their labels (``allow_test_labels=True``): our first-order meta attack on that loss
  (``a_meta_test``) next to the authors' one-shot procedure on the same loss, random and DICE, at
  5/10/20%, 3 victim seeds. ``*_test`` attacks are refused unless ``allow_test_labels`` is set.
"""
import ml_collections

from poisonjax.core.validation import check_choice

VARIANTS = ("quick", "paper", "cora_fast", "cora_whitebox")
ATTACKS = ("meta_self", "meta_train", "a_meta_self", "a_meta_train", "meta_test", "a_meta_test", "vgae_oneshot",
           "random", "dice", "pgd")


def get_config(variant: str = "quick") -> ml_collections.ConfigDict:
    check_choice("variant", variant, VARIANTS)
    quick = variant == "quick"
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0
    c.dataset = "sbm" if quick else "cora"   # cora | citeseer (Planetoid files) | sbm (synthetic)
    c.rate = 0.10 if quick else 0.05         # fraction of training edges flipped
    c.extra_rates = () if quick else (0.10, 0.20)
    c.attacks = ("meta_self", "a_meta_self", "meta_train", "vgae_oneshot", "random", "dice", "pgd")
    c.primary_attack = "meta_self"      # its graph is written to perturbed_adj.npz
    c.inner_steps = 100 if quick else 200     # unrolled victim steps (match victim.epochs)
    c.steps_per_budget = 4 if quick else 10   # meta-gradients per attack (flips_per_step = budget / this)
    c.oneshot_objective = "train"       # "train" | "self" | "test" (white-box; needs allow_test_labels)
    c.allow_test_labels = False
    c.pgd_steps = 30 if quick else 100
    c.n_victims = 2 if quick else 5
    c.victim = ml_collections.ConfigDict(dict(hidden=32, latent=16, lr=0.01 if quick else 0.005,
                                              epochs=100 if quick else 200, variational=True))
    c.fast_first_order = True          # a_meta_* on the sparse / low-rank fast path
    c.meta_loss = "bce"                # attack loss of the meta attacks: bce (paper) | rank (AUC surrogate)
    c.progress = True
    if variant == "cora_fast":
        c.attacks = ("a_meta_self", "a_meta_train", "vgae_oneshot", "random", "dice", "pgd")
        c.primary_attack = "a_meta_self"
        c.n_victims = 3
        c.meta_loss = "rank"
    if variant == "cora_whitebox":
        c.attacks = ("a_meta_test", "vgae_oneshot", "random", "dice")
        c.primary_attack = "a_meta_test"
        c.oneshot_objective = "test"
        c.allow_test_labels = True
        c.n_victims = 3
    return c
