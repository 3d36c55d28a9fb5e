"""Config for the Metattack study on GCN node classification (``poisonjax run metattack``).

Metattack (Zügner & Günnemann, ICLR 2019) on the Nettack/Pro-GNN largest connected component with
Pro-GNN's 10/10/80 split; the poisoned graph is compared with Pro-GNN's (DeepRobust-made) perturbed
adjacency under the same GCN training over ``n_victims`` seeds.

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

``attack="meta_pgd"`` is stronger than Metattack: Meta-PGD (Mujkanovic et al., NeurIPS 2022), warm-started
from the greedy Meta-Self flips (``pgd.init``), ``pgd.steps`` projected-gradient steps on the relaxed
flips with the bounded ``tanh_margin`` attack loss, then the best of ``pgd.samples`` Bernoulli draws
(plus the top-B flips and the warm start) by an attacker-side proxy that uses no test labels
(:func:`poisonjax.graph.attacks.select_flip_set`). ``results.json`` also reports the warm start's
accuracy (``test_acc_init``) and every candidate's proxy score (``meta_pgd``).

``pgd.lr="auto"`` (the default) and ``pgd.steps="auto"`` choose Meta-PGD's step size and number of steps
without test labels (:func:`poisonjax.graph.attacks.metapgd.tune_meta_pgd`): one PGD run per lr of
``pgd.lr_grid`` (vmapped together, same warm start), snapshotted at each of ``pgd.steps_grid`` (when it
is non-empty or ``pgd.steps="auto"``; else at ``pgd.steps`` alone); each snapshot's top-B flip set is scored by GCNs the attacker
trains on the poisoned graph -- their agreement with the self-training labels of the unlabelled nodes
(``select_by="self_labels"``), their accuracy on a held-out ``pgd.holdout_frac`` of the training labels
when trained on the rest (``"holdout"``), or the mean of both -- and the lowest score wins. The
chosen lr / steps and every candidate's scores are in ``results.json`` (``meta_pgd.tuning``) and the
report. ``--config.pgd.lr=2`` fixes the step size (the earlier default, chosen with test accuracy).

``attack="prbcd"`` is PR-BCD (Geisler et al., NeurIPS 2021) with the Meta-Self loss, in O(|E| + block)
memory: ``--config.dataset=pubmed --config.attack=prbcd`` runs on PubMed (dense Metattack is refused where
its ``[N, N]`` arrays cannot fit; the study prints its memory / time estimate first).

Labels: every attack sees the training labels and self-training labels of the other nodes, never the test
labels; ``allow_test_labels=True`` gives DICE the true labels of every node (the oracle baseline). The
report says which ran.
"""
import ml_collections

from poisonjax.core.validation import check_choice

VARIANTS = ("quick", "paper")
ATTACKS = ("meta_self", "meta_train", "a_meta_self", "a_meta_train", "meta_pgd", "prbcd", "random", "dice")


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
    c.n_victims = 5
    # evaluation GCN: DeepRobust's GCN with its init, best-validation parameters (DeepRobust's fit with idx_val)
    c.gcn = ml_collections.ConfigDict(dict(hidden=16, dropout=0.5, lr=0.01, weight_decay=5e-4, epochs=200,
                                           weight_init="deeprobust"))
    # attack="meta_pgd" (Meta-PGD, Mujkanovic et al. 2022): PGD on relaxed flips driven by the meta-gradient
    # (type_safe=False: lr and steps take a number or "auto")
    c.pgd = ml_collections.ConfigDict(dict(
        init="meta_self",      # warm start: "meta_self" (greedy run first), "none", or a perturbed_adj.npz path
        steps=80,              # PGD steps; "auto" (or a non-empty steps_grid): the best of steps_grid
        lr="auto",             # step norm lr * sqrt(budget / (t + 1)) along the unit gradient; a number, or
                               # "auto": the best of lr_grid by the attacker-side protocol (no test labels)
        lr_grid=(1.0, 2.0, 4.0),       # candidates of lr="auto" (one vmapped PGD run per lr)
        steps_grid=(),         # candidates of the steps (snapshots of the same runs, so the largest costs);
                               # () with steps="auto": (40, 80, 160); CLI: --config.pgd.steps_grid=40,80,160
        select_by="self_labels",       # self_labels | holdout | mean: the auto protocol's score
        holdout_frac=0.3,      # share of the training labels held out of the scoring GCNs (holdout score)
        loss="tanh_margin",    # ce | tanh_margin | mce (attack loss of the PGD stage)
        samples=20,            # Bernoulli draws from the relaxed flips (plus top-B and the warm start)
        select_seeds=3), type_safe=False)  # GCN seeds of the attacker-side selection proxy
    # attack="prbcd" (PR-BCD, Geisler et al. 2021): O(|E| + block) memory, e.g. --config.dataset=pubmed
    c.prbcd = ml_collections.ConfigDict(dict(
        epochs=100,            # projected ascent epochs (resampling until 75% of them)
        block_size=0,          # candidate pairs; 0: max(4 * budget, 10,000)
        inner_steps=20,        # unrolled SGD steps of the linearised GCN in the Meta-Self loss
        lr_factor=0.1))        # step lr_factor * budget / sqrt(t + 1) along the unit gradient (0.1: best of
                               # 1 / 0.1 / 0.02 on the CI test's 150-node SBM; not tuned on PubMed)
    # the attacks see the training labels and self-training labels; True gives DICE the true labels of
    # every node (the oracle baseline, test nodes included)
    c.allow_test_labels = False
    c.chunk_size = 5
    c.progress = True
    return c
