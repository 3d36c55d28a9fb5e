"""Would a Metattack variant choose an edge *removal* at a given attacked state?

    python benchmarks/metattack_removal_profile.py --dataset cora \\
        --state $POISONJAX_DATA/prognn_perturbed_graphs/meta/cora_meta_adj_0.2.npz

Pro-GNN's released Metattack graphs for Cora remove 0 / 4 / 10 / 21 / 45 clean edges at 5-25%, while
our Metattack (whose meta-gradient equals DeepRobust 0.2.11's, see ``metattack_vs_deeprobust.py
--grad-check --state``) removes 0-7. This script loads a perturbed graph as the attack state (its
flips relative to the clean graph) and, for several scorer variants and inner initialisations, counts
the edge removals among the 1 / 10 / 50 best-scored valid pairs (unflipped, no self-loop) and the rank
of the best-scored removal, where the score is Metattack's :math:`(g + g^\\top)\\odot(1 - 2A)`:

* ``meta_self``: exact meta-gradient, linearised inner GCN, self-training labels (Pro-GNN's surrogate);
* ``meta_self_true_labels``: the true labels of the unlabelled nodes instead of self-training labels;
* ``meta_train`` / ``meta_both``: lambda = 1 / 0.5;
* ``a_meta_self``: the first-order approximation;
* ``meta_self_relu``: a ReLU inner GCN (dense autodiff through the 100 unrolled steps);
* ``ll_filter``: how many pairs the degree log-likelihood filter still allows at that state.

Output: one line per variant and seed. About 2 minutes on 2 cores for Cora.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from poisonjax.data import graphs
from poisonjax.graph import attacks as A
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _machine  # noqa: E402  (CPU model and load average in every output)

MACHINE = _machine.start()


def state_from(adj: sp.csr_matrix, pert: sp.spmatrix, budget: int) -> A.MetaState:
    d = sp.triu(sp.csr_matrix(pert, dtype=np.float32) - adj, 1).tocoo()
    k = len(d.data)
    flips = np.zeros((budget, 2), np.int32)
    flips[:k] = np.stack([d.row, d.col], 1)
    sign = np.zeros(budget, np.float32)
    sign[:k] = d.data
    return A.MetaState(a=jnp.asarray(sp.csr_matrix(pert).toarray(), jnp.float32), flips=jnp.asarray(flips),
                       flip_sign=jnp.asarray(sign), n_flips=jnp.int32(k), key=jax.random.PRNGKey(0),
                       loss=jnp.float32(0.0))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="cora")
    ap.add_argument("--state", required=True, help="perturbed adjacency (.npz, scipy.sparse.save_npz)")
    ap.add_argument("--seeds", type=int, default=2, help="inner initialisations per variant")
    ap.add_argument("--skip-relu", action="store_true", help="skip the (slower) dense ReLU variant")
    args = ap.parse_args()

    g = graphs.load_graph(args.dataset)
    adj = sp.csr_matrix(g.adj, dtype=np.float32)
    n = g.num_nodes
    un = np.union1d(g.idx_val, g.idx_test)
    feats = g.features if g.features is not None else sp.eye(n, format="csr", dtype=np.float32)
    labels = A.self_training_labels(adj, feats, g.labels, g.idx_train, g.idx_val, jax.random.PRNGKey(0),
                                    surrogate="prognn")
    pert = sp.load_npz(args.state)
    budget = int(abs(sp.triu(sp.csr_matrix(pert, dtype=np.float32) - adj, 1)).sum()) + 1
    st = state_from(adj, pert, budget)
    a = np.asarray(st.a)
    print(f"state {args.state}: {budget - 1} flips, "
          f"{int((sp.triu(sp.csr_matrix(pert, dtype=np.float32) - adj, 1).data < 0).sum())} of them removals")

    def report(name, prob, score_fn):
        valid = np.asarray(prob.allowed & (st.a == prob.a_clean))
        for seed in range(args.seeds):
            _, s = score_fn(jax.random.PRNGKey(seed))
            s = np.where(valid, np.asarray(s), -np.inf).ravel()
            order = np.argsort(s)[::-1]
            order = order[np.isfinite(s[order])]
            is_rem = a[order // n, order % n] > 0
            rem = is_rem[:50]
            first = int(np.argmax(is_rem)) + 1 if is_rem.any() else None
            print(f"{name:24s} seed {seed}: removals among the best 1 / 10 / 50 pairs: "
                  f"{int(rem[0])} / {int(rem[:10].sum())} / {int(rem.sum())}; best removal ranks #{first} "
                  f"of {len(order)} valid pairs", flush=True)

    base = dict(budget=budget, num_classes=g.num_classes, ll_constraint=False)
    variants = [("meta_self", dict(self_labels=labels), {}),
                ("meta_self_true_labels", dict(self_labels="true", allow_test_labels=True), {}),
                ("meta_train", dict(self_labels=labels, lambda_=1.0), dict(lambda_=1.0)),
                ("meta_both", dict(self_labels=labels, lambda_=0.5), dict(lambda_=0.5)),
                ("a_meta_self", dict(self_labels=labels), dict(first_order=True))]
    for name, pkw, ckw in variants:
        prob = A.make_meta_problem(adj, feats, g.labels, g.idx_train, un, **pkw)
        cfg = A.MetattackConfig(**base, **ckw)
        f = jax.jit(lambda k, prob=prob, cfg=cfg: A.meta_score(prob, st, cfg, k))
        report(name, prob, f)
    prob = A.make_meta_problem(adj, feats, g.labels, g.idx_train, un, self_labels=labels)
    if not args.skip_relu:
        cfg = A.MetattackConfig(**base)
        def relu_score(k):
            _, g_ = A.meta_grad_dense(prob, st.a, cfg, k, relu=True)
            return None, (g_ + g_.T) * (1.0 - 2.0 * st.a)
        f = jax.jit(relu_score)
        report("meta_self_relu", prob, f)
    allowed = np.asarray(prob.allowed & (st.a == prob.a_clean) & A.ll_ratio_mask(st.a, prob.a_clean, cutoff=0.004))
    print(f"ll_filter: {int(allowed.sum())} pairs allowed at this state (cutoff 0.004)")


if __name__ == "__main__":
    main()
