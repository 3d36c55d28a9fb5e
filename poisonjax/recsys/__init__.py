"""Sequential recommenders and their poisoning: SASRec/GRU4Rec, DDSP and baselines, HR/NDCG/diversity.

Modules: :mod:`.models` (flax SASRec, GRU4Rec), :mod:`.training` (next-item losses, K-seed vmapped
victims), :mod:`.attacks` (DDSP, Yue et al., greedy, heuristics), :mod:`.metrics` (full-ranking
HR@k/NDCG@k, promotion, diversity, fake-user detector AUC), :mod:`.api` (one-call :func:`ddsp_attack` on
your own sequence file or list). Study: ``poisonjax run ddsp``.
"""
from poisonjax.recsys.models import GRU4Rec, SASRec, make_model, score_all  # noqa: F401
from poisonjax.recsys.training import make_trainer, next_item_loss  # noqa: F401
from poisonjax.recsys.attacks import (METHODS, build_surrogate, dual_promotion_loss, generate_fake,  # noqa: F401
                                      heuristic_generate, plain_promotion_loss, select_targets,
                                      surrogate_generate, yue_generate)
from poisonjax.recsys.api import ddsp_attack, read_sequences, write_sequences  # noqa: F401,E402
