"""DP mechanism: the sigma formulas, the analytic mechanism's delta condition, clipping and the empirical noise."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from poisonjax.core import privacy as dp
from poisonjax.core.validation import PoisonJaxInputError


@pytest.mark.parametrize("eps,delta,sens", [(1.0, 1e-5, 1.0), (0.5, 1e-5, 2.0), (0.1, 1e-3, 0.5)])
def test_classic_sigma_formula(eps, delta, sens):
    expected = math.sqrt(2 * math.log(1.25 / delta)) * sens / eps
    assert float(dp.classic_gaussian_sigma(eps, delta, sens)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("eps", [0.2, 1.0, 4.0, 10.0])
def test_analytic_sigma_is_tight(eps):
    delta, sens = 1e-5, 1.5
    s = float(dp.analytic_gaussian_sigma(eps, delta, sens))

    def delta_of(sig):  # Balle & Wang 2018 Thm. 8, in float64 with scipy
        a, b = sens / (2 * sig), eps * sig / sens
        return norm.cdf(a - b) - math.exp(eps) * norm.cdf(-a - b)

    assert delta_of(s) <= delta * 1.001          # private
    assert delta_of(s * 0.99) > delta             # and (nearly) the smallest such sigma
    if eps <= 1:
        assert s < float(dp.classic_gaussian_sigma(eps, delta, sens))


def test_clip_and_empirical_noise_scale():
    x = jax.random.normal(jax.random.PRNGKey(0), (4000, 16)) * 3.0
    c = dp.clip_l2(x, 1.0)
    norms = np.linalg.norm(np.asarray(c), axis=1)
    assert norms.max() <= 1.0 + 1e-5
    small = x * 0.01                                  # already inside the ball: untouched
    np.testing.assert_allclose(np.asarray(dp.clip_l2(small, 1.0)), np.asarray(small), rtol=1e-6)
    noisy, sigma = dp.gaussian_mechanism(jax.random.PRNGKey(1), x, 0.5, 1e-5, clip_norm=1.0)
    resid = np.asarray(noisy - c)
    assert float(sigma) == pytest.approx(math.sqrt(2 * math.log(1.25e5)) / 0.5, rel=1e-6)
    assert resid.std() == pytest.approx(float(sigma), rel=0.02)
    assert abs(resid.mean()) < 0.05 * float(sigma)


def test_traced_eps_vector_under_jit():
    eps = jnp.array([0.25, 0.5, 1.0])
    s = jax.jit(lambda e: dp.gaussian_sigma(e, 1e-5, 1.0))(eps)
    np.testing.assert_allclose(np.asarray(s) * np.asarray(eps), math.sqrt(2 * math.log(1.25e5)), rtol=1e-5)


@pytest.mark.parametrize("eps,delta,mech,match", [(1.5, 1e-5, "classic", "eps"), (0.0, 1e-5, "classic", "eps"),
                                                  (-1.0, 1e-5, "analytic", "eps"), (0.5, 0.0, "classic", "delta"),
                                                  (0.5, 1.0, "classic", "delta"), (0.5, 1e-5, "laplace", "mechanism")])
def test_bad_eps_delta(eps, delta, mech, match):
    with pytest.raises(PoisonJaxInputError, match=match):
        dp.check_eps_delta(eps, delta, mech)
    dp.check_eps_delta(5.0, 1e-5, "analytic")  # fine
