"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=8: sharded == unsharded training of N clients."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import flax.linen as nn

from poisonjax.core.parallel import make_mesh, sharded_vmap
from poisonjax.core.training import init_and_train, softmax_cross_entropy_loss

assert jax.device_count() == 8, jax.device_count()


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(nn.relu(nn.Dense(16)(x)))


m = MLP()
r = np.random.default_rng(0)
n_clients = 13  # not a multiple of 8: exercises padding
x = jnp.asarray(r.normal(size=(n_clients, 20, 4)), jnp.float32)
y = jnp.asarray(r.integers(0, 3, (n_clients, 20)), jnp.int32)
mask = jnp.asarray(r.uniform(size=(n_clients, 20)) < 0.8, jnp.float32)
keys = jax.random.split(jax.random.PRNGKey(0), n_clients)
loss = softmax_cross_entropy_loss(m.apply)


def client_run(k, xc, yc, mc):
    return init_and_train(lambda kk: m.init(kk, xc[:1]), loss, optax.sgd(0.1), {"x": xc, "y": yc}, k,
                          epochs=2, batch_size=5, mask=mc)


def client(k, xc, yc, mc):
    return client_run(k, xc, yc, mc).params


def rel(a, b):
    """Whole-pytree relative L2 difference: what 'equal after training' means on any CPU (issue 15
    part 4); single near-zero parameters may move with the reduction order."""
    d = sum(float(jnp.sum((u - v) ** 2)) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    return (d / sum(float(jnp.sum(v ** 2)) for v in jax.tree.leaves(b))) ** 0.5


ref_run = jax.jit(jax.vmap(client_run))(keys, x, y, mask)
ref = ref_run.params
mesh = make_mesh("clients")
out_run = jax.jit(sharded_vmap(client_run, mesh))(keys, x, y, mask)
np.testing.assert_allclose(out_run.losses, ref_run.losses, rtol=1e-4, atol=1e-5)
worst = rel(out_run.params, ref)
print("REL", worst)
assert worst < 1e-4, worst
# broadcast (None) arguments are replicated
f = lambda w, xc: jnp.tanh(xc @ w).sum()
w = jnp.ones((4, 2))
np.testing.assert_allclose(jax.jit(sharded_vmap(f, mesh, in_axes=(None, 0)))(w, x),
                           jax.vmap(f, in_axes=(None, 0))(w, x), rtol=1e-6)
# chunked_vmap: chunked (3 per chunk, 13 clients: padding) and sharded over 8 devices == plain vmap,
# for a client axis (training) and a victim-ensemble axis (evaluation of K stacked victims)
from poisonjax.core.parallel import chunked_vmap
for c, msh in ((None, mesh), (3, None), (3, mesh), (5, mesh)):
    got = jax.jit(chunked_vmap(client_run, chunk=c, mesh=msh))(keys, x, y, mask)
    np.testing.assert_allclose(got.losses, ref_run.losses, rtol=1e-4, atol=1e-5)
    d = rel(got.params, ref)
    assert d < 1e-4, (c, d)
victims = ref  # 13 stacked victims
xe = x[0]
ens_ref = jax.vmap(m.apply, in_axes=(0, None))(victims, xe)
for c, msh in ((4, mesh), (None, mesh), (6, None)):
    ens = jax.jit(chunked_vmap(m.apply, chunk=c, mesh=msh, in_axes=(0, None)))(victims, xe)
    np.testing.assert_allclose(ens, ens_ref, rtol=1e-5, atol=1e-6)
# multi-host helpers in one process: shard_leading pads 13 -> 16 rows and puts them over the 8 devices;
# the mapped function on those global arrays, gathered and trimmed, equals the plain vmap
from poisonjax.core.parallel import gather_to_host, process_rows, shard_leading, victim_mesh
vm = victim_mesh()
assert vm is not None and vm.shape == {"victims": 8}
(gk, gx, gy, gm_), nv = shard_leading((np.asarray(keys), np.asarray(x), np.asarray(y), np.asarray(mask)), vm)
assert nv == n_clients and gk.shape[0] == 16 and len(gk.addressable_shards) == 8
assert process_rows(vm, 16) == slice(0, 16)
got = gather_to_host(jax.jit(chunked_vmap(client_run, mesh=vm))(gk, gx, gy, gm_), rows=nv)
np.testing.assert_allclose(got.losses, ref_run.losses, rtol=1e-4, atol=1e-5)
assert rel(got.params, ref) < 1e-4
print("OK")
