"""Bring your own network (issue 16, part 3): the gradient-matching attacks and the backdoor detectors
accept a user-defined flax module or a plain pure ``apply(params, x)`` with its params, not only the
built-in models. Tiny synthetic images (8x8x1, 3 classes)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import poisonjax.vision as pv
from poisonjax.core.gradient_matching import GradientMatchingProblem, craft
from poisonjax.core.training import softmax_cross_entropy_loss
from poisonjax.vision.backdoor.detectors import spectral_signatures, strip


def tiny_images(n_per_class=30, classes=3, seed=0):
    r = np.random.default_rng(seed)
    protos = r.uniform(0.2, 0.8, size=(classes, 8, 8, 1))
    x = np.concatenate([np.clip(p + 0.15 * r.normal(size=(n_per_class, 8, 8, 1)), 0, 1) for p in protos])
    return x.astype(np.float32), np.repeat(np.arange(classes), n_per_class).astype(np.int32), protos


class UserConvNet(nn.Module):
    """A network the library has never seen: conv -> tanh -> mean-pool -> dense."""

    @nn.compact
    def __call__(self, x):
        h = jnp.tanh(nn.Conv(6, (3, 3))(x))
        return nn.Dense(3)(h.mean(axis=(1, 2)))


def plain_apply(params, x):
    """A pure function network: one hidden layer, params a dict of arrays (no flax)."""
    h = jax.nn.relu(x.reshape(x.shape[0], -1) @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def _plain_params(x, y, steps=150):
    """Fit ``plain_apply`` with full-batch gradient descent (the user's own training loop)."""
    r = np.random.default_rng(0)
    p = {"w1": jnp.asarray(0.1 * r.normal(size=(64, 16)), jnp.float32), "b1": jnp.zeros(16),
         "w2": jnp.asarray(0.1 * r.normal(size=(16, 3)), jnp.float32), "b2": jnp.zeros(3)}
    loss = softmax_cross_entropy_loss(plain_apply)
    g = jax.jit(jax.grad(lambda q: loss(q, {"x": x, "y": y}, None).mean()))
    for _ in range(steps):
        p = jax.tree.map(lambda a, b: a - 0.5 * b, p, g(p))
    return p


def _alignment_loss(loss, params, xp, yp, xt, yt):
    g = lambda xx, yy: jax.grad(lambda q: loss(q, {"x": xx, "y": yy}, None).mean())(params)  # noqa: E731
    a, b = jax.tree.leaves(g(xp, yp)), jax.tree.leaves(g(xt, yt))
    dot = sum(jnp.vdot(u, v) for u, v in zip(a, b))
    return 1.0 - float(dot / jnp.sqrt(sum(jnp.vdot(u, u) for u in a) * sum(jnp.vdot(v, v) for v in b)))


def test_witches_brew_with_a_plain_apply_function_and_params():
    x, y, _ = tiny_images()
    xt = tiny_images(1, seed=5)[0][0]
    params = _plain_params(jnp.asarray(x), jnp.asarray(y))
    eps = 16 / 255
    xp, idx = pv.witches_brew_attack(x, y, xt, 2, 0.1, eps, model=plain_apply, params=params, steps=24)
    assert np.all(y[idx] == 2) and np.abs(xp - x).max() <= eps + 1e-6
    loss = softmax_cross_entropy_loss(plain_apply)
    yp, yt = jnp.full((len(idx),), 2), jnp.array([2])
    rnd = np.clip(x[idx] + eps * np.sign(np.random.default_rng(0).normal(size=x[idx].shape)), 0, 1).astype(np.float32)
    crafted = _alignment_loss(loss, params, xp[idx], yp, xt[None], yt)
    assert crafted < 0.75 * _alignment_loss(loss, params, rnd, yp, xt[None], yt)


def test_core_crafting_with_a_user_flax_module_lowers_its_alignment_loss():
    x, y, _ = tiny_images()
    net = UserConvNet()
    params = net.init(jax.random.PRNGKey(0), x[:1])
    stacked = jax.tree.map(lambda a: a[None], params)
    loss = softmax_cross_entropy_loss(net.apply)
    idx = np.flatnonzero(y == 1)[:6]
    prob = GradientMatchingProblem(stacked, jnp.asarray(x[idx]), jnp.asarray(y[idx]), jnp.asarray(x[:1]),
                                   jnp.array([1]), jnp.float32(16 / 255))
    res = craft(loss, prob, steps=16, key=jax.random.PRNGKey(1), progress=False)
    first, last = res.metrics[0]["loss_mean"], float(res.restart_losses.min())
    assert last < 0.7 * first, (first, last)               # crafting lowers the alignment loss


@pytest.mark.slow
def test_witches_brew_trains_surrogates_of_a_user_flax_module():
    x, y, _ = tiny_images()
    xp, idx = pv.witches_brew_attack(x, y, x[0], 1, 0.05, 8 / 255, model=UserConvNet(), surrogate_epochs=1,
                                     steps=4, seed=0)
    assert idx.shape == (4,) and np.all(y[idx] == 1) and np.abs(xp - x).max() <= 8 / 255 + 1e-6


# ------------------------------------------------------------------ backdoor detectors ----------

def _backdoored_plain_model():
    """A hand-built backdoored network ``plain_apply``: three class-prototype detectors plus a unit
    that fires on a 2x2 checkerboard in the top-left corner (the trigger) and drives class 0."""
    x, y, protos = tiny_images()
    w1 = np.zeros((64, 16), np.float32)
    w1[:, :3] = 0.5 * (protos.reshape(3, 64).T - protos.mean(0).reshape(64, 1))
    trig = np.zeros((8, 8))
    trig[:2, :2] = [[1, -1], [-1, 1]]
    w1[:, 3] = 3 * trig.ravel()
    w1[:, 4:] = 0.3 * np.random.default_rng(1).normal(size=(64, 12))     # generic hidden units
    w2 = np.zeros((16, 3), np.float32)
    w2[:3, :3] = 3 * np.eye(3)
    w2[3, 0] = 10.0
    params = {"w1": jnp.asarray(w1), "b1": jnp.asarray(np.r_[0, 0, 0, -1.5, np.zeros(12)], jnp.float32),
              "w2": jnp.asarray(w2), "b2": jnp.zeros(3)}
    return x, y, params


def _stamp(x):
    x = x.copy()
    x[:, :2, :2, 0] = [[1.0, 0.0], [0.0, 1.0]]
    return x


def test_strip_takes_any_logits_function():
    x, y, params = _backdoored_plain_model()
    clean, triggered = x[1::2], _stamp(x[::2][:20])
    rep = strip(lambda xx: plain_apply(params, xx), jnp.asarray(np.concatenate([triggered, clean[:20]])),
                jnp.asarray(clean), jax.random.PRNGKey(0), n_overlay=8, frr=0.1)
    flags = np.asarray(rep.flags)
    assert flags[:20].mean() > flags[20:].mean() + 0.5


def test_spectral_signatures_take_features_of_any_network():
    x, y, params = _backdoored_plain_model()
    xs, ys = x.copy(), y.copy()
    poison = np.arange(0, 90, 10)                              # 9 poisoned rows relabelled to class 0
    xs[poison], ys[poison] = _stamp(xs[poison]), 0
    feats = jax.nn.relu(jnp.asarray(xs).reshape(90, -1) @ params["w1"] + params["b1"])   # the user's hidden layer
    rep = spectral_signatures(feats, ys, 3, poison_budget=0.1)
    flagged = np.flatnonzero(np.asarray(rep.flags))
    assert len(np.intersect1d(flagged, poison)) >= 6
