"""Federated CNN round time: ``core.layers.PatchConv`` (im2col + matmul, what ``federated.models.CNN``
uses) against the same network built from ``flax.linen.Conv``, side by side in one run.

Clients are trained under ``jax.vmap``; a vmapped ``lax.conv`` over per-client parameters lowers to a
grouped convolution that XLA runs slowly on CPU, while PatchConv stays a batched matmul.

    python benchmarks/fl_cnn_conv.py --dataset mnist --clients 20 --rounds 3

Prints the first-round time (includes compilation) and the mean time of the next rounds, and the ratio.
"""
from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.federated import models as M
from poisonjax.federated import simulation as S
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _machine  # noqa: E402  (CPU model and load average in every output)

MACHINE = _machine.start()


class ConvCNN(nn.Module):
    """``federated.models.CNN`` with ``nn.Conv`` layers (the reference)."""

    num_classes: int = 10
    hidden: int = 64

    @nn.compact
    def __call__(self, x, return_features: bool = False):
        x = nn.max_pool(nn.relu(nn.Conv(16, (3, 3))(x)), (2, 2), (2, 2))
        x = nn.max_pool(nn.relu(nn.Conv(32, (3, 3))(x)), (2, 2), (2, 2))
        h = nn.relu(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
        return h if return_features else nn.Dense(self.num_classes)(h)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="mnist", choices=("digits", "mnist", "cifar10"))
    ap.add_argument("--clients", type=int, default=20, help="clients per round (all participate)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds after the first (compile) round")
    ap.add_argument("--batch-size", type=int, default=32)
    a = ap.parse_args(argv)
    xtr, ytr, xte, yte, ncls = S.load_centralised(a.dataset, seed=0)
    data = S.federate_arrays(xtr, ytr, xte, yte, malicious_fraction=0.0, data_attack="none", num_classes=ncls,
                             num_clients=a.clients, partition="dirichlet", alpha=0.5, aux_size=100, seed=0)
    data = jax.tree.map(jnp.asarray, data)
    sample = np.zeros((2,) + tuple(xtr.shape[1:]), np.float32)
    models = {"nn.Conv": M.model_fns(ConvCNN(ncls), sample), "PatchConv": S.default_model(data, "cnn", num_classes=ncls)}
    per_round = {}
    for name, model in models.items():
        sim = S.build_simulation(model, "fedavg", local_lr=0.05, batch_size=a.batch_size, num_classes=ncls)
        train_fn, server_fn = S.make_train_fn(sim), jax.jit(sim.server_round)
        st = sim.init(jax.random.PRNGKey(0), data)
        t = time.perf_counter()
        st = jax.block_until_ready(server_fn(st, data, *train_fn(st, data)))
        first = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(a.rounds):
            st = server_fn(st, data, *train_fn(st, data))
        jax.block_until_ready(st.params)
        per_round[name] = (time.perf_counter() - t) / a.rounds
        print(f"{name:10s} first round (compile) {first:6.1f} s   {per_round[name]:.3f} s/round   "
              f"test acc {float(st.metrics['test_accuracy']):.3f}", flush=True)
    print(f"PatchConv speed-up: {MACHINE.ratio(per_round['nn.Conv'], per_round['PatchConv'])}")


if __name__ == "__main__":
    main()
