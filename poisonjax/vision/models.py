"""Vision victims (flax.linen): a small CNN for 8x8/28x28/32x32 inputs."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


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
