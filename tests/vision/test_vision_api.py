"""One-call Witches' Brew / PADHASH on a user's arrays (poisonjax.vision.api), on tiny synthetic images."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import poisonjax.vision as pv
from poisonjax.core.training import softmax_cross_entropy_loss
from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.core.victims import flax_victim, train_victims
from poisonjax.vision.hashing import hash_centers, hashing_loss
from poisonjax.vision.models import HashNet, MLPNet


def tiny_images(n_per_class=30, classes=3, seed=0):
    r = np.random.default_rng(seed)
    protos = r.uniform(0.2, 0.8, size=(classes, 8, 8, 1))
    x = np.concatenate([np.clip(p + 0.15 * r.normal(size=(n_per_class, 8, 8, 1)), 0, 1) for p in protos])
    y = np.repeat(np.arange(classes), n_per_class)
    return x.astype(np.float32), y.astype(np.int32)


@pytest.fixture(scope="module")
def data():
    x, y = tiny_images()
    xt = tiny_images(1, seed=5)[0][0]          # a class-0 target image
    return x, y, xt


def _cos(loss, params, xp, yp, xt, yt):
    g = lambda xx, yy: jax.grad(lambda p: loss(p, {"x": xx, "y": yy}, jax.random.PRNGKey(0)).mean())(params)  # noqa: E731
    a, b = jax.tree.leaves(g(xp, yp)), jax.tree.leaves(g(xt, yt))
    dot = sum(jnp.vdot(u, v) for u, v in zip(a, b))
    return float(dot / jnp.sqrt(sum(jnp.vdot(u, u) for u in a) * sum(jnp.vdot(v, v) for v in b)))


def _check_output(x, xp, idx, y, label, eps, p):
    assert xp.shape == x.shape and xp.dtype == np.float32 and idx.shape == (p,)
    assert np.all(y[idx] == label)                               # clean-label: poisons of the target class
    rest = np.setdiff1d(np.arange(len(x)), idx)
    np.testing.assert_array_equal(xp[rest], x[rest])             # only the poisons change
    assert np.abs(xp - x).max() <= eps + 1e-6 and xp.min() >= 0 and xp.max() <= 1


def test_witches_brew_attack_aligns_better_than_random_noise(data):
    x, y, xt = data
    net = MLPNet(num_classes=3, hidden=32)
    v = flax_victim(net, x[:1])
    params = jax.tree.map(lambda a: a[0], train_victims(v, optax.adam(1e-2), {"x": jnp.asarray(x), "y": jnp.asarray(y)},
                                                        jax.random.split(jax.random.PRNGKey(0), 1),
                                                        epochs=5, batch_size=30).variables)
    eps = 16 / 255
    xp, idx = pv.witches_brew_attack(x, y, xt, target_label=2, budget=0.1, eps=eps, model=net, params=params,
                                     steps=24, seed=0)
    _check_output(x, xp, idx, y, 2, eps, 9)
    loss = softmax_cross_entropy_loss(v.apply)
    yp, yt = jnp.full((9,), 2), jnp.array([2])
    crafted = 1 - _cos(loss, params, xp[idx], yp, xt[None], yt)          # the alignment loss it minimises
    rnd = np.clip(x[idx] + eps * np.sign(np.random.default_rng(0).normal(size=x[idx].shape)), 0, 1)
    random = 1 - _cos(loss, params, rnd.astype(np.float32), yp, xt[None], yt)
    assert crafted < 0.75 * random, (crafted, random)


@pytest.mark.slow
def test_witches_brew_attack_trains_its_own_surrogates_from_a_backbone_name(data):
    x, y, xt = data
    xp, idx = pv.witches_brew_attack(x, y, np.stack([xt, xt]), 1, 0.05, 8 / 255, model="mlp", n_surrogates=2,
                                     surrogate_epochs=1, steps=4, select="random", seed=3)
    _check_output(x, xp, idx, y, 1, 8 / 255, 4)
    assert np.abs(xp[idx] - x[idx]).max() > 0


@pytest.mark.slow
def test_padhash_attack_matches_the_trigger_gradient_better_than_random(data):
    x, y, xt = data
    hnet = HashNet("mlp", 8)
    cen = hash_centers(3, 8)
    loss = hashing_loss("csq", hnet.apply, cen)
    code_loss = hashing_loss("csq", lambda _p, h: h, cen)          # CSQ on the outputs h [B, bits]
    v = flax_victim(hnet, x[:1], loss=lambda h, yy: code_loss(None, {"x": h, "y": yy}, None))
    params = jax.tree.map(lambda a: a[0], train_victims(v, optax.adam(1e-2), {"x": jnp.asarray(x), "y": jnp.asarray(y)},
                                                        jax.random.split(jax.random.PRNGKey(1), 1),
                                                        epochs=5, batch_size=30).variables)
    eps = 16 / 255
    xp, idx = pv.padhash_attack(x, y, xt, target_label=1, budget=0.1, eps=eps, model=hnet, params=params,
                                bits=8, steps=24, alpha=0.3)
    _check_output(x, xp, idx, y, 1, eps, 9)
    # PADHASH's own objective (strict loss, alpha = 0.3, scale-free magnitude term) at the surrogate
    from poisonjax.core.gradient_matching import alignment_objective, target_gradients
    sur = jax.tree.map(lambda a: a[None], params)
    tg = target_gradients(loss, sur, jnp.asarray(xt[None]), jnp.array([1]))
    obj = lambda xx: float(alignment_objective(loss, sur, tg, jnp.asarray(xx), jnp.full((9,), 1), 0.3,  # noqa: E731
                                               normalize=True))
    rnd = np.clip(x[idx] + eps * np.sign(np.random.default_rng(1).normal(size=x[idx].shape)), 0, 1)
    assert obj(xp[idx]) < 0.75 * obj(rnd.astype(np.float32)), (obj(xp[idx]), obj(rnd.astype(np.float32)))


@pytest.mark.parametrize("kw, match", [
    ({"x_train": "nchw"}, "NHWC"),
    ({"budget": 0.9}, "lower the budget"),
    ({"budget": 0.0}, "budget"),
    ({"eps": 2.0}, "epsilon"),
    ({"target_label": 7}, "target_label"),
    ({"y_train": "float"}, "y_train"),
    ({"x_target": "bad"}, "x_target"),
    ({"model": 3}, "model"),
    ({"model": "apply_only"}, "params="),
])
def test_witches_brew_attack_input_errors(data, kw, match):
    x, y, xt = data
    args = dict(x_train=x, y_train=y, x_target=xt, target_label=1, budget=0.05, eps=0.03, model="mlp")
    args.update(kw)
    if kw.get("x_train") == "nchw":
        args["x_train"] = np.zeros((90, 3, 8, 8), np.float32)
    if kw.get("y_train") == "float":
        args["y_train"] = y.astype(np.float32)
    if kw.get("x_target") == "bad":
        args["x_target"] = np.zeros((4, 4, 1), np.float32)
    if kw.get("model") == "apply_only":
        args["model"] = lambda p, xx: xx.reshape(len(xx), -1)[:, :3]
    with pytest.raises(PoisonJaxInputError, match=match):
        pv.witches_brew_attack(**args, steps=1)
