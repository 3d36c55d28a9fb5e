"""Scalable poisoning: meta-gradient PR-BCD on a 20,000-node graph at a 1% budget, vs random and DICE.

    python benchmarks/graph_scale.py --graph sbm --nodes 20000 --rate 0.01
    python benchmarks/graph_scale.py --graph pubmed --rate 0.01

``sbm``: ``poisonjax.data.synthetic.sbm_graph`` (10 blocks, average degree ~5, like PubMed);
``pubmed``: the PubMed structure and labels from shared/data (its features are missing). Features are
synthetic in both: a noisy class prototype per node (``--feature-snr``), so the graph carries part of
the signal. The victim is a 2-layer GCN with a sparse (BCOO) adjacency, trained on 10% labelled
nodes, 3 seeds. Reports attack time, peak resident memory (ru_maxrss) and test accuracy.
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from poisonjax.data import graphs
from poisonjax.data.synthetic import sbm_graph
from poisonjax.graph import attacks as A
from poisonjax.graph import models
from poisonjax.graph.attacks import prbcd as P
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _machine  # noqa: E402  (CPU model and load average in every output)

MACHINE = _machine.start()


def rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--graph", default="sbm", choices=["sbm", "pubmed"])
    ap.add_argument("--nodes", type=int, default=20000)
    ap.add_argument("--rate", type=float, default=0.01)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--block-size", type=int, default=100_000)
    ap.add_argument("--inner-steps", type=int, default=20)
    ap.add_argument("--feature-snr", type=float, default=0.5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    if a.graph == "sbm":
        adj, y = sbm_graph(a.nodes, 10, 4.0 / (a.nodes / 10), 1.0 / a.nodes, seed=0)
    else:
        g = graphs.load_pubmed_structure()
        adj, y = g.adj, g.labels
    n = adj.shape[0]
    c = int(y.max()) + 1
    protos = rng.normal(size=(c, 32)).astype(np.float32)
    x = (a.feature_snr * protos[y] + rng.normal(size=(n, 32))).astype(np.float32)
    idx_tr, idx_va, idx_te = graphs.random_node_split(n, 0.1, 0.1, seed=0)
    n_edges = int(sp.triu(adj, 1).nnz)
    budget = int(a.rate * n_edges)
    print(f"graph {a.graph}: {n} nodes, {n_edges} edges, {c} classes; budget {budget} flips", flush=True)

    keys = jax.random.split(jax.random.PRNGKey(1), a.seeds)
    cfg_g = models.GCNConfig()

    def acc(adj_):
        a_hat = models.normalize_adj_sparse(adj_)
        return np.asarray(models.gcn_test_accuracy(a_hat, jnp.asarray(x), jnp.asarray(y), idx_tr, idx_va, idx_te,
                                                   keys, c, cfg_g))

    res = {"graph": a.graph, "nodes": n, "edges": n_edges, "budget": budget, "rate": a.rate}
    t = time.time()
    res["acc_clean"] = acc(adj).tolist()
    res["victim_train_seconds"] = time.time() - t
    # self-training labels from a linearised surrogate (sparse)
    t = time.time()
    sur = models.GCNConfig(dropout=0.0, with_relu=False, with_bias=False)
    a_hat = models.normalize_adj_sparse(adj)
    model, p = models.train_gcn(a_hat, jnp.asarray(x), jnp.asarray(y), jnp.asarray(idx_tr), jnp.asarray(idx_va),
                                jax.random.PRNGKey(2), c, sur)
    ys = np.asarray(jnp.argmax(model.apply(p, a_hat, jnp.asarray(x)), -1))
    prob = P.make_prbcd_problem(adj, x, y, idx_tr, np.setdiff1d(np.arange(n), idx_tr), ys)
    cfg = P.PRBCDConfig(budget=budget, block_size=a.block_size, num_classes=c, num_nodes=n,
                        inner_steps=a.inner_steps, resample_until=int(0.75 * a.epochs))
    flips = P.run_prbcd(prob, cfg, a.epochs, jax.random.PRNGKey(3), progress=True)
    res["prbcd_seconds"] = time.time() - t
    res["prbcd_peak_rss_gib"] = rss_gib()
    pert = P.flips_to_adj_sparse(adj, flips)
    d0, d1 = np.asarray(adj.sum(1)).ravel(), np.asarray(pert.sum(1)).ravel()
    assert abs(pert - pert.T).nnz == 0 and pert.diagonal().sum() == 0 and len(flips) <= budget
    assert not np.any((d1 == 0) & (d0 > 0))
    res["prbcd_flips"] = int(len(flips))
    res["acc_prbcd"] = acc(pert).tolist()
    rnd = A.random_attack(adj, budget, seed=0)
    res["acc_random"] = acc(P.flips_to_adj_sparse(adj, rnd)).tolist()
    dice = A.dice_attack(adj, y, budget, seed=0)
    res["acc_dice"] = acc(P.flips_to_adj_sparse(adj, dice)).tolist()
    res["peak_rss_gib"] = rss_gib()
    res["machine"] = MACHINE.finish()
    print(json.dumps(res, indent=1))
    print(f"\nGCN test accuracy (mean of {a.seeds} seeds): clean {np.mean(res['acc_clean']):.4f}  "
          f"random {np.mean(res['acc_random']):.4f}  DICE {np.mean(res['acc_dice']):.4f}  "
          f"PR-BCD {np.mean(res['acc_prbcd']):.4f}")
    print(f"PR-BCD: {res['prbcd_seconds']:.1f} s ({a.epochs} epochs, block {a.block_size}), peak RSS "
          f"{res['peak_rss_gib']:.2f} GiB")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
