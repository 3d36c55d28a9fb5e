r"""Analytic cost accounting of federated unlearning: rounds, bytes on the wire, client/server FLOPs.

Counted from parameter sizes, not measured (wall time belongs in a benchmark):

* a model message is :math:`B = \sum_\ell |\theta_\ell| \cdot \mathrm{itemsize}` bytes (float32: 4 bytes
  per parameter); a FedAvg round with :math:`m` clients moves :math:`2 m B` bytes (download of the
  global model, upload of the update);
* a statistics message of SoUL is :math:`4 (U + 1)` bytes (one float per unit, plus an example count);
* forward FLOPs per example :math:`F = \sum_\ell 2\, |K_\ell|\, P_\ell` where :math:`|K_\ell|` is the
  kernel size of Dense/conv layer :math:`\ell` and :math:`P_\ell` its number of output positions
  (1 for Dense, :math:`H W` for a conv); a training example costs :math:`3F` (forward + backward);
* server FLOPs: aggregation :math:`m d` per round, plus method-specific vector work (SoUL's blend
  :math:`3d`, FedEraser's rescaling :math:`3 m d` per round, the ratio and sort :math:`O(U \log U)`).
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, NamedTuple

import jax
import numpy as np

from poisonjax.core.pruning import capture_activations


class Cost(NamedTuple):
    """Cost of one method: communication ``rounds``, ``bytes`` sent (both directions, all parties),
    ``client_flops``, ``server_flops``, ``storage_bytes`` (server-side history kept during training)."""

    rounds: int
    bytes: float
    client_flops: float
    server_flops: float
    storage_bytes: float = 0.0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(*(a + b for a, b in zip(self, other)))

    def as_dict(self) -> Dict[str, float]:
        """The fields as a plain dict of numbers."""
        return {k: (int(v) if k == "rounds" else float(v)) for k, v in self._asdict().items()}


ZERO = Cost(0, 0.0, 0.0, 0.0, 0.0)


def model_bytes(params) -> int:
    """Bytes of one model message: :math:`\\sum` leaf size times item size."""
    return int(sum(int(np.size(l)) * np.dtype(l.dtype).itemsize for l in jax.tree.leaves(params)))


def num_params(params) -> int:
    """Parameter count :math:`d`."""
    return int(sum(int(np.size(l)) for l in jax.tree.leaves(params)))


def forward_flops(module, params, sample) -> float:
    """Forward FLOPs of one example (module docstring): each captured layer with a ``kernel`` costs
    ``2 * kernel.size * output_positions``."""
    acts = capture_activations(module, params, sample)
    p = params["params"] if isinstance(params, Mapping) and "params" in params else params
    total = 0.0
    for name, a in acts.items():
        node = p
        for part in name.split("/"):
            node = node.get(part) if isinstance(node, Mapping) else None
            if node is None:
                break
        if not isinstance(node, Mapping) or "kernel" not in node:
            continue
        positions = int(np.prod(a.shape[1:-1])) if a.ndim > 2 else 1
        total += 2.0 * int(np.size(node["kernel"])) * positions
    return total


def fl_rounds_cost(rounds: int, client_sizes, epochs: float, model_b: int, d: int, fwd_flops: float) -> Cost:
    """``rounds`` FedAvg rounds with the clients of ``client_sizes`` (examples each) training ``epochs``
    local epochs: :math:`2 m B` bytes and :math:`3 F \\cdot \\mathrm{epochs} \\sum_i n_i` client FLOPs per round,
    :math:`(m + 1) d` server FLOPs per round."""
    sizes = np.asarray(client_sizes, np.float64)
    m = sizes.size
    return Cost(int(rounds), float(rounds * 2 * m * model_b), float(rounds * 3.0 * fwd_flops * epochs * sizes.sum()),
                float(rounds * (m + 1) * d), 0.0)


def stats_cost(num_units: int, n_forget: int, n_retain_parties: int, n_retain_examples: int,
               n_server_examples: int, fwd_flops: float) -> Cost:
    """SoUL's statistics exchange: the forget clients and ``n_retain_parties`` retained clients each
    upload :math:`U + 1` floats after one forward pass over their data; the server may instead run a
    forward pass over ``n_server_examples`` proxy examples. One round when anything is sent."""
    msgs = 1 + n_retain_parties
    return Cost(1, float(msgs * 4 * (num_units + 1)), float(fwd_flops * (n_forget + n_retain_examples)),
                float(fwd_flops * n_server_examples + num_units * (2 + math.log2(max(num_units, 2)))), 0.0)
