"""Vertical federated learning (issue 19): the engine, OPUS-VFL and attacks on it.

* :mod:`.data` -- vertical splits: image strips, tabular column groups, padding to one width, triggers.
* :mod:`.engine` -- stacked bottom models (one vmap), the active party's top model, the jit-compiled round
  (embeddings up, gradients down, bytes counted) with adaptive DP and the OPUS-VFL incentive step, as an
  :class:`~poisonjax.core.types.AttackOptimizer` for :func:`poisonjax.core.runner.run`.
* :mod:`.incentives` -- leave-one-out contribution, budget-balanced rewards, the eps update.
* :mod:`.federation` -- build a federation from arrays, per-run problems (vanilla / fixed_dp / opus), train.
* :mod:`.attacks` -- label inference (model completion with MixMatch; active variant), feature inference (GRN),
  gradient-replacement backdoor ASR.
"""
from poisonjax.federated.vertical.attacks import (aux_indices, backdoor_asr, grn_feature_inference,
                                                  model_completion, party_params)
from poisonjax.federated.vertical.data import VerticalData, apply_split, make_vertical, stamp_strip_trigger
from poisonjax.federated.vertical.engine import VFLProblem, VFLSpec, VFLState, make_vfl, opus_round
from poisonjax.federated.vertical.federation import (DEFENSES, Federation, build_federation, make_problem,
                                                     test_accuracy, train)
from poisonjax.federated.vertical.incentives import (balanced_rewards, equal_split, loo_contribution, loo_losses,
                                                     raw_rewards)

__all__ = ["DEFENSES", "Federation", "VFLProblem", "VFLSpec", "VFLState", "VerticalData", "apply_split",
           "aux_indices", "backdoor_asr", "balanced_rewards", "build_federation", "equal_split",
           "grn_feature_inference", "loo_contribution", "loo_losses", "make_problem", "make_vertical", "make_vfl",
           "model_completion", "opus_round", "party_params", "raw_rewards", "stamp_strip_trigger", "test_accuracy",
           "train"]
