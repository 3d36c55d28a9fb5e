r"""Link-prediction edge splits and budget helpers.

:func:`link_split` follows GAE's ``mask_test_edges`` (Kipf & Welling 2016): a seeded random
``val``/``test`` fraction of the undirected edges is removed from the graph, and the same number of
non-edges (uniformly sampled, no self-loops, not in the full graph, no duplicates) is drawn for each of
train/val/test. Default 85/5/10.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from poisonjax.core.validation import PoisonJaxInputError, check_fraction
from poisonjax.data.graphs import as_symmetric_unweighted


class LinkSplit(NamedTuple):
    """Edges as ``[E, 2]`` int arrays with ``i < j``; ``adj_train`` is the graph without val/test edges.

    ``train_neg``/``val_neg``/``test_neg`` are non-edges of the full graph, disjoint from each other."""

    adj_train: sp.csr_matrix
    train_pos: np.ndarray
    train_neg: np.ndarray
    val_pos: np.ndarray
    val_neg: np.ndarray
    test_pos: np.ndarray
    test_neg: np.ndarray

    def held_out_pairs(self) -> np.ndarray:
        """All val/test pairs (positive and negative), ``[M, 2]``: pairs an attacker must not flip."""
        return np.concatenate([self.val_pos, self.val_neg, self.test_pos, self.test_neg], 0)


def link_split(adj, val: float = 0.05, test: float = 0.10, seed: int = 0) -> LinkSplit:
    """Split the undirected edges of ``adj`` into train/val/test (see module doc)."""
    check_fraction("val", val, low_inclusive=True)
    check_fraction("test", test, low_inclusive=True)
    if val + test >= 1:
        raise PoisonJaxInputError(f"val + test must be < 1, got {val} + {test}")
    adj = as_symmetric_unweighted(adj)
    n = adj.shape[0]
    rng = np.random.default_rng(seed)
    edges = np.stack(sp.triu(adj, 1).nonzero(), 1).astype(np.int64)
    perm = rng.permutation(len(edges))
    n_val, n_test = int(np.floor(val * len(edges))), int(np.floor(test * len(edges)))
    val_pos, test_pos = edges[perm[:n_val]], edges[perm[n_val:n_val + n_test]]
    train_pos = edges[perm[n_val + n_test:]]
    existing = set((edges[:, 0] * n + edges[:, 1]).tolist())
    need = len(train_pos) + n_val + n_test
    if need > n * (n - 1) // 2 - len(edges):
        raise PoisonJaxInputError("graph too dense to sample as many non-edges as edges")
    neg = []
    seen = set()
    while len(neg) < need:
        i = rng.integers(0, n, 2 * need)
        j = rng.integers(0, n, 2 * need)
        lo, hi = np.minimum(i, j), np.maximum(i, j)
        for a, b in zip(lo.tolist(), hi.tolist()):
            if a == b:
                continue
            c = a * n + b
            if c in existing or c in seen:
                continue
            seen.add(c)
            neg.append((a, b))
            if len(neg) == need:
                break
    neg = np.asarray(neg, np.int64)
    val_neg, test_neg, train_neg = neg[:n_val], neg[n_val:n_val + n_test], neg[n_val + n_test:]
    a_tr = sp.coo_matrix((np.ones(len(train_pos)), (train_pos[:, 0], train_pos[:, 1])), shape=(n, n))
    a_tr = ((a_tr + a_tr.T) > 0).astype(np.float32).tocsr()
    return LinkSplit(a_tr, train_pos, train_neg, val_pos, val_neg, test_pos, test_neg)


def budget_from_rate(rate: float, n_edges: int, n_flippable: int) -> int:
    """``int(rate * n_edges)`` flips (DeepRobust/Pro-GNN convention), checked against the number of
    flippable pairs. ``rate`` must be in ``(0, 1]``."""
    rate = check_fraction("rate", rate)
    b = int(rate * n_edges)
    if b < 1:
        raise PoisonJaxInputError(f"rate={rate} of {n_edges} edges gives a budget of 0 flips; raise the rate")
    if b > n_flippable:
        raise PoisonJaxInputError(f"budget of {b} flips (rate={rate}) exceeds the {n_flippable} flippable pairs")
    return b
