"""Backdoor attacks and defenses for image classifiers (the suite T-Core is measured against).

* :mod:`~poisonjax.vision.backdoor.resnet` -- PreAct-ResNet-18 and a narrow PreAct ResNet, with
  BatchNorm (running statistics vmappable across victims), plus :func:`conv_bn_pairs` for CLP.
* :mod:`~poisonjax.vision.backdoor.victim` -- init/apply/train/predict for victims with or without
  BatchNorm, on :mod:`poisonjax.core.victims`.
* :mod:`~poisonjax.vision.backdoor.attacks` -- BadNets, Blended, SIG, WaNet, TaCT, Adap-Blend,
  Adap-Patch, label-consistent: pure functions ``(key, x, y, ...) -> BackdoorSet``.
* :mod:`~poisonjax.vision.backdoor.detectors` -- Activation Clustering, Spectral Signatures, STRIP,
  ABL isolation: pure functions returning a ``DetectionReport`` (scores, flags);
  :mod:`~poisonjax.vision.backdoor.spectre` (SPECTRE) and :mod:`~poisonjax.vision.backdoor.confusion`
  (Confusion Training) return the same report.
* :mod:`~poisonjax.vision.backdoor.repairs` -- fine-pruning, CLP, Neural Cleanse, ABL unlearning,
  I-BAU: ``(module, variables, ...) -> (variables, info)`` for one victim (vmap over K).

The study is ``poisonjax run backdoor`` (``experiments/backdoor.py``).
"""
from poisonjax.vision.backdoor.attacks import (ATTACK_FNS, ATTACKS, BackdoorSet, adap_blend, adap_patch, asr,
                                               badnets, blended, check_images, label_consistent, poison, sig,
                                               tact, wanet)
from poisonjax.vision.backdoor.detectors import (DetectionReport, abl_isolation, activation_clustering,
                                                 detection_rates, flag_top_k, spectral_signatures, strip,
                                                 tpr_at_fpr)
from poisonjax.vision.backdoor.confusion import confusion_training
from poisonjax.vision.backdoor.spectre import spectre
from poisonjax.vision.backdoor.repairs import abl_unlearn, clp, fine_pruning, i_bau, neural_cleanse
from poisonjax.vision.backdoor.resnet import PreActResNet, PreActResNet18, conv_bn_pairs, narrow_resnet

__all__ = ["ATTACKS", "ATTACK_FNS", "BackdoorSet", "adap_blend", "adap_patch", "asr", "badnets", "blended",
           "check_images", "label_consistent", "poison", "sig", "tact", "wanet", "DetectionReport",
           "abl_isolation", "activation_clustering", "detection_rates", "flag_top_k", "spectral_signatures",
           "strip", "tpr_at_fpr", "spectre", "confusion_training", "abl_unlearn", "clp", "fine_pruning", "i_bau", "neural_cleanse",
           "PreActResNet", "PreActResNet18", "conv_bn_pairs", "narrow_resnet"]
