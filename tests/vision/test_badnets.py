"""The first study (issue 2): BadNets at 10% poison on digits reaches ASR > 80% while clean accuracy
stays within 5 points of unpoisoned victims; label flipping and triggers behave."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.badnets import get_config
from experiments.badnets import run
from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.vision.triggers import (apply_trigger, attack_success_rate, badnets_poison, flip_labels,
                                       patch_trigger)


def test_badnets_study_quick(tmp_path):
    c = get_config("quick")
    c.n_victims = 2
    c.attacks = ("none", "badnets")
    c.train.epochs = 25
    res = run(c, str(tmp_path))
    clean = res["clean_accuracy_unpoisoned"]["mean"]
    bd = res["badnets"]
    assert bd["asr"]["mean"] > 0.80
    assert bd["clean_accuracy"]["mean"] > clean - 0.05
    assert res["attacks"]["none"]["0.0000"]["asr"]["mean"] < 0.2   # no trigger effect without poison
    for f in ("results.json", "report.md", "config.json", "accuracy_vs_rate.png"):
        assert (tmp_path / f).exists()
    # a second run resumes from the cached cells (no retraining) and gives the same numbers
    res2 = run(c, str(tmp_path))
    assert res2["badnets"] == bd


def test_trigger_and_poisoning_invariants():
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(50, 8, 8, 1)), jnp.float32)
    y = jnp.arange(50) % 10
    t = patch_trigger((8, 8, 1), 3)
    xt = apply_trigger(x, t)
    assert float(jnp.abs(xt - x)[:, :5, :, :].max()) == 0.0       # only the 3x3 corner changes
    xp, yp, idx = badnets_poison(jax.random.PRNGKey(0), x, y, 0.2, 0, t)
    assert len(idx) == 10 and bool(jnp.all(yp[idx] == 0)) and bool(jnp.all(y[idx] != 0))
    unchanged = np.setdiff1d(np.arange(50), np.asarray(idx))
    np.testing.assert_array_equal(xp[unchanged], x[unchanged])
    yf, fidx = flip_labels(jax.random.PRNGKey(1), y, 0.3, 10)
    assert len(fidx) == 15 and bool(jnp.all(yf[fidx] != y[fidx]))
    assert float(attack_success_rate(jnp.array([0, 0, 1, 0]), jnp.array([0, 1, 2, 3]), 0)) == pytest.approx(2 / 3)


def test_bad_inputs():
    x = jnp.ones((4, 8, 8, 1)) * 2.0
    with pytest.raises(PoisonJaxInputError, match="x must lie in"):
        badnets_poison(jax.random.PRNGKey(0), x, jnp.arange(4), 0.5, 0, patch_trigger((8, 8, 1)))
    with pytest.raises(PoisonJaxInputError, match="rate"):
        flip_labels(jax.random.PRNGKey(0), jnp.arange(4), 1.5, 10)
    with pytest.raises(PoisonJaxInputError, match="rate"):
        flip_labels(jax.random.PRNGKey(0), jnp.arange(4), 0.0, 10)
