"""Shared helpers for tests that run child processes: start a child, kill it hard once a runner
checkpoint exists (the kill-and-resume tests), wait for it, and compare study results without timings.

Used by the multi-host tests (``free_port``, ``spawn``) and the study kill tests (``tests/federated/test_fl_study_resume.py``, ``tests/vision/test_badnets.py``,
``tests/test_study_resume.py``).
"""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, List, Optional

# keys whose values differ between an interrupted and an uninterrupted run by design (wall times, where
# the run resumed from); everything else in a study's results must be equal
VOLATILE_KEYS = ("seconds", "resumed_from_round", "resumed_from_epoch", "resumed_from")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a ``jax.distributed`` coordinator in the multi-host tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(script: str | Path, *args) -> subprocess.Popen:
    """``python script *args`` (stdout discarded, stderr kept for the failure message)."""
    return subprocess.Popen([sys.executable, str(script), *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def checkpoint_steps(root: str | Path, recursive: bool = False) -> List[int]:
    """Steps of the orbax checkpoints in ``root`` (a runner's ``checkpoints/`` folder), or, with
    ``recursive``, in every ``checkpoints/`` folder below ``root``."""
    root = Path(root)
    if not root.exists():
        return []
    dirs = [d for d in root.rglob("checkpoints") if d.is_dir()] if recursive else [root]
    steps = []
    for d in dirs:
        try:
            steps += [int(s.name) for s in d.iterdir() if s.name.isdigit()]
        except FileNotFoundError:  # removed while we looked (a cell finished)
            pass
    return steps


def kill_when_checkpointed(proc: subprocess.Popen, root: str | Path, *, min_step: int = 1,
                           recursive: bool = False, timeout: float = 600.0, poll: float = 0.2) -> int:
    """SIGKILL ``proc`` as soon as a checkpoint of step >= ``min_step`` exists under ``root`` (see
    :func:`checkpoint_steps`); returns the largest step seen then. Fails the test if the child exited
    (finished or crashed) before that, or if no such checkpoint appeared within ``timeout`` seconds."""
    deadline = time.time() + timeout
    seen = 0
    while time.time() < deadline and proc.poll() is None:
        steps = checkpoint_steps(root, recursive)
        if steps and max(steps) >= min_step:
            seen = max(steps)
            break
        time.sleep(poll)
    exited = proc.poll()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if exited is not None:
        err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
        raise AssertionError(f"the child exited (code {exited}) before it could be killed mid-run:\n{err}")
    assert seen >= min_step, f"no checkpoint of step >= {min_step} under {root} within {timeout} s"
    return seen


def wait_ok(proc: subprocess.Popen, timeout: float = 600.0) -> None:
    """Wait for ``proc``; fail with the tail of its stderr unless it exits with 0."""
    rc = proc.wait(timeout=timeout)
    assert rc == 0, proc.stderr.read().decode()[-3000:]


def kill_then_rerun(script: str | Path, args, workdir: Path, reference: Path, kill_under: Path, *,
                    min_step: int, sleep: str = "1.0", recursive: bool = False, unfinished: Optional[Path] = None,
                    timeout: float = 600.0) -> int:
    """The kill-and-resume protocol of the study tests: run ``script *args workdir sleep`` (a slowed-down
    child), SIGKILL it once a checkpoint of step >= ``min_step`` exists under ``kill_under``
    (:func:`kill_when_checkpointed`), check that ``unfinished`` (e.g. the cell's result file or
    ``results.json``) does not exist yet, then rerun the same command on ``workdir`` without the slow-down
    and, in parallel, an uninterrupted run on ``reference``; fail unless both exit 0. Returns the
    checkpoint step seen at the kill."""
    p = spawn(script, *args, workdir, sleep)
    seen = kill_when_checkpointed(p, kill_under, min_step=min_step, recursive=recursive, timeout=timeout)
    if unfinished is not None:
        assert not Path(unfinished).exists(), "the study finished before it could be killed"
    ref = spawn(script, *args, reference, "0")              # uninterrupted (runs while the other resumes)
    resumed = spawn(script, *args, workdir, "0")
    wait_ok(resumed, 2 * timeout)
    wait_ok(ref, 2 * timeout)
    return seen


def strip_volatile(obj, keys: Iterable[str] = VOLATILE_KEYS):
    """``obj`` (JSON) without the keys in ``keys`` at any depth."""
    keys = tuple(keys)
    if isinstance(obj, dict):
        return {k: strip_volatile(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [strip_volatile(v, keys) for v in obj]
    return obj


def results_without_timings(workdir: str | Path, name: str = "results.json"):
    """``workdir/results.json`` read and passed through :func:`strip_volatile`."""
    return strip_volatile(json.loads((Path(workdir) / name).read_text()))


def metric_steps(path: str | Path) -> List[int]:
    """The ``step`` of every line of a runner's ``metrics.jsonl``."""
    return [json.loads(l)["step"] for l in Path(path).read_text().splitlines() if l.strip()]


def read_resumes(path: Optional[str | Path]) -> List[dict]:
    """The resume records a study child wrote (``tests/_study_child.py``): one JSON line per runner
    call that restored a checkpoint, ``{"step": int, "workdir": str}``."""
    if path is None or not Path(path).exists():
        return []
    return [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]
