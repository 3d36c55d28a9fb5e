"""Vision poisoning: models, gradient-matching attacks and deep-hashing victims.

* :mod:`poisonjax.vision.models` -- ``SmallCNN``, ``FastSmallCNN`` (same net, patch-matmul convs),
  ``SmallResNet``, ``MLPNet``, ``HashNet`` (backbone + tanh K-bit layer), ``make_classifier``.
* :mod:`poisonjax.vision.witches_brew` -- Witches' Brew problems, random-noise and Poison Frogs
  baselines, transfer-learning victims, trajectory-checkpoint surrogates.
* :mod:`poisonjax.vision.hashing` -- CSQ/DPN losses, hash centers, Hamming-ranking mAP, ASR, t-mAP.
* :mod:`poisonjax.vision.padhash` -- PADHASH problems and hashing-victim evaluation.
* The engine itself is :mod:`poisonjax.core.gradient_matching`.
* :mod:`poisonjax.vision.api` -- one-call :func:`witches_brew_attack` / :func:`padhash_attack` on your
  own arrays and your own network (numpy in, numpy out).
"""
from poisonjax.vision.api import padhash_attack, witches_brew_attack  # noqa: F401,E402  (one-call APIs)
