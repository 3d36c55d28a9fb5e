"""The engine room: domain-agnostic pure functions over pytrees (DESIGN.md section 1).

Modules: :mod:`~poisonjax.core.types` (protocols), :mod:`~poisonjax.core.training`,
:mod:`~poisonjax.core.ensemble`, :mod:`~poisonjax.core.projections`, :mod:`~poisonjax.core.parallel`,
:mod:`~poisonjax.core.runner`, :mod:`~poisonjax.core.bilevel`, :mod:`~poisonjax.core.gradient_matching`,
:mod:`~poisonjax.core.autoregressive`, :mod:`~poisonjax.core.layers` (``PatchConv``),
:mod:`~poisonjax.core.validation`, :mod:`~poisonjax.core.reporting`, :mod:`~poisonjax.core.victims` (K victims),
:mod:`~poisonjax.core.poisoning`, :mod:`~poisonjax.core.pruning`, :mod:`~poisonjax.core.influence`,
:mod:`~poisonjax.core.privacy`, :mod:`~poisonjax.core.transformer`, :mod:`~poisonjax.core.study`,
:mod:`~poisonjax.core.names`, :mod:`~poisonjax.core.metrics` (ROC AUC with DeLong's covariance).
"""
from poisonjax.core.types import AttackOptimizer
from poisonjax.core.training import (TrainResult, accuracy, init_and_train, softmax_cross_entropy_loss,
                                     train_ensemble, train_full_batch, train_minibatch)
from poisonjax.core.ensemble import ensemble_apply, mean_std, stack, unstack
from poisonjax.core.projections import (project_box, project_capped_simplex, project_l2, project_linf,
                                        project_linf_box, topk_indices, topk_mask)
from poisonjax.core.parallel import (chunked_vmap, gather_to_host, host_local_to_global, initialize_distributed,
                                     is_main_process, make_mesh, shard_leading, sharded_vmap, victim_mesh)
from poisonjax.core.victims import (EarlyStoppingTraining, Victim, VictimTraining, evaluate_victims, flax_victim, predict_victims,
                                    train_victim, train_victims)
from poisonjax.core.runner import RunResult, run
from poisonjax.core.metrics import auc_difference_se, roc_auc, roc_auc_delong
from poisonjax.core.validation import PoisonJaxInputError

__all__ = [
    "AttackOptimizer", "TrainResult", "accuracy", "init_and_train", "softmax_cross_entropy_loss", "train_ensemble",
    "train_full_batch", "train_minibatch", "ensemble_apply", "mean_std", "stack", "unstack", "project_box",
    "project_capped_simplex", "project_l2", "project_linf", "project_linf_box", "topk_indices", "topk_mask",
    "initialize_distributed", "is_main_process", "make_mesh", "sharded_vmap", "chunked_vmap",
    "victim_mesh", "shard_leading", "host_local_to_global", "gather_to_host",
    "Victim", "VictimTraining", "EarlyStoppingTraining", "train_victim", "train_victims", "evaluate_victims", "predict_victims", "flax_victim",
    "RunResult", "run", "roc_auc", "roc_auc_delong", "auc_difference_se",
    "PoisonJaxInputError",
]
