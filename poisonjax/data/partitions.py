r"""Federated partitions of a centralised dataset, and padding into static-shape client arrays.

* :func:`iid_partition` -- a seeded shuffle split into ``num_clients`` near-equal parts.
* :func:`dirichlet_partition` -- label-skewed non-IID split (Hsu et al., 2019): for every class
  :math:`c`, proportions :math:`p_c \sim \mathrm{Dir}(\alpha \mathbf 1_N)` split that class's examples
  among the N clients; small :math:`\alpha` = strong skew, :math:`\alpha \to \infty` = IID.
* :func:`vertical_partition` -- split feature columns among parties (vertical FL).
* :func:`pad_clients` -- stack per-client index lists into ``x [N, S, ...]``, ``y [N, S]`` and a
  validity ``mask [N, S]`` (``S`` = the largest client, or a cap), so all clients vmap together.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence

import numpy as np

from poisonjax.core.validation import PoisonJaxInputError, check_positive_int


class ClientArrays(NamedTuple):
    """Padded client data: ``x [N, S, ...]``, ``y [N, S]`` int32, ``mask [N, S]`` float32 (1 = real
    example), ``sizes [N]`` int32 (examples per client)."""

    x: np.ndarray
    y: np.ndarray
    mask: np.ndarray
    sizes: np.ndarray


def iid_partition(num_examples: int, num_clients: int, seed: int = 0) -> List[np.ndarray]:
    """Shuffle ``arange(num_examples)`` and split it into ``num_clients`` parts of near-equal size."""
    num_clients = check_positive_int("num_clients", num_clients)
    if num_examples < num_clients:
        raise PoisonJaxInputError(f"num_clients={num_clients} exceeds num_examples={num_examples}: "
                                  "some clients would hold no data")
    perm = np.random.default_rng(seed).permutation(num_examples)
    return [np.sort(p) for p in np.array_split(perm, num_clients)]


def dirichlet_partition(labels: np.ndarray, num_clients: int, alpha: float, seed: int = 0,
                        min_size: int = 1, max_tries: int = 100) -> List[np.ndarray]:
    r"""Label-skewed split: class :math:`c`'s examples go to clients in proportions
    :math:`p_c \sim \mathrm{Dir}(\alpha)` (Hsu et al., 2019, "Measuring the effects of non-identical
    data distribution"). Resampled (up to ``max_tries``) until every client holds ``>= min_size``
    examples.

    Raises:
      PoisonJaxInputError: ``alpha <= 0``, or no draw gives every client ``min_size`` examples
        (too many clients for the data, or ``alpha`` too small).
    """
    labels = np.asarray(labels)
    num_clients = check_positive_int("num_clients", num_clients)
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise PoisonJaxInputError(f"alpha must be a positive number, got {alpha!r}")
    if not alpha > 0 or not np.isfinite(alpha):
        raise PoisonJaxInputError(f"alpha (Dirichlet concentration) must be > 0, got {alpha}")
    if labels.shape[0] < num_clients * min_size:
        raise PoisonJaxInputError(f"{labels.shape[0]} examples cannot give {num_clients} clients "
                                  f"min_size={min_size} examples each")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: List[list] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            p = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(int)
            for i, chunk in enumerate(np.split(idx, cuts)):
                parts[i].extend(chunk.tolist())
        sizes = np.array([len(p) for p in parts])
        if sizes.min() >= min_size:
            return [np.sort(np.asarray(p, np.int64)) for p in parts]
    raise PoisonJaxInputError(
        f"dirichlet_partition: after {max_tries} draws some client still has < {min_size} examples "
        f"(num_clients={num_clients}, alpha={alpha}, {labels.shape[0]} examples); use fewer clients or a larger alpha")


def vertical_partition(num_features: int, num_parties: int, seed: Optional[int] = None) -> List[np.ndarray]:
    """Split feature indices ``0..num_features-1`` into ``num_parties`` contiguous (or, with ``seed``,
    randomly permuted) near-equal groups."""
    num_parties = check_positive_int("num_parties", num_parties)
    if num_features < num_parties:
        raise PoisonJaxInputError(f"num_parties={num_parties} exceeds num_features={num_features}")
    idx = np.arange(num_features) if seed is None else np.random.default_rng(seed).permutation(num_features)
    return [np.sort(p) for p in np.array_split(idx, num_parties)]


def pad_clients(x: np.ndarray, y: np.ndarray, parts: Sequence[np.ndarray],
                max_size: Optional[int] = None, seed: int = 0) -> ClientArrays:
    """Gather each client's examples and pad to a common size ``S``.

    Args:
      x: ``[M, ...]`` features; y: ``[M]`` labels.
      parts: per-client index arrays (from a partition function).
      max_size: cap ``S`` (clients above it keep a seeded random subset); default: the largest client.

    Raises:
      PoisonJaxInputError: a client with no examples.
    """
    sizes = np.array([len(p) for p in parts])
    if sizes.size == 0:
        raise PoisonJaxInputError("parts is empty; expected one index array per client")
    empty = np.flatnonzero(sizes == 0)
    if empty.size:
        raise PoisonJaxInputError(f"clients {empty.tolist()[:20]} have no data; every client needs >= 1 example")
    s = int(sizes.max() if max_size is None else min(int(max_size), sizes.max()))
    rng = np.random.default_rng(seed)
    n = len(parts)
    xs = np.zeros((n, s) + x.shape[1:], x.dtype)
    ys = np.zeros((n, s), np.int32)
    mask = np.zeros((n, s), np.float32)
    out_sizes = np.zeros((n,), np.int32)
    for i, p in enumerate(parts):
        p = np.asarray(p)
        if len(p) > s:
            p = np.sort(rng.choice(p, s, replace=False))
        xs[i, :len(p)] = x[p]
        ys[i, :len(p)] = y[p]
        mask[i, :len(p)] = 1.0
        out_sizes[i] = len(p)
    return ClientArrays(xs, ys, mask, out_sizes)
