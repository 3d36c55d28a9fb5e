"""An FL study killed in the middle of a cell resumes from its last checkpointed round (not round 0)
and ends with the same results as an uninterrupted run (the runner's own kill test, for a study)."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

CHILD = str(Path(__file__).with_name("_fl_study_child.py"))


def _child(workdir, sleep="0"):
    return subprocess.Popen([sys.executable, CHILD, str(workdir), sleep],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _rows(wd):
    res = json.loads((wd / "results.json").read_text())
    return [{k: v for k, v in r.items() if k != "seconds"} for r in res["rows"]]


def test_killed_fl_study_resumes_mid_cell_with_same_results(tmp_path):
    p = _child(tmp_path / "wd", "0.4")                  # slow rounds, killed mid-cell
    ckpt = tmp_path / "wd" / "cells" / "sign_flip__median" / "checkpoints"
    deadline = time.time() + 400
    while time.time() < deadline and p.poll() is None:
        steps = [int(d.name) for d in ckpt.glob("*") if d.name.isdigit()] if ckpt.exists() else []
        if steps and max(steps) >= 4:
            break
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    cell = tmp_path / "wd" / "cells" / "sign_flip__median.json"
    assert not cell.exists(), "the study finished before it could be killed"
    ref = _child(tmp_path / "ref")                      # uninterrupted (runs while we resume)
    resumed = _child(tmp_path / "wd")
    assert resumed.wait(timeout=400) == 0, resumed.stderr.read().decode()[-2000:]
    assert ref.wait(timeout=400) == 0, ref.stderr.read().decode()[-2000:]
    c = json.loads(cell.read_text())
    assert c["resumed_from_round"] is not None and c["resumed_from_round"] >= 4      # not from round 0
    assert json.loads((tmp_path / "ref" / "cells" / "sign_flip__median.json").read_text())["resumed_from_round"] is None
    assert _rows(tmp_path / "wd") == _rows(tmp_path / "ref")                         # same program: bit-equal
    a = json.loads((tmp_path / "wd" / "results.json").read_text())["results"]["sign_flip"]["median"]
    b = json.loads((tmp_path / "ref" / "results.json").read_text())["results"]["sign_flip"]["median"]
    assert a["accuracy_curve"] == b["accuracy_curve"] and len(a["accuracy_curve"]) == 10
    steps = [json.loads(l)["step"] for l in
             (tmp_path / "wd" / "cells" / "sign_flip__median" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 11))                  # each round written once
    assert not ckpt.exists()                            # a finished cell's checkpoints are removed
