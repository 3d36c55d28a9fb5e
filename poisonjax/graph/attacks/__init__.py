"""Structure-poisoning attacks on graphs, one module per job:

* :mod:`~poisonjax.graph.attacks.flips` -- applying / checking flips, the degree likelihood-ratio filter,
  greedy budgeted flipping (:func:`greedy_flip_optimizer`);
* :mod:`~poisonjax.graph.attacks.metagrad` -- Metattack (exact and first-order meta-gradients);
* :mod:`~poisonjax.graph.attacks.metapgd` -- Meta-PGD, Bernoulli sampling of flip sets, attacker-side selection;
* :mod:`~poisonjax.graph.attacks.baselines` -- random, DICE and PGD (Xu et al.) baselines;
* :mod:`~poisonjax.graph.attacks.selftrain` -- self-training labels and which labels an attack may see;
* :mod:`~poisonjax.graph.attacks.prbcd` -- PR-BCD (scalable, O(|E| + block) memory).

Every public name of these modules is re-exported here (``from poisonjax.graph import attacks as A;
A.metattack(cfg)``). The factories here (``metattack(cfg)``, ``meta_pgd(cfg, steps)``) build
:class:`~poisonjax.core.types.AttackOptimizer` objects; the one-call functions on numpy / scipy inputs are
:func:`poisonjax.graph.metattack`, :func:`poisonjax.graph.meta_pgd` and :func:`poisonjax.graph.prbcd`.
"""
from poisonjax.graph.attacks.baselines import dice_attack, pgd_attack, random_attack
from poisonjax.graph.attacks.flips import (MetaState, check_perturbation, diff_flips, drop_singleton_flips,
                                           flips_to_adj, flips_to_mask, greedy_flip_optimizer, ll_ratio_mask,
                                           ll_ratio_reference, num_steps, state_to_adj, upper_pairs_mask)
from poisonjax.graph.attacks.metagrad import (ATTACK_LOSSES, MetaProblem, MetattackConfig, adj_grad_from_hat,
                                              attack_loss, available_memory_bytes,
                                              dense_attack_estimate, make_meta_problem, meta_grad_dense, meta_grad_hat,
                                              meta_grad_hat_dense, meta_score, metattack, run_metattack,
                                              sparse_norm_adj, spmm)
from poisonjax.graph.attacks.metapgd import (MetaPGDState, meta_pgd, pgd_ascent_step, relaxed_adj,
                                             sample_flip_sets, select_flip_set)
from poisonjax.graph.attacks.prbcd import (PRBCDConfig, PRBCDProblem, flips_to_adj_sparse, make_prbcd_problem,
                                           run_prbcd)
from poisonjax.graph.attacks.selftrain import SURROGATES, attacker_labels, self_training_labels
