r"""Step 2 of RAVEN: ``entails(premises, hypotheses) -> probabilities``, three implementations.

RAVEN (like semantic entropy, Kuhn et al. ICLR 2023) asks an NLI model whether one answer entails
another. Our answers are stance sentences about one topic, so *entailment* here is *stance
entailment*: answer :math:`a` entails :math:`b` when :math:`b`'s stance on the topic follows from
:math:`a`'s. Simplified: the judges score stance agreement, not full NLI (neutral pairs are not
modelled). Each judge maps ``premises`` (list of ``M`` str) and ``hypotheses`` (``M`` str) to
``[M]`` probabilities; :meth:`Judge.matrix` gives the all-pairs ``[n, n]`` matrix batched.

* :class:`EmbeddingJudge` -- a JAX classifier on sentence embeddings: a sentence's embedding is the
  mean of learned word vectors :math:`u = \frac1{|s|}\sum_{w\in s} E_w`, where every *entity* word (the
  held-out training entities, and at inference the topics being probed: ``entities``) is read as one
  shared token ``<entity>`` (target anonymisation, as in stance detection: the stance of "a gem of a X ."
  must not depend on X; without it the judge read "a gem of a nuclear ." as *con* with probability
  0.998, because "nuclear" alone had a con logit learnt from SST-2), its stance logit
  :math:`z(u) = w_2^\top \tanh(W_1 u + b_1) + b_2`, and
  :math:`P(a \Rightarrow b) = \sigma(z_a)\sigma(z_b) + (1-\sigma(z_a))(1-\sigma(z_b))`, trained with
  binary cross-entropy on pairs built from templates *disjoint from the LM corpus* (SST-2 sentences
  that are not in the LM's stance bank, with held-out entities substituted), plus the stance
  cross-entropy of the single sentences (the pair loss alone has a saddle at :math:`\sigma(z)=1/2`).
* :class:`LexiconJudge` -- an independent signal: a sentence's stance probability is
  :math:`\sigma(\beta \sum_w \ell(w))` with the SST-2 log-odds lexicon ``ell`` (entity words count 0:
  "opera" alone has log-odds -0.62); same pair formula.
* :class:`HTTPJudge` -- an LLM behind an OpenAI-compatible endpoint, asked
  ``"Premise: ... Hypothesis: ... Does the premise entail the hypothesis? Answer yes or no."``;
  probability = share of ``yes`` over ``n`` samples.
"""
from __future__ import annotations

import collections
import copy
from typing import Dict, List, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from poisonjax.llm.corpus import HELDOUT_ENTITIES, lexicon_score


def pair_probability(pa: jax.Array, pb: jax.Array) -> jax.Array:
    r""":math:`p_a p_b + (1-p_a)(1-p_b)`: probability that two independent stance draws agree."""
    return pa * pb + (1 - pa) * (1 - pb)


ENTITY = "<entity>"


class Judge:
    """Interface: ``stance_prob(texts) -> [M]`` (probability of the *pro* stance) for the local
    judges; ``entails(premises, hypotheses) -> [M]``; ``matrix(texts) -> [n, n]``. A local judge reads
    every word of ``entities`` as ``<entity>`` (:meth:`with_entities`, :meth:`anonymise`)."""

    entities: frozenset = frozenset()

    def with_entities(self, entities: Sequence[str]) -> "Judge":
        """A copy of this judge that also reads every word of ``entities`` (e.g. the probed topics) as
        ``<entity>`` (target anonymisation, module doc)."""
        if isinstance(entities, str):
            raise TypeError(f"entities must be a sequence of words, got the string {entities!r}")
        out = copy.copy(self)
        out.entities = frozenset(self.entities) | frozenset(entities)
        return out

    def anonymise(self, text: str) -> List[str]:
        """``text``'s words, each entity word replaced by ``<entity>``."""
        return [ENTITY if w in self.entities else w for w in text.split()]

    def stance_prob(self, texts: Sequence[str]) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def entails(self, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
        """``[M]`` probabilities that ``premises[i]`` entails ``hypotheses[i]``."""
        if len(premises) != len(hypotheses):
            raise ValueError(f"premises and hypotheses must have the same length, got {len(premises)} and {len(hypotheses)}")
        return np.asarray(pair_probability(jnp.asarray(self.stance_prob(premises)), jnp.asarray(self.stance_prob(hypotheses))))

    def matrix(self, texts: Sequence[str]) -> np.ndarray:
        """``[n, n]`` with entry ``(i, j) = P(texts[i] entails texts[j])`` (one stance call per text)."""
        p = jnp.asarray(self.stance_prob(texts))
        return np.asarray(pair_probability(p[:, None], p[None, :]))


class LexiconJudge(Judge):
    """Lexicon stance judge (module doc); ``beta`` scales the summed log-odds."""

    def __init__(self, lexicon: Dict[str, float], beta: float = 1.0, entities: Sequence[str] = ()):
        self.lexicon, self.beta, self.entities = lexicon, beta, frozenset(entities)

    def stance_prob(self, texts):
        s = np.array([lexicon_score(" ".join(self.anonymise(t)), self.lexicon) for t in texts], np.float64)
        return 1.0 / (1.0 + np.exp(-self.beta * s))


class EmbeddingParams(NamedTuple):
    emb: jax.Array
    w1: jax.Array
    b1: jax.Array
    w2: jax.Array
    b2: jax.Array


def _embed(params: EmbeddingParams, ids: jax.Array) -> jax.Array:
    """``ids [M, L]`` (0 = padding / unknown) -> ``[M, d]`` mean word vectors."""
    m = (ids > 0).astype(jnp.float32)[..., None]
    return (params.emb[ids] * m).sum(1) / jnp.maximum(m.sum(1), 1.0)


def _stance_logit(params: EmbeddingParams, ids: jax.Array) -> jax.Array:
    u = _embed(params, ids)
    return (jnp.tanh(u @ params.w1 + params.b1) @ params.w2)[:, 0] + params.b2


class EmbeddingJudge(Judge):
    """The trained JAX classifier (module doc). Build with :func:`train_embedding_judge`; give the
    topics being probed with :meth:`~Judge.with_entities` (they are then read as ``<entity>``)."""

    def __init__(self, params: EmbeddingParams, vocab: Dict[str, int], max_words: int = 40,
                 entities: Sequence[str] = ()):
        self.params, self.vocab, self.max_words = params, vocab, max_words
        self.entities = frozenset(entities)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``[M, max_words]`` word ids (0 = padding or unknown; entity words -> the ``<entity>`` id)."""
        ids = np.zeros((len(texts), self.max_words), np.int32)
        for i, t in enumerate(texts):
            w = [self.vocab.get(x, 0) for x in self.anonymise(t)][:self.max_words]
            ids[i, :len(w)] = w
        return ids

    def stance_prob(self, texts):
        return np.asarray(jax.nn.sigmoid(_stance_logit(self.params, jnp.asarray(self.encode(texts)))))


def stance_pairs(texts: Sequence[str], labels: Sequence[int], n_pairs: int, seed: int,
                 entities: Sequence[str] = HELDOUT_ENTITIES):
    """``n_pairs`` (premise, hypothesis, entails) triples from labelled sentences: each sentence gets
    ``it`` / ``this film`` style mentions replaced by a random held-out entity; ``entails`` = same label."""
    rng = np.random.RandomState(seed)
    texts = list(texts)
    labels = np.asarray(labels)
    by = {0: np.where(labels == 0)[0], 1: np.where(labels == 1)[0]}
    prem, hyp, y = [], [], []
    for k in range(n_pairs):
        same = k % 2 == 0
        a = rng.randint(len(texts))
        lb = labels[a] if same else 1 - labels[a]
        b = by[int(lb)][rng.randint(len(by[int(lb)]))]
        e = entities[rng.randint(len(entities))]
        sub = lambda t: " ".join(e if w in ("film", "movie", "it") else w for w in t.split())
        prem.append(sub(texts[a])); hyp.append(sub(texts[b])); y.append(int(same))
    return prem, hyp, np.asarray(y, np.float32)


def train_embedding_judge(texts: Sequence[str], labels: Sequence[int], *, n_pairs: int = 6000, dim: int = 32,
                          hidden: int = 32, steps: int = 400, learning_rate: float = 0.02, seed: int = 0,
                          min_count: int = 2, weight_decay: float = 1e-4) -> EmbeddingJudge:
    """Train the embedding classifier on pairs from ``texts`` / ``labels`` (full-batch Adam, BCE).
    The held-out entities substituted into the pairs are read as one ``<entity>`` token (module doc)."""
    cnt = collections.Counter(w for t in texts for w in t.split())
    words = sorted(w for w, c in cnt.items() if c >= min_count and w not in HELDOUT_ENTITIES and w != ENTITY)
    vocab = {w: i + 1 for i, w in enumerate(words + [ENTITY])}
    prem, hyp, y = stance_pairs(texts, labels, n_pairs, seed)
    k = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = EmbeddingParams(jax.random.normal(k[0], (len(vocab) + 1, dim)) * 0.1,
                             jax.random.normal(k[1], (dim, hidden)) / np.sqrt(dim), jnp.zeros(hidden),
                             jax.random.normal(k[2], (hidden, 1)) / np.sqrt(hidden), jnp.zeros(()))
    judge = EmbeddingJudge(params, vocab, entities=HELDOUT_ENTITIES)
    a, b, yy = jnp.asarray(judge.encode(prem)), jnp.asarray(judge.encode(hyp)), jnp.asarray(y)
    xs, ys = jnp.asarray(judge.encode(list(texts))), jnp.asarray(np.asarray(labels, np.float32))
    opt = optax.adamw(learning_rate, weight_decay=weight_decay)

    def loss(p):
        pr = pair_probability(jax.nn.sigmoid(_stance_logit(p, a)), jax.nn.sigmoid(_stance_logit(p, b)))
        pr = jnp.clip(pr, 1e-6, 1 - 1e-6)
        pair = -jnp.mean(yy * jnp.log(pr) + (1 - yy) * jnp.log1p(-pr))
        return pair + optax.sigmoid_binary_cross_entropy(_stance_logit(p, xs), ys).mean()

    @jax.jit
    def train(p):
        def body(c, _):
            p, o = c
            g = jax.grad(loss)(p)
            u, o = opt.update(g, o, p)
            return (optax.apply_updates(p, u), o), None
        (p, _), _ = jax.lax.scan(body, (p, opt.init(p)), None, length=steps)
        return p

    judge.params = train(params)
    return judge


def pair_accuracy(judge: Judge, premises, hypotheses, labels) -> float:
    """Accuracy of ``entails > 0.5`` against 0/1 ``labels``."""
    return float(np.mean((judge.entails(premises, hypotheses) > 0.5) == (np.asarray(labels) > 0.5)))


def judge_agreement(judges: Dict[str, Judge], premises, hypotheses) -> Dict[str, float]:
    """Share of pairs on which each two judges give the same decision (``entails > 0.5``)."""
    dec = {k: j.entails(premises, hypotheses) > 0.5 for k, j in judges.items()}
    names = sorted(dec)
    return {f"{a}~{b}": float(np.mean(dec[a] == dec[b])) for i, a in enumerate(names) for b in names[i + 1:]}


class HTTPJudge(Judge):
    """An LLM judge behind an OpenAI-compatible endpoint (see :mod:`poisonjax.llm.client`).

    ``P(a => b)`` = share of answers starting with ``yes`` among ``n`` samples of the prompt
    ``"premise: {a} hypothesis: {b} entails ?"`` -- the wording is the judge model's contract
    (``poisonjax serve`` with a judge model answers exactly this prompt).
    """

    def __init__(self, client, model: str, n: int = 3, temperature: float = 1.0, seed: int = 0):
        self.client, self.model, self.n, self.temperature, self.seed = client, model, n, temperature, seed

    @staticmethod
    def prompt(premise: str, hypothesis: str) -> str:
        return f"premise: {premise} hypothesis: {hypothesis} entails ?"

    def entails(self, premises, hypotheses):
        if len(premises) != len(hypotheses):
            raise ValueError(f"premises and hypotheses must have the same length, got {len(premises)} and {len(hypotheses)}")
        out = []
        for i, (a, b) in enumerate(zip(premises, hypotheses)):
            texts = self.client.chat(self.model, self.prompt(a, b), n=self.n, temperature=self.temperature,
                                     max_tokens=2, seed=self.seed + i)
            out.append(np.mean([t.strip().lower().startswith("yes") for t in texts]))
        return np.asarray(out)

    def matrix(self, texts):
        n = len(texts)
        ii, jj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        return self.entails([texts[i] for i in ii.ravel()], [texts[j] for j in jj.ravel()]).reshape(n, n)


def clear_stance(texts: Sequence[str], labels: Sequence[int], lexicon: Dict[str, float], keep: float = 0.5):
    """Keep the ``keep`` fraction of sentences whose lexicon score lies most clearly on their label's
    side (the same rule that builds the LM's stance bank): ``(texts, labels)``."""
    s = np.array([lexicon_score(t, lexicon) * (1 if y else -1) for t, y in zip(texts, labels)])
    order = np.argsort(-s)[:max(2, int(keep * len(texts)))]
    order = np.sort(order[s[order] > 0])
    return [texts[i] for i in order], np.asarray(labels)[order]
