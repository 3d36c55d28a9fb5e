"""The idle rule of ``benchmarks/_machine.py`` (issue 23): a speed ratio is only printed unmarked when
the machine was idle before and during the run."""
import importlib.util
import time
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "bench_machine", Path(__file__).resolve().parents[1] / "benchmarks" / "_machine.py")
M = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(M)


def test_idle_machine_passes():
    assert M.busy_reasons((0.1, 0.5, 1.0), (2.4, 1.0, 1.0), cores=2, own_threads=2, others_cpu_share=0.02) == []


@pytest.mark.parametrize("before, after, own, share, rule", [
    ((1.2, 0, 0), (2.0, 0, 0), 2, 0.0, "load before"),        # rule 1: someone was running at the start
    ((0.0, 0, 0), (3.2, 0, 0), 2, 0.0, "load after"),         # rule 2: 2 own threads + 1.2 from others
    ((0.0, 0, 0), (2.2, 0, 0), 1, 0.0, "load after"),         # a 1-thread benchmark tolerates less
    ((0.0, 0, 0), (2.5, 0, 0), 2, 0.30, "other processes"),   # rule 3: a 1-thread job hidden in the load
])
def test_each_rule_flags_a_busy_run(before, after, own, share, rule):
    reasons = M.busy_reasons(before, after, cores=2, own_threads=own, others_cpu_share=share)
    assert len(reasons) == 1 and rule in reasons[0]


def test_thresholds_scale_with_cores_and_unknowns_are_not_judged():
    assert M.busy_reasons((3.9, 0, 0), (11.9, 0, 0), cores=8) == []               # 0.5 x 8; 8 + 4
    assert len(M.busy_reasons((4.1, 0, 0), (12.1, 0, 0), cores=8)) == 2
    assert M.busy_reasons(None, None, cores=2, others_cpu_share=None) == []
    # own threads above the core count add at most the cores to the load
    assert M.busy_reasons((0, 0, 0), (3.1, 0, 0), cores=2, own_threads=16) != []


def test_machine_marks_ratios_and_records_the_cpu(monkeypatch):
    loads = [(0.0, 0.0, 0.0)]
    monkeypatch.setattr(M, "load_average", lambda: loads.pop(0) if loads else (5.0, 1.0, 1.0))
    m = M.Machine(own_threads=2)
    assert m.info["cpu_model"] and m.info["cpu_isa"]
    time.sleep(0.01)
    text = m.ratio(10.0, 2.0)
    assert text.startswith("5.0x [BUSY: 1-min load 0.0 before / 5.0 after on ")
    assert "load after 5.00" in m.verdict()
    info = m.info
    assert info["busy"] and info["load_before"] == (0.0, 0.0, 0.0)
    monkeypatch.setattr(M, "load_average", lambda: (0.1, 0.1, 0.1))
    monkeypatch.setattr(M, "_machine_busy_seconds", lambda: None)   # no /proc/stat: rule 3 not judged
    m2 = M.Machine(own_threads=2)
    assert m2.ratio(10.0, 2.0) == "5.0x" and m2.verdict() == "idle" and m2.finish()["others_cpu_share"] is None
