"""Simulation: chunked == unchunked, runner == host loop, resume == uninterrupted, sharded == unsharded
(8 fake CPU devices), NaN updates reported, bad input."""
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.federated import simulation as S

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def small():
    data = S.federate_dataset("digits", num_clients=8, alpha=0.5, malicious_fraction=0.25, aux_size=40, seed=0)
    model = S.default_model(data, "mlp", hidden=(16,))
    return data, model


def _flat(params):
    return np.asarray(S.flatten_params(params))


def test_chunked_equals_unchunked_and_runner_equals_loop(small):
    data, model = small
    kw = dict(model_attack="sign_flip", client_fraction=0.75, batch_size=16)
    a = S.build_simulation(model, "median", **kw)
    b = S.build_simulation(model, "median", client_chunk_size=4, **kw)  # 6 clients -> chunks of 4 (padded)
    st_a, ms_a = S.run_rounds(a, data, 3)
    st_b, ms_b = S.run_rounds(b, data, 3)
    np.testing.assert_allclose(_flat(st_a.params), _flat(st_b.params), atol=1e-5)
    res = S.run_simulation(a, data, 3, rounds_per_chunk=2, progress=False)
    np.testing.assert_allclose(_flat(res.state.params), _flat(st_a.params), atol=1e-5)
    assert [round(m["test_accuracy"], 4) for m in res.metrics] == [round(m["test_accuracy"], 4) for m in ms_a]
    assert all(m["num_malicious"] <= 2 for m in ms_a) and ms_a[-1]["test_accuracy"] > 0.2


def test_resume_equals_uninterrupted(small, tmp_path):
    data, model = small
    sim = S.build_simulation(model, "fedavg", model_attack="lie", server_optimizer="fedavgm", batch_size=16)
    full = S.run_simulation(sim, data, 4, tmp_path / "full", rounds_per_chunk=2, config={"t": 1}, progress=False)
    part = S.run_simulation(sim, data, 2, tmp_path / "cut", rounds_per_chunk=2, config={"t": 1}, progress=False)
    assert part.steps == 2
    resumed = S.run_simulation(sim, data, 4, tmp_path / "cut", rounds_per_chunk=2, config={"t": 1}, progress=False)
    assert resumed.resumed_from == 2
    np.testing.assert_array_equal(_flat(resumed.state.params), _flat(full.state.params))
    assert int(resumed.state.round) == 4
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["step"] for l in lines] == [1, 2, 3, 4]


def test_nan_updates_are_reported_not_averaged(small):
    data, model = small

    def nan_attack(updates, malicious, key, *, context=None, aggregator=None):
        return jnp.where(malicious[:, None], jnp.nan, updates)

    sim = S.build_simulation(model, "fedavg", model_attack=nan_attack, batch_size=16)
    st, ms = S.run_rounds(sim, data, 2)
    assert np.all(np.isfinite(_flat(st.params)))
    assert ms[0]["num_nonfinite"] == 2 and ms[0]["tp"] == 2  # the NaN clients are flagged
    summ = S.summarize(ms)
    assert summ["nonfinite_updates"] == 4 and summ["detection_precision"] == 1.0


def test_bad_input(small):
    data, model = small
    for bad in (1.0, -0.1):
        with pytest.raises(PoisonJaxInputError, match="malicious_fraction"):
            S.federate_dataset("digits", num_clients=8, malicious_fraction=bad)
    with pytest.raises(PoisonJaxInputError, match="alpha"):
        S.federate_dataset("digits", num_clients=8, alpha=0.0)
    with pytest.raises(PoisonJaxInputError, match="client_fraction"):
        S.build_simulation(model, "fedavg", client_fraction=0.0)
    sim = S.build_simulation(model, "krum", aggregator_kwargs={"num_malicious": 3})  # 8 clients: needs n > 8
    with pytest.raises(PoisonJaxInputError, match="n > 2f"):
        S.run_rounds(sim, data, 1)
    empty = data._replace(mask=np.asarray(data.mask).copy())
    empty.mask[3] = 0.0
    with pytest.raises(PoisonJaxInputError, match=r"clients \[3\] have no data"):
        S.run_rounds(S.build_simulation(model, "fedavg"), empty, 1)
    with pytest.raises(PoisonJaxInputError, match="no data"):
        S.federate_arrays(np.zeros((3, 2)), np.zeros(3), np.zeros((1, 2)), np.zeros(1), num_classes=2,
                          num_clients=4, partition="iid", aux_size=0)


SHARD_SCRIPT = textwrap.dedent("""
    import os, sys, json
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, numpy as np
    from poisonjax.core.parallel import make_mesh
    from poisonjax.federated import simulation as S
    assert jax.device_count() == 8
    data = S.federate_dataset("digits", num_clients=10, alpha=0.5, malicious_fraction=0.2, aux_size=40)
    model = S.default_model(data, "mlp", hidden=(16,))
    out = {}
    for name, mesh, chunk in [("one", make_mesh(num_devices=1), None), ("eight", make_mesh(), None),
                              ("eight_chunk", make_mesh(), 5)]:
        sim = S.build_simulation(model, "trimmed_mean", aggregator_kwargs={"beta": 0.2}, model_attack="min_max",
                                 mesh=mesh, client_chunk_size=chunk, batch_size=16)
        res = S.run_simulation(sim, data, 2, rounds_per_chunk=2, progress=False)
        out[name] = np.asarray(S.flatten_params(res.state.params)).tolist()
    print("RESULT" + json.dumps(out))
""")


def test_sharded_equals_unsharded_on_8_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run([sys.executable, "-c", SHARD_SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.split("RESULT", 1)[1])
    one, eight, eight_chunk = (np.array(res[k]) for k in ("one", "eight", "eight_chunk"))
    np.testing.assert_allclose(eight, one, atol=1e-5)
    np.testing.assert_allclose(eight_chunk, one, atol=1e-5)
    assert np.abs(one).sum() > 0


def test_server_optimizers_learn(small):
    data, model = small
    accs = {}
    for opt, lr in (("fedadam", 0.01), ("fedavgm", 0.5)):
        sim = S.build_simulation(model, "fedavg", server_optimizer=opt, server_lr=lr, batch_size=16)
        _, ms = S.run_rounds(sim, data, 4)
        accs[opt] = ms[-1]["test_accuracy"]
    assert min(accs.values()) > 0.3, accs  # 10 classes: chance is 0.1


def test_cnn_client_model_matches_flax_conv_and_trains(small):
    """The federated CNN (PatchConv layers) computes what the same network built from ``nn.Conv`` computes
    with the same parameters, and one FedAvg round on digits lowers the test loss (accuracy rises)."""
    import flax.linen as nn

    from poisonjax.federated.models import CNN

    class ConvRef(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.max_pool(nn.relu(nn.Conv(16, (3, 3), name="PatchConv_0")(x)), (2, 2), (2, 2))
            x = nn.max_pool(nn.relu(nn.Conv(32, (3, 3), name="PatchConv_1")(x)), (2, 2), (2, 2))
            h = nn.relu(nn.Dense(64, name="Dense_0")(x.reshape(x.shape[0], -1)))
            return nn.Dense(10, name="Dense_1")(h)

    x = jax.random.uniform(jax.random.PRNGKey(0), (3, 8, 8, 1))
    p = CNN().init(jax.random.PRNGKey(1), x)
    np.testing.assert_allclose(CNN().apply(p, x), ConvRef().apply(p, x), atol=1e-5)
    data, _ = small
    model = S.default_model(data, "cnn", hidden=32)
    sim = S.build_simulation(model, "fedavg", local_lr=0.1, batch_size=16)
    _, ms = S.run_rounds(sim, data, 3, seed=0)
    assert ms[-1]["test_accuracy"] > ms[0]["test_accuracy"] and ms[-1]["test_accuracy"] > 0.3, ms


def test_clients_are_core_victims_from_the_global_model(small):
    """Local training = core.victims.train_victims from the broadcast global params (split_keys=False):
    equal to each client trained on its own by train_minibatch with key fold_in(key, id) (the
    pre-core.victims formulation), and the single-client client_update agrees with its row."""
    from poisonjax.core.training import softmax_cross_entropy_loss, train_minibatch
    data, model = small
    sim = S.build_simulation(model, "fedavg", batch_size=16, client_chunk_size=3)
    st = sim.init(jax.random.PRNGKey(0), data)
    ids, key = jnp.array([0, 2, 5, 7]), jax.random.PRNGKey(4)
    upd, losses = jax.jit(sim.local_updates)(st.params, data, ids, key)
    loss = softmax_cross_entropy_loss(model.apply)
    for r, i in enumerate(np.asarray(ids)):
        res = jax.jit(lambda p, x, y, m, k: train_minibatch(loss, p, sim.local_optimizer, {"x": x, "y": y}, k,
                                                             epochs=1, batch_size=16, mask=m))(
            st.params, data.x[i], data.y[i], data.mask[i], jax.random.fold_in(key, int(i)))
        ref = _flat(res.params) - _flat(st.params)
        np.testing.assert_allclose(np.asarray(upd[r]), ref, rtol=1e-4, atol=1e-6)
        n = max(int(np.sum(np.asarray(res.losses) != 0)), 1)
        assert float(losses[r]) == pytest.approx(float(np.sum(res.losses)) / n, rel=1e-5)
    one, _ = jax.jit(sim.client_update)(st.params, data.x[5], data.y[5], data.mask[5], jax.random.fold_in(key, 5))
    np.testing.assert_allclose(np.asarray(one), np.asarray(upd[2]), rtol=1e-4, atol=1e-6)
