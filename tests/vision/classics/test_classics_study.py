"""`poisonjax run classics`: rows per (family, attack, budget) with metric, direction, attack and baseline
values; plot and report written. The non-slow test runs the influence family on digits 1 vs 7."""
import json

import pytest

from configs.classics import get_config
from experiments.classics import run


def _check(res, wd, families):
    rows = res["rows"]
    assert {r["family"] for r in rows} == set(families)
    for r in rows:
        assert {"metric", "higher_is_better", "attack_value", "baseline", "baseline_value", "budget"} <= set(r)
        assert 0 < r["budget"] <= 1
    assert json.loads((wd / "results.json").read_text())["rows"] == rows
    assert (wd / "classics.png").exists() and "baseline" in (wd / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.extended  # CI runs it after the main suite while time allows (.ci/run)
def test_classics_study_convex_families(tmp_path):
    c = get_config("quick")
    c.families = ("influence",)
    c.influence.targets = 1
    c.influence.iters = 2
    res = run(c, tmp_path / "w")
    _check(res, tmp_path / "w", c.families)
    (row,) = res["rows"]
    assert row["attack"] == "influence_attack" and row["higher_is_better"] and row["beats_baseline"], row
    again = run(c, tmp_path / "w")          # finished cells are cached: same rows, nothing recomputed
    assert again["rows"] == res["rows"]


@pytest.mark.slow
def test_classics_study_quick_all_families(tmp_path):
    c = get_config("quick")
    res = run(c, tmp_path / "w")
    _check(res, tmp_path / "w", c.families)
