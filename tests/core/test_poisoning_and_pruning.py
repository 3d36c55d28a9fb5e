"""core.poisoning (triggers, flips, index choice, ASR) and core.pruning (activations, unit masks)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poisonjax.core import poisoning as P
from poisonjax.core import pruning as Q
from poisonjax.core.validation import PoisonJaxInputError


def test_patch_and_blend_triggers_follow_the_formula():
    x = jnp.full((2, 8, 8, 3), 0.5)
    t = P.patch_trigger((8, 8, 3), size=3, value="white")
    xt = P.apply_trigger(x, t)
    assert float(xt[:, -3:, -3:].min()) == 1.0 and float(xt[:, :5].max()) == 0.5
    pat = P.random_pattern(jax.random.PRNGKey(0), (8, 8, 3))
    b = P.apply_trigger(x, P.blend_trigger(pat, 0.2))
    np.testing.assert_allclose(b, 0.8 * x + 0.2 * pat, rtol=1e-6)
    with pytest.raises(PoisonJaxInputError, match="size"):
        P.patch_trigger((8, 8, 3), size=9)
    with pytest.raises(PoisonJaxInputError, match="alpha"):
        P.blend_trigger(pat, 1.5)
    ft = P.feature_trigger(5, size=2, value=3.0)
    np.testing.assert_allclose(P.apply_trigger(jnp.zeros((1, 5)), ft), [[0, 0, 0, 3, 3]])


def test_flip_modes_and_index_choice():
    key = jax.random.PRNGKey(1)
    y = jnp.asarray(np.arange(100) % 5)
    yr, idx = P.flip_labels(key, y, 0.3, 5, mode="random")
    assert idx.shape == (30,) and len(set(np.asarray(idx).tolist())) == 30
    assert bool(jnp.all(yr[idx] != y[idx])) and int((yr != y).sum()) == 30
    yv, idx = P.flip_labels(key, y, 1.0, 5, mode="reverse")
    np.testing.assert_array_equal(yv, 4 - y)
    yt, idx = P.flip_labels(key, y, 0.5, 5, mode="targeted", source_class=2, target_class=0)
    assert idx.shape == (10,) and bool(jnp.all(y[idx] == 2)) and bool(jnp.all(yt[idx] == 0))
    with pytest.raises(PoisonJaxInputError, match="rate"):
        P.flip_labels(key, y, 1.5, 5)
    with pytest.raises(PoisonJaxInputError, match="target_class"):
        P.flip_labels(key, y, 0.5, 5, mode="targeted", source_class=2, target_class=7)
    mask = jnp.arange(100) < 40
    idx = P.choose_poison_indices(key, y, 0.5, exclude_class=0, mask=mask)
    assert idx.shape == (16,) and bool(jnp.all(idx < 40)) and bool(jnp.all(y[idx] != 0))
    x = jnp.zeros((100, 4, 4, 1))
    xp, yp, idx = P.poison_with_trigger(key, x, y, 0.1, 3, P.patch_trigger((4, 4, 1), 2, value="white"))
    assert bool(jnp.all(yp[idx] == 3)) and bool(jnp.all(y[idx] != 3)) and idx.shape == (10,) and float(xp[idx].sum()) == 10 * 4
    asr = P.attack_success_rate(jnp.array([3, 3, 1, 3]), jnp.array([0, 3, 1, 2]), 3)
    assert float(asr) == pytest.approx(2 / 3)


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(4, (3, 3), name="conv")(x))
        h = nn.relu(nn.Dense(6, name="fc")(h.reshape(h.shape[0], -1)))
        return nn.Dense(2, name="out")(h)


def test_unit_masks_zero_pruned_units_exactly():
    net = _Net()
    x = jax.random.uniform(jax.random.PRNGKey(0), (5, 6, 6, 1))
    params = net.init(jax.random.PRNGKey(1), x)["params"]
    acts = Q.capture_activations(net, params, x)
    assert set(acts) >= {"conv", "fc", "out"} and acts["conv"].shape == (5, 6, 6, 4)
    stats = Q.unit_activation_stats({k: acts[k] for k in ("conv", "fc")})
    np.testing.assert_allclose(stats["fc"], np.abs(np.asarray(acts["fc"])).mean(0), rtol=1e-6)
    ratio = Q.unit_importance_ratio(stats, jax.tree.map(lambda s: s * 2.0, stats))
    np.testing.assert_allclose(ratio["fc"], 0.5, rtol=1e-5)
    masks = Q.topk_unit_mask(stats, 0.5)
    assert int(masks["fc"].sum()) == 3 and int(masks["conv"].sum()) == 2
    top = np.argsort(-np.asarray(stats["fc"]))[:3]
    assert np.all(np.asarray(masks["fc"])[top] == 0)
    pruned = Q.apply_unit_mask(params, masks)
    a2 = Q.capture_activations(net, pruned, x, layers=["conv", "fc"])
    assert float(jnp.abs(a2["fc"][:, np.asarray(masks["fc"]) == 0]).max()) == 0.0
    assert float(jnp.abs(a2["conv"][..., np.asarray(masks["conv"]) == 0]).max()) == 0.0
    assert Q.masked_fraction(masks) == pytest.approx(5 / 10)
    with pytest.raises(PoisonJaxInputError, match="leaves layer"):
        Q.topk_unit_mask(stats, 1.0)
    with pytest.raises(PoisonJaxInputError, match="not a module path"):
        Q.apply_unit_mask(params, {"nope": jnp.ones(3)})
