"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=8: K victims (BatchNorm, stacked data)
trained and evaluated sharded over 8 devices equal the unsharded run (losses, running stats, accuracy)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from poisonjax.core.parallel import make_mesh
from poisonjax.core.victims import evaluate_victims, flax_victim, train_victims

assert jax.device_count() == 8, jax.device_count()


class BNNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.BatchNorm(use_running_average=not train)(nn.Dense(8)(x))
        return nn.Dense(3)(nn.relu(h))


r = np.random.default_rng(0)
k = 11  # not a multiple of 8: exercises padding
x = jnp.asarray(r.normal(size=(k, 24, 4)), jnp.float32)
y = jnp.asarray(r.integers(0, 3, (k, 24)), jnp.int32)
mask = jnp.asarray(r.uniform(size=(k, 24)) < 0.8, jnp.float32)
keys = jax.random.split(jax.random.PRNGKey(0), k)
v = flax_victim(BNNet(), x[0])
kw = dict(epochs=2, batch_size=8, data_axis=0, mask=mask)
ref = jax.jit(lambda ks: train_victims(v, optax.adam(0.05), {"x": x, "y": y}, ks, **kw))(keys)
acc_ref = evaluate_victims(v.apply, ref.variables, x[0], y[0])
mesh = make_mesh("victims")
for chunk in (None, 4):
    out = jax.jit(lambda ks: train_victims(v, optax.adam(0.05), {"x": x, "y": y}, ks, chunk=chunk, mesh=mesh, **kw))(keys)
    np.testing.assert_allclose(out.losses, ref.losses, rtol=1e-4, atol=1e-5)
    # running statistics: whole-tree relative error (single entries are near zero, see issue 15 part 4)
    d = jax.tree.leaves(jax.tree.map(lambda a, b: jnp.sum((a - b) ** 2), out.variables["batch_stats"], ref.variables["batch_stats"]))
    nrm = jax.tree.leaves(jax.tree.map(lambda b: jnp.sum(b ** 2), ref.variables["batch_stats"]))
    assert float(sum(d)) ** 0.5 < 0.05 * float(sum(nrm)) ** 0.5, (float(sum(d)), float(sum(nrm)))
    acc = evaluate_victims(v.apply, out.variables, x[0], y[0], chunk=chunk, mesh=mesh)
    np.testing.assert_allclose(acc, acc_ref, atol=1.0 / 24 + 1e-6)
print("OK")
