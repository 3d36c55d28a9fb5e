"""The seed aggregators' shared summary (``benchmarks/_seeds.describe``) and the two summarise rules built on it:
RAVEN drops ``None`` (a seed where a figure does not apply), the claims aggregator refuses to average a mixed
column and adds a one-sample t-test for differences."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    sys.path.insert(0, str(BENCH))          # the scripts import _seeds as a sibling module
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH))


def test_describe_matches_numpy_and_scipy():
    seeds = _load("_seeds")
    v = [0.931, 0.944, 0.972, 0.981, 0.995]
    d = seeds.describe(v)
    assert d["mean"] == pytest.approx(np.mean(v)) and d["std"] == pytest.approx(np.std(v, ddof=1))
    assert d["se"] == pytest.approx(stats.sem(v)) and (d["min"], d["max"], d["n"]) == (0.931, 0.995, 5)
    assert seeds.describe([]) is None
    assert seeds.describe([0.5]) == {"mean": 0.5, "std": 0.0, "se": 0.0, "min": 0.5, "max": 0.5, "n": 1}


def test_raven_drops_none_and_claims_refuse_a_mixed_column():
    raven, claims = _load("raven_seeds"), _load("claims_over_seeds")
    assert raven.summarise([0.9, None, 0.8])["n"] == 2 and raven.summarise([None]) is None
    assert claims.summarise("acc", [0.9, None, 0.8]) == {"values": [0.9, None, 0.8]}
    assert claims.summarise("ok", [True, False, True]) == {"holds": 2, "n": 3}
    d = [0.4, -0.2, 1.1, 0.3, 0.25]
    out = claims.summarise("opus_minus_fixed_dp", d)
    t = stats.ttest_1samp(d, 0.0)
    assert out["t"] == pytest.approx(t.statistic) and out["p_two_sided"] == pytest.approx(t.pvalue)
    assert "t" not in claims.summarise("accuracy", d)
