"""Flower side of benchmarks/fl_vs_flower.py -- runs inside benchmarks/.venvs/flower (torch + flwr).

Reads the federation written by fl_vs_flower.py (same partition, same test set) and trains the same
MLP (64 -> hidden -> 10, ReLU) with FedAvg: every client 1 local epoch of SGD(lr) with batch B.
Prints one JSON line with per-round timings and the final test accuracy.
"""
import json
import logging
import sys
import time

import numpy as np
import torch
from torch import nn

import flwr
from flwr.client import NumPyClient
from flwr.server import ServerConfig
from flwr.server.strategy import FedAvg
from flwr.simulation import start_simulation


def main():
    path, rounds, hidden, lr, batch, cpus = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), \
        int(sys.argv[5]), int(sys.argv[6])
    d = np.load(path)
    x, y, mask = d["x"], d["y"], d["mask"]
    xte, yte = torch.tensor(d["x_test"].reshape(len(d["y_test"]), -1)), torch.tensor(d["y_test"]).long()
    n_clients, in_dim = x.shape[0], int(np.prod(x.shape[2:]))
    torch.set_num_threads(1)

    def make_model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def get_w(m):
        return [p.detach().numpy().copy() for p in m.state_dict().values()]

    def set_w(m, ws):
        m.load_state_dict({k: torch.tensor(v) for k, v in zip(m.state_dict().keys(), ws)})

    class Client(NumPyClient):
        def __init__(self, cid):
            k = mask[cid] > 0
            self.x = torch.tensor(x[cid][k].reshape(int(k.sum()), -1))
            self.y = torch.tensor(y[cid][k]).long()
            self.m = make_model()

        def get_parameters(self, config):
            return get_w(self.m)

        def fit(self, parameters, config):
            set_w(self.m, parameters)
            opt = torch.optim.SGD(self.m.parameters(), lr=lr)
            perm = torch.randperm(len(self.y))
            for i in range(0, len(self.y), batch):
                b = perm[i:i + batch]
                opt.zero_grad()
                nn.functional.cross_entropy(self.m(self.x[b]), self.y[b]).backward()
                opt.step()
            return get_w(self.m), len(self.y), {}

    def client_fn(context):
        cid = int(context.node_config["partition-id"])
        return Client(cid).to_client()

    stamps, accs = [], []
    central = make_model()

    def evaluate_fn(rnd, ws, cfg):
        set_w(central, ws)
        with torch.no_grad():
            acc = (central(xte).argmax(1) == yte).float().mean().item()
        stamps.append(time.perf_counter())
        accs.append(acc)
        return 0.0, {"accuracy": acc}

    strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n_clients,
                      min_available_clients=n_clients, evaluate_fn=evaluate_fn,
                      initial_parameters=flwr.common.ndarrays_to_parameters(get_w(make_model())))
    t0 = time.perf_counter()
    start_simulation(client_fn=client_fn, num_clients=n_clients, config=ServerConfig(num_rounds=rounds),
                     strategy=strategy, client_resources={"num_cpus": 1},
                     ray_init_args={"num_cpus": cpus, "include_dashboard": False, "logging_level": logging.ERROR})
    total = time.perf_counter() - t0
    per_round = [b - a for a, b in zip(stamps[:-1], stamps[1:])]
    print("FLOWER_RESULT" + json.dumps({"per_round": per_round, "final_accuracy": accs[-1], "total_s": total,
                                         "flwr": flwr.__version__, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
