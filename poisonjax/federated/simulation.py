r"""Vectorised federated-learning simulation: every client of a round trains in one vmapped,
jit-compiled computation, sharded over the devices of a mesh.

One round :math:`t` (FedAvg family, McMahan et al. 2017; server optimisers of Reddi et al. 2021):

1. sample :math:`m = \mathrm{round}(q N)` of the N clients without replacement (``client_fraction`` q);
2. each sampled client runs ``local_epochs`` epochs of mini-batch SGD from :math:`w_t` on its padded
   local data (the clients are victims of :func:`poisonjax.core.victims.train_victims`, started from
   :math:`w_t`; the client axis sharded and chunked by :func:`poisonjax.core.parallel.chunked_vmap`, ``client_chunk_size``
   clients at a time to bound memory) giving flattened updates
   :math:`\Delta_i = w_i - w_t` ``[m, d]``;
3. malicious clients' rows are rewritten by the model-poisoning attack (which may query the aggregator);
4. the aggregator returns :math:`(\bar\Delta, \mathrm{state}, \mathrm{report})`;
5. the server optimiser treats :math:`-\bar\Delta` as a gradient: FedAvg
   :math:`w_{t+1} = w_t + \eta\bar\Delta`, FedAvgM (heavy-ball momentum), FedAdam
   (Adam with :math:`\epsilon = 10^{-3}`).

Per-client randomness is ``fold_in(round_key, client_id)``, so results do not depend on how clients
are sharded or chunked. A round is one ``step`` of an :class:`~poisonjax.core.types.AttackOptimizer`,
so :func:`run_simulation` (and :func:`run_rounds`) go through :func:`poisonjax.core.runner.run`
(progress bar, metrics.jsonl, orbax checkpoints every few rounds, resume mid-run after a kill): either
as ``lax.scan`` chunks of whole rounds, or -- with a shared ``train_fn`` (a grid of aggregators x
attacks on one model) -- as the runner's host loop over two compiled halves of a round, so local
training compiles once for the grid.

Quick use::

    from poisonjax.federated import simulation as S, aggregators as A
    data = S.federate_dataset("digits", num_clients=20, alpha=0.5, malicious_fraction=0.2)
    sim = S.build_simulation(S.default_model(data, "mlp"), A.get_aggregator("krum", num_malicious=4),
                             model_attack="sign_flip")
    res = S.run_simulation(sim, data, rounds=30)
    print(res.metrics[-1]["test_accuracy"], S.summarize(res.metrics))
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from poisonjax.core import training
from poisonjax.core.ensemble import flatten_params, unflatten_like  # flatten_params re-exported
from poisonjax.core.parallel import chunked_vmap, make_mesh
from poisonjax.core.types import AttackOptimizer
from poisonjax.core.validation import PoisonJaxInputError, check_choice, check_fraction, check_positive_int
from poisonjax.federated import aggregators as aggs
from poisonjax.federated import attacks as atk
from poisonjax.federated.models import ModelFns, make_model

PyTree = Any

__all__ = ["FederatedData", "FLState", "RoundContext", "FLSimulation", "build_simulation", "run_simulation",
           "run_rounds", "two_phase_optimizer", "make_train_fn", "validate_data", "federate_dataset", "federate_arrays", "default_model", "summarize", "flatten_params",
           "SERVER_OPTIMIZERS"]




class FederatedData(NamedTuple):
    """Everything a simulation reads (a pytree of arrays: the ``problem`` of ``core.runner``).

    * ``x [N, S, ...]``, ``y [N, S]`` int32, ``mask [N, S]`` float32: padded client data (already
      poisoned for malicious clients when a data attack is used);
    * ``malicious [N]`` bool: ground truth for detection metrics and model attacks;
    * ``x_test [T, ...]``, ``y_test [T]``: clean test set (main accuracy);
    * ``x_aux [A, ...]``, ``y_aux [A]``: the server's clean auxiliary / root / validation data
      (FLTrust root set, FLARE/GeminiGuard latent analysis, WeiDetect scoring);
    * ``x_bd [B, ...]``, ``y_bd [B]``: triggered non-target test inputs with the target label
      (backdoor ASR), or ``None``.
    """

    x: Any
    y: Any
    mask: Any
    malicious: Any
    x_test: Any
    y_test: Any
    x_aux: Any
    y_aux: Any
    x_bd: Any = None
    y_bd: Any = None


class FLState(NamedTuple):
    """Simulation state (a pytree; checkpointed by ``core.runner``): global ``params``, server
    optimiser state, aggregator state, base ``key``, ``round`` (int32) and the last round's ``metrics``."""

    params: PyTree
    server_opt_state: PyTree
    agg_state: PyTree
    key: jax.Array
    round: jax.Array
    metrics: Dict[str, jax.Array]


class RoundContext(NamedTuple):
    r"""What an aggregator (defense) may look at besides the updates, for one round.

    * ``global_params``: :math:`w_t` (pytree);
    * ``unflatten(v [d]) -> params pytree``;
    * ``apply_fn(params, x) -> logits``, ``features_fn(params, x) -> [B, h]`` (penultimate layer);
    * ``aux_x``, ``aux_y``: server auxiliary data (``[A, ...]``, ``[A]``);
    * ``root_update``: ``[d]`` server update on ``aux`` data (only when the aggregator ``needs`` it);
    * ``client_ids [n]``: global ids of this round's clients; ``round``: round index;
    * ``num_classes``.

    Methods: :meth:`client_params` (stacked :math:`w_t + \Delta_i`), :meth:`client_features`
    (``[n, A, h]``), :meth:`client_logits` (``[n, A, C]``).
    """

    global_params: PyTree
    unflatten: Callable
    apply_fn: Callable
    features_fn: Callable
    aux_x: Any
    aux_y: Any
    root_update: Any
    client_ids: Any
    round: Any
    num_classes: int

    def client_params(self, updates: jax.Array) -> PyTree:
        """Stacked client models :math:`w_t + \\Delta_i` (leaves ``[n, ...]``) from updates ``[n, d]``."""
        return jax.vmap(lambda u: jax.tree.map(jnp.add, self.global_params, self.unflatten(u)))(updates)

    def client_features(self, updates: jax.Array, x: Optional[jax.Array] = None) -> jax.Array:
        """Penultimate features of every client model on ``x`` (default ``aux_x``): ``[n, A, h]``."""
        x = self.aux_x if x is None else x
        return jax.vmap(lambda p: self.features_fn(p, x))(self.client_params(updates))

    def client_logits(self, updates: jax.Array, x: Optional[jax.Array] = None) -> jax.Array:
        """Logits of every client model on ``x`` (default ``aux_x``): ``[n, A, C]``."""
        x = self.aux_x if x is None else x
        return jax.vmap(lambda p: self.apply_fn(p, x))(self.client_params(updates))


SERVER_OPTIMIZERS = ("fedavg", "fedavgm", "fedadam")


@functools.lru_cache(maxsize=64)
def _jit_cached(fn):
    """One ``jax.jit`` wrapper per function object (so simulations sharing a model share its
    compiled ``init``)."""
    return jax.jit(fn)


def _server_optimizer(name: str, lr: float, momentum: float) -> optax.GradientTransformation:
    check_choice("server_optimizer", name, SERVER_OPTIMIZERS)
    if name == "fedavg":
        return optax.sgd(lr)
    if name == "fedavgm":
        return optax.sgd(lr, momentum=momentum)
    return optax.adam(lr, b1=0.9, b2=0.99, eps=1e-3)


@dataclasses.dataclass(frozen=True, eq=False)
class FLSimulation:
    """A configured simulation; build it with :func:`build_simulation`. ``init``/``step``/``metrics``
    form an :class:`~poisonjax.core.types.AttackOptimizer` (:meth:`as_attack_optimizer`)."""

    model: ModelFns
    aggregator: aggs.Aggregator
    model_attack: Optional[Callable]
    client_fraction: float
    local_epochs: int
    batch_size: int
    local_optimizer: optax.GradientTransformation
    server_optimizer: optax.GradientTransformation
    client_chunk_size: Optional[int]
    mesh: Any
    num_classes: int
    eval_batch: Optional[int] = None
    weight_by_size: bool = False

    # -- helpers ---------------------------------------------------------------------------------
    def clients_per_round(self, num_clients: int) -> int:
        """:math:`m = \\max(1, \\mathrm{round}(q N))`."""
        return max(1, int(round(self.client_fraction * num_clients)))

    def _loss(self):
        return training.softmax_cross_entropy_loss(self.model.apply)

    def victim(self):
        """The clients' model as a :class:`poisonjax.core.victims.Victim` (softmax cross-entropy)."""
        from poisonjax.core.victims import Victim
        return Victim(self.model.init, self._loss(), self.model.apply)

    def _local_kw(self):
        return dict(epochs=self.local_epochs, batch_size=self.batch_size)

    def client_update(self, global_params, x, y, mask, key):
        """One client's local training -> (update ``[d]``, mean loss). Pure, vmappable.

        :func:`poisonjax.core.victims.train_victim` from ``global_params`` with the client's own
        ``key`` (``split_key=False``)."""
        from poisonjax.core.victims import train_victim
        res = train_victim(self.victim(), self.local_optimizer, {"x": x, "y": y}, key, mask=mask,
                           variables=global_params, split_key=False, **self._local_kw())
        delta = flatten_params(res.variables) - flatten_params(global_params)
        nsteps = jnp.maximum(jnp.sum(res.losses != 0), 1)
        return delta, jnp.sum(res.losses) / nsteps

    def local_updates(self, params, data: FederatedData, ids: jax.Array, key: jax.Array):
        """Train clients ``ids [m]`` from ``params``: ``(updates [m, d], losses [m])``.

        The m clients are m victims of :func:`poisonjax.core.victims.train_victims`, trained from the
        broadcast global ``params`` (``variables_axis=None``) on their own padded datasets
        (``data_axis=0``), sharded over ``mesh`` and processed ``client_chunk_size`` clients at a time;
        client ``i``'s key is ``fold_in(key, i)`` (``split_keys=False``) so the result is independent
        of sharding and chunking."""
        from poisonjax.core.victims import train_victims
        mesh = make_mesh() if self.mesh is None else self.mesh
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(ids)
        res = train_victims(self.victim(), self.local_optimizer, {"x": data.x[ids], "y": data.y[ids]}, keys,
                            mask=data.mask[ids], data_axis=0, variables=params, variables_axis=None,
                            split_keys=False, chunk=self.client_chunk_size, mesh=mesh, **self._local_kw())
        deltas = jax.vmap(flatten_params)(res.variables) - flatten_params(params)
        nsteps = jnp.maximum(jnp.sum(res.losses != 0, axis=1), 1)
        return deltas, jnp.sum(res.losses, axis=1) / nsteps

    def evaluate(self, params, data: FederatedData) -> Dict[str, jax.Array]:
        """``test_accuracy`` and (with backdoor data) ``backdoor_asr`` of the global model."""
        out = {"test_accuracy": training.accuracy(self.model.apply(params, data.x_test), data.y_test)}
        if data.x_bd is not None:
            out["backdoor_asr"] = training.accuracy(self.model.apply(params, data.x_bd), data.y_bd)
        return out

    # -- AttackOptimizer protocol ----------------------------------------------------------------
    def init(self, key, data: FederatedData) -> FLState:
        """Initial :class:`FLState`: global params from ``model.init``, server optimiser and aggregator
        state, zero metrics. Works eagerly or under ``jit``."""
        k_init, k_run = jax.random.split(key)
        params = _jit_cached(self.model.init)(k_init)
        d = flatten_params(params).shape[0]
        n = data.y.shape[0]
        agg_state = self.aggregator.init(n, d)
        metrics = self._metric_template(data)
        return FLState(params, self.server_optimizer.init(params), agg_state, k_run, jnp.int32(0), metrics)

    def _metric_template(self, data):
        z = jnp.float32(0.0)
        names = ["test_accuracy", "train_loss", "update_norm", "tp", "fp", "fn", "tn", "num_malicious",
                 "num_flagged", "num_nonfinite"]
        if data.x_bd is not None:
            names.append("backdoor_asr")
        return {k: z for k in names}

    def train_round(self, st: FLState, data: FederatedData):
        """First half of a round: sample clients and train them locally.

        Returns ``(ids [m], updates [m, d], losses [m])``. Depends only on the model/local-training
        configuration, so one compiled copy can serve simulations that differ in aggregator or attack
        (see :func:`run_rounds`)."""
        n = data.y.shape[0]
        m = self.clients_per_round(n)
        rkey = jax.random.fold_in(st.key, st.round)
        k_sample, k_train = jax.random.split(rkey, 5)[:2]
        ids = jnp.arange(n) if m == n else jax.random.permutation(k_sample, n)[:m]
        updates, losses = self.local_updates(st.params, data, ids, k_train)
        return ids, updates, losses

    def server_round(self, st: FLState, data: FederatedData, ids, updates, losses) -> FLState:
        """Second half of a round: model attack, aggregation, server optimiser step, metrics."""
        rkey = jax.random.fold_in(st.key, st.round)
        _, _, k_attack, k_agg, k_root = jax.random.split(rkey, 5)
        mal = data.malicious[ids]
        like = st.params
        root = None
        if "root_update" in self.aggregator.needs:
            root, _ = self.client_update(st.params, data.x_aux, data.y_aux,
                                         jnp.ones(data.y_aux.shape[0], jnp.float32), k_root)
        ctx = RoundContext(st.params, lambda v: unflatten_like(v, like), self.model.apply, self.model.features,
                           data.x_aux, data.y_aux, root, ids, st.round, self.num_classes)

        akw = {"weights": jnp.sum(data.mask[ids], axis=1)} if self.weight_by_size else {}

        def agg_call(u):
            a, _, r = self.aggregator.fn(u, st.agg_state, k_agg, context=ctx, nan_policy="exclude", **akw)
            return a, r

        if self.model_attack is not None:
            updates = self.model_attack(updates, mal, k_attack, context=ctx, aggregator=agg_call)
        agg, agg_state, report = self.aggregator.fn(updates, st.agg_state, k_agg, context=ctx, nan_policy="exclude",
                                                    **akw)
        g = jax.tree.map(jnp.negative, unflatten_like(agg, like))
        upd, sos = self.server_optimizer.update(g, st.server_opt_state, st.params)
        params = optax.apply_updates(st.params, upd)
        flags = report["flags"]
        f32 = lambda v: jnp.sum(v).astype(jnp.float32)  # noqa: E731
        metrics = dict(self.evaluate(params, data))
        ben = ~mal
        metrics.update(
            train_loss=jnp.sum(jnp.where(ben, losses, 0.0)) / jnp.maximum(f32(ben), 1.0),
            update_norm=jnp.linalg.norm(agg),
            tp=f32(flags & mal), fp=f32(flags & ~mal), fn=f32(~flags & mal), tn=f32(~flags & ~mal),
            num_malicious=f32(mal), num_flagged=f32(flags), num_nonfinite=f32(report["nonfinite"]))
        metrics = {k: metrics[k].astype(jnp.float32) for k in st.metrics}
        return FLState(params, sos, agg_state, st.key, st.round + 1, metrics)

    def step(self, st: FLState, data: FederatedData) -> FLState:
        """One federated round (see module docstring): :meth:`train_round` then :meth:`server_round`."""
        return self.server_round(st, data, *self.train_round(st, data))

    def metrics(self, st: FLState, data: FederatedData) -> Dict[str, jax.Array]:
        """The last round's metrics (scalars): test_accuracy, [backdoor_asr], train_loss (benign mean),
        update_norm, tp/fp/fn/tn of the aggregator's flags, num_malicious, num_flagged, num_nonfinite."""
        return st.metrics

    def as_attack_optimizer(self) -> AttackOptimizer:
        """``AttackOptimizer(init, step, metrics)`` for :func:`poisonjax.core.runner.run` (rounds = steps)."""
        return AttackOptimizer(self.init, self.step, self.metrics)


def build_simulation(model: ModelFns, aggregator: Union[str, aggs.Aggregator, Callable] = "fedavg", *,
                     model_attack: Union[None, str, Callable] = None, attack_kwargs: Optional[dict] = None,
                     aggregator_kwargs: Optional[dict] = None, client_fraction: float = 1.0,
                     local_epochs: int = 1, batch_size: int = 8, local_lr: float = 0.1, local_momentum: float = 0.0,
                     server_optimizer: str = "fedavg", server_lr: float = 1.0, server_momentum: float = 0.9,
                     client_chunk_size: Optional[int] = None, mesh=None, num_classes: int = 10,
                     weight_by_size: bool = False) -> FLSimulation:
    """Configure a simulation.

    Args:
      model: :class:`~poisonjax.federated.models.ModelFns` (``init``, ``apply``, ``features``).
      aggregator: a name from :data:`poisonjax.federated.aggregators.AGGREGATORS` (hyperparameters in
        ``aggregator_kwargs``), an :class:`~poisonjax.federated.aggregators.Aggregator`, or any
        function ``fn(updates [n, d], state, key, *, context, nan_policy) -> (aggregate [d], state, report)``
        with ``report["flags"] [n]`` bool (stateless; wrap in ``Aggregator(name, fn, init, needs)`` for state).
      model_attack: a name from :data:`poisonjax.federated.attacks.MODEL_ATTACKS` (with
        ``attack_kwargs``) or a callable ``(updates, malicious, key, *, context, aggregator) -> updates``
        (the adaptive-attack hook: ``aggregator(updates) -> (aggregate, report)``). ``None``: no attack.
      client_fraction: fraction q in (0, 1] of clients sampled per round.
      local_epochs, batch_size, local_lr, local_momentum: local SGD.
      server_optimizer: ``"fedavg"`` | ``"fedavgm"`` | ``"fedadam"``; ``server_lr``, ``server_momentum``.
      client_chunk_size: train at most this many clients at a time (memory bound; same result).
      mesh: device mesh for the client axis (default: all devices).
      num_classes: classes of the task (for defenses that score per class).
      weight_by_size: pass each client's example count as ``weights`` to the aggregator (McMahan et
        al.'s :math:`n_k/n` weighting for FedAvg/RFA). Default False: uniform weights, the usual choice in
        Byzantine-robust FL evaluations where client-reported sizes cannot be trusted.
    """
    client_fraction = check_fraction("client_fraction", client_fraction)
    local_epochs = check_positive_int("local_epochs", local_epochs)
    batch_size = check_positive_int("batch_size", batch_size)
    if client_chunk_size is not None:
        client_chunk_size = check_positive_int("client_chunk_size", client_chunk_size)
    if isinstance(aggregator, str):
        aggregator = aggs.get_aggregator(aggregator, **(aggregator_kwargs or {}))
    elif not isinstance(aggregator, aggs.Aggregator):
        if not callable(aggregator):
            raise PoisonJaxInputError(f"aggregator must be a name, an Aggregator or a callable, got {aggregator!r}")
        aggregator = aggs.Aggregator(getattr(aggregator, "__name__", "custom"),
                                     functools.partial(aggregator, **(aggregator_kwargs or {})))
    if isinstance(model_attack, str):
        model_attack = None if model_attack == "none" else atk.get_model_attack(model_attack, **(attack_kwargs or {}))
    elif model_attack is not None and attack_kwargs:
        model_attack = functools.partial(model_attack, **attack_kwargs)
    local_opt = optax.sgd(local_lr, momentum=local_momentum or None)
    return FLSimulation(model, aggregator, model_attack, client_fraction, local_epochs, batch_size, local_opt,
                        _server_optimizer(server_optimizer, server_lr, server_momentum), client_chunk_size,
                        mesh, num_classes, None, bool(weight_by_size))


def check_study_config(c, attacks: Sequence[str], aggregators: Sequence[str], min_clients: int = 1) -> None:
    """Checks shared by the FL studies' configs: ``n_clients >= min_clients``, ``malicious_fraction``
    in [0, 1), ``rounds >= 1``, ``dirichlet_alpha > 0`` (where the config has it), and every
    ``attacks``/``aggregators`` entry known."""
    check_positive_int("config.n_clients", c.n_clients, minimum=min_clients)
    check_fraction("config.malicious_fraction", c.malicious_fraction, low_inclusive=True, high_inclusive=False)
    check_positive_int("config.rounds", c.rounds)
    if "dirichlet_alpha" in c and not float(c.dirichlet_alpha) > 0:
        raise PoisonJaxInputError(f"config.dirichlet_alpha must be > 0 (Dirichlet concentration), got "
                                  f"{c.dirichlet_alpha}")
    if "checkpoint_every" in c:
        check_positive_int("config.checkpoint_every", c.checkpoint_every)
    for a in c.attacks:
        check_choice("config.attacks entry", a, attacks)
    for g in c.aggregators:
        check_choice("config.aggregators entry", g, aggregators)


def validate_data(data: FederatedData) -> None:
    """Check a :class:`FederatedData` before running (host side): matching client axes, every client
    holding at least one example, finite features, labels within the test label range.

    Raises:
      PoisonJaxInputError: naming the field and what was expected.
    """
    mask = np.asarray(data.mask)
    n = mask.shape[0]
    for name in ("x", "y", "malicious"):
        a = getattr(data, name)
        if a is None or np.shape(a)[0] != n:
            raise PoisonJaxInputError(f"data.{name} must have a leading client axis of size {n} (from data.mask), "
                                      f"got shape {None if a is None else np.shape(a)}")
    if np.shape(data.y) != mask.shape or np.shape(data.x)[:2] != mask.shape:
        raise PoisonJaxInputError(f"data.x [N, S, ...] and data.y [N, S] must match data.mask {mask.shape}, got "
                                  f"{np.shape(data.x)} and {np.shape(data.y)}")
    empty = np.flatnonzero(mask.sum(axis=1) <= 0)
    if empty.size:
        raise PoisonJaxInputError(f"clients {empty.tolist()[:20]} have no data (mask is all zero); "
                                  "every client needs >= 1 example")
    from poisonjax.core.validation import check_finite
    check_finite("data.x", np.asarray(data.x))
    check_finite("data.x_test", np.asarray(data.x_test))
    if data.x_aux is None or np.shape(data.x_aux)[0] < 1:
        raise PoisonJaxInputError("data.x_aux (server auxiliary data) must hold at least one example")


def run_simulation(sim: FLSimulation, data: FederatedData, rounds: int, workdir=None, *, seed: int = 0,
                   rounds_per_chunk: int = 10, checkpoint_every: Optional[int] = None, config: Any = None,
                   progress: bool = True, desc: str = "fl rounds", train_fn=None, host_loop: Optional[bool] = None,
                   save_final: bool = True):
    """Run ``rounds`` rounds through :func:`poisonjax.core.runner.run` (with ``workdir``: metrics.jsonl,
    orbax checkpoints every ``checkpoint_every`` rounds (default: every chunk), resume from the last
    checkpointed round after a kill, ending bit-identical to an uninterrupted run).

    Two ways to compile, same protocol:

    * default: one compiled ``lax.scan`` of ``rounds_per_chunk`` whole rounds;
    * ``train_fn`` given (a compiled :meth:`FLSimulation.train_round` from :func:`make_train_fn`), or
      ``host_loop=True``: the runner's host loop calls two compiled halves per round, local training
      (``train_fn``) and the server half (model attack, aggregation, server step). Passing the same
      ``train_fn`` to simulations that share model, data shapes and local-training settings (a grid of
      attacks x aggregators) compiles local training once for the whole grid.

    ``save_final=False`` skips the checkpoint of the last round (a study that caches the finished cell).

    Returns:
      :class:`~poisonjax.core.runner.RunResult`; ``.state`` is the final :class:`FLState`,
      ``.metrics`` the per-round metric dicts (see :func:`summarize`).

    Raises:
      DivergenceError: the global model became NaN/inf (e.g. every update of a round was non-finite).
    """
    from poisonjax.core.runner import run
    validate_data(data)
    data = jax.tree.map(jnp.asarray, data)
    host_loop = train_fn is not None if host_loop is None else bool(host_loop)
    if host_loop:
        opt = two_phase_optimizer(sim, train_fn)
    else:
        opt = sim.as_attack_optimizer()
    return run(opt, data, rounds, workdir, seed=seed, chunk_size=rounds_per_chunk,
               checkpoint_every=checkpoint_every, config=config, progress=progress, desc=desc,
               host_loop=host_loop, save_final=save_final)


def two_phase_optimizer(sim: FLSimulation, train_fn=None) -> AttackOptimizer:
    """``AttackOptimizer(init, step, metrics)`` whose ``step`` calls two compiled halves of a round,
    ``train_fn`` (default :func:`make_train_fn`) and ``jax.jit(sim.server_round)``; for
    :func:`poisonjax.core.runner.run` with ``host_loop=True``."""
    train_fn = train_fn or make_train_fn(sim)
    server_fn = jax.jit(sim.server_round)

    def step(st, data):
        return server_fn(st, data, *train_fn(st, data))

    return AttackOptimizer(sim.init, step, sim.metrics)


def run_rounds(sim: FLSimulation, data: FederatedData, rounds: int, *, seed: int = 0, train_fn=None,
               progress: bool = False, desc: str = "fl rounds", workdir=None, config: Any = None,
               rounds_per_chunk: int = 10, checkpoint_every: Optional[int] = None):
    """:func:`run_simulation` with ``host_loop=True`` (two compiled halves per round; ``train_fn``
    shared across a grid), returning ``(final FLState, list of per-round metric dicts)``. With
    ``workdir`` the rounds are checkpointed and a killed run resumes mid-way."""
    res = run_simulation(sim, data, rounds, workdir, seed=seed, rounds_per_chunk=rounds_per_chunk,
                         checkpoint_every=checkpoint_every, config=config, progress=progress, desc=desc,
                         train_fn=train_fn, host_loop=True)
    return res.state, res.metrics


def make_train_fn(sim: FLSimulation):
    """``jax.jit(sim.train_round)`` -- reusable across simulations with the same local training."""
    return jax.jit(sim.train_round)


def summarize(metrics: Sequence[Dict[str, float]], last: int = 1) -> Dict[str, Optional[float]]:
    """Final figures from per-round metrics, with the standard names (:mod:`poisonjax.core.names`):

    * ``accuracy``: test accuracy of the global model, mean over the ``last`` rounds;
    * ``asr``: backdoor attack success rate (same rounds; only with backdoor test data);
    * ``detection_precision`` :math:`TP/(TP+FP)`, ``detection_tpr`` (recall) :math:`TP/(TP+FN)` and
      ``detection_fpr`` :math:`FP/(FP+TN)` of the aggregator's flags against the truly malicious
      clients, micro-averaged over all rounds. Each is ``None`` when undefined: no client flagged
      (precision), **no malicious client at all** (TPR: a run without attackers has no recall), no
      benign client (FPR);
    * ``nonfinite_updates``: updates with NaN/inf, excluded from the aggregate.
    """
    from poisonjax.federated.metrics import precision_recall
    if not metrics:
        raise PoisonJaxInputError("metrics is empty: run at least one round")
    tail = metrics[-last:]
    out = {"accuracy": float(np.mean([m["test_accuracy"] for m in tail]))}
    if "backdoor_asr" in metrics[-1]:
        out["asr"] = float(np.mean([m["backdoor_asr"] for m in tail]))
    tp, fp, fn, tn = (float(sum(m[k] for m in metrics)) for k in ("tp", "fp", "fn", "tn"))
    p, r = precision_recall(tp, fp, fn)
    out.update(detection_precision=p, detection_tpr=r,
               detection_fpr=fp / (fp + tn) if fp + tn > 0 else None,
               nonfinite_updates=int(sum(m["num_nonfinite"] for m in metrics)))
    return out


# ----------------------------------------------------------------------------- data set-up ------

def federate_arrays(x_train, y_train, x_test, y_test, *, num_classes: int, num_clients: int,
                    partition: str = "dirichlet", alpha: float = 0.5, malicious_fraction: float = 0.0,
                    data_attack: str = "none", flip_source: int = 0, flip_target: int = 1,
                    backdoor_target: int = 0, backdoor_fraction: float = 0.5, trigger_size: int = 2,
                    trigger_value: float = 1.0, aux_size: int = 100, max_client_size: Optional[int] = None,
                    seed: int = 0) -> FederatedData:
    r"""Partition a centralised dataset among clients and poison the malicious clients' data.

    ``aux_size`` examples of the training set are held out as the server's clean auxiliary/root data
    (stratified by a seeded shuffle); the rest is split ``"iid"`` or ``"dirichlet"`` (``alpha``).
    :math:`\mathrm{round}(f N)` clients (seeded) are malicious, ``f = malicious_fraction`` in [0, 1).
    ``data_attack``: ``"none"``, ``"label_flip"`` (untargeted, :math:`y \to C-1-y`),
    ``"targeted_label_flip"`` (``flip_source -> flip_target``) or ``"badnets"`` (trigger + ``backdoor_target``
    on ``backdoor_fraction`` of each malicious client's data; the backdoor test set is every
    non-target test example with the trigger).
    """
    from poisonjax.data.partitions import dirichlet_partition, iid_partition, pad_clients
    mf = check_fraction("malicious_fraction", malicious_fraction, low_inclusive=True, high_inclusive=False)
    num_clients = check_positive_int("num_clients", num_clients)
    check_choice("partition", partition, ("iid", "dirichlet"))
    check_choice("data_attack", data_attack, atk.DATA_ATTACKS)
    x_train, y_train = np.asarray(x_train), np.asarray(y_train).astype(np.int32)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y_train))
    aux_idx, rest = perm[:aux_size], perm[aux_size:]
    x_aux, y_aux = x_train[aux_idx], y_train[aux_idx]
    xr, yr = x_train[rest], y_train[rest]
    if partition == "iid":
        parts = iid_partition(len(yr), num_clients, seed)
    else:
        parts = dirichlet_partition(yr, num_clients, alpha, seed)
    ca = pad_clients(xr, yr, parts, max_client_size, seed)
    n_mal = int(round(mf * num_clients))
    malicious = np.zeros(num_clients, bool)
    malicious[rng.permutation(num_clients)[:n_mal]] = True
    x, y = ca.x.copy(), ca.y.copy()
    if data_attack in ("label_flip", "targeted_label_flip"):
        mode = "untargeted" if data_attack == "label_flip" else "targeted"
        y[malicious] = atk.flip_labels(y[malicious], num_classes, mode=mode, source=flip_source, target=flip_target)
    x_bd = y_bd = None
    if data_attack == "badnets":
        nd = x_train.ndim - 1
        for i in np.flatnonzero(malicious):
            x[i], y[i] = atk.add_backdoor(x[i], y[i], ca.mask[i], target=backdoor_target, fraction=backdoor_fraction,
                                          size=trigger_size, value=trigger_value, seed=seed + int(i), example_ndim=nd)
        keep = np.asarray(y_test) != backdoor_target
        x_bd = atk.apply_trigger(np.asarray(x_test)[keep], trigger_size, trigger_value, nd)
        y_bd = np.full(int(keep.sum()), backdoor_target, np.int32)
    return FederatedData(x, y, ca.mask, malicious, np.asarray(x_test), np.asarray(y_test).astype(np.int32),
                         x_aux, y_aux, x_bd, y_bd)


def load_centralised(name: str, data_dir=None, seed: int = 0):
    """``(x_train, y_train, x_test, y_test, num_classes)`` for ``"digits"`` (scikit-learn, no files),
    ``"mnist"`` (the shared 5k MNIST subset + official test set), ``"cifar10"`` (shared JPEG subset) or
    ``"nslkdd"`` (via ``poisonjax.data.nslkdd`` when present)."""
    from poisonjax.federated import datasets
    return datasets.load(name, data_dir=data_dir, seed=seed)


def federate_dataset(name: str = "digits", *, data_dir=None, **kwargs) -> FederatedData:
    """:func:`load_centralised` + :func:`federate_arrays` (kwargs as there)."""
    xtr, ytr, xte, yte, c = load_centralised(name, data_dir, kwargs.get("seed", 0))
    return federate_arrays(xtr, ytr, xte, yte, num_classes=c, **kwargs)


def default_model(data: FederatedData, name: str = "mlp", num_classes: Optional[int] = None, **kwargs) -> ModelFns:
    """An ``"mlp"`` or ``"cnn"`` sized for ``data`` (class count = ``max(y_test) + 1`` unless given)."""
    c = int(num_classes if num_classes is not None else int(np.max(np.asarray(data.y_test))) + 1)
    sample = jnp.asarray(np.asarray(data.x_test)[:1])
    return make_model(name, c, sample, **kwargs)
