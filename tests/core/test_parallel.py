"""core.parallel: on 8 fake CPU devices, a shard_map-ed vmap over clients equals the plain vmap."""
import os
import subprocess
import sys
from pathlib import Path

import jax

from poisonjax.core.parallel import initialize_distributed, is_main_process, make_mesh


def test_sharded_equals_unsharded_on_8_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    p = subprocess.run([sys.executable, str(Path(__file__).with_name("_parallel_child.py"))], env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "OK" in p.stdout


def test_single_process_helpers():
    assert is_main_process()
    assert initialize_distributed(False) is False
    mesh = make_mesh("victims")
    assert mesh.axis_names == ("victims",) and mesh.shape["victims"] == jax.device_count()


def test_chunked_vmap_equals_vmap_and_checks_chunk():
    import jax.numpy as jnp
    import numpy as np
    import pytest
    from poisonjax.core.parallel import chunked_vmap

    f = lambda w, x: jnp.tanh(x @ w).sum(-1)
    x = jax.random.normal(jax.random.PRNGKey(0), (11, 5, 3))
    w = jax.random.normal(jax.random.PRNGKey(1), (7, 3, 2))
    ref = jax.vmap(f)(w[:1].repeat(11, 0), x)
    for c in (None, 1, 4, 11, 50):
        np.testing.assert_allclose(chunked_vmap(f, c)(w[:1].repeat(11, 0), x), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(chunked_vmap(f, 4, in_axes=(None, 0))(w[0], x), ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="chunk"):
        chunked_vmap(f, 0)
    with pytest.raises(ValueError, match="leading size"):
        chunked_vmap(f, 2)(w, x)


def test_multihost_helpers_in_one_process():
    """shard_leading / gather_to_host / host_local_to_global on this process's devices (the
    two-process run is tests/core/test_parallel_multihost.py)."""
    import jax.numpy as jnp
    import numpy as np
    import pytest
    from poisonjax.core.parallel import gather_to_host, host_local_to_global, shard_leading, victim_mesh

    a, b = np.arange(10.0).reshape(5, 2), np.arange(5)
    (ja, jb), v = shard_leading((a, b), None)          # no mesh: unchanged
    assert v == 5 and isinstance(ja, jax.Array)
    np.testing.assert_array_equal(gather_to_host({"a": ja * 2}, rows=3)["a"], a[:3] * 2)
    with pytest.raises(ValueError, match="leading size"):
        shard_leading((a, b[:4]), None)
    if jax.device_count() == 1:
        assert victim_mesh() is None
    mesh = make_mesh("victims")
    (ga,), v = shard_leading((a,), mesh)
    assert v == 5 and ga.shape[0] % jax.device_count() == 0 and ga.shape[0] >= 5
    np.testing.assert_array_equal(gather_to_host(jax.jit(lambda z: z + 1)(ga), rows=v), a + 1)
    g = host_local_to_global(jnp.ones((jax.device_count(), 3)), mesh, jax.device_count())
    assert g.shape == (jax.device_count(), 3)
    with pytest.raises(ValueError, match="got a block of"):
        host_local_to_global(np.ones((jax.device_count() + 1, 3)), mesh, jax.device_count())
