r"""Flower bridge: aggregate a Flower federation with any poisonjax robust aggregator.

Install with ``pip install "poisonjax[flower]"`` (adds ``flwr>=1.8``). This module imports without Flower;
:class:`PoisonjaxStrategy` needs it and says so when it is missing.

::

    import flwr as fl
    from poisonjax.federated.flower import PoisonjaxStrategy

    strategy = PoisonjaxStrategy("krum", aggregator_kwargs={"num_malicious": 2},
                                 initial_parameters=fl.common.ndarrays_to_parameters(init_arrays),
                                 fraction_fit=1.0, fraction_evaluate=0.0)
    hist = fl.simulation.start_simulation(client_fn=client_fn, num_clients=10, strategy=strategy,
                                          config=fl.server.ServerConfig(num_rounds=5))
    hist.metrics_distributed_fit["n_flagged"]         # [(round, count), ...]
    hist.metrics_distributed_fit["flagged_clients"]   # [(round, "3,7"), ...]  (Flower client ids)

What a round does (:func:`aggregate_round`, the Flower-free core). With the global model
:math:`w_t` (the list of arrays the strategy last sent, flattened to :math:`[d]`) and the ``n``
client models :math:`w^{(i)}` returned in the round's ``FitRes``, the updates are
:math:`\Delta = [w^{(i)} - w_t]_{i} \in \mathbb R^{n\times d}`; the poisonjax aggregator gives
:math:`(\bar\Delta, \text{state}, \text{report}) = \mathrm{agg}(\Delta, \text{state}, k_t,
\text{weights}=[|D_i|]_i, \text{context})` and the new global model is :math:`w_{t+1} = w_t + \bar\Delta`
(server learning rate 1, as Flower's FedAvg). ``report["flags"]`` (``[n]`` bool) names the flagged
clients. The client axis is sorted by Flower client id, so results do not depend on arrival order.

Metrics returned by ``aggregate_fit`` (Flower's ``metrics_distributed_fit`` in the history):
``aggregator`` (str), ``n_clients``, ``n_flagged`` (int), ``flagged_clients`` (comma-separated Flower
client ids, ``""`` if none; in Flower's simulation, where a client id is a random node id, also
``flagged_partitions``: the flagged clients' ``partition_id``), ``max_score`` (the largest suspicion score), plus whatever the user's
``fit_metrics_aggregation_fn`` returns.

Rules that look beyond the updates get a :class:`poisonjax.federated.simulation.RoundContext` built
from the constructor's ``apply_fn(params, x)`` / ``features_fn(params, x)`` (``params`` is the *list of
numpy-shaped arrays* Flower exchanges), the server's ``aux_x``/``aux_y`` and ``root_update_fn(params) ->
list of arrays`` (the server's own update on root data): FLTrust needs ``root_update_fn``; FLARE and
GeminiGuard need ``features_fn`` and ``aux_x``; WeiDetect needs ``apply_fn`` and ``aux_x``/``aux_y``.
Stateful rules (FoolsGold histories, centered clipping's center) keep their state across rounds;
FoolsGold indexes its histories by a stable integer per Flower client id, at most ``num_clients``
distinct clients (default: the first round's count).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from poisonjax.core.validation import PoisonJaxInputError

INSTALL_HINT = 'Flower is not installed; install the extra with: pip install "poisonjax[flower]"'


def _require_flwr():
    try:
        import flwr  # noqa: F401
        from flwr.server.strategy import FedAvg  # noqa: F401
    except ImportError as e:  # pragma: no cover - exercised in the no-flwr test via sys.modules
        raise ImportError(INSTALL_HINT) from e
    return flwr


def flatten_arrays(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Concatenate a Flower parameter list (arrays of any shapes) into one ``[d]`` float32 vector."""
    return np.concatenate([np.asarray(a, np.float32).ravel() for a in arrays]) if len(arrays) else np.zeros(0, np.float32)


def unflatten_arrays(vec, like: Sequence[np.ndarray]) -> List[np.ndarray]:
    """Inverse of :func:`flatten_arrays`: split ``vec [d]`` into arrays shaped and typed like ``like``."""
    out, i = [], 0
    v = np.asarray(vec)
    for a in like:
        a = np.asarray(a)
        out.append(v[i:i + a.size].reshape(a.shape).astype(a.dtype))
        i += a.size
    return out


class RoundAggregator:
    """The Flower-free core of :class:`PoisonjaxStrategy`: one poisonjax aggregator, its state across
    rounds and the Flower-id -> history-row map. ``aggregate_round`` is pure numpy in / numpy out."""

    def __init__(self, aggregator: str = "fedavg", aggregator_kwargs: Optional[dict] = None, *,
                 apply_fn: Optional[Callable] = None, features_fn: Optional[Callable] = None,
                 aux_x=None, aux_y=None, num_classes: Optional[int] = None,
                 root_update_fn: Optional[Callable] = None, num_clients: Optional[int] = None, seed: int = 0):
        from poisonjax.federated.aggregators import get_aggregator
        if not isinstance(aggregator, str):
            raise PoisonJaxInputError(f"aggregator must be a name from poisonjax.federated.aggregators.AGGREGATORS, "
                                      f"got {aggregator!r}")
        self.name = aggregator
        self.agg = get_aggregator(aggregator, **(aggregator_kwargs or {}))
        self.apply_fn, self.features_fn, self.root_update_fn = apply_fn, features_fn, root_update_fn
        self.aux_x, self.aux_y = aux_x, aux_y
        self.num_classes = num_classes if num_classes is not None else (
            int(np.max(aux_y)) + 1 if aux_y is not None else 0)
        needs = set(self.agg.needs)
        if "root_update" in needs and root_update_fn is None:
            raise PoisonJaxInputError(f"aggregator {aggregator!r} needs the server's root update: pass "
                                      "root_update_fn(params: list of arrays) -> list of arrays")
        if "features" in needs and (features_fn is None or aux_x is None):
            raise PoisonJaxInputError(f"aggregator {aggregator!r} needs client features: pass "
                                      "features_fn(params, x) -> [B, h] and aux_x (server data)")
        if aggregator == "weidetect" and (apply_fn is None or aux_x is None or aux_y is None):
            raise PoisonJaxInputError("aggregator 'weidetect' scores client models on validation data: pass "
                                      "apply_fn(params, x) -> logits, aux_x and aux_y")
        self.num_clients = num_clients
        self.state = None
        self.ids: Dict[str, int] = {}
        self.seed = int(seed)

    def _client_rows(self, cids: Sequence[str]) -> np.ndarray:
        for c in cids:
            if c not in self.ids:
                self.ids[c] = len(self.ids)
        if self.num_clients is None:
            self.num_clients = len(cids)
        rows = np.array([self.ids[c] for c in cids], np.int32)
        if self.state is not None or self.agg.init(1, 1) is not None:
            if rows.max(initial=-1) >= self.num_clients:
                raise PoisonJaxInputError(
                    f"stateful aggregator {self.name!r} has seen {len(self.ids)} distinct clients but keeps "
                    f"state for num_clients={self.num_clients}; pass num_clients=<total number of clients>")
        return rows

    def aggregate_round(self, server_round: int, global_arrays: Sequence[np.ndarray],
                        client_arrays: Sequence[Sequence[np.ndarray]], num_examples: Sequence[int],
                        cids: Sequence[str]) -> Tuple[List[np.ndarray], Dict[str, Any], dict]:
        r"""One round: ``(new_global_arrays, metrics, report)`` from the global arrays and each client's
        arrays (see the module doc for the math). ``report`` is the aggregator's (numpy)."""
        import jax
        import jax.numpy as jnp
        from poisonjax.federated.simulation import RoundContext
        if len(client_arrays) == 0:
            raise PoisonJaxInputError("aggregate_round needs at least one client result")
        order = np.argsort(np.asarray([str(c) for c in cids]), kind="stable")
        cids = [str(cids[i]) for i in order]
        w = flatten_arrays(global_arrays)
        ups = []
        for i in order:
            if len(client_arrays[i]) != len(global_arrays) or any(
                    np.shape(a) != np.shape(g) for a, g in zip(client_arrays[i], global_arrays)):
                raise PoisonJaxInputError(
                    f"client {cids[list(order).index(i)]} returned arrays of shapes "
                    f"{[np.shape(a) for a in client_arrays[i]]}, expected {[np.shape(g) for g in global_arrays]}")
            ups.append(flatten_arrays(client_arrays[i]) - w)
        x = jnp.asarray(np.stack(ups))
        n, d = x.shape
        rows = self._client_rows(cids)
        if self.state is None:
            self.state = self.agg.init(self.num_clients, d)
        g = [jnp.asarray(a, jnp.float32) for a in global_arrays]
        shapes = [np.shape(a) for a in global_arrays]
        sizes = [int(np.prod(s)) for s in shapes]

        def unflatten(v):
            parts = jnp.split(v, np.cumsum(sizes)[:-1]) if len(sizes) > 1 else [v]
            return [p.reshape(s) for p, s in zip(parts, shapes)]

        root = None
        if self.root_update_fn is not None:
            root = jnp.asarray(flatten_arrays(self.root_update_fn([np.asarray(a) for a in global_arrays])))
        ctx = RoundContext(global_params=g, unflatten=unflatten, apply_fn=self.apply_fn, features_fn=self.features_fn,
                           aux_x=None if self.aux_x is None else jnp.asarray(self.aux_x),
                           aux_y=None if self.aux_y is None else jnp.asarray(self.aux_y),
                           root_update=root, client_ids=jnp.asarray(rows), round=int(server_round),
                           num_classes=int(self.num_classes))
        key = jax.random.fold_in(jax.random.PRNGKey(self.seed), int(server_round))
        agg, self.state, report = self.agg.fn(x, self.state, key, context=ctx,
                                              weights=jnp.asarray(np.asarray(num_examples, np.float32)[order]))
        new = unflatten_arrays(w + np.asarray(agg, np.float32), global_arrays)
        flags = np.asarray(report["flags"], bool)
        scores = np.asarray(report["scores"], np.float64)
        metrics = {"aggregator": self.name, "n_clients": int(n), "n_flagged": int(flags.sum()),
                   "flagged_clients": ",".join(c for c, f in zip(cids, flags) if f),
                   "max_score": float(np.nanmax(scores)) if scores.size else 0.0}
        report = {k: np.asarray(v) for k, v in report.items() if hasattr(v, "shape")}
        report["client_ids"] = np.asarray(cids)
        return new, metrics, report


_CLASS = None


def _build_class():
    flwr = _require_flwr()
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import FedAvg

    class PoisonjaxStrategy(FedAvg):
        r"""A Flower ``FedAvg`` whose ``aggregate_fit`` uses a poisonjax aggregator (see the module doc).

        Args:
          aggregator: a name of :data:`poisonjax.federated.aggregators.AGGREGATORS` -- ``fedavg``,
            ``krum``, ``multi_krum``, ``median``, ``trimmed_mean``, ``bulyan``, ``rfa``, ``fltrust``,
            ``flame``, ``foolsgold``, ``dnc``, ``centered_clipping``, ``flare``, ``geminiguard``, ``weidetect``.
          aggregator_kwargs: its hyperparameters (e.g. ``{"num_malicious": 2}`` for Krum).
          apply_fn, features_fn, aux_x, aux_y, num_classes, root_update_fn: what context-needing rules
            read (module doc); ``params`` are Flower's list of arrays.
          num_clients: total clients, for stateful rules (FoolsGold); default the first round's count.
          seed: PRNG seed of randomised rules (FLAME, DnC), folded with the round number.
          **fedavg_kwargs: passed to ``flwr.server.strategy.FedAvg`` (``initial_parameters``,
            ``fraction_fit``, ``min_fit_clients``, ``evaluate_fn``, ``fit_metrics_aggregation_fn``, ...).

        The global model the updates are measured from is the one sent in ``configure_fit`` (or
        ``initial_parameters`` when ``aggregate_fit`` is called first).
        """

        def __init__(self, aggregator: str = "fedavg", aggregator_kwargs: Optional[dict] = None, *,
                     apply_fn=None, features_fn=None, aux_x=None, aux_y=None, num_classes=None,
                     root_update_fn=None, num_clients=None, seed: int = 0, **fedavg_kwargs):
            super().__init__(**fedavg_kwargs)
            self.core = RoundAggregator(aggregator, aggregator_kwargs, apply_fn=apply_fn, features_fn=features_fn,
                                        aux_x=aux_x, aux_y=aux_y, num_classes=num_classes,
                                        root_update_fn=root_update_fn, num_clients=num_clients, seed=seed)
            init = fedavg_kwargs.get("initial_parameters")
            self._global = parameters_to_ndarrays(init) if init is not None else None
            self.last_report = None

        def __repr__(self) -> str:
            return f"PoisonjaxStrategy(aggregator={self.core.name!r})"

        def configure_fit(self, server_round, parameters, client_manager):
            self._global = parameters_to_ndarrays(parameters)
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round, results, failures):
            if not results:
                return None, {}
            if not self.accept_failures and failures:
                return None, {}
            if self._global is None:
                raise PoisonJaxInputError("PoisonjaxStrategy needs the global model the clients started from: "
                                          "pass initial_parameters=... (or let the server call configure_fit)")
            cids = [str(cp.cid) for cp, _ in results]
            arrays = [parameters_to_ndarrays(fr.parameters) for _, fr in results]
            n_ex = [int(fr.num_examples) for _, fr in results]
            new, metrics, report = self.core.aggregate_round(server_round, self._global, arrays, n_ex, cids)
            self.last_report = report
            pids = {str(cp.cid): getattr(cp, "partition_id", None) for cp, _ in results}
            if all(v is not None for v in pids.values()):   # Flower's simulation: data-partition ids too
                metrics["flagged_partitions"] = ",".join(str(pids[c]) for c, f in
                                                         zip(report["client_ids"], report["flags"]) if f)
            if self.fit_metrics_aggregation_fn:
                metrics.update(self.fit_metrics_aggregation_fn([(fr.num_examples, fr.metrics) for _, fr in results]))
            self._global = new
            return ndarrays_to_parameters(new), metrics

    PoisonjaxStrategy.__module__ = __name__
    PoisonjaxStrategy.__qualname__ = "PoisonjaxStrategy"
    PoisonjaxStrategy.flwr_version = getattr(flwr, "__version__", "unknown")
    return PoisonjaxStrategy


def __getattr__(name):
    global _CLASS
    if name == "PoisonjaxStrategy":
        if _CLASS is None:
            _CLASS = _build_class()
        return _CLASS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
