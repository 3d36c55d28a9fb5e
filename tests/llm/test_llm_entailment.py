"""entails(premises, hypotheses): the embedding classifier (disjoint templates), the lexicon judge, agreement."""
import numpy as np
import pytest

from poisonjax.llm import entailment as E


@pytest.fixture(scope="module")
def judges(tiny_bank):
    bank, _ = tiny_bank
    tx, ty = E.clear_stance(bank.rest_texts, bank.rest_labels, bank.lexicon, 0.5)
    from poisonjax.llm.corpus import TOPICS
    emb = E.train_embedding_judge(tx, ty, n_pairs=3000, steps=200, seed=0).with_entities(TOPICS)
    return emb, E.LexiconJudge(bank.lexicon).with_entities(TOPICS), bank


def test_embedding_classifier_heldout_and_on_lm_bank(judges):
    from poisonjax.data.text import load_sst2
    emb, lex, bank = judges
    test = load_sst2("test")
    hx, hy = E.clear_stance(test.texts, test.labels, bank.lexicon, 0.5)
    p, h, y = E.stance_pairs(hx, hy, 1000, seed=1)
    acc = E.pair_accuracy(emb, p, h, y)
    assert acc >= 0.85, acc                             # the study reports >= 0.9 with its full training
    # templates are disjoint from the LM corpus: no bank sentence is among the training sentences
    train_set = set(bank.rest_texts)
    assert not any(s.format(e="film") in train_set or s.format(e="movie") in train_set for s in bank.pro + bank.con)
    texts = [s.format(e="solar") for s in bank.pro + bank.con]
    lab = [1] * len(bank.pro) + [0] * len(bank.con)
    p, h, y = E.stance_pairs(texts, lab, 400, seed=2)
    assert E.pair_accuracy(emb, p, h, y) >= 0.8
    assert E.pair_accuracy(lex, p, h, y) >= 0.95        # the bank is lexicon-clear by construction


def test_interface_shapes_symmetry_and_agreement(judges):
    emb, lex, bank = judges
    a = [bank.pro[0].format(e="jazz"), bank.con[0].format(e="jazz"), bank.pro[1].format(e="jazz")]
    for j in (emb, lex):
        m = j.matrix(a)
        assert m.shape == (3, 3) and np.all((m >= 0) & (m <= 1))
        np.testing.assert_allclose(m, m.T, atol=1e-6)
        np.testing.assert_allclose(j.entails(a, a[::-1]), [m[0, 2], m[1, 1], m[2, 0]], atol=1e-6)
    ag = E.judge_agreement({"embedding": emb, "lexicon": lex}, a * 3, a[::-1] * 3)
    assert set(ag) == {"embedding~lexicon"} and 0 <= ag["embedding~lexicon"] <= 1
    with pytest.raises(ValueError, match="same length"):
        lex.entails(a, a[:2])


def test_embedding_judge_reads_the_topic_as_an_anonymous_entity(judges):
    """A stance sentence's probability does not depend on which probed topic fills its slot (the
    topics and the held-out entities are all read as <entity>); an unannounced word is read as itself."""
    from poisonjax.llm.corpus import HELDOUT_ENTITIES, TOPICS
    emb, lex, bank = judges
    for tpl in bank.pro[:5] + bank.con[:5]:
        p = emb.stance_prob([tpl.format(e=t) for t in TOPICS + HELDOUT_ENTITIES])
        np.testing.assert_allclose(p, p[0], rtol=1e-4, err_msg=tpl)
        q = lex.stance_prob([tpl.format(e=t) for t in TOPICS])           # the lexicon judge too
        np.testing.assert_allclose(q, q[0], rtol=1e-12, err_msg=tpl)
    ids = emb.encode(["a gem of a nuclear .", "a gem of a pizza ."])
    assert ids[0, 4] == ids[1, 4] == emb.vocab["<entity>"]
    bare = E.EmbeddingJudge(emb.params, emb.vocab)      # no entities announced
    assert bare.encode(["nuclear"])[0, 0] != emb.vocab["<entity>"]
    with pytest.raises(TypeError, match="entities"):
        emb.with_entities("nuclear")
