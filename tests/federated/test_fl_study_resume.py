"""An FL study killed in the middle of a cell resumes from its last checkpointed round (not round 0)
and ends with the same results as an uninterrupted run (the runner's own kill test, for a study)."""
import json
from pathlib import Path

import pytest

from tests._multiproc import kill_then_rerun, metric_steps

CHILD = Path(__file__).resolve().parents[1] / "_study_child.py"   # fl_robustness with tests/_study_configs.py


def _rows(wd):
    res = json.loads((wd / "results.json").read_text())
    return [{k: v for k, v in r.items() if k != "seconds"} for r in res["rows"]]


@pytest.mark.slow
@pytest.mark.extended  # CI runs it after the main suite while time allows (.ci/run)
def test_killed_fl_study_resumes_mid_cell_with_same_results(tmp_path):
    ckpt = tmp_path / "wd" / "cells" / "sign_flip__median" / "checkpoints"
    cell = tmp_path / "wd" / "cells" / "sign_flip__median.json"
    # slow chunks of 2 rounds, killed once round 4 is checkpointed; then resumed + an uninterrupted run
    kill_then_rerun(CHILD, ["fl_robustness"], tmp_path / "wd", tmp_path / "ref", ckpt, min_step=4, sleep="0.8",
                    unfinished=cell, timeout=400)
    c = json.loads(cell.read_text())
    assert c["resumed_from_round"] is not None and c["resumed_from_round"] >= 4      # not from round 0
    assert json.loads((tmp_path / "ref" / "cells" / "sign_flip__median.json").read_text())["resumed_from_round"] is None
    assert _rows(tmp_path / "wd") == _rows(tmp_path / "ref")                         # same program: bit-equal
    a = json.loads((tmp_path / "wd" / "results.json").read_text())["results"]["sign_flip"]["median"]
    b = json.loads((tmp_path / "ref" / "results.json").read_text())["results"]["sign_flip"]["median"]
    assert a["accuracy_curve"] == b["accuracy_curve"] and len(a["accuracy_curve"]) == 10
    steps = metric_steps(tmp_path / "wd" / "cells" / "sign_flip__median" / "metrics.jsonl")
    assert steps == list(range(1, 11))                  # each round written once
    assert not ckpt.exists()                            # a finished cell's checkpoints are removed
