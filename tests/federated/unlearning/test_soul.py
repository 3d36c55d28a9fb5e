"""SoUL and its baselines at a tiny scale (digits, 6 clients, MLP): behaviour, metrics, costs, bad input."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import jax
import jax.numpy as jnp

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.federated import simulation as S
from poisonjax.federated import unlearning as U
from poisonjax.federated.unlearning import costs as C

ROUNDS = 12


@pytest.fixture(scope="module")
def setup():
    xtr, ytr, xte, yte, c = S.load_centralised("digits")
    sc = U.make_scenario(xtr, ytr, xte, yte, num_classes=c, scenario="backdoor", num_clients=6, partition="iid",
                         malicious_fraction=0.34, backdoor_fraction=0.8, trigger_size=3, aux_size=100, seed=0)
    model = U.make_model("mlp", c, xte[:1], hidden=64)
    sim = S.build_simulation(model.fns, "fedavg", local_epochs=1, batch_size=16, local_lr=0.1, num_classes=c)
    orig = U.train_original(sim, sc.data, ROUNDS, delta_t=2, train_fn=S.make_train_fn(sim))
    ev = U.evaluate(model.fns.apply, orig.params, sc)
    # precondition of the backdoor scenario: the backdoor works on the trained model
    assert ev["asr"] >= 0.8, f"backdoor precondition failed (asr={ev['asr']:.3f}): the scenario is void"
    return dict(sc=sc, model=model, sim=sim, orig=orig, ev=ev, tf=S.make_train_fn(sim))


def test_soul_beats_finetune_on_asr_and_pga_on_retained_accuracy(setup):
    sc, model, sim, orig, tf = setup["sc"], setup["model"], setup["sim"], setup["orig"], setup["tf"]
    ev = lambda p: U.evaluate(model.fns.apply, p, sc)  # noqa: E731
    so = U.soul_unlearn(model, sim, sc, orig.params, U.SoULConfig(prune_fraction=0.3, blend_alpha=0.3,
                                                                  finetune_rounds=2), train_fn=tf)
    ft = U.finetune_only(model, sim, sc, orig.params, 2, train_fn=tf)
    e_so, e_ft = ev(so.params), ev(ft.params)
    assert e_so["asr"] < e_ft["asr"] - 0.1, (e_so, e_ft)
    # the unlearning steps alone (no post-training): SoUL's pruning keeps more of the retained accuracy
    # than Halimi et al.'s projected gradient ascent
    pg = U.projected_gradient_ascent(model, sim, sc, orig.history, orig.params,
                                     U.PGAConfig(finetune_rounds=0, epochs=5), train_fn=tf)
    assert pg.info["steps"] > 0
    e_pg0 = ev(pg.info["unlearned_params"])
    e_so0 = ev(so.pruned_params)
    assert e_so0["retain_accuracy"] > e_pg0["retain_accuracy"], (e_so0, e_pg0)
    assert e_pg0["asr"] < setup["ev"]["asr"]  # the ascent did unlearn something


def test_federaser_and_retrain_run_and_remove_backdoor(setup):
    sc, model, sim, orig = setup["sc"], setup["model"], setup["sim"], setup["orig"]
    fe = U.federaser(model, sim, sc, orig.history, delta_t=2, calibration_ratio=0.5)
    e = U.evaluate(model.fns.apply, fe.params, sc)
    assert e["asr"] < 0.3 and e["accuracy"] > 0.5, e
    assert fe.cost.rounds == ROUNDS // 2 - 1
    assert fe.info["calibration_epochs"] == 1 and fe.info["calibration_keep_fraction"] == 0.5
    # the gold standard: FedAvg from the original initial model on the remaining clients only
    rt = U.retrain(model, sim, sc, orig.history, ROUNDS, train_fn=setup["tf"])
    e_rt = U.evaluate(model.fns.apply, rt.params, sc)
    assert e_rt["asr"] < 0.3 and e_rt["accuracy"] > 0.5, e_rt
    assert rt.cost.rounds == ROUNDS


def test_pruning_removes_the_units(setup):
    sc, model, orig = setup["sc"], setup["model"], setup["orig"]
    fs, nf = U.client_unit_stats(model, orig.params, sc.data, sc.forget_ids)
    rs, _ = U.client_unit_stats(model, orig.params, sc.data, sc.retain_ids)
    assert nf == float(np.asarray(sc.data.mask)[sc.forget_ids].sum())
    scores = {k: fs[k] / (rs[k] + 1e-8) for k in fs}
    masks = U.soul_masks(orig.params, scores, 0.25)
    m = np.asarray(masks["Dense_0"])
    assert int((m == 0).sum()) == 16
    # the pruned units are exactly the top-16 by score
    assert set(np.flatnonzero(m == 0)) == set(np.argsort(-np.asarray(scores["Dense_0"]))[:16])
    from poisonjax.core.pruning import apply_unit_mask, capture_activations
    pruned = {**orig.params, "params": apply_unit_mask(orig.params["params"], masks)}
    k = np.asarray(pruned["params"]["Dense_0"]["kernel"])
    assert np.all(k[:, m == 0] == 0) and np.all(np.asarray(pruned["params"]["Dense_0"]["bias"])[m == 0] == 0)
    h = capture_activations(model.module, pruned, jnp.asarray(sc.data.x_test[:50]))["Dense_0"]
    assert np.all(np.asarray(h)[:, m == 0] == 0)
    # the blend scales pruned units by alpha and leaves the others alone
    b = U.blend(orig.params, pruned, 0.3)
    k0 = np.asarray(orig.params["params"]["Dense_0"]["kernel"])
    kb = np.asarray(b["params"]["Dense_0"]["kernel"])
    np.testing.assert_allclose(kb[:, m == 0], 0.3 * k0[:, m == 0], rtol=1e-6)
    np.testing.assert_allclose(kb[:, m == 1], k0[:, m == 1], rtol=1e-6)
    # pruning again skips dead units; pruning everything alive is refused
    masks2 = U.soul_masks(pruned, scores, 0.25)
    assert not set(np.flatnonzero(np.asarray(masks2["Dense_0"]) == 0)) & set(np.flatnonzero(m == 0))


def test_mia_auc_equals_sklearn(setup):
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(0.3, 1, 57).round(1), rng.normal(0, 1, 91).round(1)  # rounded: ties
    assert U.roc_auc(pos, neg) == pytest.approx(roc_auc_score(np.r_[np.ones(57), np.zeros(91)], np.r_[pos, neg]),
                                                abs=1e-12)
    sc, model, orig = setup["sc"], setup["model"], setup["orig"]
    xf, yf = U.pooled(sc.data, sc.forget_ids)
    auc = U.mia_auc(model.fns.apply, orig.params, xf, yf, sc.holdout_x, sc.holdout_y)
    lf = U.example_losses(model.fns.apply, orig.params, xf, yf)
    lh = U.example_losses(model.fns.apply, orig.params, sc.holdout_x, sc.holdout_y)
    ref = roc_auc_score(np.r_[np.ones(len(lf)), np.zeros(len(lh))], -np.r_[lf, lh])
    assert auc == pytest.approx(ref, abs=1e-12)


def test_paired_mia_gap_matches_each_auc_and_a_paired_bootstrap(setup):
    """mia_auc_paired gives each model's mia_auc; the gap's paired DeLong SE is 0 for a model against itself,
    agrees with a stratified paired bootstrap of the gap, and is below the unpaired sqrt(se_a^2 + se_b^2) for two
    models that rank the forget examples alike (the original and a copy fine-tuned for one round)."""
    sc, model, orig, sim, tf = setup["sc"], setup["model"], setup["orig"], setup["sim"], setup["tf"]
    apply = model.fns.apply
    ft = U.finetune_only(model, sim, sc, orig.params, 1, train_fn=tf)
    xf, yf = U.pooled(sc.data, sc.forget_ids)
    aucs, cov = U.mia_auc_paired(apply, [orig.params, ft.params], xf, yf, sc.holdout_x, sc.holdout_y)
    for k, p in enumerate([orig.params, ft.params]):
        assert aucs[k] == pytest.approx(U.mia_auc(apply, p, xf, yf, sc.holdout_x, sc.holdout_y), abs=1e-12)
    assert U.mia_gap(apply, orig.params, orig.params, sc) == {"gap": 0.0, "se_paired": 0.0}
    g = U.mia_gap(apply, orig.params, ft.params, sc)
    assert g["gap"] == pytest.approx(aucs[0] - aucs[1], abs=1e-12)
    assert g["se_paired"] < 0.9 * np.sqrt(cov[0, 0] + cov[1, 1]), (g, cov)
    # a stratified paired bootstrap of the gap (members and non-members resampled, both models on the same draw)
    sm = -np.stack([U.example_losses(apply, p, xf, yf) for p in (orig.params, ft.params)])
    sn = -np.stack([U.example_losses(apply, p, sc.holdout_x, sc.holdout_y) for p in (orig.params, ft.params)])
    rng = np.random.default_rng(0)
    gaps = []
    for _ in range(1000):
        i, j = rng.integers(0, sm.shape[1], sm.shape[1]), rng.integers(0, sn.shape[1], sn.shape[1])
        gaps.append(U.roc_auc(sm[0, i], sn[0, j]) - U.roc_auc(sm[1, i], sn[1, j]))
    assert g["se_paired"] == pytest.approx(np.std(gaps), rel=0.2), (g, np.std(gaps))
    with pytest.raises(PoisonJaxInputError, match="params_seq"):
        U.mia_auc_paired(apply, [], xf, yf, sc.holdout_x, sc.holdout_y)


def test_bytes_rounds_flops_accounting(setup):
    sc, model, sim, orig = setup["sc"], setup["model"], setup["sim"], setup["orig"]
    d = 64 * 64 + 64 + 64 * 10 + 10
    assert U.num_params(orig.params) == d and U.model_bytes(orig.params) == 4 * d
    assert U.forward_flops(model.module, orig.params, model.sample) == 2 * (64 * 64 + 64 * 10)
    sizes = np.asarray(sc.data.mask)[sc.retain_ids].sum(axis=1)
    m = len(sc.retain_ids)
    so = U.soul_unlearn(model, sim, sc, orig.params, U.SoULConfig(prune_fraction=0.1, blend_alpha=0.5,
                                                                  finetune_rounds=3), train_fn=setup["tf"])
    assert so.cost.rounds == 3 + 1                             # statistics round + R fine-tuning rounds
    stats_bytes = (1 + m) * 4 * (64 + 1)                       # forget side + each retained client: U + 1 floats
    assert so.cost.bytes == pytest.approx(3 * 2 * m * 4 * d + stats_bytes)
    fwd = 2 * (64 * 64 + 64 * 10)
    n_all = float(np.asarray(sc.data.mask).sum())
    assert so.cost.client_flops == pytest.approx(3 * 3 * fwd * sizes.sum() + fwd * n_all)
    rt_cost = C.fl_rounds_cost(ROUNDS, sizes, 1, 4 * d, d, fwd)
    assert rt_cost.rounds == ROUNDS and rt_cost.bytes == ROUNDS * 2 * m * 4 * d
    assert so.cost.bytes <= 0.5 * rt_cost.bytes and so.cost.rounds <= 0.5 * rt_cost.rounds


def test_bad_input_one_line_errors(setup):
    sc, model, sim, orig = setup["sc"], setup["model"], setup["sim"], setup["orig"]

    def err(fn, word):
        with pytest.raises(PoisonJaxInputError) as e:
            fn()
        msg = str(e.value)
        assert word in msg and "\n" not in msg, msg

    err(lambda: U.check_forget_ids([9], 6), "forget_ids")
    err(lambda: U.check_forget_ids([], 6), "forget_ids")
    err(lambda: U.check_forget_ids(list(range(6)), 6), "forget_ids")
    bad = sc._replace(forget_ids=np.array([42]))
    err(lambda: U.soul_unlearn(model, sim, bad, orig.params), "forget_ids")
    for p in (-0.1, 1.5, float("nan")):
        err(lambda: U.soul_unlearn(model, sim, sc, orig.params, U.SoULConfig(prune_fraction=p)), "prune_fraction")
    for a in (-0.5, 1.01):
        err(lambda: U.soul_unlearn(model, sim, sc, orig.params, U.SoULConfig(blend_alpha=a)), "blend_alpha")
    scores = {"Dense_0": jnp.arange(64.0)}
    err(lambda: U.soul_masks(orig.params, scores, 1.0), "prune_fraction")   # no unit left
    # a layer with one live unit left cannot lose it
    p = jax.tree.map(lambda v: v, orig.params)
    keep = jnp.zeros(64).at[0].set(1.0)
    from poisonjax.core.pruning import apply_unit_mask
    p = {**p, "params": apply_unit_mask(p["params"], {"Dense_0": keep})}
    err(lambda: U.soul_masks(p, scores, 0.02), "Dense_0")
    xtr, ytr, xte, yte, c = S.load_centralised("digits")
    err(lambda: U.make_scenario(xtr, ytr, xte, yte, num_classes=c, scenario="forget_client", num_clients=6,
                                forget_client=7), "forget_ids")


def test_global_ranking_prunes_the_highest_ratios_across_layers():
    """ranking="global" removes round(p * all units) units with the highest ratios wherever they are;
    ranking="layer" removes p of every layer; an unknown ranking is a one-line error."""
    params = {"params": {"A": {"kernel": jnp.ones((3, 10)), "bias": jnp.ones(10)},
                         "B": {"kernel": jnp.ones((10, 30)), "bias": jnp.ones(30)}}}
    scores = {"A": 100.0 + jnp.arange(10.0), "B": jnp.arange(30.0)}
    g = U.soul_masks(params, scores, 0.2, ranking="global")          # 8 of 40 units, all in A
    assert set(np.flatnonzero(np.asarray(g["A"]) == 0)) == set(range(2, 10))
    assert np.all(np.asarray(g["B"]) == 1)
    lay = U.soul_masks(params, scores, 0.2, ranking="layer")         # 2 of A, 6 of B
    assert set(np.flatnonzero(np.asarray(lay["A"]) == 0)) == {8, 9}
    assert set(np.flatnonzero(np.asarray(lay["B"]) == 0)) == set(range(24, 30))
    with pytest.raises(PoisonJaxInputError, match="'A'"):             # would empty layer A
        U.soul_masks(params, scores, 0.25, ranking="global")
    with pytest.raises(PoisonJaxInputError, match="ranking"):
        U.soul_masks(params, scores, 0.2, ranking="per-unit")
    with pytest.raises(PoisonJaxInputError, match="ranking"):
        U.soul.check_soul_config(U.SoULConfig(ranking="per-unit"))
