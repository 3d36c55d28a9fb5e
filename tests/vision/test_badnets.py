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


@pytest.mark.slow
@pytest.mark.extended  # CI runs it after the main suite while time allows (.ci/run)
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


# ---------------------------------------------------------------- resume mid-cell after a kill -----

@pytest.mark.slow
def test_killed_badnets_study_resumes_mid_cell_with_same_results(tmp_path):
    """SIGKILL the study once epoch >= 4 of its cell is checkpointed; the rerun starts from that
    epoch (not 0) and its results equal an uninterrupted run's bit for bit (same program)."""
    import json
    from pathlib import Path

    from tests._multiproc import kill_then_rerun, metric_steps
    child = Path(__file__).resolve().parents[1] / "_study_child.py"   # badnets with tests/_study_configs.py
    name = "badnets_0.1000"
    ckpt = tmp_path / "wd" / "cells" / name / "checkpoints"
    cell = tmp_path / "wd" / "cells" / f"{name}.json"
    # slow chunks, killed once epoch 4 is checkpointed; then resumed + an uninterrupted run
    kill_then_rerun(child, ["badnets"], tmp_path / "wd", tmp_path / "ref", ckpt, min_step=4, sleep="1.0",
                    unfinished=cell, timeout=600)
    c = json.loads(cell.read_text())
    assert c["resumed_from_epoch"] is not None and c["resumed_from_epoch"] >= 4     # not from epoch 0
    r = json.loads((tmp_path / "ref" / "cells" / f"{name}.json").read_text())
    assert r["resumed_from_epoch"] is None
    for k in ("clean_accuracy", "asr"):
        assert c[k] == r[k]                                                        # bit-equal
    rows = lambda wd: [{k: v for k, v in row.items() if k != "seconds"}
                       for row in json.loads((wd / "results.json").read_text())["rows"]]
    assert rows(tmp_path / "wd") == rows(tmp_path / "ref")
    assert metric_steps(tmp_path / "wd" / "cells" / name / "metrics.jsonl") == list(range(1, 9))  # each epoch once
    assert not ckpt.exists()                                                       # removed when the cell finished
