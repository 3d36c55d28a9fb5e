r"""CIFAR ResNets with BatchNorm for the backdoor suite (flax.linen).

* :class:`PreActResNet` -- pre-activation ResNet (He et al., ECCV 2016, "Identity mappings in deep
  residual networks"), the BackdoorBench victim. ``PreActResNet18()`` is ``blocks=(2, 2, 2, 2)``,
  ``widths=(64, 128, 256, 512)``; :func:`narrow_resnet` is a one-block-per-stage, 16/32/64-wide
  variant for CPU-sized runs.

  stem ``conv3x3(w_0)`` -> stages of :class:`PreActBlock` (stride 2 at the first block of every stage
  after the first) -> ``bn_final`` -> ReLU -> global average pool -> ``linear``.

  :class:`PreActBlock`: :math:`o = \mathrm{relu}(\mathrm{BN}_1(x))`,
  :math:`y = \mathrm{conv}_2(\mathrm{relu}(\mathrm{BN}_2(\mathrm{conv}_1(o)))) + s(x)` with the shortcut
  :math:`s(x) = x`, or :math:`\mathrm{conv}_{1\times1}(o)` when the stride or width changes.

* Variables are ``{"params", "batch_stats"}``; ``train=True`` normalises with batch statistics and
  returns the updated running statistics (``mutable=["batch_stats"]``), ``train=False`` uses the
  running averages. Everything is a pure function of the variables, so K victims stack on a leading
  axis and ``jax.vmap`` trains them at once, running statistics included.
* ``return_features=True`` gives the penultimate ``[B, w_last]`` representation (after the final
  BN + ReLU + pooling), the features of Activation Clustering / Spectral Signatures.
* ``return_stages=True`` gives a list of pooled ``[B, w_i]`` outputs, one per stage (the residual stream
  after stage ``i``, spatially averaged; the last entry is the ``return_features`` representation):
  the multi-depth features of T-Core's seed sifting.
* Convolutions are :class:`poisonjax.core.layers.PatchConv` (same parameters as ``nn.Conv``, fast on
  CPU and under ``vmap``). Module names are stable (``stem``, ``s{i}b{j}/conv1``, ``.../bn2``,
  ``bn_final``, ``linear``) so that pruning defenses (fine-pruning, CLP) address units by path.

Input ``[B, H, W, C]`` in [0, 1]; output logits ``[B, num_classes]``.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from poisonjax.core.layers import PatchConv


def _bn(train: bool, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class PreActBlock(nn.Module):
    """Pre-activation basic block (see the module docstring)."""

    channels: int
    stride: int = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        o = nn.relu(_bn(train, "bn1")(x))
        if x.shape[-1] != self.channels or self.stride != 1:
            short = PatchConv(self.channels, (1, 1), strides=(self.stride, self.stride), name="shortcut")(o)
        else:
            short = x
        y = PatchConv(self.channels, (3, 3), strides=(self.stride, self.stride), name="conv1")(o)
        y = nn.relu(_bn(train, "bn2")(y))
        y = PatchConv(self.channels, (3, 3), name="conv2")(y)
        return y + short


class PreActResNet(nn.Module):
    """Pre-activation ResNet with BatchNorm; ``blocks[i]`` blocks of width ``widths[i]`` per stage."""

    num_classes: int = 10
    widths: Sequence[int] = (64, 128, 256, 512)
    blocks: Sequence[int] = (2, 2, 2, 2)

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False, return_stages: bool = False):
        x = PatchConv(self.widths[0], (3, 3), name="stem")(x)
        stages = []
        for i, (w, nb) in enumerate(zip(self.widths, self.blocks)):
            for j in range(nb):
                x = PreActBlock(w, stride=2 if (i > 0 and j == 0) else 1, name=f"s{i}b{j}")(x, train)
            stages.append(x.mean(axis=(1, 2)))
        x = nn.relu(_bn(train, "bn_final")(x))
        h = x.mean(axis=(1, 2))
        if return_stages:   # pooled residual stream after each stage; the last entry = the features h
            return stages[:-1] + [h]
        if return_features:
            return h
        return nn.Dense(self.num_classes, name="linear")(h)


def PreActResNet18(num_classes: int = 10) -> PreActResNet:
    """PreAct-ResNet-18 (BackdoorBench's CIFAR-10 victim): 2-2-2-2 blocks, widths 64-128-256-512."""
    return PreActResNet(num_classes=num_classes)


def narrow_resnet(num_classes: int = 10, width: int = 16) -> PreActResNet:
    """A narrow PreAct ResNet for CPU runs: one block per stage, widths ``(w, 2w, 4w)``."""
    return PreActResNet(num_classes=num_classes, widths=(width, 2 * width, 4 * width), blocks=(1, 1, 1))


class BNConvNet(nn.Module):
    r"""A small CNN with BatchNorm for CPU-sized runs: ``conv0`` (3x3, c_0) -> ``bn0`` -> ReLU -> avgpool 2
    -> ``conv1`` (3x3, c_1) -> ``bn1`` -> ReLU -> global average pool -> ``linear``.

    Same conventions as :class:`PreActResNet` (``train``, ``return_features`` giving ``[B, c_1]``,
    variables ``{"params", "batch_stats"}``); every conv is followed by its own BatchNorm, so CLP's
    conv/BN pairing is exact. Used by the ``quick`` study variant and the tests, where a ResNet is too
    slow on a shared CPU."""

    num_classes: int = 10
    channels: Sequence[int] = (16, 32)

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False):
        x = nn.relu(_bn(train, "bn0")(PatchConv(self.channels[0], (3, 3), name="conv0")(x)))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = nn.relu(_bn(train, "bn1")(PatchConv(self.channels[1], (3, 3), name="conv1")(x)))
        h = x.mean(axis=(1, 2))
        if return_features:
            return h
        return nn.Dense(self.num_classes, name="linear")(h)


def conv_bn_pairs(module) -> List[Tuple[str, str]]:
    r"""``(conv path, BN path)`` pairs for CLP: the BatchNorm that normalises each convolution's output
    channels. Exact for ``conv1 -> bn2`` inside a block; for the residual stream the BN that follows
    (the next block's ``bn1``, or ``bn_final``) is paired with the preceding block's ``conv2`` (the stem
    for the first block), as BackdoorBench's CLP does by module order on PreAct-ResNet-18 (the shortcut
    also feeds that BN, so the bound is an approximation there). :class:`BNConvNet`: ``(conv_i, bn_i)``."""
    if isinstance(module, BNConvNet):
        return [(f"conv{i}", f"bn{i}") for i in range(len(module.channels))]
    pairs, prev = [], "stem"
    for i, nb in enumerate(module.blocks):
        for j in range(nb):
            b = f"s{i}b{j}"
            pairs.append((prev, f"{b}/bn1"))
            pairs.append((f"{b}/conv1", f"{b}/bn2"))
            prev = f"{b}/conv2"
    pairs.append((prev, "bn_final"))
    return pairs
