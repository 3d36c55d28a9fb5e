r"""Layers shared by several rooms (vision and federated CNNs, hashing backbones).

:class:`PatchConv` computes a SAME convolution as patch extraction plus one matmul; see its docstring
for why (CPU speed, and speed under ``jax.vmap`` over parameters).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class PatchConv(nn.Module):
    r"""A 'SAME' stride-s convolution computed as patches @ kernel (im2col + one matmul).

    Same parameters as ``flax.linen.Conv`` (``kernel [kh, kw, C_in, C_out]``, ``bias [C_out]``,
    LeCun-normal / zeros init) and the same math,
    :math:`y_{b,i,j} = \sum_{u,v,c} x_{b, si+u, sj+v, c} K_{u,v,c,:} + b`, but the product is a
    plain matmul, which XLA on CPU runs several times faster than its convolution for small images,
    and which stays a batched matmul under ``jax.vmap`` over parameters (K victims / M surrogates),
    where a vmapped ``lax.conv`` becomes a slow grouped convolution.
    """

    features: int
    kernel_size: Sequence[int] = (3, 3)
    strides: Sequence[int] = (1, 1)

    @nn.compact
    def __call__(self, x):
        import jax
        kh, kw = self.kernel_size
        cin = x.shape[-1]
        k = self.param("kernel", nn.initializers.lecun_normal(), (kh, kw, cin, self.features))
        b = self.param("bias", nn.initializers.zeros, (self.features,))
        if (kh, kw) == (1, 1):
            s0, s1 = self.strides
            return x[:, ::s0, ::s1, :] @ k[0, 0] + b
        patches = jax.lax.conv_general_dilated_patches(
            x, (kh, kw), tuple(self.strides), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        # patch features are ordered (C_in, kh, kw)
        kk = jnp.transpose(k, (2, 0, 1, 3)).reshape(cin * kh * kw, self.features)
        return patches @ kk + b
