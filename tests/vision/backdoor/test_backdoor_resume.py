"""The backdoor study resumes mid-cell after a SIGKILL (issue 14, item 4; issue 17)."""
import json
from pathlib import Path

import pytest


@pytest.mark.slow
def test_killed_backdoor_study_resumes_mid_cell_with_same_results(tmp_path):
    """SIGKILL the study once epoch >= 4 of the BadNets cell's victims is checkpointed; the rerun restores
    that epoch (not 0), skips nothing it had not finished, and its results equal an uninterrupted run's
    in every value except wall times (the same programs run: bit-equal). The cell's checkpoints are
    deleted once it is stored; the clean victims' when the study ends."""
    from tests._multiproc import checkpoint_steps, kill_then_rerun, results_without_timings
    child = Path(__file__).with_name("_backdoor_child.py")
    cell = tmp_path / "wd" / "cells" / "badnets.json"
    seen = kill_then_rerun(child, [], tmp_path / "wd", tmp_path / "ref",
                           tmp_path / "wd" / "cells" / "badnets" / "victims" / "checkpoints", min_step=4,
                           unfinished=cell, timeout=900)
    c = json.loads(cell.read_text())
    assert c["resumed_from"]["victims"] >= 4 and c["resumed_from"]["victims"] <= seen      # not from epoch 0
    assert json.loads((tmp_path / "ref" / "cells" / "badnets.json").read_text())["resumed_from"] == {}
    assert results_without_timings(tmp_path / "wd") == results_without_timings(tmp_path / "ref")
    assert [r["defense"] for r in json.loads((tmp_path / "wd" / "results.json").read_text())["rows"]] == [
        "none", "spectral_signatures", "clp"]
    assert checkpoint_steps(tmp_path / "wd" / "cells", recursive=True) == []   # all removed at the end
