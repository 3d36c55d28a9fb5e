"""Every study resumes mid-cell after a kill (issue 14, item 4): a study killed (SIGKILL) once one of its
cells' iterative parts has written a runner checkpoint is rerun with the same command and workdir; the rerun
restores that checkpoint (a step > 0, not a restart of the cell) and its ``results.json`` equals an
uninterrupted run's in every value except wall times (the same program runs: bit-equal).

The per-study kill tests are slow (three processes each); the fast test checks the same property in one
process for one study, with the "kill" simulated right after a checkpoint write.
(BadNets and the FL robustness grid have their own kill tests: ``tests/vision/test_badnets.py``,
``tests/federated/test_fl_study_resume.py``.)
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from tests._multiproc import checkpoint_steps, kill_then_rerun, read_resumes, results_without_timings
from tests._study_configs import SPECS

CHILD = Path(__file__).with_name("_study_child.py")

# studies whose finished cells are CellCache entries (their checkpoints are removed when a cell is stored)
CELL_CACHE = ("vgae_attack", "classics", "geminiguard", "weidetect", "fl_robustness")


def _resumes(wd):
    return read_resumes(str(wd) + ".resumes.jsonl")


@pytest.mark.slow
@pytest.mark.parametrize("name", [
    "soul", "opus_vfl", "classics", "vgae_attack", "geminiguard", "raven",
    pytest.param("weidetect", marks=pytest.mark.requires_data("nsl_kdd")),
])
def test_killed_study_resumes_mid_cell_with_same_results(name, tmp_path):
    _, under, min_step = SPECS[name]
    wd, ref = tmp_path / "wd", tmp_path / "ref"
    # slow runner chunks, killed mid-cell; then resumed + an uninterrupted run
    seen = kill_then_rerun(CHILD, [name], wd, ref, wd / under, min_step=min_step, sleep="1.0", recursive=True,
                           unfinished=wd / "results.json", timeout=1200)
    resumed = _resumes(wd)
    assert resumed and max(x["step"] for x in resumed) >= min_step, (seen, resumed)   # not from step 0
    assert _resumes(ref) == []
    assert results_without_timings(wd) == results_without_timings(ref)                # same program: bit-equal
    if name in CELL_CACHE:
        assert checkpoint_steps(wd / "cells", recursive=True) == []                    # removed with finished cells
    if name == "soul":
        assert not any((wd / "runs").iterdir())


# ------------------------------------------------------------------------ fast, in one process ---

class _Killed(BaseException):
    """Raised right after a checkpoint write: stands for a SIGKILL at that moment."""


def _kill_after_checkpoint(monkeypatch, step):
    from poisonjax.core import runner
    real = runner._checkpoint_manager

    def manager(ckpt_dir, max_to_keep):
        m = real(ckpt_dir, max_to_keep)
        save = m.save

        def save_then_die(s, *a, **k):
            out = save(s, *a, **k)
            m.wait_until_finished()
            if s >= step:
                raise _Killed(s)
            return out
        m.save = save_then_die
        return m
    monkeypatch.setattr(runner, "_checkpoint_manager", manager)


def test_study_resumes_mid_cell_in_process(tmp_path, monkeypatch, caplog):
    """vgae_attack (tiny): interrupted right after the meta attack's checkpoint of step 2, rerun with the same
    workdir: the attack restarts from step 2 and the results equal an uninterrupted run's."""
    import logging
    name = "vgae_attack"
    run = importlib.import_module(f"experiments.{name}").run

    def make():
        c = SPECS[name][0]()
        c.attacks, c.inner_steps, c.steps_per_budget = ("meta_self",), 5, 3        # 3 meta-gradient steps
        c.victim.epochs = 5
        return c
    run(make(), tmp_path / "ref")
    with monkeypatch.context() as m:
        _kill_after_checkpoint(m, 2)
        with pytest.raises(_Killed):
            run(make(), tmp_path / "wd")
    assert not (tmp_path / "wd" / "results.json").exists()
    assert max(checkpoint_steps(tmp_path / "wd" / "cells", recursive=True)) == 2
    with caplog.at_level(logging.INFO, logger="poisonjax.core.runner"):
        run(make(), tmp_path / "wd")
    assert any(r.getMessage().startswith("resumed from step 2") for r in caplog.records)
    assert results_without_timings(tmp_path / "wd") == results_without_timings(tmp_path / "ref")
    assert checkpoint_steps(tmp_path / "wd" / "cells", recursive=True) == []
    steps = [json.loads(l)["step"] for l in
             (tmp_path / "wd" / "cells" / "meta_self_0.1" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, len(steps) + 1))                      # each step written once
