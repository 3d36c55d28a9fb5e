r"""Step 1 of RAVEN: the prompt grid and ``N`` sampled answers per prompt per model.

Sampling goes through :func:`poisonjax.core.autoregressive.generate`: one ``lax.scan`` over
positions, ``vmap`` over the ``P x N`` sequences. The score of the next token at position ``t`` is

* a forced one-hot (score :math:`10^6`) on the prompt token while ``t`` is inside the prompt
  (``<bos> prompt <sep>``),
* :math:`\log p_\theta(x_t \mid x_{<t})` afterwards; the generator adds Gumbel noise of scale
  ``T``, and :math:`\arg\max_v(\ell_v + T g_v) = \arg\max_v(\ell_v / T + g_v)` is an exact sample from
  :math:`\mathrm{softmax}(\ell / T)` (the Gumbel-max trick),
* after the stop token ``<eos>`` has been emitted, a forced ``<pad>``.

Simplified: no KV cache (each step re-runs the model on the prefix; fine at 32 tokens).
"""
from __future__ import annotations

import functools
from typing import List, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core.autoregressive import generate
from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.llm.corpus import BOS, EOS, PAD, PERSPECTIVES, SEP, Bank, Vocab, prompt_text

_FORCE = 1e6


class PromptGrid(NamedTuple):
    """``texts`` (list of P prompts), ``topic [P]``, ``perspective [P]`` indices into the topic /
    perspective lists, ``tokens [P, L]`` (``<bos> prompt <sep>`` then padding), ``lengths [P]``."""

    texts: List[str]
    topic: np.ndarray
    perspective: np.ndarray
    tokens: np.ndarray
    lengths: np.ndarray


def prompt_grid(topics: Sequence[str], vocab: Vocab, bank: Bank, *, perspectives: Sequence[int] = None,
                paraphrase: int = 0, length: int = 32) -> PromptGrid:
    """The topic x perspective grid (row-major: topic outer). Raises on an empty grid."""
    perspectives = list(range(len(PERSPECTIVES))) if perspectives is None else list(perspectives)
    if len(topics) == 0 or len(perspectives) == 0:
        raise PoisonJaxInputError(f"topics / perspectives: the prompt grid is empty "
                                  f"({len(topics)} topics x {len(perspectives)} perspectives); give at least one of each")
    texts, tt, pp, toks, lens = [], [], [], [], []
    for ti, topic in enumerate(topics):
        for pi in perspectives:
            text = prompt_text(topic, pi, paraphrase, bank)
            ids = [BOS] + vocab.encode(text) + [SEP]
            row = np.zeros(length, np.int32)
            row[:len(ids)] = ids
            texts.append(text); tt.append(ti); pp.append(pi); toks.append(row); lens.append(len(ids))
    return PromptGrid(texts, np.asarray(tt), np.asarray(pp), np.stack(toks), np.asarray(lens, np.int32))


def check_sampling_args(n: int, temperature: float) -> None:
    """``n >= 2`` (entropy needs at least two samples) and ``temperature > 0``."""
    if isinstance(n, bool) or int(n) != n or n < 2:
        raise PoisonJaxInputError(f"n_samples must be an integer >= 2 (semantic entropy needs several samples), got {n!r}")
    if not (float(temperature) > 0):
        raise PoisonJaxInputError(f"temperature must be > 0 (RAVEN samples; 0 would be greedy), got {temperature!r}")


def _sample_prompt(model, params, prompt, plen, key, n, length, temperature):
    """``n`` samples ``[n, L]`` for ONE prompt ``prompt [L]`` (``<bos> ... <sep>`` then pad)."""
    return _sample_group(model, params, jnp.broadcast_to(prompt, (n,) + prompt.shape), jnp.full((n,), plen),
                         key, n, length, temperature)


def _sample_group(model, params, prompts, plens, key, n, length, temperature):
    """One sample each for ``n`` prompts ``prompts [n, L]`` with lengths ``plens [n]`` (one key)."""
    per_seq = {"prompt": prompts, "plen": plens}

    def score_fn(prefix, t, k, aux):
        del k
        V = model.vocab_size
        logits = jax.nn.log_softmax(model.apply(params, prefix[None])[0, jnp.maximum(t - 1, 0)])
        pos = jnp.arange(prefix.shape[0])
        done = jnp.any((prefix == EOS) & (pos < t) & (pos >= aux["plen"]))
        forced_tok = jnp.where(t < aux["plen"], aux["prompt"][t], PAD)
        forced = jax.nn.one_hot(forced_tok, V) * _FORCE
        return jnp.where((t < aux["plen"]) | done, forced, logits.at[PAD].set(-_FORCE))

    return generate(score_fn, n, length, model.vocab_size, key, num_candidates=1,
                    temperature=temperature, per_seq=per_seq).tokens


@functools.partial(jax.jit, static_argnames=("model", "n", "length", "temperature"))
def _sample(model, params, prompts, plens, seeds, n, length, temperature):
    keys = jax.vmap(jax.random.PRNGKey)(seeds)
    return jax.vmap(lambda pr, pl, k: _sample_prompt(model, params, pr, pl, k, n, length, temperature))(
        prompts, plens, keys)


@functools.partial(jax.jit, static_argnames=("model", "n", "length", "temperature"))
def _sample_panel(model, stacked, prompts, plens, seeds, n, length, temperature):
    return jax.vmap(lambda p, s: _sample(model, p, prompts, plens, s, n, length, temperature))(stacked, seeds)


@functools.partial(jax.jit, static_argnames=("model", "n", "length", "temperature"))
def _sample_groups(model, params, prompts, plens, seeds, n, length, temperature):
    keys = jax.vmap(jax.random.PRNGKey)(seeds)
    return jax.vmap(lambda pr, pl, k: _sample_group(model, params, pr, pl, k, n, length, temperature))(
        prompts, plens, keys)


def sample_groups(model, params, prompts, lengths, temperature: float, seeds) -> jax.Array:
    """``[P, n, L]``: one sample per row of ``prompts [P, n, L]`` (``<bos> ... <sep>`` then pad,
    ``lengths [P, n]``), group ``p`` drawn with ``PRNGKey(seeds[p])``. Used when the ``n`` samples of
    one request have different conditioning (e.g. a retrieved passage each, :mod:`poisonjax.llm.retrieval`)."""
    prompts = np.asarray(prompts)
    check_sampling_args(max(2, prompts.shape[1]), temperature)
    return _sample_groups(model, params, jnp.asarray(prompts), jnp.asarray(lengths, jnp.int32),
                          jnp.asarray(seeds, jnp.uint32), int(prompts.shape[1]), int(prompts.shape[2]), float(temperature))


def sample_answers(model, params, grid: PromptGrid, n: int, temperature: float, seeds) -> jax.Array:
    """``[P, n, L]`` token sequences (prompt + sampled answer) of one model; prompt ``p`` is sampled
    with ``PRNGKey(seeds[p])`` (the same per-request seed an HTTP backend sends, so local and served
    sampling agree)."""
    check_sampling_args(n, temperature)
    return _sample(model, params, jnp.asarray(grid.tokens), jnp.asarray(grid.lengths),
                   jnp.asarray(seeds, jnp.uint32), int(n), int(grid.tokens.shape[1]), float(temperature))


def sample_panel(model, stacked_params, grid: PromptGrid, n: int, temperature: float, seeds) -> jax.Array:
    """``[K, P, n, L]``: :func:`sample_answers` vmapped over ``K`` same-shape models, ``seeds [K, P]``."""
    check_sampling_args(n, temperature)
    return _sample_panel(model, stacked_params, jnp.asarray(grid.tokens), jnp.asarray(grid.lengths),
                         jnp.asarray(seeds, jnp.uint32), int(n), int(grid.tokens.shape[1]), float(temperature))


def request_seeds(seed: int, model_slot: int, n_prompts: int) -> np.ndarray:
    """Per-prompt sampling seeds of one model: ``seed * 10**6 + model_slot * 10**3 + p``."""
    return (int(seed) * 10 ** 6 + int(model_slot) * 10 ** 3 + np.arange(n_prompts)).astype(np.uint32)


def answer_texts(tokens, grid: PromptGrid, vocab: Vocab) -> List[List[str]]:
    """Decode ``[P, n, L]`` samples to ``P`` lists of ``n`` answer strings (text after ``<sep>``, up to ``<eos>``)."""
    tokens = np.asarray(tokens)
    out = []
    for p in range(tokens.shape[0]):
        out.append([vocab.decode(tokens[p, j, grid.lengths[p]:]) for j in range(tokens.shape[1])])
    return out
