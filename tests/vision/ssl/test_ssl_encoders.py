"""SSL encoders (poisonjax.vision.ssl): NT-Xent against a numpy reference, SimCLR views, resumable
pre-training (bit-equal), orbax round trip and the wrong-architecture error, the linear probe against
scikit-learn, BadEncoder/DRUPE beating no attack on their own objective, bad input.

Tiny inputs (16x16 images, width-4 narrow ResNet, a few steps) so the module stays in the CI budget; the
real-data check (probe accuracy kept within 3 points, high ASR) is ``slow``."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poisonjax.core import runner
from poisonjax.core.poisoning import apply_trigger, patch_trigger
from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.vision.ssl import (EncoderBundle, encode, fit_linear_head, get_or_pretrain, linear_probe,
                                  load_encoder, nt_xent, pretrain_simclr, save_encoder, simclr_views)
from poisonjax.vision.ssl.encoder_attacks import badencoder, drupe, sliced_wasserstein
from poisonjax.vision.ssl.encoders import build_encoder, init_encoder
from poisonjax.vision.ssl.simclr import ProjectionHead, simclr_optimizer

W, S, N, BS = 4, 16, 32, 8


def _images(n=N, seed=0):
    r = np.random.RandomState(seed)
    x = r.rand(n, S, S, 3).astype(np.float32) * 0.5
    x[:, : S // 2] += 0.4 * (np.arange(n) % 2)[:, None, None, None]  # some structure
    return np.clip(x, 0, 1)


@pytest.fixture(scope="module")
def tiny_bundle():
    """A randomly initialised width-4 encoder (SimCLR itself is exercised by the resume test; compiling it
    twice would not fit the CI budget)."""
    module, variables, d = init_encoder(jax.random.PRNGKey(0), "narrow", W, (S, S, 3))
    return EncoderBundle(module, variables, {"arch": "narrow", "width": W, "feature_dim": d, "image_shape": [S, S, 3],
                                             "trained_by": "init", "epochs": 1})


def test_nt_xent_matches_numpy():
    r = np.random.RandomState(1)
    z1, z2 = r.randn(5, 7).astype(np.float32), r.randn(5, 7).astype(np.float32)
    z = np.concatenate([z1, z2]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n, tau, tot = 10, 0.5, 0.0
    for k in range(n):
        p = (k + 5) % n
        den = sum(np.exp(z[k] @ z[l] / tau) for l in range(n) if l != k)
        tot += -np.log(np.exp(z[k] @ z[p] / tau) / den)
    np.testing.assert_allclose(float(nt_xent(jnp.asarray(z1), jnp.asarray(z2), 0.5)), tot / n, rtol=1e-5)


def test_views_keep_shape_range_and_differ():
    x = jnp.asarray(_images(6))
    v1, v2 = jax.jit(simclr_views)(jax.random.PRNGKey(3), x)
    assert v1.shape == x.shape and v2.shape == x.shape
    assert float(v1.min()) >= 0.0 and float(v1.max()) <= 1.0 and bool(jnp.all(jnp.isfinite(v1)))
    assert float(jnp.abs(v1 - v2).mean()) > 0.02          # two different views
    assert float(jnp.abs(v1 - x).mean()) > 0.02           # not the identity


@pytest.mark.slow  # CI budget: ~30-100 s; the property is also covered by faster tests
def test_pretraining_resumed_equals_uninterrupted(tmp_path):
    module, d = build_encoder("narrow", W)
    opt = simclr_optimizer(module, ProjectionHead(d), n=N, batch_size=BS, epochs=2, temperature=0.5, lr=1e-3,
                           image_shape=(S, S, 3))
    prob = {"x": jnp.asarray(_images())}
    key = jax.random.PRNGKey(5)
    full = runner.run(opt, prob, 6, None, key=key, chunk_size=3, progress=False)
    runner.run(opt, prob, 3, tmp_path / "wd", key=key, chunk_size=3, progress=False, config={"t": 1})  # "killed" at 3
    res = runner.run(opt, prob, 6, tmp_path / "wd", key=key, chunk_size=3, progress=False, config={"t": 1})
    assert res.resumed_from == 3
    for a, b in zip(jax.tree.leaves(full.state), jax.tree.leaves(res.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(full.state["loss"]) > 0


def test_save_load_round_trip_and_wrong_arch(tmp_path, tiny_bundle):
    p = save_encoder(tmp_path / "enc", tiny_bundle)
    back = load_encoder(p, arch="narrow", width=W)
    x = _images(5, seed=2)
    np.testing.assert_array_equal(np.asarray(encode(tiny_bundle, x)), np.asarray(encode(back, x)))
    assert back.meta["feature_dim"] == 4 * W and encode(back, x).shape == (5, 4 * W)
    with pytest.raises(PoisonJaxInputError, match="^arch: .*'narrow'"):
        load_encoder(p, arch="preact18")
    with pytest.raises(PoisonJaxInputError, match="^width: "):
        load_encoder(p, arch="narrow", width=16)
    # the study entry point refuses a cached checkpoint of another architecture before training
    (tmp_path / "cache").mkdir()
    save_encoder(tmp_path / "cache" / "simclr_narrow_w8_e1", tiny_bundle)
    with pytest.raises(PoisonJaxInputError, match="^width: "):
        get_or_pretrain(tmp_path / "cache", variant="quick", width=8, epochs=1)


def test_linear_probe_matches_sklearn():
    from sklearn.linear_model import LogisticRegression
    r = np.random.RandomState(0)
    means = r.randn(4, 6) * 1.5
    y = np.repeat(np.arange(4), 60).astype(np.int32)
    h = (means[y] + r.randn(240, 6)).astype(np.float32)
    tr, te = np.arange(240) % 3 != 0, np.arange(240) % 3 == 0
    head = fit_linear_head(jnp.asarray(h[tr]), y[tr], epochs=400)
    ours = float(np.mean(np.argmax(np.asarray(head.logits(jnp.asarray(h[te]))), -1) == y[te]))
    sk = LogisticRegression(max_iter=2000).fit(h[tr], y[tr]).score(h[te], y[te])
    assert abs(ours - sk) <= 0.03 and ours > 0.5


def test_linear_probes_ignore_a_feature_dead_on_the_training_data():
    """A ReLU channel that is 0 on every training image but that a trigger wakes (the last column here) gets no
    weight in either probe (this module's full-batch one and T-Core's mini-batch head): the logits of a test
    point are the same with the channel woken or not, after a short fit too (20 steps, before the L2 term has
    decayed an initial weight). Before the shared standardisation the full-batch probe divided that column by
    1e-6 and left it its random initial weights, so the woken channel set the predicted class."""
    from poisonjax.vision.tcore.common import train_head
    r = np.random.RandomState(1)
    means = r.randn(4, 6) * 1.5
    y = np.repeat(np.arange(4), 60).astype(np.int32)
    h = np.concatenate([(means[y] + r.randn(240, 6)), np.zeros((240, 1))], 1).astype(np.float32)
    h_test = np.concatenate([means[np.arange(40) % 4] + r.randn(40, 6), np.zeros((40, 1))], 1).astype(np.float32)
    h_woken = h_test.copy()
    h_woken[:, -1] = 0.5
    for key in range(3):
        head = fit_linear_head(jnp.asarray(h), y, epochs=20, key=jax.random.PRNGKey(key))
        np.testing.assert_allclose(np.asarray(head.logits(jnp.asarray(h_woken))),
                                   np.asarray(head.logits(jnp.asarray(h_test))), atol=1e-5)
    p = train_head(jnp.asarray(h), jnp.asarray(y), jnp.ones(240), jax.random.PRNGKey(0), 4, epochs=20)
    lg = lambda z: np.asarray(jnp.asarray(z) @ p["kernel"] + p["bias"])
    np.testing.assert_allclose(lg(h_woken), lg(h_test), atol=1e-5)
    assert np.mean(np.argmax(lg(h_test), -1) == np.arange(40) % 4) >= 0.7


def test_badencoder_beats_no_attack_on_its_objective(tiny_bundle):
    """The poisoned encoder embeds triggered images closer (cosine) to the references than the clean encoder
    does, on held-out images. (DRUPE is checked on real data in the slow test.)"""
    attack = "badencoder"
    x = _images(N, seed=4)
    ref = _images(3, seed=9)
    trig = patch_trigger((S, S, 3), size=4, value="white")
    bd = badencoder(tiny_bundle, x, ref, trig, jax.random.PRNGKey(2), epochs=1, batch_size=BS, lr=3e-3, max_steps=6,
            target_class=1, progress=False)
    held = jnp.asarray(apply_trigger(jnp.asarray(_images(16, seed=11)), trig))

    def sim(b):
        zt = encode(b, held)
        zr = encode(b, ref)
        zt, zr = zt / jnp.linalg.norm(zt, axis=1, keepdims=True), zr / jnp.linalg.norm(zr, axis=1, keepdims=True)
        return float(jnp.mean(zt @ zr.T))

    # a random-init ReLU encoder already maps everything to nearly one direction (cosine ~0.99), so compare the
    # cosine distances: the attack at least halves the distance of triggered images to the references
    d_bd, d_clean = 1.0 - sim(bd), 1.0 - sim(tiny_bundle)
    assert d_bd < 0.5 * d_clean, (d_bd, d_clean)
    assert bd.meta["attack"] == attack and bd.meta["target_class"] == 1 and bd.meta["trigger"]["mask_fraction"] > 0


def test_sliced_wasserstein_zero_on_same_sample_and_grows_with_shift():
    a = jax.random.normal(jax.random.PRNGKey(0), (64, 8))
    k = jax.random.PRNGKey(1)
    assert float(sliced_wasserstein(k, a, a)) < 1e-4
    assert float(sliced_wasserstein(k, a, a + 3.0)) > float(sliced_wasserstein(k, a, a + 1.0)) > 0.2


def test_bad_inputs(tiny_bundle):
    x = _images(8)
    key = jax.random.PRNGKey(0)
    with pytest.raises(PoisonJaxInputError, match="^batch_size"):
        pretrain_simclr(x, key, width=W, epochs=1, batch_size=16, progress=False)
    with pytest.raises(PoisonJaxInputError, match="^x must hold pixel values"):
        pretrain_simclr(x * 3, key, width=W, epochs=1, batch_size=4, progress=False)
    with pytest.raises(PoisonJaxInputError, match="^epochs"):
        pretrain_simclr(x, key, width=W, epochs=0, batch_size=4, progress=False)
    with pytest.raises(PoisonJaxInputError, match="arch .vgg."):
        pretrain_simclr(x, key, arch="vgg", epochs=1, batch_size=4, progress=False)
    trig = patch_trigger((32, 32, 3), size=3)
    with pytest.raises(PoisonJaxInputError, match="^trigger.pattern"):
        badencoder(tiny_bundle, x, x[:2], trig, key, epochs=1, batch_size=4, progress=False)
    with pytest.raises(PoisonJaxInputError, match="^x_reference"):
        badencoder(tiny_bundle, x, x[:0], patch_trigger((S, S, 3), 3), key, epochs=1, batch_size=4, progress=False)
    with pytest.raises(PoisonJaxInputError, match="^stage1_fraction"):
        drupe(tiny_bundle, x, x[:2], patch_trigger((S, S, 3), 3), key, epochs=1, stage1_fraction=1.5, progress=False)
    y = np.arange(8, dtype=np.int32) % 2
    with pytest.raises(PoisonJaxInputError, match="^y_test"):
        linear_probe(tiny_bundle, x, y, x, y + 5, epochs=2)
    with pytest.raises(PoisonJaxInputError, match="^y_train"):
        linear_probe(tiny_bundle, x, y[:3], x, y, epochs=2)
