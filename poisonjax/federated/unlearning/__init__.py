"""Federated unlearning: SoUL (selective pruning, ICC 2025) and its baselines on the federated engine.

* :mod:`.scenario` -- backdoored-client and right-to-be-forgotten scenarios (IID / Dirichlet), the
  original training run with the history the baselines need (:func:`train_original`), fine-tuning
  from a given model (:func:`continue_from`).
* :mod:`.soul` -- SoUL: unit importance (forget / retain activation ratio), top-p pruning, server
  blend, fine-tuning (:func:`soul_unlearn`).
* :mod:`.baselines` -- retraining, fine-tuning only, FedEraser, projected gradient ascent.
* :mod:`.metrics` -- retain/forget accuracy, ASR, loss-threshold membership-inference AUC.
* :mod:`.costs` -- rounds, bytes and FLOPs counted analytically.

The clients stand for SoUL's drones; there is no drone data (image data sets are used instead).
"""
from poisonjax.federated.unlearning.baselines import (MethodResult, PGAConfig, federaser, finetune_only,
                                                      projected_gradient_ascent, reference_model, retrain)
from poisonjax.federated.unlearning.costs import Cost, forward_flops, model_bytes, num_params
from poisonjax.federated.unlearning.metrics import (auc_difference_se, evaluate, example_losses, mia_auc,
                                                    mia_auc_paired, mia_gap, roc_auc)
from poisonjax.federated.unlearning.scenario import (SCENARIOS, HistoryState, OriginalRun, Scenario, UnlearningModel,
                                                     check_forget_ids, continue_from, make_model, make_scenario,
                                                     pooled, subset_clients, train_original)
from poisonjax.federated.unlearning.soul import (SoULConfig, SoULResult, blend, client_unit_stats, importance_scores,
                                                 server_unit_stats, soul_masks, soul_unlearn)

__all__ = ["MethodResult", "PGAConfig", "federaser", "finetune_only", "projected_gradient_ascent", "reference_model",
           "retrain", "Cost", "forward_flops", "model_bytes", "num_params", "evaluate", "example_losses", "mia_auc",
           "mia_auc_paired", "mia_gap", "auc_difference_se",
           "roc_auc", "SCENARIOS", "HistoryState", "OriginalRun", "Scenario", "UnlearningModel", "check_forget_ids",
           "continue_from", "make_model", "make_scenario", "pooled", "subset_clients", "train_original", "SoULConfig",
           "SoULResult", "blend", "client_unit_stats", "importance_scores", "server_unit_stats", "soul_masks", "soul_unlearn"]
