"""core.parallel across processes: two ``jax.distributed`` processes on localhost (CPU, 2 fake devices
each) split a victim ensemble over all 4 devices (``victim_mesh`` + ``shard_leading``), each holding only
its own victims, and ``gather_to_host`` returns every victim's metrics, equal to a plain single-device
``vmap``, to both processes. The study-level test is tests/vision/test_wb_multihost.py."""
import json
import subprocess
import sys
from pathlib import Path

from tests._multiproc import free_port

CHILD = str(Path(__file__).with_name("_parallel_multihost_child.py"))


def test_two_processes_shard_victims_and_gather_equal_plain_vmap(tmp_path):
    port = free_port()
    procs = [subprocess.Popen([sys.executable, CHILD, str(i), str(port), str(tmp_path / f"out{i}.json")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in range(2)]
    try:
        for p in procs:
            rc = p.wait(timeout=600)
            assert rc == 0, p.stderr.read().decode()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    outs = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
    assert [o["process"] for o in outs] == [0, 1]
    assert outs[0]["accuracy"] == outs[1]["accuracy"] and len(outs[0]["accuracy"]) == 7
    assert outs[0]["loss"] == outs[1]["loss"]
    # the victims learned something (the comparison is not between two untrained ensembles)
    assert min(outs[0]["accuracy"]) > 1 / 3
