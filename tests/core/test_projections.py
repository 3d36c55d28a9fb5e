"""core.projections: each projection lands in its set and is the nearest point (spot checks)."""
import jax.numpy as jnp
import numpy as np

from poisonjax.core.projections import (project_box, project_capped_simplex, project_l2, project_linf,
                                        project_linf_box, topk_indices, topk_mask)


def test_linf_and_box():
    r = np.random.default_rng(0)
    x = jnp.asarray(r.uniform(0, 1, (4, 3, 3, 1)), jnp.float32)
    d = jnp.asarray(r.normal(0, 0.3, x.shape), jnp.float32)
    p = project_linf_box(x, d, 8 / 255)
    assert float(jnp.abs(p).max()) <= 8 / 255 + 1e-7
    assert float((x + p).min()) >= 0 and float((x + p).max()) <= 1
    # equals clip-then-box composition
    np.testing.assert_allclose(p, project_box(x, project_linf(d, 8 / 255)), atol=1e-7)


def test_l2_ball_per_sample():
    d = jnp.asarray(np.random.default_rng(1).normal(size=(5, 10)), jnp.float32)
    p = project_l2(d, 0.5)
    norms = np.linalg.norm(np.asarray(p), axis=1)
    assert np.all(norms <= 0.5 + 1e-5)
    small = d * 0.01
    np.testing.assert_allclose(project_l2(small, 0.5), small, rtol=1e-6)  # inside: unchanged


def test_topk_mask_respects_validity_and_k():
    s = jnp.array([[5.0, 1.0, 9.0], [7.0, 3.0, 8.0]])
    valid = jnp.array([[True, True, False], [True, True, True]])
    m = topk_mask(s, 2, valid)
    assert m.sum() == 2 and bool(m[1, 2]) and bool(m[1, 0]) and not bool(m[0, 2])
    idx, ok = topk_indices(s, 6, valid)
    assert int(ok.sum()) == 5
    import pytest
    with pytest.raises(ValueError, match="budget"):
        topk_mask(s, 7)


def test_capped_simplex_projection_is_optimal():
    r = np.random.default_rng(2)
    p = jnp.asarray(r.normal(0.5, 0.6, 50), jnp.float32)
    q = project_capped_simplex(p, 5.0)
    assert float(q.min()) >= 0 and float(q.max()) <= 1 and float(q.sum()) <= 5.0 + 1e-3
    # KKT: q = clip(p - mu, 0, 1) for one mu >= 0 -> compare with a brute-force scan over mu
    mus = np.linspace(0, 3, 30001)
    sums = np.clip(np.asarray(p)[None] - mus[:, None], 0, 1).sum(1)
    mu = mus[np.argmax(sums <= 5.0)]
    np.testing.assert_allclose(q, np.clip(np.asarray(p) - mu, 0, 1), atol=2e-3)
    inside = jnp.array([0.2, 0.3, 1.4, -0.1])
    np.testing.assert_allclose(project_capped_simplex(inside, 3.0), jnp.clip(inside, 0, 1))
