"""Client models for federated simulation (flax.linen): an MLP and a small CNN.

Both take ``return_features=True`` to return the penultimate-layer representation (used by FLARE,
GeminiGuard and other latent-space defenses through ``features_fn(params, x)``).
Defined here (not imported from ``poisonjax.vision``) because domains do not import each other;
shared layers come from :mod:`poisonjax.core.layers`.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import flax.linen as nn
import jax.numpy as jnp

from poisonjax.core.layers import PatchConv


class MLP(nn.Module):
    r"""Flatten -> [Dense(h) -> ReLU] * len(hidden) -> Dense(num_classes).

    Input ``[B, ...]`` (flattened to ``[B, F]``); output logits ``[B, num_classes]``; with
    ``return_features=True`` the last hidden activation ``[B, hidden[-1]]``.
    """

    num_classes: int = 10
    hidden: Sequence[int] = (64,)

    @nn.compact
    def __call__(self, x, return_features: bool = False):
        h = x.reshape(x.shape[0], -1).astype(jnp.float32)
        for w in self.hidden:
            h = nn.relu(nn.Dense(w)(h))
        if return_features:
            return h
        return nn.Dense(self.num_classes)(h)


class CNN(nn.Module):
    r"""The FedAvg-paper style CNN (McMahan et al., 2017), smaller: conv(3x3, c1) -> ReLU -> maxpool 2 ->
    conv(3x3, c2) -> ReLU -> maxpool 2 -> flatten -> Dense(hidden) -> ReLU -> Dense(classes).

    Input ``[B, H, W, C]``; output logits ``[B, num_classes]``; features ``[B, hidden]``.
    The convolutions are :class:`poisonjax.core.layers.PatchConv` ('SAME', same parameters and math as
    ``nn.Conv``, computed as im2col + matmul): clients are trained under ``jax.vmap``, where a vmapped
    ``lax.conv`` becomes a slow grouped convolution on CPU.
    """

    num_classes: int = 10
    channels: Sequence[int] = (16, 32)
    hidden: int = 64

    @nn.compact
    def __call__(self, x, return_features: bool = False):
        x = nn.relu(PatchConv(self.channels[0], (3, 3))(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = nn.relu(PatchConv(self.channels[1], (3, 3))(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        h = nn.relu(nn.Dense(self.hidden)(x))
        if return_features:
            return h
        return nn.Dense(self.num_classes)(h)


class ModelFns(NamedTuple):
    """A model as pure functions: ``init(key) -> params``, ``apply(params, x) -> logits [B, C]``,
    ``features(params, x) -> [B, h]`` (penultimate layer)."""

    init: Callable
    apply: Callable
    features: Callable


def model_fns(module: nn.Module, sample_input) -> ModelFns:
    """Wrap a flax module whose ``__call__`` accepts ``return_features`` into :class:`ModelFns`.

    ``sample_input`` is one batch ``[B, ...]`` (only its shape/dtype is used by ``init``).
    """
    sample = jnp.asarray(sample_input)

    def init(key):
        return module.init(key, sample)

    def apply(params, x):
        return module.apply(params, x)

    def features(params, x):
        return module.apply(params, x, return_features=True)

    return ModelFns(init, apply, features)


def make_model(name: str, num_classes: int, sample_input, **kwargs) -> ModelFns:
    """``"mlp"`` (kwargs ``hidden``) or ``"cnn"`` (kwargs ``channels``, ``hidden``) as :class:`ModelFns`."""
    from poisonjax.core.validation import check_choice
    check_choice("model", name, ("mlp", "cnn"))
    if name == "mlp":
        mod = MLP(num_classes=num_classes, hidden=tuple(kwargs.get("hidden", (64,))))
    else:
        mod = CNN(num_classes=num_classes, channels=tuple(kwargs.get("channels", (16, 32))),
                  hidden=int(kwargs.get("hidden", 64)))
    return model_fns(mod, sample_input)
