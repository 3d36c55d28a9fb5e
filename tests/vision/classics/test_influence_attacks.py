"""Influence classics on MNIST 1 vs 7 with binary logistic regression (785 parameters, exact Hessian):
predicted and actual leave-one-out test-loss changes correlate (Pearson r >= 0.9); the Koh & Liang
training-set attack raises a target's loss more than random perturbations of the same norm; greedy
influence label flips lower accuracy more than random flips."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poisonjax.vision.classics import influence_attacks as IA
from poisonjax.vision.classics.convex import logreg_hessian, logreg_risk
from poisonjax.core.influence import flat_hessian

pytestmark = pytest.mark.requires_data("mnist")
L2 = 1e-2


@pytest.fixture(scope="module")
def mnist17():
    from poisonjax.data.images import load_mnist
    d = load_mnist(n_test=600)
    x, y = IA.binary_subset(jnp.asarray(d.x_train), jnp.asarray(d.y_train), 7, 1)
    xt, yt = IA.binary_subset(jnp.asarray(d.x_test), jnp.asarray(d.y_test), 7, 1)
    return x, y, xt, yt


def test_closed_form_hessian_matches_autodiff():
    x = jax.random.uniform(jax.random.PRNGKey(0), (40, 2, 3, 1))
    y = (x.sum((1, 2, 3)) > 3).astype(jnp.int32)
    p = IA.fit_logreg(x, y, 0.1)
    h = flat_hessian(lambda q: logreg_risk(q, x, y, 0.1), p)
    np.testing.assert_allclose(logreg_hessian(p, x, 0.1), h, atol=1e-6)


def test_loo_prediction_correlates_with_retraining(mnist17):
    x, y, xt, yt = mnist17
    assert x.shape[1:] == (28, 28, 1) and x.shape[0] == 1000  # 784 weights + bias
    p = IA.fit_logreg(x, y, L2, steps=12)
    losses = jax.vmap(IA.logreg_loss, in_axes=(None, 0, 0))(p, xt, yt)
    ti = int(jnp.argsort(losses)[-3])
    r = IA.loo_check(x, y, xt[ti:ti + 1], yt[ti:ti + 1], jnp.arange(0, 1000, 40), L2)
    rho = np.corrcoef(np.asarray(r["predicted"]), np.asarray(r["actual"]))[0, 1]
    assert rho >= 0.9, rho


def test_influence_attack_beats_random_perturbation(mnist17):
    x, y, xt, yt = mnist17
    p = IA.fit_logreg(x, y, L2, steps=12)
    losses = jax.vmap(IA.logreg_loss, in_axes=(None, 0, 0))(p, xt, yt)
    ti = int(jnp.argsort(losses)[-20])
    res = IA.influence_training_set_attack(x, y, xt[ti:ti + 1], yt[ti:ti + 1], k=10, eps=0.25, iters=3, l2=L2)
    xr = IA.random_perturbation(jax.random.PRNGKey(0), x, res.indices, 0.25)
    rand = float(IA.target_loss(IA.fit_logreg(xr, y, L2), xt[ti:ti + 1], yt[ti:ti + 1]))
    assert float(res.target_loss[-1]) > max(rand, float(res.target_loss[0])) + 0.1
    assert float(jnp.abs(res.x_poisoned - x).max()) <= 0.25 + 1e-6


@pytest.mark.parametrize("budget", [pytest.param(0.05, marks=pytest.mark.slow), 0.1,
                                    pytest.param(0.2, marks=pytest.mark.slow)])
def test_adversarial_label_flip_beats_random(mnist17, budget):
    x, y, xt, yt = mnist17
    # the attacker validates on the clean training set it poisons (its true labels; never test data)
    xv, yv = x, y
    yf, how = IA.adversarial_label_flip(x, y, xv, yv, budget, rounds=2, l2=L2)
    assert int((yf != y).sum()) == round(budget * 1000), how
    yr = IA.random_label_flip(jax.random.PRNGKey(1), y, budget)
    assert IA.accuracy_after(x, yf, xt, yt, L2) < IA.accuracy_after(x, yr, xt, yt, L2) - 0.01, how
