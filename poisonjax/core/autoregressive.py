r"""Step-wise sequence generation with scoring, candidate re-ranking and constraint masks.

Domain-agnostic engine for generators that build ``S`` token sequences of length ``T`` over a
vocabulary ``0..V-1`` one position at a time (DESIGN.md: ``core/autoregressive.py``): fake-user
sequences in recommender poisoning (DDSP, Yue et al.), token sequences in text poisoning, etc.

The whole generation is one ``lax.scan`` over positions :math:`t = 0..T-1`; inside a step every
sequence is handled by ``vmap``. At step :math:`t`, for sequence :math:`s` with prefix
:math:`x_{s,<t}`:

1. **Score**: :math:`z_{s} = \mathrm{score\_fn}(x_s, t, k_{s,t}) \in \mathbb R^V` (``x_s`` holds
   the prefix and zeros at positions :math:`\ge t`), plus optional Gumbel noise of scale
   ``temperature`` (sampling instead of greedy choice).
2. **Candidates**: the ``num_candidates`` (``C``) best tokens by :math:`z_s`.
3. **Re-rank** each candidate :math:`c` under the diversity constraints,

   .. math:: \tilde z_{sc} = z_{sc} - \lambda_{in}\, n_{s}(c) - \lambda_{glob} \log(1 + N(c))
             - \infty\cdot[\text{c violates a hard constraint}],

   where :math:`n_s(c)` counts :math:`c` in the prefix of sequence :math:`s` and :math:`N(c)`
   counts it over *all* sequences so far (shared usage counts). Hard constraints: a per-token cap
   on occurrences in one sequence (``token_caps``), a minimum gap between repeats of a token
   (``min_gap``), a cap on total usage across sequences (``max_global``) and banned tokens.
   Masked candidates get :math:`-10^9` (not :math:`-\infty`), so if every candidate violates a
   constraint the least-bad one is still chosen (documented fallback, keeps shapes static); the
   per-sequence constraints (caps, gaps, bans) get :math:`-2\cdot 10^9`, so an exhausted
   cross-sequence cap is broken before any per-sequence one.
4. **Choose** :math:`x_{st} = \arg\max_c \tilde z_{sc}` (or the ``forced`` token at positions where
   one is given), and add the chosen tokens to :math:`N`.

Shared counts are updated once per position: the ``S`` sequences choose their token at step
:math:`t` simultaneously, seeing the counts of steps :math:`< t` (the sequential, one-sequence-at-a-
time order of a Python loop would couple all ``S`` choices and could not be vectorised).

Memory is :math:`O(S\,(T + C) + V)` plus what ``score_fn`` needs; per-sequence counts are
computed for the ``C`` candidates only, never as an ``[S, V]`` table.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

_MASKED = -1e9


class GenerationResult(NamedTuple):
    """``tokens [S, T]`` generated sequences and ``counts [V]`` final usage counts (all sequences)."""

    tokens: jax.Array
    counts: jax.Array


def generate(score_fn: Callable[..., jax.Array], num_seqs: int, length: int,
             vocab_size: int, key: jax.Array, *, num_candidates: int = 32, temperature: float = 0.0,
             within_penalty: float = 0.0, global_penalty: float = 0.0,
             token_caps: Optional[jax.Array] = None, min_gap: Optional[jax.Array] = None,
             max_global: Optional[int] = None, banned: Optional[jax.Array] = None,
             forced: Optional[jax.Array] = None, first_tokens: Optional[jax.Array] = None,
             init_counts: Optional[jax.Array] = None, per_seq=None,
             global_exempt: Optional[jax.Array] = None, lengths: Optional[jax.Array] = None) -> GenerationResult:
    """Generate ``num_seqs`` sequences of ``length`` tokens (see module doc for the rule).

    Args:
      score_fn: ``(prefix [T] int32, t scalar int32, key, aux) -> [V]`` scores of the next token
        for ONE sequence (the generator vmaps it); ``aux`` is that sequence's slice of ``per_seq``
        (``None`` if not given). It may close over arrays (model params, utilities).
      num_seqs: ``S`` (static).
      length: ``T`` (static).
      vocab_size: ``V``.
      key: PRNG key (Gumbel noise and ``score_fn`` keys).
      num_candidates: ``C``, candidates re-ranked per step (static, ``<= V``).
      temperature: Gumbel-noise scale; 0 = greedy.
      within_penalty: :math:`\\lambda_{in}`, penalty per earlier occurrence in the same sequence.
      global_penalty: :math:`\\lambda_{glob}`, penalty on :math:`\\log(1 + N(c))`.
      token_caps: ``[V]`` int, max occurrences of each token in one sequence (negative = no cap).
      min_gap: ``[V]`` int, minimum distance between two occurrences of a token in one sequence
        (``1`` = no constraint; ``2`` forbids immediate repeats).
      max_global: cap on the total occurrences of a token over all sequences (``None`` = none).
      banned: ``[V]`` bool, tokens never chosen (e.g. padding id 0).
      forced: ``[T]`` int, the token to place at each position (negative = free choice); forced
        tokens bypass all constraints (fixed schedules, e.g. target at every other position).
      first_tokens: ``[S]`` int, optional fixed first token of each sequence (overrides ``forced[0]``).
      init_counts: ``[V]`` initial shared counts (e.g. continuing an earlier batch of sequences).
      global_exempt: ``[V]`` bool, tokens exempt from ``max_global`` and ``global_penalty`` (e.g.
        the promoted target, whose repetition is limited per sequence by ``token_caps`` instead).
      per_seq: optional pytree with leading axis ``S`` of per-sequence conditioning (e.g. the
        persona/direction each fake user follows), passed to ``score_fn`` as ``aux``.
      lengths: optional ``[S]`` int, the length of each sequence (``<= length``): positions
        ``t >= lengths[s]`` hold the padding token 0 and do not enter the shared counts (variable
        lengths with static shapes, e.g. fake users whose lengths follow the real distribution).

    Returns:
      :class:`GenerationResult` with ``tokens [S, T] int32`` and ``counts [V] int32``.
    """
    S, T, V = int(num_seqs), int(length), int(vocab_size)
    C = min(int(num_candidates), V)
    caps = jnp.full((V,), -1, jnp.int32) if token_caps is None else jnp.asarray(token_caps, jnp.int32)
    gaps = jnp.ones((V,), jnp.int32) if min_gap is None else jnp.asarray(min_gap, jnp.int32)
    ban = jnp.zeros((V,), bool) if banned is None else jnp.asarray(banned, bool)
    frc = jnp.full((T,), -1, jnp.int32) if forced is None else jnp.asarray(forced, jnp.int32)
    counts0 = jnp.zeros((V,), jnp.int32) if init_counts is None else jnp.asarray(init_counts, jnp.int32)
    gmax = jnp.int32(2 ** 30 if max_global is None else int(max_global))
    exempt = jnp.zeros((V,), bool) if global_exempt is None else jnp.asarray(global_exempt, bool)
    positions = jnp.arange(T)
    lens = None if lengths is None else jnp.asarray(lengths, jnp.int32)

    def choose_one(prefix, t, k, counts, aux):
        k_score, k_noise = jax.random.split(k)
        z = score_fn(prefix, t, k_score, aux).astype(jnp.float32)
        z = jnp.where(ban, _MASKED, z)
        if temperature > 0:
            z = z + temperature * jax.random.gumbel(k_noise, z.shape)
        zc, cand = jax.lax.top_k(z, C)                                      # [C]
        in_prefix = (prefix[None, :] == cand[:, None]) & (positions[None, :] < t)  # [C, T]
        n_in = in_prefix.sum(1)
        last = jnp.max(jnp.where(in_prefix, positions[None, :], -10 ** 6), axis=1)
        n_glob = jnp.where(exempt[cand], 0, counts[cand])
        hard = ((caps[cand] >= 0) & (n_in >= caps[cand])) | ((t - last) < gaps[cand]) | ban[cand]
        soft = n_glob >= gmax
        rerank = zc - within_penalty * n_in - global_penalty * jnp.log1p(n_glob.astype(jnp.float32))
        rerank = jnp.where(hard, 2 * _MASKED + rerank, jnp.where(soft, _MASKED + rerank, rerank))
        return cand[jnp.argmax(rerank)]

    def step(carry, t):
        tokens, counts, key = carry
        key, k = jax.random.split(key)
        keys = jax.random.split(k, S)
        chosen = jax.vmap(choose_one, in_axes=(0, None, 0, None, 0 if per_seq is not None else None))(
            tokens, t, keys, counts, per_seq)
        chosen = jnp.where(frc[t] >= 0, frc[t], chosen)
        if first_tokens is not None:
            chosen = jnp.where(t == 0, jnp.asarray(first_tokens, jnp.int32), chosen)
        live = jnp.ones((S,), jnp.int32) if lengths is None else (t < lens).astype(jnp.int32)
        chosen = chosen.astype(jnp.int32) * live
        tokens = tokens.at[:, t].set(chosen)
        counts = counts.at[chosen].add(live)
        return (tokens, counts, key), None

    init = (jnp.zeros((S, T), jnp.int32), counts0, key)
    (tokens, counts, _), _ = jax.lax.scan(step, init, jnp.arange(T))
    return GenerationResult(tokens, counts)
