r"""Unlearning scenarios on the federated engine, and the original (to-be-unlearned) training run.

The clients stand for the drones of SoUL (Zaman, Sun & Yao, ICC 2025, "Sky of Unlearning"); there is
no drone data, so the scenarios use standard image sets (scikit-learn digits, the MNIST subset, the
CIFAR-10 20k JPEG set) partitioned IID or Dirichlet non-IID (:mod:`poisonjax.data.partitions`).

Scenarios (:func:`make_scenario`):

* ``"backdoor"`` -- ``round(f N)`` clients hold BadNets-poisoned data (the engine's ``badnets`` data
  attack: a trigger plus the target label on ``backdoor_fraction`` of their examples); they are the
  clients to unlearn (found after training). The backdoor test set is every non-target test image
  with the trigger.
* ``"forget_client"`` -- the right to be forgotten: one benign client (``forget_client``) asks to leave.

:func:`train_original` runs the original federation (FedAvg, every client every round) through
:func:`poisonjax.core.runner.run` (checkpoints, resume) and keeps what the unlearning baselines need:
the initial model, the model before the last round and every client's last-round update (Halimi et
al.'s reference model), and FedEraser's server-side history -- the norms :math:`\lVert U_i^{t_j}\rVert`
of every client's update at the retained rounds :math:`t_j = j\,\Delta t` and the full updates of the
first retained round (the only parts of the retained updates FedEraser's reconstruction reads; its
storage cost is still counted as full updates, see :mod:`.costs`).
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core.ensemble import flatten_params
from poisonjax.core.types import AttackOptimizer
from poisonjax.core.validation import PoisonJaxInputError, check_choice, check_fraction, check_positive_int
from poisonjax.federated import simulation as S
from poisonjax.federated.models import CNN, MLP, ModelFns, model_fns

SCENARIOS = ("backdoor", "forget_client")
PARTITIONS = ("iid", "dirichlet")


class UnlearningModel(NamedTuple):
    """A client model with its flax ``module`` (for activation capture), its :class:`ModelFns`, the
    prunable hidden ``layers`` (module paths; every Dense/conv layer except the classifier) and a
    ``sample`` input batch ``[1, ...]``."""

    module: Any
    fns: ModelFns
    layers: tuple
    sample: Any


def make_model(name: str, num_classes: int, sample_input, hidden: int = 64,
               channels: Sequence[int] = (16, 32)) -> UnlearningModel:
    """``"mlp"`` (one hidden Dense layer of ``hidden`` units) or ``"cnn"`` (the engine's FedAvg-style
    CNN: two conv layers of ``channels`` and a Dense layer of ``hidden`` units) as an
    :class:`UnlearningModel`. Prunable units: the hidden neurons and conv channels (ReLU outputs)."""
    check_choice("model", name, ("mlp", "cnn"))
    sample = jnp.asarray(np.asarray(sample_input)[:1])
    if name == "mlp":
        mod = MLP(num_classes=num_classes, hidden=(int(hidden),))
        layers = ("Dense_0",)
    else:
        mod = CNN(num_classes=num_classes, channels=tuple(int(c) for c in channels), hidden=int(hidden))
        layers = ("PatchConv_0", "PatchConv_1", "Dense_0")
    return UnlearningModel(mod, model_fns(mod, sample), layers, sample)


class Scenario(NamedTuple):
    """A federation and the clients to unlearn.

    * ``name``: ``"backdoor"`` | ``"forget_client"``; ``partition``, ``dirichlet_alpha``;
    * ``data``: :class:`~poisonjax.federated.simulation.FederatedData` of all N clients (poisoned for
      backdoor clients; ``x_bd``/``y_bd`` the backdoor test set);
    * ``forget_ids [k]``, ``retain_ids [N-k]``: client ids (int numpy);
    * ``holdout_x [H, ...]``, ``holdout_y [H]``: non-members for membership inference, drawn from the
      test set with the forget set's (clean) label histogram and, in the backdoor scenario, poisoned
      like the forget set (same trigger, same fraction), so members and non-members differ only in
      membership;
    * ``num_classes``; ``backdoor_target`` (or -1).
    """

    name: str
    partition: str
    dirichlet_alpha: float
    data: Any
    forget_ids: np.ndarray
    retain_ids: np.ndarray
    holdout_x: np.ndarray
    holdout_y: np.ndarray
    num_classes: int
    backdoor_target: int = -1


def check_forget_ids(forget_ids, num_clients: int) -> np.ndarray:
    """Validate client ids to unlearn: non-empty, integers in ``[0, num_clients)``, not every client.

    Raises:
      PoisonJaxInputError: naming ``forget_ids``.
    """
    ids = np.atleast_1d(np.asarray(forget_ids))
    if ids.size == 0:
        raise PoisonJaxInputError("forget_ids is empty: name at least one client to unlearn")
    if ids.dtype.kind not in "iu":
        raise PoisonJaxInputError(f"forget_ids must be integer client ids, got {forget_ids!r}")
    bad = ids[(ids < 0) | (ids >= num_clients)]
    if bad.size:
        raise PoisonJaxInputError(f"forget_ids: unknown client id(s) {bad.tolist()}; the federation has clients "
                                  f"0..{num_clients - 1}")
    ids = np.unique(ids)
    if ids.size >= num_clients:
        raise PoisonJaxInputError(f"forget_ids names all {num_clients} clients: the forget set equals all data, "
                                  "nothing would remain to learn from")
    return ids


def subset_clients(data, ids) -> Any:
    """The federation restricted to clients ``ids`` (same test/aux/backdoor sets)."""
    ids = np.asarray(ids)
    return data._replace(x=np.asarray(data.x)[ids], y=np.asarray(data.y)[ids], mask=np.asarray(data.mask)[ids],
                         malicious=np.asarray(data.malicious)[ids])


def pooled(data, ids):
    """The valid examples of clients ``ids`` pooled: ``(x [n, ...], y [n])``."""
    ids = np.asarray(ids)
    m = np.asarray(data.mask)[ids] > 0
    return np.asarray(data.x)[ids][m], np.asarray(data.y)[ids][m]


def make_scenario(x_train, y_train, x_test, y_test, *, num_classes: int, scenario: str = "backdoor",
                  num_clients: int = 10, partition: str = "iid", dirichlet_alpha: float = 0.5,
                  malicious_fraction: float = 0.1, forget_client: int = 0, backdoor_target: int = 0,
                  backdoor_fraction: float = 0.5, trigger_size: int = 2, aux_size: int = 100,
                  max_client_size: Optional[int] = None, seed: int = 0) -> Scenario:
    r"""Build a :class:`Scenario` (see the module docstring) from a centralised dataset.

    Raises:
      PoisonJaxInputError: unknown scenario/partition, ``forget_client`` not a client id, a backdoor
        scenario with no malicious client, a forget set with no example.
    """
    check_choice("scenario", scenario, SCENARIOS)
    check_choice("partition", partition, PARTITIONS)
    num_clients = check_positive_int("num_clients", num_clients, minimum=2)
    common = dict(num_classes=num_classes, num_clients=num_clients, partition=partition, alpha=dirichlet_alpha,
                  aux_size=aux_size, max_client_size=max_client_size, seed=seed, backdoor_target=backdoor_target,
                  backdoor_fraction=backdoor_fraction, trigger_size=trigger_size)
    if scenario == "backdoor":
        check_fraction("malicious_fraction", malicious_fraction, low_inclusive=False, high_inclusive=False)
        data = S.federate_arrays(x_train, y_train, x_test, y_test, malicious_fraction=malicious_fraction,
                                 data_attack="badnets", **common)
        forget = np.flatnonzero(np.asarray(data.malicious))
        if forget.size == 0:
            raise PoisonJaxInputError(f"malicious_fraction={malicious_fraction} gives no backdoored client among "
                                      f"{num_clients}; raise it")
        clean = S.federate_arrays(x_train, y_train, x_test, y_test, malicious_fraction=malicious_fraction,
                                  data_attack="none", **common)
    else:
        data = S.federate_arrays(x_train, y_train, x_test, y_test, malicious_fraction=0.0, **common)
        forget = check_forget_ids([forget_client], num_clients)
        clean = data
    forget = check_forget_ids(forget, num_clients)
    retain = np.setdiff1d(np.arange(num_clients), forget)
    _, yf_clean = pooled(clean, forget)
    if yf_clean.size == 0:
        raise PoisonJaxInputError("the forget set is empty (the clients to unlearn hold no example)")
    hx, hy = _holdout(np.asarray(x_test), np.asarray(y_test), yf_clean, seed)
    if scenario == "backdoor":
        from poisonjax.federated import attacks as atk
        hx, hy = atk.add_backdoor(hx, hy, np.ones(len(hy), np.float32), target=backdoor_target,
                                  fraction=backdoor_fraction, size=trigger_size, seed=seed + 7919,
                                  example_ndim=np.asarray(x_train).ndim - 1)
    return Scenario(scenario, partition, float(dirichlet_alpha), data, forget, retain, hx, hy.astype(np.int32),
                    int(num_classes), int(backdoor_target) if scenario == "backdoor" else -1)


def _holdout(x_test, y_test, y_forget, seed):
    """Test examples with the label histogram of ``y_forget`` (as many as it has), drawn without
    replacement per class where the class has enough test examples."""
    rng = np.random.default_rng(seed + 104729)
    idx = []
    for c, cnt in zip(*np.unique(y_forget, return_counts=True)):
        pool = np.flatnonzero(y_test == c)
        if pool.size == 0:
            continue
        idx.append(rng.choice(pool, cnt, replace=cnt > pool.size))
    idx = np.concatenate(idx) if idx else rng.choice(len(y_test), len(y_forget))
    return x_test[idx], y_test[idx].astype(np.int32)


# ------------------------------------------------------------------------ original training ------

class HistoryState(NamedTuple):
    """State of :func:`history_optimizer`: the simulation's ``fl`` state plus ``init_params`` (the
    initial global model), ``prev_params`` (the global model before the latest round),
    ``last_updates [N, d]`` (every client's latest update), ``stored_norms [J, N]`` (norms of the
    updates at rounds ``0, Δt, 2Δt, ...``) and ``first_updates [N, d]`` (round 0's updates)."""

    fl: Any
    init_params: Any
    prev_params: Any
    last_updates: jax.Array
    stored_norms: jax.Array
    first_updates: jax.Array


def history_optimizer(sim, num_clients: int, rounds: int, delta_t: int, train_fn=None) -> AttackOptimizer:
    """``AttackOptimizer`` for :func:`poisonjax.core.runner.run` whose step is one FedAvg round of
    ``sim`` (:meth:`FLSimulation.train_round` + :meth:`FLSimulation.server_round`) that also records
    FedEraser's retained update norms every ``delta_t`` rounds and the last round's updates.
    Needs ``sim.client_fraction == 1`` (every client every round)."""
    if sim.clients_per_round(num_clients) != num_clients:
        raise PoisonJaxInputError("client_fraction must be 1 for unlearning studies (every client takes part "
                                  "in every round, so each client's history is complete)")
    delta_t = check_positive_int("delta_t", delta_t)
    n_store = -(-int(rounds) // delta_t)
    train_fn = train_fn or S.make_train_fn(sim)
    server_fn = jax.jit(sim.server_round)

    def init(key, data):
        st = sim.init(key, data)
        d = flatten_params(st.params).shape[0]
        z = jnp.zeros((num_clients, d), jnp.float32)
        return HistoryState(st, st.params, st.params, z, jnp.zeros((max(n_store, 1), num_clients), jnp.float32), z)

    @jax.jit
    def record(h: HistoryState, fl_new, updates):
        r = h.fl.round
        norms = jnp.linalg.norm(updates, axis=1)
        j = r // delta_t
        stored = jnp.where(r % delta_t == 0, h.stored_norms.at[j].set(norms), h.stored_norms)
        first = jnp.where(r == 0, updates, h.first_updates)
        return HistoryState(fl_new, h.init_params, h.fl.params, updates, stored, first)

    def step(h: HistoryState, data):
        ids, updates, losses = train_fn(h.fl, data)
        fl_new = server_fn(h.fl, data, ids, updates, losses)
        return record(h, fl_new, updates)  # ids == arange(N) with client_fraction 1

    return AttackOptimizer(init, step, lambda h, data: h.fl.metrics)


class OriginalRun(NamedTuple):
    """What :func:`train_original` returns: the trained global ``params``, ``history`` (a
    :class:`HistoryState`), the per-round ``metrics`` and the number of ``rounds``."""

    params: Any
    history: HistoryState
    metrics: list
    rounds: int


def train_original(sim, data, rounds: int, *, delta_t: int = 2, seed: int = 0, workdir=None, config=None,
                   train_fn=None, progress: bool = False) -> OriginalRun:
    """Train the original federation for ``rounds`` FedAvg rounds with history (see
    :func:`history_optimizer`), through :func:`poisonjax.core.runner.run` (``workdir``: checkpoints and
    resume; ``host_loop``: the compiled local training is shared)."""
    from poisonjax.core.runner import run
    S.validate_data(data)
    data = jax.tree.map(jnp.asarray, data)
    n = int(data.y.shape[0])
    opt = history_optimizer(sim, n, rounds, delta_t, train_fn)
    res = run(opt, data, rounds, workdir, seed=seed, config=config, progress=progress, desc="original fl",
              host_loop=True)
    return OriginalRun(res.state.fl.params, res.state, res.metrics, int(rounds))


@functools.lru_cache(maxsize=64)
def _two_phase(sim, train_fn):
    """One two-phase optimiser (compiled server half) per simulation and local-training function."""
    return S.two_phase_optimizer(sim, train_fn)


def continue_from(sim, data, params, rounds: int, *, seed: int = 0, workdir=None, config=None, train_fn=None,
                  progress: bool = False, desc: str = "fine-tune"):
    """``rounds`` rounds of ``sim`` on ``data`` (the remaining clients) starting from the global model
    ``params`` (fresh server-optimiser state), through :func:`poisonjax.core.runner.run`. Returns
    ``(params, metrics)``; ``rounds == 0`` returns ``params`` unchanged."""
    from poisonjax.core.runner import run
    if int(rounds) == 0:
        return params, []
    S.validate_data(data)
    data = jax.tree.map(jnp.asarray, data)
    base = _two_phase(sim, train_fn)

    def init(key, d):
        st = base.init(key, d)
        return st._replace(params=params, server_opt_state=sim.server_optimizer.init(params))

    res = run(AttackOptimizer(init, base.step, base.metrics), data, rounds, workdir, seed=seed, config=config,
              progress=progress, desc=desc, host_loop=True)
    return res.state.params, res.metrics
