r"""Sequential recommenders in flax.linen: SASRec and GRU4Rec, with a shared scoring interface.

Both map a right-aligned, 0-padded item sequence ``[B, L]`` to hidden states ``[B, L, d]``; the
score of item :math:`v` after position :math:`\ell` is the dot product with the (shared) item
embedding, :math:`\hat y_{\ell v} = h_\ell^\top e_v` (item 0 = padding, never recommended).

* **SASRec** (Kang & McAuley, ICDM 2018): item + learned positional embeddings, ``num_blocks``
  causal self-attention blocks (pre-LayerNorm, as in the official code), point-wise FFN, dropout.
* **GRU4Rec** (Hidasi et al., ICLR 2016), in the next-item form used by SRS benchmarks: item
  embedding, one GRU layer, a dense projection back to the item-embedding space.
  Simplified: no session-parallel mini-batches or BPR-max loss of the original.
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from poisonjax.core.transformer import causal_block
from poisonjax.core.validation import PoisonJaxInputError, check_choice


class SASRec(nn.Module):
    """Self-attentive sequential recommender (causal Transformer encoder).

    Attributes:
      num_items: ``V`` (embedding table has ``V + 1`` rows, row 0 = padding).
      max_len: ``L`` (positional embeddings).
      hidden: ``d``.
      num_blocks, num_heads, dropout: as in the SASRec paper (defaults: 2 blocks, 1 head, 0.2).
    """

    num_items: int
    max_len: int
    hidden: int = 64
    num_blocks: int = 2
    num_heads: int = 1
    dropout: float = 0.2

    def setup(self):
        self.item_emb = nn.Embed(self.num_items + 1, self.hidden,
                                 embedding_init=nn.initializers.normal(self.hidden ** -0.5), name="item_emb")
        self.pos_emb = nn.Embed(self.max_len, self.hidden, embedding_init=nn.initializers.normal(0.02))
        self.attn = [nn.MultiHeadDotProductAttention(num_heads=self.num_heads, dropout_rate=self.dropout)
                     for _ in range(self.num_blocks)]
        self.ln1 = [nn.LayerNorm(epsilon=1e-8) for _ in range(self.num_blocks)]
        self.ln2 = [nn.LayerNorm(epsilon=1e-8) for _ in range(self.num_blocks)]
        self.ff1 = [nn.Dense(self.hidden) for _ in range(self.num_blocks)]
        self.ff2 = [nn.Dense(self.hidden) for _ in range(self.num_blocks)]
        self.drop = nn.Dropout(self.dropout)
        self.ln_out = nn.LayerNorm(epsilon=1e-8)

    def __call__(self, seqs: jax.Array, deterministic: bool = True, emb: Optional[jax.Array] = None) -> jax.Array:
        """``seqs [B, L] int`` -> hidden states ``[B, L, d]`` (position ``l`` sees items ``<= l``).

        ``emb [B, L, d]`` optionally replaces the looked-up item embeddings (for gradients with
        respect to the input embeddings, as Yue et al.'s adversarial-item choice needs).
        """
        L = seqs.shape[-1]
        valid = (seqs > 0)[..., None].astype(jnp.float32)
        e = self.item_emb(seqs) if emb is None else emb
        x = e * (self.hidden ** 0.5) + self.pos_emb(jnp.arange(L))
        x = self.drop(x, deterministic=deterministic) * valid
        causal = nn.make_causal_mask(seqs)
        for b in range(self.num_blocks):
            x = causal_block(x, attn=self.attn[b], ln1=self.ln1[b], ln2=self.ln2[b], ff1=self.ff1[b],
                             ff2=self.ff2[b], drop=self.drop, mask=causal, valid=valid,
                             deterministic=deterministic)
        return self.ln_out(x)

    def item_embeddings(self) -> jax.Array:
        """``[V + 1, d]`` item embedding table (output layer is tied to it)."""
        return self.item_emb.embedding


class GRU4Rec(nn.Module):
    """GRU next-item recommender with tied item embeddings (see module doc).

    Padding is on the left, so the GRU state at padded positions stays at its (zero) initial value
    only approximately; padded positions are zeroed in the input and never used as outputs.
    """

    num_items: int
    max_len: int
    hidden: int = 64
    dropout: float = 0.2

    def setup(self):
        self.item_emb = nn.Embed(self.num_items + 1, self.hidden,
                                 embedding_init=nn.initializers.normal(self.hidden ** -0.5), name="item_emb")
        self.gru = nn.RNN(nn.GRUCell(self.hidden))
        self.proj = nn.Dense(self.hidden)
        self.drop = nn.Dropout(self.dropout)

    def __call__(self, seqs: jax.Array, deterministic: bool = True, emb: Optional[jax.Array] = None) -> jax.Array:
        valid = (seqs > 0)[..., None].astype(jnp.float32)
        e = self.item_emb(seqs) if emb is None else emb
        x = self.drop(e, deterministic=deterministic) * valid
        h = self.gru(x)
        return self.proj(self.drop(h, deterministic=deterministic))

    def item_embeddings(self) -> jax.Array:
        return self.item_emb.embedding


MODELS = {"sasrec": SASRec, "gru4rec": GRU4Rec}


def make_model(name: str, num_items: int, max_len: int, hidden: int = 64, dropout: float = 0.2,
               num_blocks: int = 2, num_heads: int = 1) -> nn.Module:
    """Build ``"sasrec"`` or ``"gru4rec"``; bad names/sizes raise :class:`PoisonJaxInputError`."""
    check_choice("model", name, MODELS)
    if num_items < 1 or max_len < 2 or hidden < 1:
        raise PoisonJaxInputError(f"need num_items >= 1, max_len >= 2, hidden >= 1; got {num_items}, {max_len}, {hidden}")
    if name == "sasrec":
        return SASRec(num_items, max_len, hidden, num_blocks, num_heads, dropout)
    return GRU4Rec(num_items, max_len, hidden, dropout)


def item_table(model: nn.Module, params) -> jax.Array:
    """``[V + 1, d]`` item embeddings of ``params``."""
    return model.apply(params, method=lambda m: m.item_embeddings())


def last_hidden(model: nn.Module, params, seqs: jax.Array) -> jax.Array:
    """``[B, d]`` representation after the last (right-most) position of right-aligned ``seqs``."""
    return model.apply(params, seqs, True)[:, -1]


def score_all(model: nn.Module, params, seqs: jax.Array) -> jax.Array:
    r"""``[B, V + 1]`` next-item scores :math:`h_{u}^\top e_v` for all items (column 0 = padding, set to -inf)."""
    s = last_hidden(model, params, seqs) @ item_table(model, params).T
    return s.at[:, 0].set(-jnp.inf)
