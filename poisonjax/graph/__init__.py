"""Graph structure poisoning (jraph / flax): GCN and (V)GAE victims, Metattack (exact and first-order
meta-gradients on :mod:`poisonjax.core.bilevel`), VGAE meta attacks, random / DICE / PGD baselines,
scalable PR-BCD, and link-prediction / node-classification metrics."""
from poisonjax.graph.attacks import (MetattackConfig, check_perturbation, dice_attack, flips_to_adj,
                                     greedy_flip_optimizer, make_meta_problem, metattack, pgd_attack,
                                     random_attack, run_metattack, self_training_labels)
from poisonjax.graph.metrics import accuracy, average_precision, link_auc_ap, roc_auc
from poisonjax.graph.models import GCN, GraphEncoder, normalize_adj, train_gcn, train_vgae
from poisonjax.graph.prbcd import PRBCDConfig, make_prbcd_problem, run_prbcd
from poisonjax.graph.splits import LinkSplit, budget_from_rate, link_split
from poisonjax.graph.vgae_attacks import (VGAEAttackConfig, evaluate_vgae, vgae_meta_attack, vgae_oneshot)
