"""Self-supervised pre-trained encoders and encoder backdoors (the encoders T-Core is evaluated on).

* :mod:`.encoders` -- :class:`EncoderBundle`, :func:`encode`, orbax :func:`save_encoder` / :func:`load_encoder`,
  the ``cifar10_jpeg_20k`` loader.
* :mod:`.augment` -- SimCLR's views in JAX.
* :mod:`.simclr` -- NT-Xent and resumable SimCLR pre-training (:func:`pretrain_simclr`, :func:`get_or_pretrain`).
* :mod:`.probe` -- linear probes: clean accuracy and ASR.
* :mod:`.encoder_attacks` -- BadEncoder (Jia et al. S&P 2022) and DRUPE (Tao et al. 2024), :func:`get_or_poison`.
"""
from poisonjax.vision.ssl.encoders import (ARCHS, EncoderBundle, build_encoder, encode, init_encoder,
                                           load_cifar10_20k, load_encoder, save_encoder)
from poisonjax.vision.ssl.augment import simclr_view, simclr_views
from poisonjax.vision.ssl.simclr import get_or_pretrain, nt_xent, pretrain_simclr
from poisonjax.vision.ssl.probe import (LinearHead, cifar_probe_split, fit_linear_head, linear_probe,
                                        probe_accuracy_and_asr)

__all__ = ["ARCHS", "EncoderBundle", "build_encoder", "encode", "init_encoder", "load_cifar10_20k", "load_encoder",
           "save_encoder", "simclr_view", "simclr_views", "get_or_pretrain", "nt_xent", "pretrain_simclr",
           "LinearHead", "cifar_probe_split", "fit_linear_head", "linear_probe", "probe_accuracy_and_asr"]
