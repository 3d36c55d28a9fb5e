"""Config for the Metattack study on GCN node classification (``poisonjax run metattack``).

Metattack (Zügner & Günnemann, ICLR 2019) on the Nettack/Pro-GNN largest connected component with
Pro-GNN's 10/10/80 split; the poisoned graph is compared with Pro-GNN's (DeepRobust-made) perturbed
adjacency under the same GCN training over ``n_seeds`` seeds.

Variants:
* ``quick``: Cora, 5%, Meta-Self with 25 flips per meta-gradient (11 meta-gradients), 5 GCN seeds;
  a minute or two on a laptop CPU.
* ``paper``: one flip per meta-gradient (the original greedy procedure), 100 inner steps, 5 seeds.

Both follow Pro-GNN's ``generate_attack.py``, which made the reference graphs: no log-likelihood
constraint (``ll_constraint=True`` turns DeepRobust's default filter on) and self-training labels from
its surrogate (``surrogate="prognn"``: linearised GCN with bias and dropout 0.5, last epoch;
``"deeprobust"``: DeepRobust's example surrogate, no bias/dropout, best validation loss; both
without weight decay, as DeepRobust's linearised GCN). The evaluation GCN uses DeepRobust's
initialisation (``gcn.weight_init="deeprobust"``; ``"glorot"`` for Kipf's).
"""
import ml_collections

from poisonjax.core.validation import check_choice

VARIANTS = ("quick", "paper")
ATTACKS = ("meta_self", "meta_train", "a_meta_self", "a_meta_train", "random", "dice")


def get_config(variant: str = "quick") -> ml_collections.ConfigDict:
    check_choice("variant", variant, VARIANTS)
    quick = variant == "quick"
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 15
    c.dataset = "cora"                 # cora | citeseer | polblogs (Pro-GNN splits and references)
    c.rate = 0.05                      # budget = int(rate * |E|), as DeepRobust / Pro-GNN
    c.attack = "meta_self"             # one of ATTACKS
    c.inner_steps = 100
    c.lr = 0.1
    c.momentum = 0.9
    c.flips_per_step = 25 if quick else 1
    c.ll_constraint = False
    c.surrogate = "prognn"             # prognn | deeprobust (self-training labels, see above)
    c.n_seeds = 5
    # evaluation GCN: DeepRobust's GCN with its init, best-validation parameters (DeepRobust's fit with idx_val)
    c.gcn = ml_collections.ConfigDict(dict(hidden=16, dropout=0.5, lr=0.01, weight_decay=5e-4, epochs=200,
                                           weight_init="deeprobust"))
    c.chunk_size = 5
    c.progress = True
    return c
