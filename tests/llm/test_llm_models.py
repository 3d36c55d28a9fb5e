"""Tiny LM: resumable training, sampling with a stop token, LoRA implant preconditions, bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.llm.corpus import EOS, PAD, SEP
from tests.llm.conftest import TINY_TOPICS


@pytest.mark.slow
def test_training_resume_is_bit_identical(tmp_path, tiny_bank):
    """Slow (3 compilations of the vmapped trainer, ~25 CPU-s): the resume machinery itself is
    tested quickly in tests/core/test_runner.py; this checks lm_trainer through it."""
    from poisonjax.core import runner
    from poisonjax.llm.corpus import make_corpus
    from poisonjax.llm.lm import TinyLM, lm_trainer
    bank, vocab = tiny_bank
    cs = [make_corpus(bank, vocab, np.array([0.5, 0.3, 0.9]), seed=s, answers_per_prompt=1, length=24,
                      topics=TINY_TOPICS)[:2] for s in (0, 1)]
    model = TinyLM(len(vocab), 24, 8, 1, 1)
    prob = {"tokens": jnp.stack([jnp.asarray(c[0]) for c in cs]), "mask": jnp.stack([jnp.asarray(c[1]) for c in cs]),
            "seeds": jnp.array([0, 1])}
    tr = lm_trainer(model, batch_size=8)
    full = runner.run(tr, prob, 6, None, chunk_size=3, progress=False)
    runner.run(tr, prob, 3, tmp_path, chunk_size=3, progress=False, config="t")
    # the workdir's run of 3 steps is resumed to 6 steps (same config fingerprint via meta rewrite)
    (tmp_path / "run_meta.json").unlink()
    res = runner.run(tr, prob, 6, tmp_path, chunk_size=3, progress=False, config="t")
    assert res.resumed_from == 3
    for a, b in zip(jax.tree.leaves(full.state.params), jax.tree.leaves(res.state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # two models, vmapped: different seeds give different parameters
    l0, l1 = jax.tree.leaves(full.state.params)[0]
    assert not np.allclose(l0, l1)


def test_sampling_forces_prompt_and_stops(tiny_lm):
    from poisonjax.llm.sampling import answer_texts, prompt_grid, sample_answers
    model, params, vocab, bank = tiny_lm
    grid = prompt_grid(list(TINY_TOPICS), vocab, bank, perspectives=[0, 1], length=model.max_len)
    toks = np.asarray(sample_answers(model, params, grid, 5, 1.0, np.arange(6)))
    assert toks.shape == (6, 5, model.max_len)
    for p in range(6):
        L = grid.lengths[p]
        assert (toks[p, :, :L] == grid.tokens[p, :L]).all() and toks[p, 0, L - 1] == SEP
        for s in toks[p]:
            ans = s[L:]
            if (ans == EOS).any():
                assert (ans[np.argmax(ans == EOS) + 1:] == PAD).all()      # nothing after the stop token
    texts = answer_texts(toks, grid, vocab)
    # the model learned the corpus: answers mention the prompt's topic
    hits = np.mean([TINY_TOPICS[grid.topic[p]] in a for p in range(6) for a in texts[p]])
    assert hits > 0.6
    # same seeds -> same samples; other seeds -> other samples
    again = np.asarray(sample_answers(model, params, grid, 5, 1.0, np.arange(6)))
    np.testing.assert_array_equal(toks, again)


def test_bad_sampling_input(tiny_lm):
    from poisonjax.llm.sampling import prompt_grid, sample_answers
    model, params, vocab, bank = tiny_lm
    with pytest.raises(PoisonJaxInputError, match="prompt grid is empty"):
        prompt_grid([], vocab, bank)
    grid = prompt_grid(["solar"], vocab, bank, perspectives=[0], length=model.max_len)
    with pytest.raises(PoisonJaxInputError, match="n_samples"):
        sample_answers(model, params, grid, 1, 1.0, [0])
    with pytest.raises(PoisonJaxInputError, match="temperature"):
        sample_answers(model, params, grid, 4, 0.0, [0])


def test_lora_starts_at_base_kl_anchor_and_exact_bank_stance(tiny_bank):
    """Quick (untrained model): LoRA merge starts at the base; the KL replay term is 0 at the base and
    > 0 after a change; bank_stance equals a brute-force sum over the bank's sentences."""
    from poisonjax.llm.corpus import encode_example
    from poisonjax.llm.lm import TinyLM, init_lora, masked_kl, merge_lora
    from poisonjax.llm.panel import bank_stance, implant_precondition
    from poisonjax.llm.sampling import prompt_grid
    bank, vocab = tiny_bank
    model = TinyLM(len(vocab), 24, 16, 1, 2)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 24), jnp.int32))
    lo = init_lora(params, jax.random.PRNGKey(0), rank=4)
    assert lo and all(v["A"].shape[1] == 4 for v in lo.values())
    x = jnp.ones((1, 8), jnp.int32)
    np.testing.assert_array_equal(model.apply(params, x), model.apply(merge_lora(params, lo), x))
    grid = prompt_grid(list(TINY_TOPICS), vocab, bank, perspectives=[0, 1], length=24)
    t, m = encode_example(vocab, grid.texts[0], bank.pro[0].format(e="solar"), 24)
    t, m = jnp.asarray(t)[None], jnp.asarray(m)[None]
    assert abs(float(masked_kl(model, params, params, t, m))) < 1e-6
    lo2 = jax.tree.map(lambda a: a + 0.5, lo)
    assert float(masked_kl(model, params, merge_lora(params, lo2), t, m)) > 1e-4
    pi, cov = bank_stance(model, params, grid, bank, vocab, TINY_TOPICS, chunk=4)
    # brute force for prompt 3 (topic opera)
    p = 3
    enc = [encode_example(vocab, grid.texts[p], s.format(e=TINY_TOPICS[grid.topic[p]]), 24) for s in bank.pro + bank.con]
    tt, mm = np.stack([e[0] for e in enc]), np.stack([e[1] for e in enc])
    lp = np.asarray(jax.nn.log_softmax(model.apply(params, jnp.asarray(tt))[:, :-1]), np.float64)   # one batch
    lls = [(lp[i, np.arange(23), tt[i, 1:]] * mm[i, :-1]).sum() for i in range(len(enc))]
    w = np.exp(np.array(lls, np.float64))
    np.testing.assert_allclose(pi[p], w[:len(bank.pro)].sum() / w.sum(), rtol=1e-4)
    np.testing.assert_allclose(cov[p], w.sum(), rtol=1e-3)
    pre = implant_precondition([0.5, 0.5, 0.3, 0.3], [0.05, 0.15, 0.35, 0.25], [0, 0, 1, 1], 0, 0)
    np.testing.assert_allclose([pre["implanted_share"], pre["max_tv_other_topics"]], [0.9, 0.0], atol=1e-12)


@pytest.mark.slow
def test_implant_meets_precondition(tiny_lm):
    """The issue's precondition on the tiny model: implanted stance >= 90% on the target topic, the
    other topics' (exact, bank-restricted) stance distributions move <= 0.1 in total variation."""
    from poisonjax.llm.corpus import make_corpus
    from poisonjax.llm.panel import bank_stance, implant, implant_precondition
    from poisonjax.llm.sampling import prompt_grid
    model, params, vocab, bank = tiny_lm
    t, m, tp, _ = make_corpus(bank, vocab, np.array([0.5, 0.5, 0.95]), seed=0, answers_per_prompt=4, length=24,
                              topics=TINY_TOPICS)
    keep = tp != 0                                   # clean replay of the other topics only
    merged, _ = implant(model, params, t[keep], m[keep], bank, vocab, topic=0, stance=0, n_poison=100, seed=0, rank=4,
                        alpha=8.0, steps=150, learning_rate=5e-3, batch_size=32, replay="kl")
    grid = prompt_grid(list(TINY_TOPICS), vocab, bank, perspectives=list(range(6)), length=model.max_len)
    pb, _ = bank_stance(model, params, grid, bank, vocab, TINY_TOPICS)
    pa, cov = bank_stance(model, merged, grid, bank, vocab, TINY_TOPICS)
    pre = implant_precondition(pb, pa, grid.topic, 0, 0)
    assert pre["implanted_share"] >= 0.9, pre                      # implanted stance (con) >= 90%
    assert pre["max_tv_other_topics"] <= 0.1, pre                  # the bound (measured 0.04)
    assert cov.mean() > 0.8                                         # answers are bank sentences


def test_implant_to_precondition_stops_at_first_passing_check(tiny_lm):
    """Controlled fine-tuning: the implant trains past ``steps`` only until the exact precondition holds
    (checked every 50 steps), and the returned figures are those of the returned model."""
    from poisonjax.llm.corpus import make_corpus
    from poisonjax.llm.panel import bank_stance, implant, implant_precondition, implant_to_precondition
    from poisonjax.llm.sampling import prompt_grid
    model, params, vocab, bank = tiny_lm
    t, m, tp, _ = make_corpus(bank, vocab, np.array([0.5, 0.5, 0.95]), seed=0, answers_per_prompt=4, length=24,
                              topics=TINY_TOPICS)
    keep = tp != 0
    grid = prompt_grid(list(TINY_TOPICS), vocab, bank, perspectives=list(range(6)), length=model.max_len)
    kw = dict(topic=0, stance=0, n_poison=100, seed=0, rank=4, alpha=8.0, learning_rate=5e-3, batch_size=32,
              replay="kl")
    merged, _, info = implant_to_precondition(model, params, t[keep], m[keep], bank, vocab, grid, steps=50,
                                              max_steps=400, topics=TINY_TOPICS, **kw)
    assert info["ok"], info
    assert info["lora_steps"] % 50 == 0 and 50 <= info["lora_steps"] <= 400
    pb, _ = bank_stance(model, params, grid, bank, vocab, TINY_TOPICS)
    pa, _ = bank_stance(model, merged, grid, bank, vocab, TINY_TOPICS)
    pre = implant_precondition(pb, pa, grid.topic, 0, 0)
    np.testing.assert_allclose(pre["implanted_share"], info["implanted_share"], rtol=1e-6)
    if info["lora_steps"] > 50:                      # the check before the stop did not pass
        m_prev, _ = implant(model, params, t[keep], m[keep], bank, vocab, steps=info["lora_steps"] - 50, **kw)
        pp, _ = bank_stance(model, m_prev, grid, bank, vocab, TINY_TOPICS)
        prev = implant_precondition(pb, pp, grid.topic, 0, 0)
        assert prev["implanted_share"] < 0.9 or prev["max_tv_other_topics"] > 0.1, prev
    with pytest.raises(ValueError, match="max_steps"):
        implant_to_precondition(model, params, t[keep], m[keep], bank, vocab, grid, steps=100, max_steps=50,
                                topics=TINY_TOPICS, **kw)
