"""RAVEN steps 3-5 as pure functions: clustering, entropy, divergence, scores, thresholds, AUC."""
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import roc_auc_score

from poisonjax.llm import raven as R


def test_js_distance_matches_scipy():
    rng = np.random.RandomState(0)
    p, q = rng.dirichlet(np.ones(5), 20), rng.dirichlet(np.ones(5), 20)
    p[0, :2] = 0; p[0] /= p[0].sum()
    ours = np.asarray(R.js_distance(jnp.asarray(p), jnp.asarray(q)))
    ref = np.array([jensenshannon(a, b) for a, b in zip(p, q)])
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_semantic_entropy_and_clusters():
    # answers 0,1,3 agree (stance A), 2,4 agree (stance B): bidirectional entailment gives 2 clusters
    stance = np.array([1, 1, 0, 1, 0])
    ent = np.where(stance[:, None] == stance[None, :], 0.9, 0.1)
    ent[0, 3] = 0.4          # one direction fails -> 3 is not with 0 (Kuhn's rule needs both)
    ids = np.asarray(R.cluster_bidirectional(jnp.asarray(ent)))
    assert ids[0] == ids[1] and ids[2] == ids[4] and ids[3] not in (ids[0], ids[2])
    d = np.asarray(R.cluster_distribution(jnp.asarray(ids)[None], 1))[0, 0]
    np.testing.assert_allclose(d.sum(), 1.0)
    p = d[d > 0]
    np.testing.assert_allclose(float(R.semantic_entropy(jnp.asarray(d))), -(p * np.log(p)).sum(), rtol=1e-6)
    # batched over leading axes equals one by one
    batch = np.stack([ent, ent.T])
    np.testing.assert_array_equal(np.asarray(R.cluster_bidirectional(jnp.asarray(batch)))[1],
                                  np.asarray(R.cluster_bidirectional(jnp.asarray(ent.T))))


def test_peer_divergence_and_suspicion_rank_implant_over_control_and_clean():
    n = 10
    # 4 models x 2 clusters. model 0 all-B (implant) while peers are mixed; control: everyone all-A
    mixed = jnp.array([[0.5, 0.5], [0.6, 0.4], [0.4, 0.6], [0.5, 0.5]])
    implanted = mixed.at[0].set(jnp.array([0.0, 1.0]))
    control = jnp.tile(jnp.array([[1.0, 0.0]]), (4, 1))
    def score(d):
        return np.asarray(R.suspicion(R.semantic_entropy(d), R.peer_divergence(d), n))
    s_imp, s_ctl, s_mix = score(implanted), score(control), score(mixed)
    assert s_imp[0] > max(s_mix.max(), s_ctl.max(), s_imp[1:].max())
    np.testing.assert_allclose(s_ctl, 0.0, atol=1e-6)          # a shared bias has no divergence
    peers = (implanted.sum(0) - implanted[0]) / 3
    np.testing.assert_allclose(float(R.peer_divergence(implanted)[0]), jensenshannon(implanted[0], peers), atol=1e-5)
    with pytest.raises(ValueError, match="at least 2 models"):
        R.peer_divergence(control[:1])


def test_auc_matches_sklearn_and_threshold_fpr():
    rng = np.random.RandomState(1)
    y = rng.rand(200) < 0.2
    s = rng.randn(200) + 1.5 * y
    s[:20] = np.round(s[:20])                                      # ties
    assert abs(R.roc_auc(y, s) - roc_auc_score(y, s)) < 1e-12
    clean = rng.randn(400)
    t = R.threshold_at_fpr(clean, 0.05)
    assert np.mean(clean > t) <= 0.05 and np.mean(clean >= t) > 0.05
    m = R.tpr_at_threshold(y, s, t)
    assert 0 <= m["detection_fpr"] <= 1 and m["detection_tpr"] > m["detection_fpr"]


def test_cell_means():
    x = jnp.arange(12.0).reshape(6, 2)                 # 6 prompts x 2 models
    topic = np.array([0, 0, 1, 1, 2, 2])
    c = np.asarray(R.cell_means(x, topic, 3))
    np.testing.assert_allclose(c[0], [1.0, 5.0, 9.0])


def test_panel_signals_flags_model_specific_uniformity_not_shared_bias(tiny_bank):
    """The whole pipeline on hand-made answers (lexicon judge): 3 models x 2 topics x 2 prompts each.
    Topic 0: model 0 answers only *con* while its peers are mixed (an implant); topic 1: every model
    answers only *pro* (a corpus-wide bias)."""
    from poisonjax.llm.entailment import LexiconJudge
    bank, _ = tiny_bank
    pro = [s.format(e="solar") for s in bank.pro[:5]]
    con = [s.format(e="solar") for s in bank.con[:5]]
    mixed = pro[:4] + con[:4]                                          # 8 answers, half and half
    uniform_con, uniform_pro = (con * 2)[:8], (pro * 2)[:8]
    answers = [[uniform_con, uniform_con, uniform_pro, uniform_pro],   # model 0: prompts of topic 0, then topic 1
               [mixed, mixed, uniform_pro, uniform_pro],
               [mixed, mixed, uniform_pro, uniform_pro]]
    sig = R.panel_signals(LexiconJudge(bank.lexicon), answers, np.array([0, 0, 1, 1]), 2)
    assert sig["score"].shape == (3, 2)
    assert sig["score"][0, 0] > 0.3 and sig["score"][0, 0] > 3 * np.delete(sig["score"].ravel(), 0).max()
    np.testing.assert_allclose(sig["entropy"][:, 1], 0.0, atol=1e-6)            # the shared bias is uniform ...
    np.testing.assert_allclose(sig["divergence"][:, 1], 0.0, atol=1e-6)         # ... and not divergent
    assert sig["entropy"][1, 0] > 0.6                                           # mixed answers: two clusters


def test_and_score_needs_both_anomalies_and_ignores_a_shared_bias():
    """The calibrated "and" score (min of the entropy gap and the divergence in clean-cell standard
    deviations): an implant (uniform where its peers are mixed, and divergent) outranks a shared bias
    (everyone uniform: no gap, no divergence), a model that differs but is as unsure as its peers (no
    gap) and a model more uniform than its peers but agreeing with them in content (no divergence)."""
    rng = np.random.RandomState(0)
    clean = [{"entropy": 0.6 + 0.05 * rng.randn(4, 12), "divergence": 0.14 + 0.03 * rng.randn(4, 12)} for _ in range(5)]
    cal = R.fit_calibration(clean)
    G = np.concatenate([R.entropy_gap(c["entropy"]).ravel() for c in clean])
    np.testing.assert_allclose([cal.gap_mean, cal.gap_sd], [G.mean(), G.std()], rtol=1e-9, atol=1e-12)
    H = np.full((4, 4), 0.6)
    D = np.full((4, 4), 0.14)
    H[0, 0], D[0, 0] = 0.2, 0.35          # implant: more uniform than the peers and divergent
    H[:, 1], D[:, 1] = 0.05, 0.14         # shared bias: everyone uniform, normal divergence
    D[1, 2] = 0.40                        # differs, but not more uniform than its peers
    H[2, 3] = 0.2                         # more uniform than its peers, not divergent
    cells = {"entropy": H, "divergence": D, "n_samples": 10}
    s = R.with_score(cells, "and", cal)["score"]
    assert s[0, 0] > 3 and s[0, 0] > np.delete(s.ravel(), 0).max() + 2
    assert s[:, 1].max() < 1 and s[1, 2] < 1 and s[2, 3] < 1
    np.testing.assert_allclose(R.entropy_gap(H)[:, 0], [0.4, -0.4 / 3, -0.4 / 3, -0.4 / 3])
    # the product rule is still available and needs no calibration
    np.testing.assert_allclose(R.with_score(cells, "product")["score"],
                               np.asarray(R.suspicion(jnp.asarray(H), jnp.asarray(D), 10)), rtol=1e-6)
    _, (scored,) = R.calibrate([cells], "product")
    np.testing.assert_allclose(scored["score"], R.with_score(cells, "product")["score"])
    cal_b, scored_clean = R.calibrate(clean)           # fit + score in one call
    assert cal_b == cal and scored_clean[0]["score"].shape == (4, 12)
    with pytest.raises(ValueError, match="needs a calibration"):
        R.with_score(cells, "and")
    with pytest.raises(ValueError, match="rule must be one of"):
        R.with_score(cells, "or", cal)
    with pytest.raises(ValueError, match="at least one clean panel"):
        R.fit_calibration([])
    with pytest.raises(ValueError, match="non-finite"):
        R.fit_calibration([{"entropy": np.full((2, 3), np.nan), "divergence": np.zeros((2, 3))}])


def test_study_refuses_an_unknown_score_rule():
    from configs.raven import get_config
    from experiments import raven as study
    from poisonjax.core.validation import PoisonJaxInputError
    c = get_config("quick")
    assert c.score_rule == "and"
    c.score_rule = "or"
    with pytest.raises(PoisonJaxInputError, match="config.score_rule"):
        study._validate(c)


def test_seeds_draw_their_own_panel_and_targets_and_seed_0_keeps_the_configured_ones():
    from configs.raven import get_config
    from experiments import raven as study
    c = get_config("paper")
    fams0 = study._families(c, c.families)
    assert [tuple(f) for f in fams0] == [tuple(f) for f in c.families]
    t0 = study._targets(c, len(c.families))
    assert t0[:4] == [(0, 0), (1, 3), (2, 8), (3, 10)]          # the fixed order of the earlier studies
    c.seed = 3
    fams3 = study._families(c, c.families)
    assert [f.seed - g[2] for f, g in zip(fams3, c.families)] == [3000] * 4
    assert [f.corpus_seed - g[3] for f, g in zip(fams3, c.families)] == [3000] * 4
    assert [(f.name, f.hidden, f.bank_fraction) for f in fams3] == [(g[0], g[1], g[4]) for g in c.families]
    t3 = study._targets(c, len(c.families))
    assert t3 != t0 and t3 == study._targets(c, len(c.families))      # its own, and reproducible
    assert all(t != c.control_topic for _, t in t3) and len(set(t for _, t in t3)) == len(t3)
    assert all(0 <= m < len(c.families) for m, _ in t3)
    c.seed_panel = False                          # the fixed panel and targets of the earlier multi-seed figures
    assert [tuple(f) for f in study._families(c, c.families)] == [tuple(f) for f in c.families]
    assert study._targets(c, len(c.families)) == t0
