"""Child process for the study kill/resume tests: run one study with its tiny config
(``tests/_study_configs.py``).

Usage: python _study_child.py STUDY WORKDIR [sleep_seconds_per_runner_chunk]

* With a sleep, every chunk of every :func:`poisonjax.core.runner.run` call (compiled scan or host loop)
  is slowed down on the host, so the parent can kill the study between two checkpoints.
* Every runner call that restores a checkpoint appends ``{"step": s, "workdir": w}`` to
  ``WORKDIR.resumes.jsonl`` (from the runner's "resumed from step" log record), so the parent can check
  that the rerun started from a checkpointed step, not from 0.
"""
import importlib
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root (configs/, experiments/, tests/)

import jax  # noqa: E402

from poisonjax.core import runner  # noqa: E402
from tests._study_configs import SPECS  # noqa: E402


def slow_down(seconds):
    """Sleep ``seconds`` after every runner chunk (both the compiled and the host-loop mode)."""
    def wrap(fn):
        def chunk(*args):
            out = fn(*args)
            jax.block_until_ready(out)
            time.sleep(seconds)
            return out
        return chunk

    real, real_host = runner.make_chunk_fn, runner._host_chunk_fn
    slow = lambda attack, chunk_size: wrap(real(attack, chunk_size))  # noqa: E731
    slow.__wrapped__ = lambda attack, chunk_size: wrap(real.__wrapped__(attack, chunk_size))
    runner.make_chunk_fn = slow
    runner._host_chunk_fn = lambda attack: wrap(real_host(attack))


class _ResumeLog(logging.Handler):
    def __init__(self, path):
        super().__init__(logging.INFO)
        self.path = path

    def emit(self, record):
        if record.getMessage().startswith("resumed from step"):
            step, wd = record.args
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": int(step), "workdir": str(wd)}) + "\n")


if __name__ == "__main__":
    study, workdir = sys.argv[1], sys.argv[2]
    if len(sys.argv) > 3 and float(sys.argv[3]):
        slow_down(float(sys.argv[3]))
    log = logging.getLogger(runner.__name__)
    log.setLevel(logging.INFO)
    log.addHandler(_ResumeLog(workdir.rstrip("/") + ".resumes.jsonl"))
    importlib.import_module(f"experiments.{study}").run(SPECS[study][0](), workdir)
