"""Aggregators against hand-computed values, including planted outliers that must be excluded."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.spatial.distance import cdist

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.federated import aggregators as A
from poisonjax.federated.metrics import detection_auroc, detection_precision_recall

X1 = np.array([[0.0], [1.0], [2.0], [3.0], [100.0]], np.float32)  # one planted outlier


def test_pairwise_distances_match_scipy():
    x = np.random.RandomState(0).randn(7, 5).astype(np.float32)
    np.testing.assert_allclose(A.pairwise_sq_distances(jnp.asarray(x)), cdist(x, x, "sqeuclidean"), atol=1e-4)
    np.testing.assert_allclose(A.pairwise_cosine(jnp.asarray(x)), 1 - cdist(x, x, "cosine"), atol=1e-5)


def test_fedavg_weighted():
    agg, _, rep = A.fedavg(X1, weights=np.array([1, 1, 1, 1, 0.0]))
    np.testing.assert_allclose(agg, [1.5])
    agg, _, _ = A.fedavg(X1)
    np.testing.assert_allclose(agg, [106.0 / 5])
    assert not np.asarray(rep["flags"]).any()


def test_krum_hand_computed_excludes_outlier():
    # n=5, f=1: n-f-2 = 2 nearest neighbours. scores: 0:{1,4}=5, 1:{1,1}=2, 2:{1,1}=2, 3:{1,4}=5, 4:{97^2,98^2}
    agg, _, rep = A.krum(X1, num_malicious=1)
    np.testing.assert_allclose(rep["scores"][:4], [5, 2, 2, 5])
    np.testing.assert_allclose(rep["scores"][4], 97.0 ** 2 + 98.0 ** 2, rtol=1e-4)
    np.testing.assert_allclose(agg, [1.0])  # first minimiser
    assert bool(rep["flags"][4]) and not bool(rep["flags"][1])


def test_multi_krum_averages_best():
    agg, _, rep = A.multi_krum(X1, num_malicious=1)  # m = n - f = 4 -> drops the outlier
    np.testing.assert_allclose(agg, [1.5])
    np.testing.assert_array_equal(np.asarray(rep["flags"]), [0, 0, 0, 0, 1])
    agg, _, _ = A.multi_krum(X1, num_malicious=1, num_selected=2)
    np.testing.assert_allclose(agg, [1.5])  # clients 1 and 2


def test_krum_tolerance_error():
    with pytest.raises(PoisonJaxInputError, match="n > 2f"):
        A.krum(X1, num_malicious=2)
    with pytest.raises(PoisonJaxInputError, match="4f"):
        A.bulyan(X1, num_malicious=1)


def test_median_and_trimmed_mean():
    x = np.array([[1.0, 10.0], [2.0, -5.0], [3.0, 0.0], [4.0, 1.0], [50.0, 2.0]], np.float32)
    agg, _, _ = A.median(x)
    np.testing.assert_allclose(agg, [3.0, 1.0])
    agg, _, _ = A.median(x[:4])
    np.testing.assert_allclose(agg, [2.5, 0.5])
    agg, _, rep = A.trimmed_mean(x, beta=0.2)  # b = 1 per side
    np.testing.assert_allclose(agg, [3.0, 1.0])
    # coord 0 trims clients 0 (1) and 4 (50); coord 1 trims clients 1 (-5) and 0 (10)
    np.testing.assert_allclose(rep["scores"], [1.0, 0.5, 0.0, 0.0, 0.5])
    with pytest.raises(PoisonJaxInputError, match="beta"):
        A.trimmed_mean(x, beta=0.5)


def test_bulyan_hand_computed():
    x = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0], [100.0]], np.float32)
    # n=7, f=1: theta = 5 by iterated Krum -> {1,2,3,4, then 0 or 5}; beta = 3 closest to median
    agg, _, rep = A.bulyan(x, num_malicious=1)
    assert bool(rep["flags"][6])
    assert int(np.sum(~np.asarray(rep["flags"]))) == 5
    np.testing.assert_allclose(agg, [2.0 if not bool(rep["flags"][0]) else 3.0])


def test_rfa_matches_scipy_geometric_median():
    rng = np.random.RandomState(1)
    x = np.concatenate([rng.randn(8, 3), [[50.0, 50.0, 50.0]]]).astype(np.float32)
    agg, _, _ = A.rfa(x, iters=200, nu=1e-8)
    ref = minimize(lambda v: np.linalg.norm(x - v, axis=1).sum(), x.mean(0), method="Nelder-Mead",
                   options={"xatol": 1e-7, "fatol": 1e-9, "maxiter": 20000}).x
    np.testing.assert_allclose(agg, ref, atol=2e-3)
    assert np.linalg.norm(np.asarray(agg) - x[:8].mean(0)) < 1.0  # not dragged to the outlier


def test_fltrust_hand_computed():
    x = np.array([[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 1.0]], np.float32)
    agg, _, rep = A.fltrust(x, root_update=np.array([1.0, 0.0]))
    c = np.sqrt(0.5)
    expect = (np.array([1.0, 0.0]) + c * np.array([c, c])) / (1 + c)
    np.testing.assert_allclose(agg, expect, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(rep["flags"]), [0, 1, 1, 0])
    with pytest.raises(PoisonJaxInputError, match="root_update"):
        A.fltrust(x)


def _planted(n_ben=8, n_mal=2, d=20, seed=0):
    rng = np.random.RandomState(seed)
    base = rng.randn(d)
    ben = base + 0.3 * rng.randn(n_ben, d)
    mal = -3.0 * base + 0.05 * rng.randn(n_mal, d)
    return np.concatenate([ben, mal]).astype(np.float32), np.r_[np.zeros(n_ben, bool), np.ones(n_mal, bool)]


def test_flame_excludes_planted_outliers():
    x, mal = _planted()
    agg, _, rep = A.flame(x, noise_lambda=0.0)
    np.testing.assert_array_equal(np.asarray(rep["flags"]), mal)
    norms = np.linalg.norm(x, axis=1)
    s = np.median(norms)
    clipped = x * np.minimum(1, s / norms)[:, None]
    np.testing.assert_allclose(agg, clipped[~mal].mean(0), atol=1e-5)


def test_dnc_and_multikrum_detection():
    x, mal = _planted()
    agg, _, rep = A.dnc(x, num_malicious=2)
    np.testing.assert_array_equal(np.asarray(rep["flags"]), mal)
    np.testing.assert_allclose(agg, x[~mal].mean(0), atol=1e-5)
    p, r = detection_precision_recall(rep["flags"], mal)
    assert p == 1.0 and r == 1.0
    assert detection_auroc(rep["scores"], mal) == 1.0


def test_foolsgold_downweights_sybils():
    rng = np.random.RandomState(0)
    honest = rng.randn(4, 10)
    sybil = np.tile(rng.randn(1, 10), (3, 1))
    x = np.concatenate([honest, sybil]).astype(np.float32)
    agg, state, rep = A.foolsgold(x)
    w = np.asarray(rep["weights"])
    assert np.all(w[4:] == 0) and np.all(w[:4] > 0)
    assert np.asarray(rep["flags"])[4:].all()
    np.testing.assert_allclose(state["history"], x)
    _, state2, _ = A.foolsgold(x, state)
    np.testing.assert_allclose(state2["history"], 2 * x)


def test_centered_clipping_hand_computed():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [10.0, 0.0]], np.float32)
    agg, st, _ = A.centered_clipping(x, tau=1.0, iters=1)
    # from v=0: clip((1,0))=(1,0), clip((0,1))=(0,1), clip((10,0))=(1,0); mean
    np.testing.assert_allclose(agg, [2 / 3, 1 / 3], atol=1e-6)
    np.testing.assert_allclose(st["center"], agg)


def test_flare_flags_clients_with_distinct_representations():
    rng = np.random.RandomState(0)
    feats = np.concatenate([rng.randn(8, 16, 4), rng.randn(2, 16, 4) + 4.0]).astype(np.float32)
    x = rng.randn(10, 3).astype(np.float32)
    agg, _, rep = A.flare(x, features=feats)
    assert np.asarray(rep["flags"])[8:].all()
    w = np.asarray(rep["weights"])
    assert w[8:].sum() < 1e-2 and abs(w.sum() - 1) < 1e-5
    np.testing.assert_allclose(agg, w @ x, atol=1e-5)
    m2 = A.mmd2_matrix(jnp.asarray(feats), bandwidth=1.0)
    # hand-computed MMD^2 for one pair
    def k(a, b):
        return np.exp(-cdist(a, b, "sqeuclidean") / 2.0).mean()
    ref = k(feats[0], feats[0]) + k(feats[9], feats[9]) - 2 * k(feats[0], feats[9])
    np.testing.assert_allclose(m2[0, 9], ref, rtol=1e-4)


def test_pytree_updates_equal_flat():
    rng = np.random.RandomState(0)
    tree = {"a": jnp.asarray(rng.randn(6, 2, 3), jnp.float32), "b": jnp.asarray(rng.randn(6, 4), jnp.float32)}
    flat = jnp.concatenate([tree["a"].reshape(6, -1), tree["b"]], axis=1)
    for fn, kw in [(A.median, {}), (A.krum, {"num_malicious": 1}), (A.trimmed_mean, {"beta": 0.2})]:
        a_tree, _, _ = fn(tree, **kw)
        a_flat, _, _ = fn(flat, **kw)
        np.testing.assert_allclose(jnp.concatenate([a_tree["a"].reshape(-1), a_tree["b"]]), a_flat, atol=1e-6)


def test_nan_updates_raise_or_are_reported():
    x = np.array([[1.0], [2.0], [np.nan], [3.0], [4.0]], np.float32)
    with pytest.raises(PoisonJaxInputError, match=r"clients \[2\].*NaN"):
        A.fedavg(x)
    for fn, kw, expect in [(A.fedavg, {}, 2.5), (A.median, {}, 2.5), (A.trimmed_mean, {"beta": 0.25}, 2.5),
                           (A.krum, {"num_malicious": 0}, None)]:
        agg, _, rep = fn(x, nan_policy="exclude", **kw)
        assert np.all(np.isfinite(agg))
        np.testing.assert_array_equal(np.asarray(rep["nonfinite"]), [0, 0, 1, 0, 0])
        assert bool(rep["flags"][2])
        if expect is not None:
            np.testing.assert_allclose(agg, [expect])
    # inside jit: excluded and reported
    agg, _, rep = jax.jit(lambda u: A.median(u))(x)
    np.testing.assert_allclose(agg, [2.5])
    assert bool(rep["nonfinite"][2])


def test_bad_shapes_and_names():
    with pytest.raises(PoisonJaxInputError, match="n_clients, d"):
        A.fedavg(np.zeros((3,)))
    with pytest.raises(PoisonJaxInputError, match="unknown aggregator"):
        A.get_aggregator("krumm")


def test_registry_holds_geminiguard_and_weidetect():
    import inspect
    for name in ("geminiguard", "weidetect"):
        assert name in A.AGGREGATORS
        agg = A.get_aggregator(name)
        assert agg.name == name
    assert A.get_aggregator("geminiguard", fusion="weight").needs == ()
    assert A.get_aggregator("geminiguard").needs == ("features",)
    # the documented signature, not the decorator's inner one
    sig = inspect.signature(A.krum)
    assert list(sig.parameters)[:3] == ["updates", "state", "key"] and "num_malicious" in sig.parameters
    assert "x" not in sig.parameters and "valid" in sig.parameters
    assert "tau_weight" in inspect.signature(A.geminiguard).parameters


def test_list_of_client_arrays_accepted_or_refused_with_message():
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=5).astype(np.float32) for _ in range(7)]
    agg, _, rep = A.median(xs)
    np.testing.assert_allclose(agg, np.median(np.stack(xs), 0), rtol=1e-6)
    assert rep["flags"].shape == (7,)
    agg2, _, _ = A.krum(xs, num_malicious=1)
    agg3, _, _ = A.krum(np.stack(xs), num_malicious=1)
    np.testing.assert_array_equal(agg2, agg3)
    with pytest.raises(PoisonJaxInputError, match=r"same shape.*\[n_clients, d\]"):
        A.fedavg([np.zeros(3), np.zeros(4)])
    with pytest.raises(PoisonJaxInputError, match="empty list"):
        A.fedavg([])
