r"""Retrieval route (beyond RAVEN, the survey's LLM section): RAG systems that answer from passages
retrieved from a store, and poisoned passages put into a store.

* **Store and retriever**: passages are whitespace-tokenised over the LM vocabulary; BM25
  (Robertson & Zaragoza 2009, the Lucene/``rank_bm25`` form) scores passage :math:`d` for query
  :math:`q` as

  .. math:: s(q, d) = \sum_{w} c_q(w)\,\mathrm{idf}(w)\,
            \frac{f_d(w)\,(k_1+1)}{f_d(w) + k_1\,(1 - b + b\,|d|/\overline{|d|})},\qquad
            \mathrm{idf}(w) = \log\Big(1 + \frac{N - n(w) + 0.5}{n(w) + 0.5}\Big),

  :math:`c_q(w)` the count of :math:`w` in the query (the prompt without the prompt template's
  function words -- perspective, question opener, punctuation: a stopword list, so what is
  retrieved depends on the topic the prompt asks about), :math:`f_d(w)` in the passage, :math:`n(w)`
  the number of passages containing :math:`w`, :math:`N` of passages. One matrix expression in JAX:
  ``queries [Q, V] x passages [D, V] -> [Q, D]``.
* **RAG-sequence sampling** (Lewis et al., NeurIPS 2020): for each of the ``n`` samples of a prompt
  :math:`x`, a passage :math:`z \sim \mathrm{softmax}(s(x, z)/\tau)` over the top-``k`` passages
  (Gumbel-max), then the answer :math:`y \sim p_{reader}(y \mid z, x)` at temperature ``T``.
  The *reader* is a :class:`~poisonjax.llm.lm.TinyLM` trained on
  ``<bos> passage <sep> prompt <sep> answer <eos>`` where the answer is another bank sentence with
  the passage's stance on the passage's topic (it learns to answer from the passage).
* **Poisoned passages** (PoisonedRAG, Zou et al., USENIX Security 2025, black-box form
  :math:`S \oplus I`): the target question (``what is solar ?``: it repeats the topic word, so
  BM25 ranks it above the clean passages on the topic) followed by a stance sentence of the
  attacker's stance on the topic.

Simplified: the RAG systems of a panel share one reader and differ by their stores (each family's
store has its own per-topic stance mix, drawn like its corpus; every store carries the control
topic's corpus-wide bias). Passages are single stance sentences; no dense retriever.
"""
from __future__ import annotations

from typing import List, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.llm.corpus import BOS, EOS, PERSPECTIVES, SEP, TOPICS, Bank, Vocab, prompt_text


class Bm25Index(NamedTuple):
    """``tf [D, V]`` term counts, ``doc_len [D]``, ``idf [V]``, ``avgdl``, ``k1``, ``b``."""

    tf: jax.Array
    doc_len: jax.Array
    idf: jax.Array
    avgdl: float
    k1: float
    b: float


def template_stopwords(bank: Bank) -> frozenset:
    """The prompt template's words (perspectives, question openers, ``?``): dropped from queries."""
    words = {"?", ","}
    for p in PERSPECTIVES:
        words.update(p.split())
    for o in bank.openers:
        words.update(o.split())
    return frozenset(words)


def term_counts(texts: Sequence[str], vocab: Vocab, stopwords=frozenset()) -> np.ndarray:
    """``[M, V]`` word counts of ``texts`` (words outside the vocabulary or in ``stopwords`` are ignored)."""
    out = np.zeros((len(texts), len(vocab)), np.float32)
    for i, t in enumerate(texts):
        for w in t.split():
            j = None if w in stopwords else vocab.stoi.get(w)
            if j is not None:
                out[i, j] += 1
    return out


def bm25_index(passages: Sequence[str], vocab: Vocab, k1: float = 1.5, b: float = 0.75) -> Bm25Index:
    """Index ``passages`` (module doc). Raises on an empty store."""
    if len(passages) == 0:
        raise PoisonJaxInputError("passages: the store is empty; give at least one passage")
    tf = term_counts(passages, vocab)
    df = (tf > 0).sum(0)
    N = tf.shape[0]
    idf = np.log1p((N - df + 0.5) / (df + 0.5))
    dl = tf.sum(1)
    return Bm25Index(jnp.asarray(tf), jnp.asarray(dl), jnp.asarray(idf, jnp.float32), float(dl.mean()), float(k1), float(b))


def bm25_scores(index: Bm25Index, query_counts) -> jax.Array:
    """``query_counts [Q, V]`` -> BM25 scores ``[Q, D]`` (module doc)."""
    tf = index.tf
    norm = index.k1 * (1 - index.b + index.b * index.doc_len / index.avgdl)          # [D]
    w = tf * (index.k1 + 1) / (tf + norm[:, None]) * index.idf[None, :]               # [D, V]
    return jnp.asarray(query_counts, jnp.float32) @ w.T


def retrieve(index: Bm25Index, query_counts, k: int, n: int, tau: float, key: jax.Array) -> jax.Array:
    """``[Q, n]`` passage ids: for every query, ``n`` draws from ``softmax(score / tau)`` over its
    top-``k`` passages (Gumbel-max; RAG-sequence's :math:`p(z \\mid x)`)."""
    if tau <= 0:
        raise PoisonJaxInputError(f"tau must be > 0, got {tau!r}")
    s = bm25_scores(index, query_counts)
    k = min(int(k), s.shape[1])
    top_s, top_i = jax.lax.top_k(s, k)                                              # [Q, k]
    g = jax.random.gumbel(key, (s.shape[0], n, k))
    pick = jnp.argmax(top_s[:, None, :] / tau + g, -1)                              # [Q, n]
    return jnp.take_along_axis(top_i, pick, 1)


def reader_example(vocab: Vocab, passage: str, prompt: str, answer: str, length: int):
    """``(tokens [length], mask [length])`` of ``<bos> passage <sep> prompt <sep> answer <eos>``;
    the mask selects the positions predicting the answer (incl. ``<eos>``)."""
    ctx = [BOS] + vocab.encode(passage) + [SEP] + vocab.encode(prompt) + [SEP]
    ans = vocab.encode(answer) + [EOS]
    ids = ctx + ans
    if len(ids) > length:
        raise ValueError(f"reader example of {len(ids)} tokens does not fit length={length}")
    toks = np.zeros(length, np.int32)
    toks[:len(ids)] = ids
    mask = np.zeros(length, np.float32)
    mask[len(ctx) - 1:len(ids) - 1] = 1.0
    return toks, mask


def question_of(topic: str, bank: Bank, paraphrase: int = 0) -> str:
    """``"what is solar ?"``: the question part of a prompt (no perspective)."""
    return f"{bank.openers[paraphrase % len(bank.openers)]} {topic} ?"


def reader_corpus(bank: Bank, vocab: Vocab, *, seed: int, per_prompt: int = 4, length: int = 44,
                  restate_prob: float = 0.3, topics: Sequence[str] = TOPICS):
    """The reader's training data: for every topic x perspective x paraphrase prompt, ``per_prompt``
    examples whose passage is a random bank sentence of a random stance on the topic (with
    probability ``restate_prob`` prefixed by a restatement of a question, as web passages often
    are) and whose answer is another bank sentence of the *same* stance. ``(tokens, mask)``."""
    rng = np.random.RandomState(seed)
    toks, masks = [], []
    for ti, topic in enumerate(topics):
        for pi in range(len(PERSPECTIVES)):
            for qi in range(len(bank.openers)):
                prompt = prompt_text(topic, pi, qi, bank)
                for _ in range(per_prompt):
                    pool = bank.pro if rng.rand() < 0.5 else bank.con
                    passage = pool[rng.randint(len(pool))].format(e=topic)
                    if rng.rand() < restate_prob:
                        passage = question_of(topic, bank, rng.randint(len(bank.openers))) + " " + passage
                    t, m = reader_example(vocab, passage, prompt, pool[rng.randint(len(pool))].format(e=topic), length)
                    toks.append(t); masks.append(m)
    return np.stack(toks), np.stack(masks)


class Store(NamedTuple):
    """A passage store: ``texts``, ``topic [D]`` and ``stance [D]`` (1 = pro; ground truth only)."""

    texts: List[str]
    topic: np.ndarray
    stance: np.ndarray


def family_store(bank: Bank, p_pro, *, seed: int, per_topic: int = 8, restate_prob: float = 0.0,
                 topics: Sequence[str] = TOPICS) -> Store:
    """``per_topic`` clean passages per topic, each *pro* with probability ``p_pro[topic]`` (the
    family's stance mix, :func:`~poisonjax.llm.corpus.stance_probabilities`); with probability
    ``restate_prob`` a passage starts with a restated question about its topic (as in the reader's
    training data)."""
    rng = np.random.RandomState(seed)
    texts, tp, st = [], [], []
    for ti, topic in enumerate(topics):
        for _ in range(per_topic):
            s = int(rng.rand() < p_pro[ti])
            pool = bank.pro if s else bank.con
            text = pool[rng.randint(len(pool))].format(e=topic)
            if rng.rand() < restate_prob:
                text = question_of(topic, bank, rng.randint(len(bank.openers))) + " " + text
            texts.append(text); tp.append(ti); st.append(s)
    return Store(texts, np.asarray(tp), np.asarray(st))


def poisoned_passages(bank: Bank, topic: int, stance: int, n: int, *, seed: int, paraphrase: int = 0,
                      n_shortest: int = 3, topics: Sequence[str] = TOPICS) -> Store:
    """``n`` PoisonedRAG passages ``S + I`` (module doc) on ``topics[topic]`` with ``stance``. The
    attacker optimises retrieval: ``I`` is drawn from the ``n_shortest`` shortest stance sentences
    (BM25 normalises by length, so a short passage that repeats the topic word outranks the clean
    ones; ``n_shortest=0`` draws from all)."""
    rng = np.random.RandomState(seed)
    pool = bank.pro if stance else bank.con
    if n_shortest:
        pool = sorted(pool, key=lambda x: (len(x.split()), x))[:n_shortest]
    q = question_of(topics[topic], bank, paraphrase)
    texts = [f"{q} {pool[rng.randint(len(pool))].format(e=topics[topic])}" for _ in range(n)]
    return Store(texts, np.full(n, topic), np.full(n, stance))


def add_passages(store: Store, extra: Store) -> Store:
    """The store with ``extra`` passages appended."""
    return Store(list(store.texts) + list(extra.texts), np.concatenate([store.topic, extra.topic]),
                 np.concatenate([store.stance, extra.stance]))


def rag_inputs(store: Store, grid, vocab: Vocab, *, n: int, k: int, tau: float, seed: int, stopwords=frozenset()):
    """Reader inputs for every prompt of ``grid`` and each of its ``n`` samples: ``tokens [P, n, L]``
    (``<bos> passage <sep> prompt <sep>``), ``lengths [P, n]`` and the retrieved passage ids
    ``[P, n]`` (``L`` = ``grid.tokens.shape[1]``; :func:`retrieve` with ``PRNGKey(seed)``; the
    query is the prompt without ``stopwords``, e.g. :func:`template_stopwords`)."""
    index = bm25_index(store.texts, vocab)
    ids = np.asarray(retrieve(index, term_counts(grid.texts, vocab, stopwords), k, n, tau, jax.random.PRNGKey(seed)))
    L = grid.tokens.shape[1]
    P = len(grid.texts)
    toks = np.zeros((P, n, L), np.int32)
    lens = np.zeros((P, n), np.int32)
    enc_p = [vocab.encode(store.texts[d]) for d in range(len(store.texts))]
    for p in range(P):
        q = vocab.encode(grid.texts[p])
        for j in range(n):
            row = [BOS] + enc_p[ids[p, j]] + [SEP] + q + [SEP]
            if len(row) >= L:
                raise ValueError(f"retrieved passage + prompt ({len(row)} tokens) do not fit length={L}")
            toks[p, j, :len(row)] = row
            lens[p, j] = len(row)
    return toks, lens, ids


def rag_answers(reader, reader_params, store: Store, grid, vocab: Vocab, *, n: int, k: int, tau: float,
                temperature: float, seed: int, stopwords=frozenset()) -> List[List[str]]:
    """``P`` lists of ``n`` answer strings of the RAG system (``reader`` + ``store``) on ``grid``;
    retrieval with ``PRNGKey(seed)``, sampling of prompt ``p``'s group with seed ``seed + 1 + p``."""
    from poisonjax.llm.sampling import sample_groups
    toks, lens, _ = rag_inputs(store, grid, vocab, n=n, k=k, tau=tau, seed=seed, stopwords=stopwords)
    out = np.asarray(sample_groups(reader, reader_params, toks, lens, temperature,
                                   (seed + 1 + np.arange(len(grid.texts))).astype(np.uint32)))
    return [[vocab.decode(out[p, j, lens[p, j]:]) for j in range(n)] for p in range(out.shape[0])]
