"""core.ensemble: stacking K victims, vmapped application, flattening, summaries."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poisonjax.core import ensemble as E


def _tree(seed):
    r = np.random.default_rng(seed)
    return {"w": jnp.asarray(r.normal(size=(3, 2)), jnp.float32), "b": jnp.asarray(r.normal(size=(2,)), jnp.float32)}


def test_stack_unstack_index_and_size():
    trees = [_tree(i) for i in range(4)]
    s = E.stack(trees)
    assert s["w"].shape == (4, 3, 2) and E.ensemble_size(s) == 4
    for a, b in zip(E.unstack(s), trees):
        np.testing.assert_array_equal(a["w"], b["w"])
    np.testing.assert_array_equal(E.index(s, 2)["b"], trees[2]["b"])
    with pytest.raises(ValueError, match="non-empty"):
        E.stack([])
    with pytest.raises(ValueError, match="leading axis"):
        E.ensemble_size({"a": jnp.zeros((2, 1)), "b": jnp.zeros((3,))})


def test_ensemble_apply_equals_a_loop():
    trees = [_tree(i) for i in range(3)]
    s = E.stack(trees)
    f = lambda p, x: jnp.tanh(x @ p["w"] + p["b"])
    x = jnp.asarray(np.random.default_rng(9).normal(size=(5, 3)), jnp.float32)
    out = E.ensemble_apply(f, s, x)
    for k in range(3):
        np.testing.assert_allclose(out[k], f(trees[k], x), rtol=1e-6)
    xs = jnp.stack([x, 2 * x, -x])
    out = E.ensemble_apply(f, s, xs, inputs_stacked=True)
    np.testing.assert_allclose(out[1], f(trees[1], 2 * x), rtol=1e-6)


def test_flatten_roundtrip_and_mean_std():
    trees = [_tree(i) for i in range(2)]
    s = E.stack(trees)
    flat = E.flatten_stacked(s)
    assert flat.shape == (2, 8)
    np.testing.assert_array_equal(flat[1], E.flatten_params(trees[1]))
    back = E.unflatten_like(flat[1], trees[0])
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(trees[1])):
        np.testing.assert_array_equal(a, b)
    ms = E.mean_std([1.0, 2.0, 3.0])
    assert ms["mean"] == 2.0 and abs(ms["std"] - np.std([1, 2, 3])) < 1e-12 and ms["values"] == [1.0, 2.0, 3.0]
