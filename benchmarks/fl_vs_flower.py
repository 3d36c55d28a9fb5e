"""FedAvg, MLP on digits: poisonjax's vectorised simulation vs Flower's simulation engine (Ray).

Same work in both: N clients (IID split of scikit-learn digits, same partition for both), MLP
64 -> 64 -> 10, each client 1 local epoch of SGD (lr 0.1, batch 8) per round, FedAvg over all clients,
central test accuracy after every round. Flower runs in its own venv
(``benchmarks/.venvs/flower``: ``pip install "flwr[simulation]" torch==2.13.0 scikit-learn``;
created on first use unless ``--skip-flower``).

    python benchmarks/fl_vs_flower.py --clients 100 --rounds 5
    python benchmarks/fl_vs_flower.py --skip-flower --scale 1000,10000 --samples-per-client 16

Seconds per round exclude compilation (ours) and Ray start-up (Flower): the mean over rounds
2..R of the time between consecutive central evaluations. ``--scale`` also times our rounds with
N clients each holding ``--samples-per-client`` examples drawn (with replacement) from digits.
The last line is ``ours_s_per_round=X flower_s_per_round=Y ratio=Z``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _machine  # noqa: E402  (CPU model and load average in every output)

MACHINE = _machine.start()

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venvs" / "flower"


def ensure_flower_venv():
    py = VENV / "bin" / "python"
    if py.exists():
        return py
    print(f"creating {VENV} (flwr[simulation], torch==2.13.0 CPU) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "flwr[simulation]", "scikit-learn"], check=True)
    return py


def make_federation(num_clients, seed=0, samples_per_client=None):
    from poisonjax.data.images import load_digits
    from poisonjax.data.partitions import iid_partition, pad_clients
    from poisonjax.federated.simulation import FederatedData
    ds = load_digits(seed=seed)
    if samples_per_client is None:
        parts = iid_partition(len(ds.y_train), num_clients, seed)
    else:
        rng = np.random.default_rng(seed)
        parts = list(rng.integers(0, len(ds.y_train), (num_clients, samples_per_client)))
    ca = pad_clients(ds.x_train, ds.y_train, parts)
    return FederatedData(ca.x, ca.y, ca.mask, np.zeros(num_clients, bool), ds.x_test, ds.y_test,
                         ds.x_train[:8], ds.y_train[:8])


def run_ours(data, rounds, hidden=64, lr=0.1, batch=8, chunk=None):
    import jax
    import jax.numpy as jnp
    from poisonjax.federated import simulation as S
    data = jax.tree.map(jnp.asarray, data)
    model = S.default_model(data, "mlp", hidden=(hidden,))
    sim = S.build_simulation(model, "fedavg", batch_size=batch, local_lr=lr, client_chunk_size=chunk)
    step = jax.jit(sim.step)
    st = sim.init(jax.random.PRNGKey(0), data)
    t0 = time.perf_counter()
    st = step(st, data)
    jax.block_until_ready(st)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(rounds - 1):
        t = time.perf_counter()
        st = step(st, data)
        jax.block_until_ready(st)
        times.append(time.perf_counter() - t)
    return {"s_per_round": float(np.mean(times)) if times else compile_s, "first_round_incl_compile_s": compile_s,
            "final_accuracy": float(st.metrics["test_accuracy"]), "jax": jax.__version__,
            "devices": str(jax.devices())}


def run_flower(data, rounds, hidden=64, lr=0.1, batch=8, cpus=2):
    py = ensure_flower_venv()
    with tempfile.TemporaryDirectory() as td:
        path = os.path.join(td, "fed.npz")
        np.savez(path, x=data.x, y=data.y, mask=data.mask, x_test=data.x_test, y_test=data.y_test)
        p = subprocess.run([str(py), str(HERE / "_flower_worker.py"), path, str(rounds), str(hidden), str(lr),
                            str(batch), str(cpus)], capture_output=True, text=True)
    if "FLOWER_RESULT" not in p.stdout:
        raise RuntimeError(f"Flower run failed:\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    r = json.loads(p.stdout.split("FLOWER_RESULT", 1)[1].splitlines()[0])
    pr = r["per_round"][1:] or r["per_round"]  # drop round 1 (actor start-up)
    r["s_per_round"] = float(np.mean(pr))
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--skip-flower", action="store_true", help="run poisonjax only")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs given to Ray")
    ap.add_argument("--scale", default="", help="comma-separated client counts for the scaling run (ours only)")
    ap.add_argument("--samples-per-client", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=0, help="client chunk size for the scaling run (0 = all)")
    a = ap.parse_args(argv)
    if a.clients < 1 or a.rounds < 2:
        ap.error("--clients must be >= 1 and --rounds >= 2")

    data = make_federation(a.clients)
    ours = run_ours(data, a.rounds)
    print(f"poisonjax: {a.clients} clients, {ours['s_per_round']:.4f} s/round "
          f"(first round incl. compile {ours['first_round_incl_compile_s']:.1f} s), "
          f"final accuracy {ours['final_accuracy']:.4f}, jax {ours['jax']}", flush=True)
    for n in [int(s) for s in a.scale.split(",") if s.strip()]:
        d = make_federation(n, samples_per_client=a.samples_per_client)
        r = run_ours(d, 3, chunk=a.chunk or None)
        print(f"poisonjax scale: {n} clients x {a.samples_per_client} samples, {r['s_per_round']:.3f} s/round, "
              f"final accuracy {r['final_accuracy']:.4f}", flush=True)
    flower = None
    if not a.skip_flower:
        flower = run_flower(data, a.rounds, cpus=a.cpus)
        print(f"flower {flower['flwr']} (torch {flower['torch']}): {a.clients} clients, "
              f"{flower['s_per_round']:.3f} s/round, final accuracy {flower['final_accuracy']:.4f}, "
              f"total incl. Ray start {flower['total_s']:.1f} s", flush=True)
    fs = flower["s_per_round"] if flower else float("nan")
    print(f"ours_s_per_round={ours['s_per_round']:.5f} flower_s_per_round={fs:.5f} "
          f"ratio={MACHINE.ratio(fs, ours['s_per_round'])}")
    print(f"machine: {MACHINE.verdict()}")


if __name__ == "__main__":
    main()
