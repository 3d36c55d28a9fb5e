r"""Causal (decoder-only) transformer blocks in flax.linen, shared by every room.

One pre-LayerNorm block, as in SASRec's official code (Kang & McAuley, ICDM 2018) and GPT-2
(Radford et al. 2019), on hidden states ``x [B, L, d]`` with a validity mask ``valid [B, L, 1]``:

.. math::
    q = \mathrm{LN}_1(x),\quad a = \mathrm{MHA}(q, x, x; \text{causal}),\quad
    x' = r + a,\quad y = W_2\,\mathrm{act}(W_1\,\mathrm{LN}_2(x')),\quad x'' = (x' + y)\odot \text{valid}

where the attention residual ``r`` is ``q`` for SASRec (its code adds the *normalised* query back,
``residual_from_norm=True``) and ``x`` for GPT-style blocks (``residual_from_norm=False``).

:func:`causal_block` is the block as a function of its sub-modules, so a module that already owns
them under its own names (SASRec: ``attn_i``, ``ln1_i``, ...) keeps its parameter tree unchanged;
:class:`CausalBlock` is the same block as a self-contained module.
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def causal_block(x: jax.Array, *, attn: nn.Module, ln1: nn.Module, ln2: nn.Module, ff1: nn.Module,
                 ff2: nn.Module, drop: nn.Module, mask: jax.Array, valid: jax.Array,
                 deterministic: bool = True, residual_from_norm: bool = True,
                 activation: Callable = nn.relu) -> jax.Array:
    """One pre-LN causal block (module doc). ``x [B, L, d]``, ``mask [B, 1, L, L]`` (e.g.
    ``nn.make_causal_mask``), ``valid [B, L, 1]`` float; returns ``[B, L, d]``."""
    q = ln1(x)
    a = attn(q, x, mask=mask, deterministic=deterministic)
    x = (q if residual_from_norm else x) + a
    y = ln2(x)
    y = ff2(drop(activation(ff1(y)), deterministic=deterministic))
    return (x + drop(y, deterministic=deterministic)) * valid


class CausalBlock(nn.Module):
    """:func:`causal_block` as a module (GPT-style residual by default).

    Attributes: ``hidden`` ``d``, ``num_heads``, ``ff_mult`` (FFN width ``ff_mult * d``), ``dropout``,
    ``residual_from_norm`` (see module doc), ``ln_eps``.
    """

    hidden: int
    num_heads: int = 2
    ff_mult: int = 4
    dropout: float = 0.0
    residual_from_norm: bool = False
    ln_eps: float = 1e-6

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, valid: jax.Array, deterministic: bool = True) -> jax.Array:
        """``x [B, L, d]`` -> ``[B, L, d]``; ``mask [B, 1, L, L]`` bool, ``valid [B, L, 1]``."""
        return causal_block(
            x, attn=nn.MultiHeadDotProductAttention(num_heads=self.num_heads, dropout_rate=self.dropout, name="attn"),
            ln1=nn.LayerNorm(epsilon=self.ln_eps, name="ln1"), ln2=nn.LayerNorm(epsilon=self.ln_eps, name="ln2"),
            ff1=nn.Dense(self.ff_mult * self.hidden, name="ff1"), ff2=nn.Dense(self.hidden, name="ff2"),
            drop=nn.Dropout(self.dropout), mask=mask, valid=valid, deterministic=deterministic,
            residual_from_norm=self.residual_from_norm, activation=nn.gelu)


def causal_mask(valid_tokens: jax.Array) -> jax.Array:
    """``[B, 1, L, L]`` mask: position ``i`` attends to ``j <= i`` where token ``j`` is valid."""
    return nn.combine_masks(nn.make_causal_mask(valid_tokens), nn.make_attention_mask(valid_tokens, valid_tokens))
