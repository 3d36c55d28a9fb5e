"""graph.models on the one victim engine: train_gcn / gcn_test_accuracy (core.victims, full batch,
validation-loss selection) reproduce the hand-written DeepRobust-style training loop they replaced."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from poisonjax.graph import models as M


def _reference_train_gcn(a_hat, x, labels, idx_train, idx_val, key, num_classes, cfg):
    """The pre-core.victims loop: Adam + L2, dropout key per epoch, best validation loss kept."""
    model = M.GCN(cfg.hidden, num_classes, cfg.dropout, cfg.with_relu, cfg.with_bias, weight_init=cfg.weight_init)
    k0, k1 = jax.random.split(key)
    params = model.init(k0, a_hat, x)
    opt = optax.chain(optax.add_decayed_weights(cfg.weight_decay), optax.adam(cfg.lr))

    def step(carry, k):
        p, s, best_p, best_v = carry
        g = jax.grad(lambda q: optax.softmax_cross_entropy_with_integer_labels(
            model.apply(q, a_hat, x, train=True, rngs={"dropout": k})[idx_train], labels[idx_train]).mean())(p)
        u, s = opt.update(g, s, p)
        p = optax.apply_updates(p, u)
        v = optax.softmax_cross_entropy_with_integer_labels(model.apply(p, a_hat, x)[idx_val], labels[idx_val]).mean()
        best_p = jax.tree.map(lambda a, b: jnp.where(v < best_v, a, b), p, best_p)
        return (p, s, best_p, jnp.minimum(v, best_v)), v

    (p, _, best_p, _), _ = jax.lax.scan(step, (params, opt.init(params), params, jnp.inf), jax.random.split(k1, cfg.epochs))
    return model, (best_p if cfg.val_selection else p)


def _graph(n=90, c=3, seed=0):
    r = np.random.default_rng(seed)
    lab = r.integers(0, c, n)
    a = (r.random((n, n)) < np.where(lab[:, None] == lab[None], 0.12, 0.02)).astype(np.float32)
    a = np.triu(a, 1)
    return M.normalize_adj(jnp.asarray(a + a.T)), jnp.asarray(r.normal(size=(n, 8)).astype(np.float32)), jnp.asarray(lab)


@pytest.mark.slow
@pytest.mark.extended  # CI runs it after the main suite while time allows (.ci/run)
def test_train_gcn_on_core_victims_reproduces_the_reference_loop():
    a_hat, x, y = _graph()
    itr, iva, ite = jnp.arange(20), jnp.arange(20, 40), jnp.arange(40, 90)
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    for cfg in (M.GCNConfig(epochs=30), M.GCNConfig(epochs=30, val_selection=False, weight_init="deeprobust")):
        model = jax.jit(lambda k: M.train_gcn(a_hat, x, y, itr, iva, k, 3, cfg)[1])(keys[0])
        ref_fn = jax.jit(lambda k: _reference_train_gcn(a_hat, x, y, itr, iva, k, 3, cfg)[1])
        ref = ref_fn(keys[0])
        gcn = M.GCN(cfg.hidden, 3, cfg.dropout, weight_init=cfg.weight_init)
        # same optimiser, init and keys: equal up to float reduction order (bit-equal on the machine it was written on)
        np.testing.assert_allclose(np.asarray(gcn.apply(model, a_hat, x)), np.asarray(gcn.apply(ref, a_hat, x)),
                                   rtol=1e-4, atol=1e-5)
        acc = np.asarray(M.gcn_test_accuracy(a_hat, x, y, itr, iva, ite, keys, 3, cfg))
        ref_acc = [float(jnp.mean(jnp.argmax(gcn.apply(ref_fn(k), a_hat, x)[ite], -1) == y[ite])) for k in keys]
        assert np.max(np.abs(acc - np.asarray(ref_acc))) <= 1.5 / 50      # at most one node (float ties)
