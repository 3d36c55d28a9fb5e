"""T-Core (IEEE S&P 2025): trusted-core bootstrapping against backdoors when adapting a pre-trained encoder.

* :mod:`~poisonjax.vision.tcore.common` -- the encoder + linear-head classifier, multi-depth features,
  BN channel masks, linear probe and fine-tuning.
* :mod:`~poisonjax.vision.tcore.sifting` -- stage 1: DBSCAN/kNN seed sifting, confusion-training expansion.
* :mod:`~poisonjax.vision.tcore.channels` -- stage 2: norm-only unlearning, channel masks, flag and reset.
* :mod:`~poisonjax.vision.tcore.bootstrap` -- stage 3: the growth schedule.
* :mod:`~poisonjax.vision.tcore.process` -- the three stages as one resumable runner process
  (:func:`run_tcore`).

The study is ``poisonjax run tcore`` (``experiments/tcore.py``).
"""
from poisonjax.vision.tcore.bootstrap import grow, growth_plan
from poisonjax.vision.tcore.channels import filter_channels, flag_channels, learn_channel_mask, unlearn_norm
from poisonjax.vision.tcore.common import as_classifier, check_encoder, fine_tune, stage_features, train_head
from poisonjax.vision.tcore.process import TCoreConfig, TCoreResult, check_inputs, run_tcore, tcore_process
from poisonjax.vision.tcore.sifting import expand_seeds, knn_label_consistency, sift_seeds

__all__ = ["grow", "growth_plan", "filter_channels", "flag_channels", "learn_channel_mask", "unlearn_norm",
           "as_classifier", "check_encoder", "fine_tune", "stage_features", "train_head", "TCoreConfig",
           "TCoreResult", "check_inputs", "run_tcore", "tcore_process", "expand_seeds", "knn_label_consistency",
           "sift_seeds"]
