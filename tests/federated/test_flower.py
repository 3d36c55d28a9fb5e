"""Flower bridge (poisonjax.federated.flower). The core runs everywhere; the Strategy tests need flwr
(run them in benchmarks/.venvs/flower, see the module doc) and skip without it."""
import subprocess
import sys

import numpy as np
import pytest

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.federated import flower as F

SHAPES = [(3, 2), (2,)]


def _model(seed=0):
    r = np.random.default_rng(seed)
    return [r.normal(size=s).astype(np.float32) for s in SHAPES]


def _clients(glob, n_benign=6, n_bad=2, seed=1):
    """Benign updates near +0.1, malicious ones huge and opposite; ids c0..c{n-1}, malicious last."""
    r = np.random.default_rng(seed)
    out = []
    for i in range(n_benign + n_bad):
        scale = -50.0 if i >= n_benign else 0.1
        out.append([g + scale + 0.01 * r.normal(size=g.shape).astype(np.float32) for g in glob])
    return out, [f"c{i}" for i in range(n_benign + n_bad)]


def test_module_imports_without_flwr_and_names_the_extra():
    code = ("import sys; sys.modules['flwr'] = None\n"
            "import poisonjax.federated.flower as F\n"
            "try:\n    F.PoisonjaxStrategy\nexcept ImportError as e:\n    print('ERR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'pip install "poisonjax[flower]"' in out.stdout


def test_core_krum_flags_the_attackers_and_keeps_the_benign_update():
    g = _model()
    cl, cids = _clients(g)
    core = F.RoundAggregator("multi_krum", {"num_malicious": 2})
    new, m, rep = core.aggregate_round(1, g, cl, [10] * len(cl), cids)
    assert m["n_flagged"] >= 2 and {"c6", "c7"} <= set(m["flagged_clients"].split(","))
    for a, b in zip(new, g):
        np.testing.assert_allclose(a - b, 0.1, atol=0.05)        # attackers excluded
    # plain fedavg is dragged by the attackers (the check above can fail)
    new_avg, m_avg, _ = F.RoundAggregator("fedavg").aggregate_round(1, g, cl, [10] * len(cl), cids)
    assert m_avg["n_flagged"] == 0 and abs(float(new_avg[0].mean() - g[0].mean())) > 5


def test_core_weighted_fedavg_matches_numpy_and_arrival_order_is_irrelevant():
    g = _model()
    cl, cids = _clients(g, n_bad=0)
    n_ex = [1, 2, 3, 4, 5, 6]
    new, _, _ = F.RoundAggregator("fedavg").aggregate_round(1, g, cl, n_ex, cids)
    want = [sum(w * c[j] for w, c in zip(n_ex, cl)) / sum(n_ex) for j in range(len(g))]
    for a, b in zip(new, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    rev = F.RoundAggregator("fedavg").aggregate_round(1, g, cl[::-1], n_ex[::-1], cids[::-1])[0]
    for a, b in zip(new, rev):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("name", ["median", "trimmed_mean", "rfa", "bulyan", "dnc", "flame", "foolsgold",
                                  "centered_clipping"])
def test_core_runs_every_update_only_rule_two_rounds(name):
    g = _model()
    core = F.RoundAggregator(name, {"num_malicious": 1} if name in ("bulyan", "dnc") else None)
    for rnd in (1, 2):
        cl, cids = _clients(g, seed=rnd)
        g2, m, rep = core.aggregate_round(rnd, g, cl, [10] * len(cl), cids)
        assert all(np.all(np.isfinite(a)) for a in g2) and m["aggregator"] == name
        assert rep["flags"].shape == (8,)
        g = g2


def test_core_context_rules_refuse_missing_inputs():
    with pytest.raises(PoisonJaxInputError, match="root_update_fn"):
        F.RoundAggregator("fltrust")
    with pytest.raises(PoisonJaxInputError, match="features_fn"):
        F.RoundAggregator("flare")
    with pytest.raises(PoisonJaxInputError, match="apply_fn"):
        F.RoundAggregator("weidetect")
    with pytest.raises(PoisonJaxInputError, match="unknown aggregator"):
        F.RoundAggregator("krumm")


def test_core_fltrust_with_root_update():
    g = _model()
    cl, cids = _clients(g)
    core = F.RoundAggregator("fltrust", root_update_fn=lambda p: [np.full_like(a, 0.1) for a in p])
    new, m, _ = core.aggregate_round(1, g, cl, [10] * len(cl), cids)
    assert {"c6", "c7"} <= set(m["flagged_clients"].split(","))
    assert float(new[0].mean() - g[0].mean()) > 0


# ------------------------------------------------------------------ with Flower ---------------

def _fitres(fl, arrays, n):
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
    return FitRes(status=Status(code=Code.OK, message=""), parameters=ndarrays_to_parameters(arrays),
                  num_examples=n, metrics={})


class _Proxy:
    def __init__(self, cid):
        self.cid = cid


def test_strategy_aggregate_fit_with_flower_objects():
    fl = pytest.importorskip("flwr")
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import Strategy
    g = _model()
    st = F.PoisonjaxStrategy("multi_krum", {"num_malicious": 2}, initial_parameters=ndarrays_to_parameters(g))
    assert isinstance(st, Strategy)
    for rnd in (1, 2):
        cl, cids = _clients(g, seed=rnd)
        res = [(_Proxy(c), _fitres(fl, a, 10)) for c, a in zip(cids, cl)]
        params, metrics = st.aggregate_fit(rnd, res, [])
        new = parameters_to_ndarrays(params)
        assert {"c6", "c7"} <= set(metrics["flagged_clients"].split(","))
        np.testing.assert_allclose(new[0] - g[0], 0.1, atol=0.05)
        g = new


def test_strategy_in_flower_simulation_two_rounds():
    """Flower's own simulation (Ray): 7 NumPyClients, partitions 5 and 6 send huge updates; Krum flags them."""
    fl = pytest.importorskip("flwr")
    pytest.importorskip("ray")
    from flwr.common import ndarrays_to_parameters

    g0 = _model()

    class Client(fl.client.NumPyClient):
        def __init__(self, i):
            self.i = i

        def fit(self, parameters, config):
            step = -50.0 if self.i >= 5 else 0.1
            return [p + step for p in parameters], 10, {}

        def evaluate(self, parameters, config):
            return 0.0, 1, {}

    def client_fn(cid):
        return Client(int(cid)).to_client()

    st = F.PoisonjaxStrategy("krum", {"num_malicious": 2}, initial_parameters=ndarrays_to_parameters(g0),
                             fraction_fit=1.0, min_fit_clients=7, min_available_clients=7, fraction_evaluate=0.0)
    hist = fl.simulation.start_simulation(client_fn=client_fn, num_clients=7, strategy=st,
                                          config=fl.server.ServerConfig(num_rounds=2),
                                          ray_init_args={"num_cpus": 1, "include_dashboard": False},
                                          client_resources={"num_cpus": 1})
    flagged = hist.metrics_distributed_fit["flagged_partitions"]
    assert [r for r, _ in flagged] == [1, 2]
    for _, s in flagged:
        assert {"5", "6"} <= set(s.split(","))
    assert all(n >= 2 for _, n in hist.metrics_distributed_fit["n_flagged"])
