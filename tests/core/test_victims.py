"""core.victims: K vmapped victims == K sequential ones (losses, metrics), BatchNorm running statistics,
trainable masks, chunked == unchunked, sharded (8 fake devices) == unsharded, evaluation helpers."""
import os
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.core.victims import (evaluate_victims, flax_victim, predict_victims, stack_datasets,
                                    train_on_poisoned, train_victims)


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(nn.relu(nn.Dense(16)(x)))


class BNNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Dense(16)(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
        return nn.Dense(3, name="head")(nn.relu(h))


def _data(n=48, seed=0):
    r = np.random.default_rng(seed)
    y = r.integers(0, 3, n)
    x = r.normal(size=(n, 4)).astype(np.float32) + 1.5 * np.eye(3, 4, dtype=np.float32)[y] + 2.0
    return {"x": jnp.asarray(x), "y": jnp.asarray(y, jnp.int32)}


DATA = _data()
TEST = _data(60, seed=1)
KEYS = jax.random.split(jax.random.PRNGKey(0), 3)


def test_vmapped_equals_sequential_on_losses_and_accuracy():
    v = flax_victim(MLP(), DATA["x"])
    assert not v.stateful
    kw = dict(epochs=3, batch_size=16)
    res = jax.jit(lambda ks: train_victims(v, optax.adam(0.05), DATA, ks, **kw))(KEYS)
    acc = evaluate_victims(v.apply, res.variables, TEST["x"], TEST["y"], batch_size=25)
    assert res.losses.shape == (3, 9) and acc.shape == (3,)
    for i in range(3):
        one = jax.jit(lambda k: train_victims(v, optax.adam(0.05), DATA, k[None], **kw))(KEYS[i])
        np.testing.assert_allclose(one.losses[0], res.losses[i], rtol=1e-4, atol=1e-5)
        a1 = evaluate_victims(v.apply, one.variables, TEST["x"], TEST["y"])
        assert abs(float(a1[0]) - float(acc[i])) <= 1.0 / 60 + 1e-6
    # training works: the loss falls and victims beat chance on held-out data
    assert float(res.losses[:, -3:].mean()) < float(res.losses[:, :3].mean())
    assert float(acc.mean()) > 0.6


def test_batchnorm_running_stats_updated_in_train_and_used_in_eval():
    v = flax_victim(BNNet(), DATA["x"])
    assert v.stateful
    init = jax.vmap(v.init)(jax.random.split(KEYS[0], 2))
    res = train_victims(v, optax.sgd(0.1), DATA, KEYS[:2], epochs=2, batch_size=16)
    bs0, bs1 = init["batch_stats"], res.variables["batch_stats"]
    mean1 = bs1["BatchNorm_0"]["mean"]
    assert float(jnp.abs(mean1 - bs0["BatchNorm_0"]["mean"]).max()) > 0.1   # running stats moved
    # eval mode reads the running statistics: changing them changes the outputs
    out = predict_victims(v.apply, res.variables, TEST["x"])
    moved = jax.tree.map(lambda a: a, res.variables)
    moved["batch_stats"] = jax.tree.map(lambda a: a + 1.0, moved["batch_stats"])
    out2 = predict_victims(v.apply, moved, TEST["x"])
    assert float(jnp.abs(out - out2).max()) > 1e-3
    # and eval outputs equal a manual normalisation with the running statistics (not batch statistics)
    v0 = jax.tree.map(lambda a: a[0], res.variables)
    p = v0["params"]
    h = TEST["x"] @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
    st = v0["batch_stats"]["BatchNorm_0"]
    h = (h - st["mean"]) / jnp.sqrt(st["var"] + 1e-5) * p["BatchNorm_0"]["scale"] + p["BatchNorm_0"]["bias"]
    ref = jax.nn.relu(h) @ p["head"]["kernel"] + p["head"]["bias"]
    np.testing.assert_allclose(out[0], ref, rtol=1e-4, atol=1e-4)
    assert res.losses.shape == (2, 6) and np.all(np.isfinite(res.losses))


def test_trainable_mask_freezes_the_rest_exactly():
    v = flax_victim(BNNet(), DATA["x"])
    start = jax.vmap(v.init)(jax.random.split(KEYS[1], 2))
    only_bn = lambda params: {k: jax.tree.map(lambda _: k == "BatchNorm_0", sub) for k, sub in params.items()}
    res = train_victims(v, optax.adam(0.05), DATA, KEYS[:2], epochs=2, batch_size=16, variables=start,
                        trainable=only_bn)
    for name in ("Dense_0", "head"):
        for a, b in zip(jax.tree.leaves(start["params"][name]), jax.tree.leaves(res.variables["params"][name])):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    moved = float(jnp.abs(res.variables["params"]["BatchNorm_0"]["scale"] - start["params"]["BatchNorm_0"]["scale"]).max())
    assert moved > 1e-3
    # a shared (unstacked) start and a pytree mask work too
    mask = jax.tree.map(lambda _: False, start["params"])
    mask["head"] = jax.tree.map(lambda _: True, mask["head"])
    one = jax.tree.map(lambda a: a[0], start)
    res2 = train_victims(v, optax.sgd(0.1), DATA, KEYS[:2], epochs=1, batch_size=16, variables=one,
                         variables_axis=None, trainable=mask)
    np.testing.assert_array_equal(np.asarray(res2.variables["params"]["Dense_0"]["kernel"][1]),
                                  np.asarray(one["params"]["Dense_0"]["kernel"]))
    assert float(jnp.abs(res2.variables["params"]["head"]["kernel"][0] - one["params"]["head"]["kernel"]).max()) > 1e-4


def test_chunked_equals_unchunked_stacked_data_mask_and_augment():
    v = flax_victim(MLP(), DATA["x"])
    sets = [jax.tree.map(lambda a: a[:n], DATA) for n in (48, 40, 33)]
    data, mask = stack_datasets(sets)
    assert data["x"].shape == (3, 48, 4) and float(mask[2].sum()) == 33
    aug = lambda k, x: x + 0.01 * jax.random.normal(k, x.shape)
    kw = dict(epochs=2, batch_size=16, data_axis=0, mask=mask, augment=aug)
    full = train_victims(v, optax.sgd(0.1), data, KEYS, **kw)
    part = train_victims(v, optax.sgd(0.1), data, KEYS, chunk=2, **kw)
    np.testing.assert_allclose(full.losses, part.losses, rtol=1e-5, atol=1e-6)
    a = evaluate_victims(v.apply, full.variables, TEST["x"], TEST["y"])
    b = evaluate_victims(v.apply, part.variables, TEST["x"], TEST["y"], chunk=2, batch_size=7)
    np.testing.assert_allclose(a, b, atol=1.0 / 60 + 1e-6)
    # the padded rows are never trained on: junk in them changes nothing
    junk = jax.tree.map(lambda a: a, data)
    junk["x"] = jnp.where(mask[..., None] > 0, data["x"], 1e3)
    j = train_victims(v, optax.sgd(0.1), junk, KEYS, **kw)
    np.testing.assert_allclose(j.losses, full.losses, rtol=1e-5, atol=1e-6)


def test_train_on_poisoned_and_input_errors():
    v = flax_victim(MLP(), DATA["x"])
    delta = jnp.ones((2, 4)) * 0.5
    params = train_on_poisoned(v.init, v.loss, optax.sgd(0.1), DATA["x"], DATA["y"], KEYS[0],
                               jnp.array([3, -1]), delta, epochs=1, batch_size=16)
    assert jax.tree.structure(params) == jax.tree.structure(v.init(KEYS[0]))
    with pytest.raises(PoisonJaxInputError, match="keys"):
        train_victims(v, optax.sgd(0.1), DATA, KEYS[0], epochs=1, batch_size=8)
    with pytest.raises(PoisonJaxInputError, match="data_axis"):
        train_victims(v, optax.sgd(0.1), DATA, KEYS, epochs=1, batch_size=8, data_axis=0)
    with pytest.raises(PoisonJaxInputError, match="mask"):
        train_victims(v, optax.sgd(0.1), DATA, KEYS, epochs=1, batch_size=8, mask=jnp.ones(5))
    with pytest.raises(PoisonJaxInputError, match="epochs"):
        train_victims(v, optax.sgd(0.1), DATA, KEYS, epochs=0, batch_size=8)


@pytest.mark.slow  # CI budget: ~30-100 s; the property is also covered by faster tests
def test_sharded_equals_unsharded_on_8_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    p = subprocess.run([sys.executable, str(Path(__file__).with_name("_victims_child.py"))], env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "OK" in p.stdout


def test_victim_training_resumes_bit_equal_and_matches_train_victims(tmp_path):
    """VictimTraining (one runner step = one epoch of all K victims): a run stopped after 2 of 4 epochs
    and resumed from its checkpoint equals an uninterrupted run bit for bit (same program), keeps the
    BatchNorm statistics across the checkpoint, and matches train_victims (losses, accuracy)."""
    from poisonjax.core import runner
    from poisonjax.core.victims import VictimTraining
    v = flax_victim(BNNet(), DATA["x"])
    data, mask = stack_datasets([_data(40, seed=s) for s in (2, 3, 4)])
    kw = dict(epochs=4, batch_size=16, data_axis=0)
    vt = VictimTraining(v, optax.adam(0.05), **kw)
    prob = vt.problem(data, KEYS, mask=mask)
    run = lambda wd, steps: runner.run(vt.as_attack_optimizer(), prob, steps, wd, chunk_size=1, progress=False)
    assert run(tmp_path / "a", 2).steps == 2                       # "killed" after epoch 2 (checkpointed)
    resumed = run(tmp_path / "a", 4)
    full = run(tmp_path / "b", 4)
    assert resumed.resumed_from == 2 and full.resumed_from is None
    for a, b in zip(jax.tree.leaves(vt.variables(resumed.state)), jax.tree.leaves(vt.variables(full.state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    ref = jax.jit(lambda ks: train_victims(v, optax.adam(0.05), data, ks, mask=mask, **kw))(KEYS)
    np.testing.assert_allclose(np.asarray(full.state.losses), np.asarray(ref.losses[:, -3:]), rtol=1e-4, atol=1e-6)
    a1 = evaluate_victims(v.apply, vt.variables(full.state), TEST["x"], TEST["y"])
    a2 = evaluate_victims(v.apply, ref.variables, TEST["x"], TEST["y"])
    assert float(jnp.max(jnp.abs(a1 - a2))) <= 1.5 / 60
    with pytest.raises(PoisonJaxInputError, match="keys"):
        vt.problem(data, KEYS[0], mask=mask)


def test_full_batch_training_with_model_selection():
    """batch_size=None: one step per epoch on the whole dataset (plain mean); select= returns the
    variables of the step with the lowest score (here the step count where a held-out loss is lowest)."""
    from poisonjax.core.training import minibatch_schedule, train_minibatch
    v = flax_victim(MLP(), DATA["x"])
    p0 = v.init(jax.random.PRNGKey(1))
    val = lambda p: jnp.mean(v.loss(p, TEST, None))
    opt = optax.sgd(0.5)
    idx, w, keys = minibatch_schedule(jax.random.PRNGKey(2), None, 5, None)
    assert idx is None and w is None and keys.shape == (5, 2)
    traj = [train_minibatch(v.loss, p0, opt, DATA, jax.random.PRNGKey(2), epochs=e, batch_size=None) for e in range(1, 6)]
    # full batch == the plain mean objective: step 1 equals a hand-written gradient step
    g = jax.grad(lambda p: jnp.mean(v.loss(p, DATA, None)))(p0)
    hand = jax.tree.map(lambda a, b: a - 0.5 * b, p0, g)
    for a, b in zip(jax.tree.leaves(traj[0].params), jax.tree.leaves(hand)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    scores = [float(val(t.params)) for t in traj]
    sel = train_minibatch(v.loss, p0, opt, DATA, jax.random.PRNGKey(2), epochs=5, batch_size=None, select=val)
    best = traj[int(np.argmin(scores))].params
    for a, b in zip(jax.tree.leaves(sel.params), jax.tree.leaves(best)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    # a score that never improves on the initial inf keeps the initial variables
    none = train_minibatch(v.loss, p0, opt, DATA, jax.random.PRNGKey(2), epochs=2, batch_size=None,
                           select=lambda p: jnp.inf)
    for a, b in zip(jax.tree.leaves(none.params), jax.tree.leaves(p0)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
