"""Multi-host victim ensembles: ``poisonjax run witches_brew --distributed --coordinator 127.0.0.1:PORT
--num-processes 2 --process-id I`` on localhost (CPU, 2 fake devices per process) splits the victims over
the 4 devices of both processes and equals a single-process run on 4 devices (the same per-device programs),
and a single-device run up to float32 training noise; only process 0 writes files (one ``results.json``). The parallel machinery alone: tests/core/test_parallel_multihost.py."""
import json
from pathlib import Path

import numpy as np
import pytest

from tests._multiproc import free_port, spawn

CHILD = str(Path(__file__).with_name("_wb_multihost_child.py"))


def _wait(procs, timeout=1800):
    try:
        for p in procs:
            rc = p.wait(timeout=timeout)
            assert rc == 0, p.stderr.read().decode()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


@pytest.mark.slow
def test_two_process_witches_brew_equals_single_process_and_only_process_0_writes(tmp_path):
    port = free_port()
    multi = tmp_path / "multi"
    procs = [spawn(CHILD, multi, tmp_path / f"log{i}.json", 2, i, port, 2) for i in range(2)]
    procs.append(spawn(CHILD, tmp_path / "single4", tmp_path / "log_single4.json", 1, 0, 0, 4))
    procs.append(spawn(CHILD, tmp_path / "single", tmp_path / "log_single.json", 1, 0, 0, 1))
    _wait(procs)
    logs = [json.loads((tmp_path / f"log{i}.json").read_text()) for i in range(2)]
    ref4 = json.loads((tmp_path / "log_single4.json").read_text())
    ref = json.loads((tmp_path / "log_single.json").read_text())
    assert [l["process_index"] for l in logs] == [0, 1]
    assert [l["mesh"] for l in logs] + [ref4["mesh"]] == [{"victims": 4}] * 3 and ref["mesh"] is None
    # both processes hold every victim's metrics (all-gathered), identical
    assert logs[0]["results"]["methods"] == logs[1]["results"]["methods"]
    for name, m in logs[0]["results"]["methods"].items():
        # two processes x 2 devices against one process x 4 devices: the same per-device programs, so the
        # victims' metrics are equal up to float32 noise of the cross-process gather
        r4 = ref4["results"]["methods"][name]
        assert m["success_rate"]["per_trial"] == pytest.approx(r4["success_rate"]["per_trial"], abs=1e-9), name
        np.testing.assert_allclose(m["target_prob_per_trial"], r4["target_prob_per_trial"], rtol=1e-5, atol=1e-7,
                                   err_msg=name)
        np.testing.assert_allclose(m["clean_accuracy"]["values"], r4["clean_accuracy"]["values"], atol=1e-6,
                                   err_msg=name)
        assert m["alignment_at_fresh_models"] == pytest.approx(r4["alignment_at_fresh_models"], rel=1e-6)
        # against the unsharded run (6 victims vmapped on one device): XLA's CPU kernels round differently for a
        # victim batch of 6 than for 2 per device (about 1e-7 relative on the Intel Xeon with AVX-512, 0 on the
        # AMD EPYC where this was first measured), and victim training amplifies that: a target probability of
        # 8.7e-4 came out 2% apart there. So the unsharded comparison has a training-noise tolerance.
        r = ref["results"]["methods"][name]
        np.testing.assert_allclose(m["target_prob_per_trial"], r["target_prob_per_trial"], rtol=0.1, atol=1e-4,
                                   err_msg=name)
        # clean accuracy of each victim seed (mean over trials): within half a point
        np.testing.assert_allclose(m["clean_accuracy"]["values"], r["clean_accuracy"]["values"], atol=5e-3,
                                   err_msg=name)
        assert m["alignment_at_fresh_models"] == pytest.approx(r["alignment_at_fresh_models"], rel=1e-3)
    assert logs[0]["results"]["best_restart"] == ref4["results"]["best_restart"] == ref["results"]["best_restart"]
    # exactly one results.json, from process 0; the poisons equal the single-process run's
    results = sorted(p for p in multi.rglob("*") if p.name == "results.json")
    assert results == [multi / "results.json"]
    on_disk = json.loads(results[0].read_text())
    assert on_disk["rows"] == logs[0]["results"]["rows"]
    a, b = np.load(multi / "poisons_all_trials.npz"), np.load(tmp_path / "single" / "poisons_all_trials.npz")
    np.testing.assert_allclose(a["deltas"], b["deltas"], atol=1e-6)
    np.testing.assert_array_equal(a["poison_indices"], b["poison_indices"])
    # process 1 wrote no file of the workdir through Python (run_info, config, craft metrics and checkpoint
    # metadata, results, report, plot, poisons are all process 0's)
    mine = [w for w in logs[1]["writes"] if w.startswith(str(multi))]
    assert mine == [], mine
    assert any(w.endswith("results.json") for w in logs[0]["writes"])
