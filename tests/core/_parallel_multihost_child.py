"""One process of a 2-process ``jax.distributed`` run on localhost (CPU, 2 fake devices each): a victim
ensemble mapped with ``chunked_vmap(..., mesh=victim_mesh())`` over ``shard_leading`` inputs, gathered
back with ``gather_to_host``, must equal a plain ``vmap`` on this process's first device.

Usage: python _parallel_multihost_child.py PROCESS_ID PORT OUT.json
"""
import json
import os
import pathlib
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from poisonjax.core import parallel  # noqa: E402
from poisonjax.core.training import init_and_train, softmax_cross_entropy_loss  # noqa: E402

parallel.initialize_distributed(True, coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid)
assert jax.process_count() == 2 and jax.device_count() == 4 and len(jax.local_devices()) == 2

r = np.random.default_rng(0)                    # the same data and seeds on both processes
V, N, D, C = 7, 24, 5, 3                        # 7 victims: padded to 8 over the 4 devices
x = r.normal(size=(N, D)).astype(np.float32)
y = r.integers(0, C, N).astype(np.int32)
noise = (0.1 * r.normal(size=(V, N, D))).astype(np.float32)   # each victim's own poisoned copy
keys = np.asarray(jax.random.split(jax.random.PRNGKey(0), V))
xt, yt = jnp.asarray(x), jnp.asarray(y)


def init(k):
    k1, k2 = jax.random.split(k)
    return {"w1": 0.5 * jax.random.normal(k1, (D, 8)), "w2": 0.5 * jax.random.normal(k2, (8, C))}


def apply(p, xx):
    return jnp.tanh(xx @ p["w1"]) @ p["w2"]


def victim(k, nz):
    params = init_and_train(init, softmax_cross_entropy_loss(apply), optax.sgd(0.2), {"x": xt + nz, "y": yt}, k,
                            epochs=3, batch_size=8).params
    logits = apply(params, xt)
    return {"accuracy": jnp.mean(jnp.argmax(logits, -1) == yt), "loss": softmax_cross_entropy_loss(apply)(
        params, {"x": xt, "y": yt}, k).mean(), "first_logit": logits[0]}


mesh = parallel.victim_mesh()
assert mesh is not None and mesh.shape == {"victims": 4}
(gk, gn), v = parallel.shard_leading((keys, noise), mesh)
assert v == V and gk.shape == (8, 2) and not gk.is_fully_addressable
rows = parallel.process_rows(mesh, 8)
assert rows == slice(4 * pid, 4 * pid + 4), rows                 # each process holds only its rows
held = sorted(s.index[0].start for s in gk.addressable_shards)
assert held == [4 * pid, 4 * pid + 2], held
np.testing.assert_array_equal(np.concatenate([np.asarray(s.data) for s in sorted(
    gk.addressable_shards, key=lambda s: s.index[0].start)]), np.concatenate([keys, keys[-1:]])[rows])
got = parallel.gather_to_host(jax.jit(parallel.chunked_vmap(victim, mesh=mesh))(gk, gn), rows=V)
ref = jax.device_get(jax.jit(jax.vmap(victim))(jnp.asarray(keys), jnp.asarray(noise)))   # one device, plain vmap
for k in ref:
    assert got[k].shape == np.shape(ref[k]), (k, got[k].shape)
    np.testing.assert_allclose(got[k], ref[k], rtol=1e-4, atol=1e-5, err_msg=k)
pathlib.Path(out).write_text(json.dumps({"process": jax.process_index(), "accuracy": got["accuracy"].tolist(),
                                         "loss": got["loss"].tolist()}))
