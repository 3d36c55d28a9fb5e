"""Graph structure poisoning (jraph / flax): GCN and (V)GAE victims, Metattack (exact and first-order
meta-gradients on :mod:`poisonjax.core.bilevel`), Meta-PGD, VGAE meta attacks, random / DICE / PGD
baselines, scalable PR-BCD, and link-prediction / node-classification metrics.

The attack building blocks live in :mod:`poisonjax.graph.attacks` (one module per job); the names below
are the public entry points."""
from poisonjax.graph.attacks import (MetattackConfig, PRBCDConfig, check_perturbation, dice_attack, flips_to_adj,
                                     greedy_flip_optimizer, make_meta_problem, make_prbcd_problem, pgd_attack,
                                     random_attack, run_metattack, run_prbcd, self_training_labels)
from poisonjax.graph.metrics import accuracy, average_precision, link_auc_ap, roc_auc
from poisonjax.graph.models import GCN, GraphEncoder, normalize_adj, train_gcn, train_vgae
from poisonjax.graph.splits import LinkSplit, budget_from_rate, link_split
from poisonjax.graph.vgae_attacks import (VGAEAttackConfig, evaluate_vgae, vgae_meta_attack, vgae_oneshot)
# one-call API on numpy / scipy inputs (after the submodule imports: `prbcd` / `metattack` here are functions)
from poisonjax.graph.api import evaluate_gcn, meta_pgd, metattack, prbcd, vgae_attack
