r"""Synthetic generators with known ground truth: SBM graphs, skewed interaction logs, Gaussian-mixture images.

All are seeded numpy (reproducible on any platform).
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np
import scipy.sparse as sp


def sbm_graph(n_nodes: int, n_blocks: int, p_in: float, p_out: float, seed: int = 0) -> Tuple[sp.csr_matrix, np.ndarray]:
    r"""Stochastic block model: node :math:`i` in block :math:`b_i` (balanced), edge
    :math:`(i,j)` present with probability :math:`p_{in}` if :math:`b_i=b_j` else :math:`p_{out}`.

    Sampled blockwise in O(|E|) memory (geometric skipping via binomial counts), so 20,000+ nodes
    are cheap. Returns a symmetric, unweighted CSR adjacency with zero diagonal and the ``[n]``
    block labels.
    """
    if n_nodes < 2 or n_blocks < 1 or n_blocks > n_nodes:
        raise ValueError(f"need n_nodes >= 2 and 1 <= n_blocks <= n_nodes, got {n_nodes}, {n_blocks}")
    for nm, p in (("p_in", p_in), ("p_out", p_out)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{nm} must be in [0, 1], got {p}")
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_blocks), -(-n_nodes // n_blocks))[:n_nodes]
    rng.shuffle(labels)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n_blocks + 1))
    rows, cols = [], []
    for a in range(n_blocks):
        for b in range(a, n_blocks):
            na, nb = bounds[a + 1] - bounds[a], bounds[b + 1] - bounds[b]
            p = p_in if a == b else p_out
            total = na * (na - 1) // 2 if a == b else na * nb
            m = rng.binomial(total, p) if total > 0 else 0
            if m == 0:
                continue
            flat = rng.choice(total, size=m, replace=False)
            if a == b:  # unrank pairs i<j in a triangle
                i = (np.floor((np.sqrt(8 * flat + 1) - 1) / 2)).astype(np.int64) + 1
                j = flat - i * (i - 1) // 2
                r, c = i, j
            else:
                r, c = flat // nb, flat % nb
            rows.append(order[bounds[a] + r])
            cols.append(order[bounds[b] + c])
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    adj = sp.coo_matrix((np.ones(len(r), np.float32), (r, c)), shape=(n_nodes, n_nodes))
    adj = ((adj + adj.T) > 0).astype(np.float32).tocsr()
    adj.setdiag(0)
    adj.eliminate_zeros()
    return adj, labels.astype(np.int32)


def interaction_logs(n_users: int, n_items: int, mean_length: float = 8.0, zipf_a: float = 1.2,
                     min_length: int = 3, seed: int = 0) -> List[np.ndarray]:
    r"""Sequential interaction logs with Zipf popularity skew and Markov structure.

    Item popularity :math:`\pi_i \propto (i+1)^{-a}` (item ids 1..n_items; 0 is padding). Each user's
    length is :math:`\max(\text{min\_length}, \mathrm{Poisson}(\text{mean\_length}))`; each next item is, with
    probability 0.5, the "successor" of the previous one (item :math:`i \to i+1 \bmod n`, a learnable
    sequential dependency) and otherwise a fresh draw from :math:`\pi`. Returns a list of int arrays.
    """
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, n_items + 1) ** zipf_a
    pop /= pop.sum()
    seqs = []
    for _ in range(n_users):
        L = max(min_length, int(rng.poisson(mean_length)))
        s = np.empty(L, np.int64)
        s[0] = rng.choice(n_items, p=pop) + 1
        for t in range(1, L):
            s[t] = (s[t - 1] % n_items) + 1 if rng.random() < 0.5 else rng.choice(n_items, p=pop) + 1
        seqs.append(s)
    return seqs


def gaussian_mixture_images(n: int, num_classes: int = 10, shape=(8, 8, 1), noise: float = 0.15,
                            seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    r"""Images :math:`x = \mathrm{clip}(\mu_y + \sigma \epsilon, 0, 1)` with one random prototype
    :math:`\mu_c \in [0,1]^{H\times W\times C}` per class; returns ``(x [n,H,W,C] float32, y [n] int32)``."""
    rng = np.random.default_rng(seed)
    protos = rng.uniform(0, 1, (num_classes,) + tuple(shape)).astype(np.float32)
    y = rng.integers(0, num_classes, n).astype(np.int32)
    x = np.clip(protos[y] + noise * rng.standard_normal((n,) + tuple(shape)), 0, 1).astype(np.float32)
    return x, y
