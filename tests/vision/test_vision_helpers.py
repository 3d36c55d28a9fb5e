"""Unit tests of the gradient-matching engine (poisonjax.core.gradient_matching) and its helpers."""
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poisonjax.core import gradient_matching as gm
from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.vision import witches_brew as wb
from poisonjax.vision.hashing import (average_precision, hash_centers, mean_average_precision, trigger_metrics)
from poisonjax.vision.models import FastSmallCNN, MLPNet, PatchConv, SmallCNN, SmallResNet

MODEL = MLPNet(num_classes=4, hidden=16)
LOSS = wb.cross_entropy(MODEL.apply)


@pytest.fixture(scope="module")
def problem():
    k = jax.random.PRNGKey(0)
    ks = jax.random.split(k, 5)
    params = jax.vmap(lambda kk: MODEL.init(kk, jnp.zeros((1, 8, 8, 1))))(jax.random.split(ks[0], 2))  # M = 2
    base = jax.random.uniform(ks[1], (6, 8, 8, 1))
    base = base.at[0].set(1.0).at[1].set(0.0)  # poisons at the box edges
    target = jax.random.uniform(ks[2], (1, 8, 8, 1))
    return gm.GradientMatchingProblem(params, base, jnp.full((6,), 2), target, jnp.array([2]), jnp.float32(0.3))


@pytest.fixture(scope="module")
def crafted(problem):
    from poisonjax.core.runner import make_chunk_fn
    attack = gm.gradient_matching_attack(LOSS, steps=15, restarts=3, step_size=0.3, schedule=False)
    st0 = jax.jit(attack.init)(jax.random.PRNGKey(1), problem)
    st, _, _ = make_chunk_fn(attack, 15)(st0, problem, jnp.int32(15))
    return attack, st0, st


RESTART_LOSSES = jax.jit(lambda s, p: gm.restart_losses(LOSS, s, p))


def test_strict_loss_matches_hand_computation():
    a = {"w": jnp.array([1.0, 2.0]), "b": jnp.array([[0.5], [-1.0]])}
    b = {"w": jnp.array([0.0, 1.0]), "b": jnp.array([[2.0], [1.0]])}
    va, vb = np.array([1, 2, 0.5, -1.0]), np.array([0, 1, 2, 1.0])
    cos = va @ vb / np.linalg.norm(va) / np.linalg.norm(vb)
    np.testing.assert_allclose(gm.cosine_alignment_loss(a, b), 1 - cos, rtol=1e-6)
    alpha = 0.2
    strict = np.linalg.norm(va - vb) / (np.linalg.norm(va) * np.linalg.norm(vb))
    np.testing.assert_allclose(gm.strict_alignment_loss(a, b, alpha), (1 - alpha) * (1 - cos) + alpha * strict, rtol=1e-6)
    # identical gradients: zero loss for every alpha
    np.testing.assert_allclose(gm.strict_alignment_loss(a, a, 0.3), 0.0, atol=1e-6)


def test_projection_keeps_every_poison_within_eps_and_box(problem, crafted):
    _, st0, st = crafted
    for s in (st0, st):
        x = problem.base_images[None] + s.delta
        assert float(jnp.abs(s.delta).max()) <= float(problem.eps) + 1e-7
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    # the optimiser moves: most coordinates end at the eps boundary or well inside, not all at 0
    assert float(jnp.abs(st.delta).mean()) > 0.2 * float(problem.eps)


def test_crafting_lowers_alignment_loss_and_picks_best_restart(problem, crafted):
    _, st0, st = crafted
    l0 = RESTART_LOSSES(st0, problem)
    l1 = RESTART_LOSSES(st, problem)
    assert l0.shape == (3,) and float(l1.mean()) < 0.6 * float(l0.mean())
    delta, i, losses = jax.jit(lambda s, p: gm.select_best(LOSS, s, p))(st, problem)
    assert int(i) == int(jnp.argmin(losses))
    np.testing.assert_array_equal(delta, st.delta[int(i)])


def test_restarts_are_independent_runs(problem):
    """Restart r of a vmapped R-restart state equals an R=1 run started from the same delta."""
    big = gm.gradient_matching_attack(LOSS, steps=4, restarts=2)
    one = gm.gradient_matching_attack(LOSS, steps=4, restarts=1)
    sb = jax.jit(big.init)(jax.random.PRNGKey(3), problem)
    so = jax.jit(one.init)(jax.random.PRNGKey(4), problem)
    so = so._replace(delta=sb.delta[1:2])
    # same augmentation-free objective, so the keys do not matter
    bs, os_ = jax.jit(big.step), jax.jit(one.step)
    for _ in range(4):
        sb, so = bs(sb, problem), os_(so, problem)
    np.testing.assert_allclose(sb.delta[1], so.delta[0], atol=1e-6)


def test_craft_resume_equals_uninterrupted(problem, tmp_path):
    kw = dict(steps=6, key=jax.random.PRNGKey(5), restarts=2, chunk_size=3, progress=False)
    full = gm.craft(LOSS, problem, workdir=tmp_path / "a", **kw)
    gm.craft(LOSS, problem, workdir=tmp_path / "b", **kw)
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "6")  # "killed" after step 3
    resumed = gm.craft(LOSS, problem, workdir=tmp_path / "b", **kw)
    np.testing.assert_array_equal(full.delta, resumed.delta)


def test_augment_is_a_pixel_selection():
    x = jax.random.uniform(jax.random.PRNGKey(0), (5, 6, 6, 2))
    np.testing.assert_array_equal(gm.augment(jax.random.PRNGKey(1), x, flip=False, crop=0), x)
    y = gm.augment(jax.random.PRNGKey(1), x, flip=True, crop=0)
    for i in range(5):
        assert np.allclose(y[i], x[i]) or np.allclose(y[i], x[i, :, ::-1])
    g = jax.grad(lambda z: gm.augment(jax.random.PRNGKey(2), z, crop=2).sum())(x)
    assert g.shape == x.shape and float(g.max()) <= 1.0 and float(g.sum()) > 0


def test_poisoned_images_adds_deltas_at_indices():
    x = jnp.zeros((5, 2, 2, 1))
    d = jnp.ones((2, 2, 2, 1)) * jnp.array([0.1, 0.2])[:, None, None, None]
    out = gm.poisoned_images(x, jnp.array([3, 1]), d)
    np.testing.assert_allclose(out[:, 0, 0, 0], [0, 0.2, 0, 0.1, 0])
    out = gm.poisoned_images(x, jnp.array([3, -1]), d)  # -1 = unused slot
    np.testing.assert_allclose(out[:, 0, 0, 0], [0, 0, 0, 0.1, 0])


def test_chunked_victims_equal_one_vmap():
    """map_victims over chunks of 2 (with a ragged last chunk) trains the same victims as one vmap."""
    import optax
    k = jax.random.split(jax.random.PRNGKey(3), 3)
    xtr = jax.random.uniform(k[0], (24, 8, 8, 1))
    ytr = jnp.arange(24) % 4
    v = 5
    pidx = jnp.tile(jnp.array([[0, 4]]), (v, 1))
    pdelta = 0.1 * jax.random.normal(k[1], (v, 2, 8, 8, 1))
    kw = dict(epochs=2, batch_size=8, poison_index=pidx, poison_delta=pdelta, target_x=xtr[:v],
              adv_label=jnp.arange(v) % 4, test_x=xtr, test_y=ytr)
    init = lambda kk: MODEL.init(kk, xtr[:1])
    keys = jax.random.split(k[2], v)
    full = gm.victim_success(init, MODEL.apply, optax.adam(0.01), xtr, ytr, keys, **kw)
    part = gm.victim_success(init, MODEL.apply, optax.adam(0.01), xtr, ytr, keys, chunk=2, **kw)
    for name in full:
        np.testing.assert_allclose(np.asarray(full[name], np.float32), np.asarray(part[name], np.float32),
                                   rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="chunk"):
        gm.map_victims(lambda a: a, (keys,), chunk=0)


def test_fast_models_equal_flax_conv():
    x = jax.random.uniform(jax.random.PRNGKey(0), (3, 8, 8, 2))
    p = SmallCNN().init(jax.random.PRNGKey(1), x)
    np.testing.assert_allclose(FastSmallCNN().apply(p, x), SmallCNN().apply(p, x), atol=1e-5)
    for k, s in (((3, 3), (2, 2)), ((1, 1), (2, 2)), ((3, 3), (1, 1))):
        pc = PatchConv(5, k, s).init(jax.random.PRNGKey(2), x)
        np.testing.assert_allclose(PatchConv(5, k, s).apply(pc, x), nn.Conv(5, k, s).apply(pc, x), atol=1e-5)
    assert SmallResNet(num_classes=3).apply(SmallResNet(num_classes=3).init(jax.random.PRNGKey(0), x), x).shape == (3, 3)


def test_average_precision_matches_sklearn():
    from sklearn.metrics import average_precision_score
    rng = np.random.default_rng(0)
    dist = rng.random((4, 30))
    rel = rng.random((4, 30)) < 0.3
    rel[:, 0] = True
    ap = np.asarray(average_precision(dist, rel))
    ref = [average_precision_score(rel[q], -dist[q]) for q in range(4)]
    np.testing.assert_allclose(ap, ref, rtol=1e-5)


def test_hash_centers_and_trigger_metrics():
    c = hash_centers(10, 16)
    assert c.shape == (10, 16) and set(np.unique(c)) == {-1.0, 1.0}
    d = 0.5 * (16 - c @ c.T)
    assert d[~np.eye(10, dtype=bool)].min() >= 8  # Hadamard rows: Hamming distance >= K/2
    b = hash_centers(40, 16, jax.random.PRNGKey(0))  # C > 2K: Bernoulli
    assert b.shape == (40, 16)
    # database: 3 items of class 1 share the trigger's code, 5 of class 0 are far
    db = np.concatenate([np.tile(c[1], (3, 1)), np.tile(c[0], (5, 1))])
    lab = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    m = trigger_metrics(c[1:2], np.array([1]), db, lab, k=4, threshold=0.3)
    assert bool(m["success"][0]) and float(m["precision"][0]) == 0.75 and float(m["t_ap"][0]) == 1.0
    m = trigger_metrics(c[2:3], np.array([1]), db, lab, k=4)
    assert float(mean_average_precision(db, lab, db, lab)) == 1.0


@pytest.mark.parametrize("kwargs, match", [
    ({"eps": 0.0}, "epsilon"), ({"eps": 1.5}, "epsilon"),
    ({"budget": 0.0}, "budget"), ({"budget": 1.2}, "budget"),
    ({"target_indices": [10_000]}, "target_index"), ({"target_indices": [-1]}, "target_index"),
    ({"adv_classes": "same"}, "true class"),
])
def test_bad_inputs_raise_clear_errors(kwargs, match):
    x = np.random.default_rng(0).random((20, 8, 8, 1)).astype(np.float32)
    y = np.arange(20) % 4
    args = dict(target_indices=[3], adv_classes=[0], budget=0.1, eps=8 / 255)
    args.update(kwargs)
    if args["adv_classes"] == "same":
        args["adv_classes"] = [int(y[3])]
    with pytest.raises(PoisonJaxInputError, match=match):
        wb.witches_brew_problem(None, x, y, x, y, 4, key=jax.random.PRNGKey(0), **args)


def test_bad_images_raise_clear_errors():
    y = np.arange(20) % 4
    good = np.random.default_rng(0).random((20, 8, 8, 1)).astype(np.float32)
    kw = dict(target_indices=[3], adv_classes=[0], budget=0.1, eps=8 / 255, key=jax.random.PRNGKey(0))
    with pytest.raises(PoisonJaxInputError, match=r"\[0, 1\]"):
        wb.witches_brew_problem(None, good * 255, y, good, y, 4, **kw)
    with pytest.raises(PoisonJaxInputError, match="NHWC"):
        wb.witches_brew_problem(None, good.transpose(0, 3, 1, 2).repeat(3, 1), y, good, y, 4, **kw)
    with pytest.raises(PoisonJaxInputError, match="channel axis"):
        wb.witches_brew_problem(None, good[..., 0], y, good, y, 4, **kw)
    with pytest.raises(PoisonJaxInputError, match="steps"):
        gm.gradient_matching_attack(LOSS, steps=0)


def test_gradient_norm_poison_selection():
    """gradient_norms equals per-example norms computed one by one (chunked, with padding), and the
    selection takes each adversarial class's largest-norm images."""
    params = jax.vmap(lambda kk: MODEL.init(kk, jnp.zeros((1, 8, 8, 1))))(jax.random.split(jax.random.PRNGKey(0), 2))
    x = jax.random.uniform(jax.random.PRNGKey(1), (7, 8, 8, 1))
    y = jnp.array([0, 1, 2, 3, 0, 1, 0])
    got = np.asarray(wb.gradient_norms(LOSS, params, x, y, batch_size=3))
    ref = [np.mean([float(gm.tree_norm(jax.grad(lambda q: LOSS(q, x[i:i + 1], y[i:i + 1]).sum())(
        jax.tree.map(lambda a: a[m], params)))) for m in range(2)]) for i in range(7)]
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    norms = np.array([0.1, 5, 0, 0, 0.9, 1, 0.5])
    idx = wb.choose_poisons(jax.random.PRNGKey(0), np.asarray(y), [0, 1], 2, norms=norms)
    np.testing.assert_array_equal(idx, [[4, 6], [1, 5]])
    with pytest.raises(PoisonJaxInputError, match="budget"):
        wb.choose_poisons(jax.random.PRNGKey(0), np.asarray(y), [3], 2, norms=norms)
