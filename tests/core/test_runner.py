"""core.runner: a run killed midway and resumed ends bit-identical; bad workdirs are refused."""
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poisonjax.core.runner import (CheckpointMismatchError, CorruptCheckpointError, DivergenceError, run)
from poisonjax.core.types import AttackOptimizer

CHILD = str(Path(__file__).with_name("_runner_child.py"))


def _child(workdir, out, sleep="0"):
    return subprocess.Popen([sys.executable, CHILD, str(workdir), str(out), sleep],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_killed_run_resumes_bit_identical(tmp_path):
    ref = _child(tmp_path / "ref", tmp_path / "ref.npz")
    assert ref.wait(timeout=300) == 0, ref.stderr.read().decode()[-2000:]
    # slow child (sleep per step), killed hard once a mid-run checkpoint exists
    p = _child(tmp_path / "wd", tmp_path / "x.npz", "0.05")
    ckpt = tmp_path / "wd" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline:
        steps = [int(d.name) for d in ckpt.glob("*") if d.name.isdigit()] if ckpt.exists() else []
        if steps and max(steps) >= 16:
            break
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (tmp_path / "x.npz").exists(), "child finished before it could be killed"
    lines_before = (tmp_path / "wd" / "metrics.jsonl").read_text().splitlines()
    assert 0 < len(lines_before) < 120
    resumed = _child(tmp_path / "wd", tmp_path / "x.npz")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()[-2000:]
    a, b = np.load(tmp_path / "ref.npz"), np.load(tmp_path / "x.npz")
    assert int(b["resumed"]) >= 16 and int(a["resumed"]) == -1
    for k in ("w", "m", "key"):
        np.testing.assert_array_equal(a[k], b[k])          # bit-identical
    lines = (tmp_path / "wd" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 120 and [int(l.split(",")[0].split(":")[1]) for l in lines] == list(range(1, 121))


class S(NamedTuple):
    x: jax.Array


def _toy(lr=0.1):
    return AttackOptimizer(lambda k, p: S(jnp.ones(3)), lambda s, p: S(s.x - lr * (s.x - p)),
                           lambda s, p: {"d": jnp.sum((s.x - p) ** 2)})


def test_uneven_chunks_compile_once_and_match(tmp_path):
    p = jnp.zeros(3)
    r1 = run(_toy(), p, 23, chunk_size=5, progress=False)
    r2 = run(_toy(), p, 23, chunk_size=23, progress=False)
    np.testing.assert_array_equal(r1.state.x, r2.state.x)
    assert len(r1.metrics) == 23 and r1.metrics[-1]["step"] == 23


def test_resumed_run_times_only_its_own_steps(tmp_path):
    p = jnp.zeros(3)
    first = run(_toy(), p, 10, tmp_path, progress=False, chunk_size=5)
    assert first.resumed_from is None and first.seconds > 0
    again = run(_toy(), p, 20, tmp_path, progress=False, chunk_size=5)
    assert again.resumed_from == 10 and again.steps == 20 and again.seconds > 0
    done = run(_toy(), p, 20, tmp_path, progress=False, chunk_size=5)  # nothing left to run
    assert done.resumed_from == 20 and len(done.metrics) == 20 and [m["step"] for m in done.metrics] == list(range(1, 21))


def test_config_mismatch_is_refused(tmp_path):
    run(_toy(), jnp.zeros(3), 4, tmp_path, config={"lr": 0.1}, progress=False, chunk_size=2)
    with pytest.raises(CheckpointMismatchError, match="different config"):
        run(_toy(), jnp.zeros(3), 4, tmp_path, config={"lr": 0.2}, progress=False, chunk_size=2)


def test_corrupt_checkpoint_reported_not_overwritten(tmp_path):
    run(_toy(), jnp.zeros(3), 4, tmp_path, config={}, progress=False, chunk_size=2)
    latest = max((d for d in (tmp_path / "checkpoints").iterdir() if d.name.isdigit()), key=lambda d: int(d.name))
    files = [f for f in latest.rglob("*") if f.is_file()]
    for f in files:
        f.write_bytes(b"garbage")
    with pytest.raises(CorruptCheckpointError, match="cannot be restored"):
        run(_toy(), jnp.zeros(3), 8, tmp_path, config={}, progress=False, chunk_size=2)
    assert all(f.read_bytes() == b"garbage" for f in files)


def test_divergence_raises():
    att = AttackOptimizer(lambda k, p: S(jnp.ones(3)), lambda s, p: S(s.x * 1e30))
    with pytest.raises(DivergenceError, match="non-finite"):
        run(att, None, 10, chunk_size=2, progress=False)


def _steps(path):
    import json
    return [json.loads(l)["step"] for l in path.read_text().splitlines() if l.startswith("{")]


def test_resume_writes_each_step_once(tmp_path):
    """Steps done after the last checkpoint (a crash between metrics write and save) are cut on
    resume and recomputed: every step appears once."""
    import json
    p = jnp.zeros(3)
    run(_toy(), p, 10, tmp_path, progress=False, chunk_size=5)
    m = tmp_path / "metrics.jsonl"
    with open(m, "a") as f:  # what a crash after writing steps 11..13 but before their checkpoint leaves
        for s in (11, 12, 13):
            f.write(json.dumps({"step": s, "d": -1.0}) + "\n")
    res = run(_toy(), p, 20, tmp_path, progress=False, chunk_size=5)
    assert res.resumed_from == 10
    assert _steps(m) == list(range(1, 21))
    assert all(json.loads(l)["d"] >= 0 for l in m.read_text().splitlines())
    assert [r["step"] for r in res.metrics] == list(range(1, 21))


def test_unparseable_metrics_lines_warned_and_only_last_dropped(tmp_path):
    p = jnp.zeros(3)
    run(_toy(), p, 10, tmp_path, progress=False, chunk_size=5)
    m = tmp_path / "metrics.jsonl"
    lines = m.read_text().splitlines()
    lines.insert(3, "not json {")
    m.write_text("\n".join(lines) + "\n" + '{"step": 11, "d"')  # last line cut short by a crash
    with pytest.warns(RuntimeWarning) as rec:
        run(_toy(), p, 12, tmp_path, progress=False, chunk_size=2)
    msgs = " ".join(str(w.message) for w in rec)
    assert "line 4" in msgs and "kept" in msgs and "dropped" in msgs
    out = m.read_text().splitlines()
    assert "not json {" in out                      # a middle line is never dropped
    assert _steps(m) == list(range(1, 13))          # the cut last line is gone, steps once


def test_host_loop_matches_scan_and_resumes(tmp_path):
    p = jnp.zeros(3)
    a = run(_toy(), p, 13, chunk_size=4, progress=False)
    b = run(_toy(), p, 7, tmp_path, chunk_size=4, progress=False, host_loop=True)
    b = run(_toy(), p, 13, tmp_path, chunk_size=4, progress=False, host_loop=True)
    assert b.resumed_from == 7 and len(b.metrics) == 13
    np.testing.assert_allclose(a.state.x, b.state.x, rtol=1e-6)
    np.testing.assert_allclose([m["d"] for m in a.metrics], [m["d"] for m in b.metrics], rtol=1e-5)


def test_stop_when_ends_at_a_chunk_boundary_once_per_state_and_resumes_finished(tmp_path):
    """``stop_when(state)`` is asked once before the first chunk and once after each chunk; True ends the run
    there, checkpointed, so a rerun restores the stopped state and runs nothing."""
    p = jnp.zeros(3)
    calls = []

    def stop(s):
        calls.append(float(s.x[0]))
        return float(s.x[0]) < 0.5
    r = run(_toy(), p, 100, tmp_path, progress=False, chunk_size=5, stop_when=stop)
    assert r.steps == 10 and len(r.metrics) == 10            # 0.9**5 = 0.59 > 0.5, 0.9**10 = 0.35 < 0.5
    assert len(calls) == 3 and len(set(calls)) == 3         # initial state, after 5, after 10: each once
    again = run(_toy(), p, 100, tmp_path, progress=False, chunk_size=5, stop_when=stop)
    assert again.resumed_from == 10 and again.steps == 10
    np.testing.assert_array_equal(again.state.x, r.state.x)
