"""A tiny trained LM shared by the llm tests (session scope; trained in a few seconds)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_bank():
    from poisonjax.llm.corpus import build_bank, make_vocab
    bank = build_bank(n_per_stance=6, max_words=9, n_openers=2)
    return bank, make_vocab(bank)


TINY_TOPICS = ("solar", "opera", "coffee")


@pytest.fixture(scope="session")
def tiny_lm(tiny_bank):
    """``(model, params, vocab, bank)``: 3 topics, stance mix 0.5 / 0.5 / 0.95 (control)."""
    from poisonjax.core import runner
    from poisonjax.llm.corpus import make_corpus
    from poisonjax.llm.lm import TinyLM, lm_trainer, unstack
    bank, vocab = tiny_bank
    t, m, _, _ = make_corpus(bank, vocab, np.array([0.5, 0.5, 0.95]), seed=0, answers_per_prompt=4, length=24,
                             topics=TINY_TOPICS)
    model = TinyLM(len(vocab), 24, 24, 1, 2)
    prob = {"tokens": jnp.asarray(t)[None], "mask": jnp.asarray(m)[None], "seeds": jnp.array([0])}
    res = runner.run(lm_trainer(model, learning_rate=1e-2, batch_size=64), prob, 300, None, chunk_size=100, progress=False)
    return model, unstack(res.state.params, 0), vocab, bank
