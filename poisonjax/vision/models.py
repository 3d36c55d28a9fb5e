"""Vision victims (flax.linen): a small CNN for 8x8/28x28/32x32 inputs."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from poisonjax.core.layers import PatchConv  # noqa: F401  (re-exported: the layer lives in core)


class SmallCNN(nn.Module):
    r"""conv(3x3, c1) -> ReLU -> avgpool 2 -> conv(3x3, c2) -> ReLU -> global avg pool -> dense(hidden) -> ReLU -> dense(classes).

    Input ``[B, H, W, C]`` in [0, 1]; output logits ``[B, num_classes]``.
    ``features(x)`` (``return_features=True``) gives the penultimate ``[B, hidden]`` representation.
    """

    num_classes: int = 10
    channels: Sequence[int] = (16, 32)
    hidden: int = 64

    @nn.compact
    def __call__(self, x, return_features: bool = False):
        x = nn.relu(nn.Conv(self.channels[0], (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = nn.relu(nn.Conv(self.channels[1], (3, 3))(x))
        x = x.mean(axis=(1, 2))
        h = nn.relu(nn.Dense(self.hidden)(x))
        if return_features:
            return h
        return nn.Dense(self.num_classes)(h)


class FastSmallCNN(nn.Module):
    """:class:`SmallCNN` with :class:`PatchConv` layers: identical parameter tree (``Conv_0``,
    ``Conv_1``, ``Dense_0``, ``Dense_1``) and outputs, several times faster on CPU and under vmap.
    Params of one work in the other. ``head="flatten"`` gives :class:`ConvNet`."""

    num_classes: int = 10
    channels: Sequence[int] = (16, 32)
    hidden: int = 64
    head: str = "global_avg"        # "global_avg" (SmallCNN) | "flatten" (ConvNet)

    @nn.compact
    def __call__(self, x, return_features: bool = False):
        x = nn.relu(PatchConv(self.channels[0], name="Conv_0")(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = nn.relu(PatchConv(self.channels[1], name="Conv_1")(x))
        if self.head == "flatten":
            x = nn.avg_pool(x, (2, 2), (2, 2)).reshape(x.shape[0], -1)
        else:
            x = x.mean(axis=(1, 2))
        h = nn.relu(nn.Dense(self.hidden, name="Dense_0")(x))
        if return_features:
            return h
        return nn.Dense(self.num_classes, name="Dense_1")(h)


class ResidualBlock(nn.Module):
    """Pre-activation-free basic block: conv3x3 -> ReLU -> conv3x3, plus identity (or 1x1 conv when
    the width or stride changes), then ReLU. No batch norm (keeps the victim a pure function).
    Convolutions are :class:`PatchConv` (fast on CPU and under vmap)."""

    channels: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        y = nn.relu(PatchConv(self.channels, (3, 3), strides=(self.stride, self.stride))(x))
        y = PatchConv(self.channels, (3, 3))(y)
        if x.shape[-1] != self.channels or self.stride != 1:
            x = PatchConv(self.channels, (1, 1), strides=(self.stride, self.stride))(x)
        return nn.relu(x + y)


class SmallResNet(nn.Module):
    r"""A small ResNet: conv(3x3, c0) -> [ResidualBlock(c_i, stride 2 after the first)] -> global avg
    pool -> dense(hidden) -> ReLU -> dense(classes).

    Simplified from ResNet-18 (He et al. 2016): one block per stage, no batch norm (so that params
    stack and victims vmap without mutable state). Input ``[B, H, W, C]`` in [0, 1]; output logits
    ``[B, num_classes]``; ``return_features=True`` gives the ``[B, hidden]`` representation.
    """

    num_classes: int = 10
    channels: Sequence[int] = (16, 32, 64)
    hidden: int = 64

    @nn.compact
    def __call__(self, x, return_features: bool = False):
        x = nn.relu(PatchConv(self.channels[0], (3, 3))(x))
        for i, c in enumerate(self.channels):
            x = ResidualBlock(c, stride=1 if i == 0 else 2)(x)
        x = x.mean(axis=(1, 2))
        h = nn.relu(nn.Dense(self.hidden)(x))
        if return_features:
            return h
        return nn.Dense(self.num_classes)(h)


class MLPNet(nn.Module):
    """Flatten -> dense(hidden) -> ReLU -> dense(hidden) -> ReLU -> dense(classes): a backbone of a
    different family, for black-box surrogate ensembles. ``return_features`` gives ``[B, hidden]``."""

    num_classes: int = 10
    hidden: int = 128

    @nn.compact
    def __call__(self, x, return_features: bool = False):
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.hidden)(x))
        h = nn.relu(nn.Dense(self.hidden)(x))
        if return_features:
            return h
        return nn.Dense(self.num_classes)(h)


class ConvNet(FastSmallCNN):
    r"""A LeNet-style small CNN that keeps spatial layout: conv(3x3, c1) -> ReLU -> avgpool 2 ->
    conv(3x3, c2) -> ReLU -> avgpool 2 -> flatten -> dense(hidden) -> ReLU -> dense(classes).

    Unlike :class:`SmallCNN` (global average pooling after two convolutions, which caps 8x8-digits
    test accuracy near 0.95 and MNIST near 0.85 in a few epochs), the flattened head fits the
    training set, like the over-parameterised victims of Witches' Brew (Geiping et al., ICLR
    2021), which is what makes from-scratch gradient-matching poisoning possible. Convolutions are
    :class:`PatchConv`. Input ``[B, H, W, C]`` (H, W divisible by 4 for exact pooling); output
    logits ``[B, num_classes]``; ``return_features=True`` gives ``[B, hidden]``.
    """

    head: str = "flatten"


BACKBONES = {"small_cnn": FastSmallCNN, "convnet": ConvNet, "small_resnet": SmallResNet, "mlp": MLPNet}


def make_classifier(name: str, num_classes: int = 10, **kw) -> nn.Module:
    """A classifier by backbone name: ``small_cnn`` (:class:`FastSmallCNN`, the same network and
    parameters as :class:`SmallCNN`), ``convnet`` (:class:`ConvNet`), ``small_resnet`` or ``mlp``."""
    from poisonjax.core.validation import check_choice
    check_choice("model", name, BACKBONES)
    return BACKBONES[name](num_classes=num_classes, **kw)


class HashNet(nn.Module):
    r"""Deep hashing model: backbone features -> dense(bits) -> tanh, giving relaxed codes
    :math:`h = \tanh(W \phi(x) + b) \in (-1, 1)^K`; binary codes are :math:`\mathrm{sign}(h)`.

    ``backbone`` is a name in :data:`BACKBONES`; its classification head is unused (features only).
    Input ``[B, H, W, C]``; output ``[B, bits]``.
    """

    backbone: str = "small_cnn"
    bits: int = 32
    width: int = 0  # 0: backbone default channels

    @nn.compact
    def __call__(self, x):
        kw = {}
        if self.width and self.backbone in ("small_cnn", "convnet"):
            kw = {"channels": (self.width, 2 * self.width)}
        elif self.width and self.backbone == "small_resnet":
            kw = {"channels": (self.width, 2 * self.width, 4 * self.width)}
        elif self.width:
            kw = {"hidden": 8 * self.width}
        feats = BACKBONES[self.backbone](num_classes=1, **kw)(x, return_features=True)
        return jnp.tanh(nn.Dense(self.bits)(feats))
