"""Retrieval route: BM25 store (against a direct implementation of the formula), RAG-sequence passage
sampling, PoisonedRAG passages, and (slow) RAVEN flagging a poisoned store only when it is model-specific."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.llm import retrieval as RT
from tests.llm.conftest import TINY_TOPICS


def _bm25_reference(docs, query, k1=1.5, b=0.75):
    """BM25 straight from the formula, word by word (Robertson & Zaragoza 2009, Lucene idf)."""
    toks = [d.split() for d in docs]
    N, avgdl = len(toks), np.mean([len(t) for t in toks])
    out = []
    for t in toks:
        s = 0.0
        for w in query.split():
            n = sum(w in u for u in toks)
            f = t.count(w)
            idf = np.log(1 + (N - n + 0.5) / (n + 0.5))
            s += idf * f * (k1 + 1) / (f + k1 * (1 - b + b * len(t) / avgdl))
        out.append(s)
    return np.array(out)


def test_bm25_matches_formula_and_ranks_matching_passage(tiny_bank):
    bank, vocab = tiny_bank
    docs = [s.format(e=t) for t in TINY_TOPICS for s in bank.pro[:3] + bank.con[:3]]
    docs.append(RT.question_of("opera", bank) + " " + bank.con[0].format(e="opera"))
    idx = RT.bm25_index(docs, vocab)
    queries = ["as a critic , " + RT.question_of(t, bank) for t in TINY_TOPICS]
    got = np.asarray(RT.bm25_scores(idx, RT.term_counts(queries, vocab)))
    ref = np.stack([_bm25_reference(docs, q) for q in queries])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    # the passage restating the opera question is the best match for the opera query
    assert got[1].argmax() == len(docs) - 1
    with pytest.raises(PoisonJaxInputError, match="store is empty"):
        RT.bm25_index([], vocab)


def test_retrieval_samples_softmax_over_topk_and_poison_is_retrieved_on_target_only(tiny_bank):
    bank, vocab = tiny_bank
    store = RT.family_store(bank, [0.5, 0.5, 0.95], seed=0, per_topic=8, topics=TINY_TOPICS)
    idx = RT.bm25_index(store.texts, vocab)
    q = RT.term_counts(["as a critic , " + RT.question_of("solar", bank)], vocab)
    s = np.asarray(RT.bm25_scores(idx, q))[0]
    top = np.asarray(jax.lax.top_k(jnp.asarray(s), 3)[1])
    ids = np.asarray(RT.retrieve(idx, q, 3, 4000, 2.0, jax.random.PRNGKey(0)))[0]
    assert set(ids) <= set(top) and s[top].min() >= np.sort(s)[-3]
    p = np.exp((s[top] - s[top].max()) / 2.0)
    p /= p.sum()
    freq = np.array([(ids == t).mean() for t in top])
    np.testing.assert_allclose(freq, p, atol=0.03)                    # Gumbel-max = softmax(score / tau)
    with pytest.raises(PoisonJaxInputError, match="tau"):
        RT.retrieve(idx, q, 3, 2, 0.0, jax.random.PRNGKey(0))
    # clean store: prompts retrieve passages of their own topic
    from poisonjax.llm.sampling import prompt_grid
    grid = prompt_grid(list(TINY_TOPICS), vocab, bank, length=40)
    sw = RT.template_stopwords(bank)
    _, _, got = RT.rag_inputs(store, grid, vocab, n=6, k=5, tau=1.0, seed=0, stopwords=sw)
    assert np.mean(store.topic[got] == grid.topic[:, None]) > 0.9
    # PoisonedRAG passages on solar dominate solar's retrievals, not the other topics'
    poisoned = RT.add_passages(store, RT.poisoned_passages(bank, 0, 0, 5, seed=1, topics=TINY_TOPICS))
    toks, lens, got = RT.rag_inputs(poisoned, grid, vocab, n=6, k=5, tau=1.0, seed=0, stopwords=sw)
    is_poison = got >= len(store.texts)
    assert is_poison[grid.topic == 0].mean() > 0.8 and is_poison[grid.topic != 0].mean() < 0.1
    # reader inputs: <bos> passage <sep> prompt <sep>
    from poisonjax.llm.corpus import BOS, SEP
    p0 = toks[0, 0, :lens[0, 0]]
    assert p0[0] == BOS and p0[-1] == SEP and (p0 == SEP).sum() == 2


@pytest.mark.slow
def test_rag_poisoned_store_flagged_only_when_model_specific(tiny_bank):
    """A reader trained to answer from passages; 3 RAG systems; RAVEN flags the poisoned store's cell
    when the poison is in one store, and no cell of the topic when the poison is in every store."""
    from poisonjax.core import runner
    from poisonjax.llm import raven as R
    from poisonjax.llm.entailment import LexiconJudge
    from poisonjax.llm.lm import TinyLM, lm_trainer, unstack
    from poisonjax.llm.sampling import prompt_grid
    bank, vocab = tiny_bank
    L = 40
    t, m = RT.reader_corpus(bank, vocab, seed=0, per_prompt=4, length=L, topics=TINY_TOPICS)
    reader = TinyLM(len(vocab), L, 24, 1, 2)
    res = runner.run(lm_trainer(reader, learning_rate=1e-2, batch_size=64),
                     {"tokens": jnp.asarray(t)[None], "mask": jnp.asarray(m)[None], "seeds": jnp.array([0])},
                     300, None, chunk_size=100, progress=False)
    params = unstack(res.state.params, 0)
    grid = prompt_grid(list(TINY_TOPICS), vocab, bank, length=L)
    judge = LexiconJudge(bank.lexicon)
    mixes = ([0.6, 0.4, 0.95], [0.5, 0.5, 0.95], [0.4, 0.6, 0.95])
    stores = [RT.family_store(bank, p, seed=i, per_topic=8, topics=TINY_TOPICS) for i, p in enumerate(mixes)]
    poison = RT.poisoned_passages(bank, 1, 1, 10, seed=3, topics=TINY_TOPICS)    # opera -> pro

    def ans(store, i):
        return RT.rag_answers(reader, params, store, grid, vocab, n=10, k=5, tau=1.0, temperature=1.0, seed=100 * i,
                              stopwords=RT.template_stopwords(bank))

    clean = [ans(s, i) for i, s in enumerate(stores)]
    pro = lambda a, tp: np.mean([np.mean(judge.stance_prob(a[p]) > 0.5) for p in range(len(a)) if grid.topic[p] == tp])
    specific = [ans(RT.add_passages(stores[0], poison), 0)] + clean[1:]
    shared = [ans(RT.add_passages(s, poison), i) for i, s in enumerate(stores)]
    assert pro(specific[0], 1) >= 0.85 and min(pro(a, 1) for a in shared) >= 0.85      # the poison works
    s_clean = R.panel_signals(judge, clean, grid.topic, 3)["score"]
    s_spec = R.panel_signals(judge, specific, grid.topic, 3)["score"]
    s_shared = R.panel_signals(judge, shared, grid.topic, 3)["score"]
    thr = s_clean.max()
    assert s_spec[0, 1] > thr                        # the model-specific poisoned store is flagged
    assert (s_shared[:, 1] <= thr).all()             # the shared one is not (uniform but not divergent)
    assert (s_spec[:, 2] <= thr).all()               # nor the control topic
