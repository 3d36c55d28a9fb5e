"""core.influence: exact / CG / LiSSA inverse-HVPs agree; bad input is refused with the fix named."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poisonjax.core import influence as I
from poisonjax.core.validation import PoisonJaxInputError


def _quad():
    a = jax.random.normal(jax.random.PRNGKey(0), (6, 6))
    h = a @ a.T / 6 + 0.5 * jnp.eye(6)
    risk = lambda p: 0.5 * p["w"] @ h @ p["w"] + jnp.sum(jnp.sin(p["w"])) * 0.0
    return h, risk


def test_inverse_hvps_agree_with_a_dense_solve():
    h, risk = _quad()
    p = {"w": jnp.ones(6)}
    v = {"w": jnp.arange(6.0)}
    ref = np.linalg.solve(np.asarray(h), np.arange(6.0))
    np.testing.assert_allclose(I.exact_inverse_hvp(risk, p, v)["w"], ref, rtol=1e-4)
    np.testing.assert_allclose(I.cg_inverse_hvp(risk, p, v, maxiter=50)["w"], ref, rtol=1e-3)
    lis = I.lissa_inverse_hvp(lambda q, k: risk(q), p, v, jax.random.PRNGKey(1), depth=400, repeats=2,
                              damping=0.0, scale=float(np.linalg.eigvalsh(np.asarray(h)).max()) * 1.5)
    np.testing.assert_allclose(lis["w"], ref, rtol=2e-2, atol=1e-3)
    np.testing.assert_allclose(I.hvp(risk, p, v)["w"], np.asarray(h) @ np.arange(6.0), rtol=1e-5)


def test_exact_path_refuses_nonconvex_and_singular():
    p = {"w": jnp.zeros(3)}
    v = {"w": jnp.ones(3)}
    with pytest.raises(PoisonJaxInputError, match="not convex"):
        I.exact_inverse_hvp(lambda q: -jnp.sum(q["w"] ** 2), p, v)
    sing = lambda q: q["w"][0] ** 2
    with pytest.raises(PoisonJaxInputError, match="damping"):
        I.exact_inverse_hvp(sing, p, v)
    out = I.exact_inverse_hvp(sing, p, v, damping=1.0)
    np.testing.assert_allclose(out["w"], [1 / 3, 1, 1], rtol=1e-5)
    with pytest.raises(PoisonJaxInputError, match="hessian must have shape"):
        I.exact_inverse_hvp(sing, p, v, hessian=jnp.eye(2))
