"""Vision helpers of the gradient-matching attacks: fast conv layers, hashing metrics, Witches' Brew
problem checks and gradient-norm poison selection (the core engine is tested in
tests/core/test_gradient_matching.py)."""
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


@pytest.mark.slow
@pytest.mark.extended  # CI runs it after the main suite while time allows (.ci/run)
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
        wb.witches_brew_problem(None, x, y, x, y, 4, key=jax.random.PRNGKey(0), allow_test_labels=True, **args)


def test_bad_images_raise_clear_errors():
    y = np.arange(20) % 4
    good = np.random.default_rng(0).random((20, 8, 8, 1)).astype(np.float32)
    kw = dict(target_indices=[3], adv_classes=[0], budget=0.1, eps=8 / 255, key=jax.random.PRNGKey(0),
              allow_test_labels=True)
    with pytest.raises(PoisonJaxInputError, match=r"\[0, 1\]"):
        wb.witches_brew_problem(None, good * 255, y, good, y, 4, **kw)
    with pytest.raises(PoisonJaxInputError, match="NHWC"):
        wb.witches_brew_problem(None, good.transpose(0, 3, 1, 2).repeat(3, 1), y, good, y, 4, **kw)
    with pytest.raises(PoisonJaxInputError, match="channel axis"):
        wb.witches_brew_problem(None, good[..., 0], y, good, y, 4, **kw)


def test_gradient_norm_poison_selection():
    """gradient_norms equals per-example norms computed one by one (chunked, with padding), and the
    selection takes each adversarial class's largest-norm images."""
    params = jax.vmap(lambda kk: MODEL.init(kk, jnp.zeros((1, 8, 8, 1))))(jax.random.split(jax.random.PRNGKey(0), 2))
    x = jax.random.uniform(jax.random.PRNGKey(1), (7, 8, 8, 1))
    y = jnp.array([0, 1, 2, 3, 0, 1, 0])
    got = np.asarray(wb.gradient_norms(LOSS, params, x, y, batch_size=3))
    ref = [np.mean([float(gm.tree_norm(jax.grad(lambda q: LOSS(q, {"x": x[i:i + 1], "y": y[i:i + 1]}, None).sum())(
        jax.tree.map(lambda a: a[m], params)))) for m in range(2)]) for i in range(7)]
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    norms = np.array([0.1, 5, 0, 0, 0.9, 1, 0.5])
    idx = wb.choose_poisons(jax.random.PRNGKey(0), np.asarray(y), [0, 1], 2, norms=norms)
    np.testing.assert_array_equal(idx, [[4, 6], [1, 5]])
    with pytest.raises(PoisonJaxInputError, match="budget"):
        wb.choose_poisons(jax.random.PRNGKey(0), np.asarray(y), [3], 2, norms=norms)


def test_attacks_cannot_see_test_labels_without_the_flag():
    """Issue 15 part 1 (vision): Witches' Brew and PADHASH problems refuse test labels unless
    allow_test_labels=True; without them they still build (targets checked by index only)."""
    from poisonjax.vision import padhash as ph
    x = np.random.default_rng(0).random((20, 8, 8, 1)).astype(np.float32)
    y = np.arange(20) % 4
    kw = dict(budget=0.1, eps=8 / 255, key=jax.random.PRNGKey(0))
    with pytest.raises(PoisonJaxInputError, match="y_test.*allow_test_labels"):
        wb.witches_brew_problem(None, x, y, x, y, 4, target_indices=[3], adv_classes=[0], **kw)
    with pytest.raises(PoisonJaxInputError, match="y_test.*allow_test_labels"):
        ph.padhash_problem(None, x, y, x, y, 4, trigger_indices=[3], target_classes=[0], **kw)
    problem, pidx = wb.witches_brew_problem(None, x, y, x, None, 4, target_indices=[3], adv_classes=[0], **kw)
    assert problem.target_labels.tolist() == [[0]] and pidx.shape == (1, 2)
    problem, _ = ph.padhash_problem(None, x, y, x, None, 4, trigger_indices=[3], target_classes=[0], **kw)
    assert problem.target_labels.tolist() == [[0]]
    with pytest.raises(PoisonJaxInputError, match="target_index"):
        wb.witches_brew_problem(None, x, y, x, None, 4, target_indices=[99], adv_classes=[0], **kw)
    wb.witches_brew_problem(None, x, y, x, y, 4, target_indices=[3], adv_classes=[0], allow_test_labels=True, **kw)
