"""Model-poisoning and data-poisoning attacks, and partitions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.data import partitions as P
from poisonjax.federated import aggregators as A
from poisonjax.federated import attacks as T


@pytest.fixture(scope="module")
def round_updates():
    rng = np.random.RandomState(0)
    base = rng.randn(30)
    x = (base + 0.5 * rng.randn(10, 30)).astype(np.float32)
    mal = np.zeros(10, bool)
    mal[:3] = True
    return jnp.asarray(x), jnp.asarray(mal)


def test_lie_z_max_and_update(round_updates):
    # Baruch et al.: n=50, f=10 -> s = 26 - 10 = 16, z = Phi^-1(34/50)
    assert abs(T.lie_z_max(50, 10) - norm.ppf(34 / 50)) < 1e-9
    x, mal = round_updates
    out = np.asarray(T.lie(x, mal, None))
    ben = np.asarray(x)[~np.asarray(mal)]
    z = T.lie_z_max(10, 3)
    np.testing.assert_allclose(out[0], ben.mean(0) + z * ben.std(0, ddof=1), atol=1e-5)
    np.testing.assert_allclose(out[3:], np.asarray(x)[3:])


def test_simple_model_attacks(round_updates):
    x, mal = round_updates
    xn = np.asarray(x)
    ben_mu = xn[3:].mean(0)
    np.testing.assert_allclose(T.sign_flip(x, mal, None, scale=2.0)[:3], -2 * xn[:3], atol=1e-6)
    np.testing.assert_allclose(T.scaling(x, mal, None)[:3], (10 / 3) * xn[:3], atol=1e-5)
    np.testing.assert_allclose(T.ipm(x, mal, None, epsilon=0.5)[:3], np.tile(-0.5 * ben_mu, (3, 1)), atol=1e-5)
    g = np.asarray(T.gaussian(x, mal, jax.random.PRNGKey(0), std=3.0))
    assert abs(g[:3].std() - 3.0) < 0.5 and np.allclose(g[3:], xn[3:])


@pytest.mark.parametrize("name", ["min_max", "min_sum"])
@pytest.mark.parametrize("direction", ["unit", "std", "sign"])
def test_min_max_min_sum_constraint_is_tight(round_updates, name, direction):
    x, mal = round_updates
    xn = np.asarray(x)
    ben = xn[3:]
    out = np.asarray(getattr(T, name)(x, mal, None, direction=direction))
    m = out[0]
    mu, sd = ben.mean(0), ben.std(0, ddof=1)
    p = {"unit": -mu / np.linalg.norm(mu), "std": -sd, "sign": -np.sign(mu)}[direction]
    gamma = np.dot(m - mu, p) / np.dot(p, p)
    assert gamma > 0
    np.testing.assert_allclose(m, mu + gamma * p, atol=1e-4)
    d = ((ben[:, None] - ben[None]) ** 2).sum(-1)

    def ok(g):
        dm = ((mu + g * p - ben) ** 2).sum(-1)
        return dm.max() <= d.max() + 1e-3 if name == "min_max" else dm.sum() <= d.sum(1).max() + 1e-3

    assert ok(gamma) and not ok(gamma * 1.01)


def test_fang_krum_gets_selected(round_updates):
    # non-IID-like geometry: client spread larger than the mean update (as in FL with skewed data)
    rng = np.random.RandomState(1)
    x = jnp.asarray(0.3 * rng.randn(30) + rng.randn(10, 30), jnp.float32)
    mal = round_updates[1]
    _, _, rep0 = A.krum(x, num_malicious=3)
    assert not bool(mal[int(np.argmin(np.asarray(rep0["scores"])))])
    out = T.fang_krum(x, mal, jax.random.PRNGKey(0), num_malicious=3)
    _, _, rep = A.krum(out, num_malicious=3)
    assert bool(mal[int(np.argmin(np.asarray(rep["scores"])))])
    mu = np.asarray(x)[3:].mean(0)
    assert np.dot(np.asarray(out)[0], mu) < 0  # points against the benign direction


def test_fang_trimmed_mean_moves_aggregate_against_benign(round_updates):
    x, mal = round_updates
    out = T.fang_trimmed_mean(x, mal, jax.random.PRNGKey(0))
    mu = np.asarray(x)[3:].mean(0)
    clean, _, _ = A.trimmed_mean(x, beta=0.3)
    att, _, _ = A.trimmed_mean(out, beta=0.3)
    assert np.dot(np.asarray(att) - np.asarray(clean), np.sign(mu)) < 0


def test_adaptive_hook_beats_gamma_zero(round_updates):
    x, mal = round_updates
    agg_fn = lambda u: A.median(u)[0::2]  # noqa: E731
    out = T.adaptive(x, mal, None, aggregator=agg_fn)
    mu = np.asarray(x)[3:].mean(0)
    mun = mu / np.linalg.norm(mu)
    base = T.adaptive(x, mal, None, aggregator=agg_fn, num_candidates=1)  # only gamma = 0
    assert np.dot(np.asarray(agg_fn(out)[0]), mun) < np.dot(np.asarray(agg_fn(base)[0]), mun)
    with pytest.raises(PoisonJaxInputError, match="aggregator"):
        T.adaptive(x, mal, None)


def test_label_flip_and_backdoor():
    y = np.array([0, 1, 2, 9])
    np.testing.assert_array_equal(T.flip_labels(y, 10), [9, 8, 7, 0])
    np.testing.assert_array_equal(T.flip_labels(y, 10, mode="targeted", source=1, target=7), [0, 7, 2, 9])
    x = np.zeros((10, 8, 8, 1), np.float32)
    mask = np.r_[np.ones(8), np.zeros(2)]
    xb, yb = T.add_backdoor(x, np.ones(10, np.int32), mask, target=3, fraction=0.5, size=2)
    hit = np.flatnonzero(yb == 3)
    assert hit.size == 4 and np.all(hit < 8)
    assert np.all(xb[hit, -2:, -2:, 0] == 1.0) and xb[hit].sum() == 4 * 4
    tab = T.apply_trigger(np.zeros((3, 5)), size=2, value=7.0)
    np.testing.assert_array_equal(tab[:, -2:], 7.0)


def test_partitions():
    y = np.repeat(np.arange(10), 50)
    parts = P.dirichlet_partition(y, 20, alpha=0.5, seed=0)
    allidx = np.sort(np.concatenate(parts))
    np.testing.assert_array_equal(allidx, np.arange(500))
    # skew: small alpha gives more label-concentrated clients than large alpha
    def purity(ps):
        return np.mean([np.bincount(y[p], minlength=10).max() / len(p) for p in ps])
    assert purity(P.dirichlet_partition(y, 20, 0.1)) > purity(P.dirichlet_partition(y, 20, 100.0)) + 0.2
    iid = P.iid_partition(500, 7)
    assert sorted(len(p) for p in iid) == [71] * 4 + [72] * 3
    ca = P.pad_clients(np.arange(500.0)[:, None], y, parts[:3])
    assert ca.x.shape[:2] == ca.mask.shape and ca.mask.sum() == sum(len(p) for p in parts[:3])
    np.testing.assert_array_equal(ca.sizes, [len(p) for p in parts[:3]])
    v = P.vertical_partition(10, 3)
    np.testing.assert_array_equal(np.concatenate(v), np.arange(10))
    with pytest.raises(PoisonJaxInputError, match="alpha"):
        P.dirichlet_partition(y, 5, alpha=0.0)
    with pytest.raises(PoisonJaxInputError, match="no data"):
        P.pad_clients(np.zeros((5, 1)), np.zeros(5), [np.arange(3), np.array([], int)])
    with pytest.raises(PoisonJaxInputError, match="num_clients"):
        P.iid_partition(3, 5)
