"""core.bilevel on ridge regression (a convex inner problem with a closed-form solution):
unrolled meta-gradient == finite differences, implicit == unrolled-to-convergence == closed form,
first-order == sum of direct partials, low-rank matmul gradient == dense autodiff."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from poisonjax.core import bilevel as B

R = np.random.default_rng(0)
X = jnp.asarray(R.normal(size=(12, 3)), jnp.float32)          # training inputs; hyper = training targets
XV = jnp.asarray(R.normal(size=(8, 3)), jnp.float32)          # validation set of the outer loss
YV = jnp.asarray(R.normal(size=(8,)), jnp.float32)
H0 = jnp.asarray(R.normal(size=(12,)), jnp.float32)
LAM = 0.5


def inner(theta, h, key):
    return 0.5 * jnp.mean((X @ theta - h) ** 2) + 0.5 * LAM * jnp.sum(theta ** 2)


def outer(theta, h):
    return 0.5 * jnp.mean((XV @ theta - YV) ** 2)


def closed_form_grad(h):
    n = X.shape[0]
    A = X.T @ X / n + LAM * jnp.eye(3)
    theta = jnp.linalg.solve(A, X.T @ h / n)
    g_theta = XV.T @ (XV @ theta - YV) / XV.shape[0]
    return X @ jnp.linalg.solve(A, g_theta) / n                # d theta*/dh^T g_theta


def test_unrolled_meta_grad_matches_finite_differences():
    opt, T = optax.sgd(0.3, momentum=0.5), 15
    lo, g = jax.jit(lambda h: B.unrolled_meta_grad(outer, inner, jnp.zeros(3), h, opt, T))(H0)
    f = jax.jit(lambda h: B.unrolled_meta_grad(outer, inner, jnp.zeros(3), h, opt, T)[0])
    d = jnp.asarray(R.normal(size=(12,)), jnp.float32)
    d = d / jnp.linalg.norm(d)
    eps = 1e-2
    fd = (f(H0 + eps * d) - f(H0 - eps * d)) / (2 * eps)       # exact for a quadratic up to float error
    np.testing.assert_allclose(float(jnp.dot(g, d)), float(fd), rtol=2e-2, atol=1e-5)
    assert float(jnp.linalg.norm(g)) > 1e-3


def test_implicit_equals_unrolled_at_convergence_and_closed_form():
    ref = closed_form_grad(H0)
    opt = optax.sgd(0.3)
    _, g_unrolled = jax.jit(lambda h: B.unrolled_meta_grad(outer, inner, jnp.zeros(3), h, opt, 300))(H0)
    theta_star = jnp.linalg.solve(X.T @ X / 12 + LAM * jnp.eye(3), X.T @ H0 / 12)
    lo, g_implicit = B.implicit_meta_grad(outer, inner, theta_star, H0, cg_iters=30, damping=0.0)
    np.testing.assert_allclose(g_implicit, ref, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(g_unrolled, ref, rtol=1e-2, atol=1e-5)
    np.testing.assert_allclose(float(lo), float(outer(theta_star, H0)), rtol=1e-6)


def test_first_order_is_the_sum_of_direct_partials():
    outer_h = lambda theta, h: outer(theta, h) + 0.1 * jnp.sum(h ** 2)
    T = 7
    lo, g = B.first_order_meta_grad(outer_h, inner, jnp.zeros(3), H0, optax.sgd(0.3), T)
    np.testing.assert_allclose(g, T * 0.2 * H0, rtol=1e-5)     # no second-order (through-training) terms
    assert np.isfinite(float(lo))


def test_low_rank_matmul_meta_grad_equals_dense_autodiff():
    n, k = 6, 2
    M1 = jnp.asarray(R.normal(size=(n, k)), jnp.float32)
    M2 = jnp.asarray(R.normal(size=(n, 3)), jnp.float32)
    H = jnp.asarray(R.normal(size=(n, n)), jnp.float32)

    def dense(Hm):
        u1 = jnp.tanh(Hm @ M1)
        u2 = Hm.T @ (u1 @ jnp.ones((k, 3)) + M2)
        return jnp.sum(jnp.sin(u2))

    def probed(probes):
        p1, p2 = probes
        u1 = jnp.tanh(H @ M1 + p1)
        m2 = u1 @ jnp.ones((k, 3)) + M2
        u2 = H.T @ m2 + p2
        return jnp.sum(jnp.sin(u2)), (M1, m2)

    lo, g = B.low_rank_matmul_meta_grad(probed, (jnp.zeros((n, k)), jnp.zeros((n, 3))), transposed=(False, True))
    np.testing.assert_allclose(float(lo), float(dense(H)), rtol=1e-6)
    np.testing.assert_allclose(g, jax.grad(dense)(H), rtol=1e-4, atol=1e-5)
