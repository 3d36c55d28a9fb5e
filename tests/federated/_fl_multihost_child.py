"""Child process for the multi-host test: one process of a ``jax.distributed`` run of a small
fl_robustness grid on CPU (fake devices), or the single-process reference.

Usage: python _fl_multihost_child.py WORKDIR LOG.json NUM_PROCESSES PROCESS_ID PORT DEVICES_PER_PROCESS
Every Python-level file write of this process is recorded in LOG.json (to check that only process 0 writes).
"""
import json
import os
import pathlib
import sys

wd, log_path, nproc, pid, port, ndev = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], \
    int(sys.argv[6])
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={ndev}"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))      # the repo root
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from tests._write_recorder import install  # noqa: E402

WRITES, _open = install()

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")   # cross-process collectives on CPU
from poisonjax.core.parallel import initialize_distributed  # noqa: E402

if nproc > 1:
    initialize_distributed(True, coordinator_address=f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)
assert jax.device_count() == nproc * ndev and jax.process_count() == nproc

from tests._study_configs import fl_robustness as config  # noqa: E402
from experiments import fl_robustness  # noqa: E402

c = config()
c.aggregators = ("median", "krum")
c.rounds = 4
res = fl_robustness.run(c, wd)
_open(log_path, "w").write(json.dumps({"writes": WRITES, "rows": res["rows"], "process_index": jax.process_index()}))
