"""Child process of the victim-ensemble multi-host test: one process of ``poisonjax run witches_brew``
through the CLI (``--coordinator 127.0.0.1:PORT --num-processes N --process-id I``), or, with N = 1, the
single-process reference (no ``--coordinator``).

Usage: python _wb_multihost_child.py WORKDIR LOG.json NUM_PROCESSES PROCESS_ID PORT DEVICES_PER_PROCESS

Every Python-level file write of this process is recorded in LOG.json (to check that only process 0 writes),
with the results dict the study returned on this process, its process index and the victim mesh's shape.
"""
import json
import os
import pathlib
import sys

wd, log_path, nproc, pid, port, ndev = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], \
    int(sys.argv[6])
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={ndev}"
os.environ["JAX_PLATFORMS"] = "cpu"
ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests._write_recorder import install  # noqa: E402

WRITES, _open = install()

import jax  # noqa: E402

from experiments import witches_brew  # noqa: E402  (the module the CLI imports, so run() can be observed)
from poisonjax import cli  # noqa: E402
from poisonjax.core import parallel  # noqa: E402

RESULT = {}
_run = witches_brew.run


def run_and_keep(config, workdir):
    RESULT["results"] = _run(config, workdir)
    mesh = parallel.victim_mesh()
    RESULT["mesh"] = None if mesh is None else dict(mesh.shape)
    return RESULT["results"]


witches_brew.run = run_and_keep

# tiny Witches' Brew: 3 trials x 2 victims = 6 victims (padded to 8 over 4 devices)
argv = ["run", "witches_brew", "--workdir", wd, "--config.craft_steps=3", "--config.trials=3", "--config.n_victims=2",
        "--config.train.epochs=2", "--config.surrogate_checkpoints=[1,2]", "--config.transfer.enabled=False",
        "--config.alignment_models=1"]
if nproc > 1:
    argv += ["--distributed", "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(nproc),
             "--process-id", str(pid)]
rc = cli.main(argv)
assert rc == 0, rc
assert jax.device_count() == nproc * ndev and jax.process_count() == nproc
from poisonjax.core.reporting import jsonable  # noqa: E402

_open(log_path, "w").write(json.dumps({"writes": WRITES, "process_index": jax.process_index(), "mesh": RESULT["mesh"],
                                       "results": jsonable(RESULT["results"])}))
