"""Multi-host: two processes on localhost (CPU, 2 fake devices each) run an FL study under
``jax.distributed`` with the client axis sharded over all 4 devices; the results equal a
single-process run on 4 devices, and only process 0 writes files (one results.json)."""
import json
import subprocess
from pathlib import Path

import pytest

from tests._multiproc import free_port, spawn

CHILD = str(Path(__file__).with_name("_fl_multihost_child.py"))


def _wait(p, timeout=1500):
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        raise
    assert rc == 0, p.stderr.read().decode()[-3000:]


@pytest.mark.slow
def test_two_process_fl_study_equals_single_process_and_only_process_0_writes(tmp_path):
    port = free_port()
    multi = tmp_path / "multi"
    procs = [spawn(CHILD, multi, tmp_path / f"log{i}.json", 2, i, port, 2) for i in range(2)]
    single = spawn(CHILD, tmp_path / "single", tmp_path / "log_single.json", 1, 0, 0, 4)
    for p in procs + [single]:
        _wait(p)
    logs = [json.loads((tmp_path / f"log{i}.json").read_text()) for i in range(2)]
    ref = json.loads((tmp_path / "log_single.json").read_text())
    assert [l["process_index"] for l in logs] == [0, 1]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    for l in logs:                                   # every process computed the same table
        for a, b in zip(strip(l["rows"]), strip(ref["rows"])):
            assert a.keys() == b.keys()
            for k in a:
                if isinstance(a[k], float):
                    assert a[k] == pytest.approx(b[k], abs=1e-5), (k, a, b)
                else:
                    assert a[k] == b[k], (k, a, b)
    results = list(multi.rglob("results.json"))
    assert results == [multi / "results.json"]
    on_disk = json.loads(results[0].read_text())["rows"]
    assert strip(on_disk) == strip(logs[0]["rows"])
    # process 1 wrote none of the study's files (orbax checkpoint shards aside)
    mine = [w for w in logs[1]["writes"] if w.startswith(str(multi)) and "/checkpoints/" not in w]
    assert mine == [], mine
    assert any(w.endswith("results.json") for w in logs[0]["writes"])


def test_cli_coordinator_flags_reach_initialize_distributed(monkeypatch, tmp_path):
    from poisonjax import cli
    from poisonjax.core import parallel
    seen = {}

    class Stop(Exception):
        pass

    def fake(enabled=True, **kw):
        seen.update(kw, enabled=enabled)
        raise Stop

    monkeypatch.setattr(parallel, "initialize_distributed", fake)
    args = ["run", "fl_robustness", "--workdir", str(tmp_path / "w"), "--coordinator", "10.0.0.1:1234",
            "--num-processes", "4", "--process-id", "3"]
    with pytest.raises(Stop):
        cli.cmd_run(*_parse(cli, args))
    assert seen == {"enabled": True, "coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3}
    seen.clear()
    with pytest.raises(Stop):                                   # auto-detection (SLURM, TPU pods)
        cli.cmd_run(*_parse(cli, ["run", "fl_robustness", "--distributed"]))
    assert seen == {"enabled": True}
    with pytest.raises(cli.CLIError, match="--num-processes"):
        cli.cmd_run(*_parse(cli, ["run", "fl_robustness", "--coordinator", "h:1"]))


def _parse(cli, argv):
    return cli.make_parser().parse_known_args(argv)
