r"""Baselines for federated unlearning: retraining, fine-tuning only, FedEraser, projected gradient ascent.

* :func:`retrain` -- the gold standard: FedAvg from the same initial model for the original number of
  rounds, without the clients to forget.
* :func:`finetune_only` -- continue FedAvg from the trained model for :math:`R` rounds without them.
* :func:`federaser` -- FedEraser (Liu et al., IWQoS 2021). During training the server retained every
  client's update :math:`U_i^{t_j}` at rounds :math:`t_j = j\,\Delta t`. Reconstruction starts from the
  initial model :math:`\widetilde M^{t_1} = M^{t_1}`; the first step applies the retained updates of the
  remaining clients directly (the initial model holds no trace of the target), then for every later
  retained round the remaining clients run *calibration training* from :math:`\widetilde M^{t_j}` for
  :math:`E_{cali} = r E` local epochs (calibration ratio :math:`r`, default 0.5), giving
  :math:`\widehat U_i^{t_j}`; the server rescales

  .. math:: \widetilde U_i^{t_j} = \lVert U_i^{t_j} \rVert \, \frac{\widehat U_i^{t_j}}{\lVert \widehat U_i^{t_j} \rVert},
            \qquad \widetilde M^{t_{j+1}} = \widetilde M^{t_j} + \eta \,\mathrm{mean}_i\, \widetilde U_i^{t_j}

  (uniform mean, or weighted by client size when the simulation weights by size). When :math:`rE`
  is not a whole number of epochs, calibration runs :math:`\lceil rE \rceil` epochs over a random
  :math:`rE / \lceil rE \rceil` fraction of each client's examples (same number of SGD steps).
* :func:`projected_gradient_ascent` -- Halimi et al. 2022 ("Federated Unlearning: How to Efficiently
  Erase a Client in FL?"): the target client maximises its own loss by projected gradient ascent
  inside the L2 ball :math:`\lVert w - w_{ref}\rVert_2 \le \delta` around the reference model
  :math:`w_{ref} = (N w^T - \sum_{k\in K} w_k^{T-1}) / (N - |K|)` (the mean of the other clients' last
  local models, computable by the target from the global model and its own last local model), with
  early stopping: the ascent stops (keeping the last model that passed) as soon as the validation
  accuracy falls below :math:`\tau`; then FedAvg continues :math:`R` rounds without the target.
  Here :math:`\delta` = ``radius_fraction`` times the mean distance from :math:`w_{ref}` to three
  random initialisations, and :math:`\tau` = ``tau`` times :math:`w_{ref}`'s validation accuracy (the
  paper treats both as hyperparameters; these relative forms let one setting serve every dataset);
  the validation set is the server's clean proxy set. Several target clients ascend on their pooled data.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from poisonjax.core import training
from poisonjax.core.ensemble import flatten_params, unflatten_like
from poisonjax.core.types import AttackOptimizer
from poisonjax.core.validation import PoisonJaxInputError, check_fraction, check_positive_int
from poisonjax.federated.unlearning import costs as C
from poisonjax.federated.unlearning.scenario import (HistoryState, Scenario, UnlearningModel, continue_from, pooled,
                                                     subset_clients)


class MethodResult(NamedTuple):
    """``params`` after unlearning, its :class:`~.costs.Cost` and any per-round ``metrics``; ``info``
    holds method details (e.g. gradient-ascent steps taken)."""

    params: Any
    cost: C.Cost
    metrics: list
    info: dict


def _sizes(scenario: Scenario):
    return np.asarray(scenario.data.mask)[scenario.retain_ids].sum(axis=1)


def retrain(model: UnlearningModel, sim, scenario: Scenario, history: HistoryState, rounds: int, *, seed: int = 0,
            workdir=None, train_fn=None) -> MethodResult:
    """Retrain from the original initial model ``history.init_params`` for ``rounds`` FedAvg rounds on
    the remaining clients only (the gold standard)."""
    rounds = check_positive_int("rounds", rounds)
    params, ms = continue_from(sim, subset_clients(scenario.data, scenario.retain_ids), history.init_params,
                               rounds, seed=seed, workdir=workdir, train_fn=train_fn, desc="retrain")
    cost = C.fl_rounds_cost(rounds, _sizes(scenario), sim.local_epochs, C.model_bytes(params),
                            C.num_params(params), C.forward_flops(model.module, params, model.sample))
    return MethodResult(params, cost, ms, {})


def finetune_only(model: UnlearningModel, sim, scenario: Scenario, params, rounds: int, *, seed: int = 0,
                  workdir=None, train_fn=None) -> MethodResult:
    """Continue FedAvg from ``params`` for ``rounds`` rounds without the clients to forget."""
    rounds = check_positive_int("rounds", rounds, minimum=0)
    out, ms = continue_from(sim, subset_clients(scenario.data, scenario.retain_ids), params, rounds, seed=seed,
                            workdir=workdir, train_fn=train_fn, desc="fine-tune only")
    cost = C.fl_rounds_cost(rounds, _sizes(scenario), sim.local_epochs, C.model_bytes(params),
                            C.num_params(params), C.forward_flops(model.module, params, model.sample))
    return MethodResult(out, cost, ms, {})


# ------------------------------------------------------------------------------- FedEraser ------

class _EraserState(NamedTuple):
    params: Any
    j: jax.Array
    key: jax.Array
    metrics: dict


def federaser(model: UnlearningModel, sim, scenario: Scenario, history: HistoryState, *, delta_t: int = 2,
              calibration_ratio: float = 0.5, seed: int = 0, workdir=None, progress: bool = False) -> MethodResult:
    """FedEraser (module docstring) from the retained history of :func:`.scenario.train_original`
    (run with the same ``delta_t``). The calibration rounds go through
    :func:`poisonjax.core.runner.run` (``workdir``: resumable)."""
    from poisonjax.core.runner import run
    r = check_fraction("calibration_ratio", calibration_ratio)
    delta_t = check_positive_int("delta_t", delta_t)
    e = sim.local_epochs * r
    cali_epochs = max(1, math.ceil(e - 1e-9))
    keep_frac = min(1.0, e / cali_epochs)
    cali = dataclasses.replace(sim, local_epochs=cali_epochs)
    ret = np.asarray(scenario.retain_ids)
    data = jax.tree.map(jnp.asarray, subset_clients(scenario.data, ret))
    m = len(ret)
    norms = jnp.asarray(history.stored_norms)[:, ret]              # [J, m]
    n_store = int(norms.shape[0])
    like = history.init_params
    lr = _server_lr(sim)
    w = (jnp.asarray(data.mask).sum(axis=1) if sim.weight_by_size else jnp.ones((m,)))
    w = w / jnp.sum(w)
    first = jnp.asarray(history.first_updates)[ret]                # [m, d]
    p1 = unflatten_like(flatten_params(like) + lr * (w @ first), like)

    def init(key, problem):
        z = jnp.float32(0.0)
        return _EraserState(p1, jnp.int32(1), key, {"test_accuracy": z, "calibrated_norm": z})

    @jax.jit
    def step(st: _EraserState, problem):
        dat, nrm = problem
        k = jax.random.fold_in(st.key, st.j)
        k_mask, k_train = jax.random.split(k)
        mask = _subsample_mask(k_mask, dat.mask, keep_frac)
        upd, _ = cali.local_updates(st.params, dat._replace(mask=mask), jnp.arange(m), k_train)  # [m, d]
        unit = upd / jnp.maximum(jnp.linalg.norm(upd, axis=1, keepdims=True), 1e-12)
        calibrated = nrm[st.j][:, None] * unit
        agg = w @ calibrated
        new = unflatten_like(flatten_params(st.params) + lr * agg, st.params)
        acc = training.accuracy(model.fns.apply(new, dat.x_test), dat.y_test)
        return _EraserState(new, st.j + 1, st.key, {"test_accuracy": acc, "calibrated_norm": jnp.linalg.norm(agg)})

    steps = max(n_store - 1, 0)
    res = run(AttackOptimizer(init, step, lambda s, p: s.metrics), (data, norms), steps, workdir, seed=seed,
              progress=progress, desc="federaser", host_loop=True)
    params = res.state.params
    fwd = C.forward_flops(model.module, params, model.sample)
    dd = C.num_params(params)
    cost = C.fl_rounds_cost(steps, _sizes(scenario), e, C.model_bytes(params), dd, fwd)
    cost = cost._replace(server_flops=cost.server_flops + steps * 3.0 * m * dd + (m + 1) * dd,
                         storage_bytes=float(n_store * int(np.asarray(scenario.data.mask).shape[0])
                                             * C.model_bytes(params)))
    return MethodResult(params, cost, res.metrics, {"calibration_epochs": cali_epochs,
                                                    "calibration_keep_fraction": keep_frac,
                                                    "retained_rounds": n_store})


def _server_lr(sim) -> float:
    """FedAvg's server step size (plain SGD on the negated aggregate); FedEraser assumes FedAvg."""
    probe = {"w": jnp.ones(())}
    upd, _ = sim.server_optimizer.update({"w": -jnp.ones(())}, sim.server_optimizer.init(probe), probe)
    return float(upd["w"])


def _subsample_mask(key, mask, keep_frac: float):
    """Keep a random ``ceil(keep_frac * n_i)`` of each client's valid examples (``mask [m, S]``)."""
    if keep_frac >= 1.0:
        return mask
    u = jax.random.uniform(key, mask.shape)
    u = jnp.where(mask > 0, u, 2.0)
    rank = jnp.argsort(jnp.argsort(u, axis=1), axis=1)
    n_keep = jnp.ceil(keep_frac * mask.sum(axis=1, keepdims=True))
    return jnp.where(rank < n_keep, mask, 0.0)


# --------------------------------------------------------------------- projected gradient ascent ---

class PGAConfig(NamedTuple):
    """Projected gradient ascent (Halimi et al. 2022): step size ``lr``, at most ``epochs`` passes
    over the forget data in batches of ``batch_size``, ball radius ``radius_fraction`` of the mean
    distance from the reference to a random model, stop when the validation accuracy falls below
    ``tau`` times the reference model's, then ``finetune_rounds`` FedAvg rounds."""

    lr: float = 0.05
    epochs: int = 5
    batch_size: int = 32
    radius_fraction: float = 1.0 / 3.0
    tau: float = 0.7
    finetune_rounds: int = 5


def reference_model(scenario: Scenario, history: HistoryState, final_params):
    r""":math:`w_{ref} = (N w^T - \sum_{k \in K} w_k^{T-1}) / (N - |K|)` with the targets' last local
    models :math:`w_k^{T-1} = w^{T-1} + U_k^{T-1}` (flat ``[d]``)."""
    n = int(np.asarray(scenario.data.mask).shape[0])
    fk = np.asarray(scenario.forget_ids)
    w_t = flatten_params(final_params)
    w_k = flatten_params(history.prev_params)[None, :] + jnp.asarray(history.last_updates)[fk]
    return (n * w_t - jnp.sum(w_k, axis=0)) / (n - len(fk))


def projected_gradient_ascent(model: UnlearningModel, sim, scenario: Scenario, history: HistoryState, params,
                              cfg: PGAConfig = PGAConfig(), *, seed: int = 0, workdir=None,
                              train_fn=None) -> MethodResult:
    """Halimi et al.'s unlearning at the target client(s) followed by ``cfg.finetune_rounds`` FedAvg
    rounds (module docstring). ``info``: ``steps`` taken, ``stopped_early``, ``radius``."""
    lr = float(cfg.lr)
    if not lr > 0:
        raise PoisonJaxInputError(f"lr must be > 0, got {cfg.lr}")
    epochs = check_positive_int("epochs", cfg.epochs)
    bs = check_positive_int("batch_size", cfg.batch_size)
    check_fraction("radius_fraction", cfg.radius_fraction)
    check_fraction("tau", cfg.tau, low_inclusive=True)
    like = params
    apply = model.fns.apply
    w_ref = reference_model(scenario, history, params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 31337), 3)
    rand = jnp.stack([flatten_params(model.fns.init(k)) for k in keys])
    radius = float(cfg.radius_fraction * jnp.mean(jnp.linalg.norm(rand - w_ref[None], axis=1)))
    xv, yv = jnp.asarray(scenario.data.x_aux), jnp.asarray(scenario.data.y_aux)
    acc = lambda wf: training.accuracy(apply(unflatten_like(wf, like), xv), yv)  # noqa: E731
    tau_abs = float(cfg.tau * acc(w_ref))
    xf, yf = pooled(scenario.data, scenario.forget_ids)
    xf, yf = jnp.asarray(xf), jnp.asarray(yf)
    n_f = int(yf.shape[0])
    bsz = min(bs, n_f)

    def project(wf):
        v = wf - w_ref
        nv = jnp.linalg.norm(v)
        return w_ref + v * jnp.minimum(1.0, radius / jnp.maximum(nv, 1e-12))

    def loss(wf, bx, by, bw):
        ce = optax.softmax_cross_entropy_with_integer_labels(apply(unflatten_like(wf, like), bx), by)
        return jnp.sum(ce * bw) / jnp.maximum(bw.sum(), 1.0)

    @jax.jit
    def ascend(w0, key):
        ekeys = jax.random.split(key, epochs)
        idx, wts = jax.vmap(lambda k: training.epoch_batches(k, jnp.ones((n_f,)), bsz))(ekeys)
        idx, wts = idx.reshape(-1, bsz), wts.reshape(-1, bsz)

        def body(carry, xs):
            wf, stopped, steps = carry
            bi, bw = xs
            g = jax.grad(loss)(wf, xf[bi], yf[bi], bw)
            cand = project(wf + lr * g)
            fail = acc(cand) < tau_abs
            stop = stopped | fail
            return (jnp.where(stop, wf, cand), stop, steps + jnp.where(stop, 0, 1)), None

        (wf, stopped, steps), _ = jax.lax.scan(body, (project(w0), jnp.bool_(False), jnp.int32(0)), (idx, wts))
        return wf, stopped, steps

    wf, stopped, steps = ascend(flatten_params(params), jax.random.PRNGKey(seed + 7))
    unlearned = unflatten_like(wf, like)
    ft = finetune_only(model, sim, scenario, unlearned, cfg.finetune_rounds, seed=seed, workdir=workdir,
                       train_fn=train_fn)
    fwd = C.forward_flops(model.module, params, model.sample)
    steps = int(steps)
    ascent = C.Cost(1, float(C.model_bytes(params)),
                    float(steps * bsz * 3.0 * fwd + (steps + 1) * int(yv.shape[0]) * fwd), 0.0, 0.0)
    return MethodResult(ft.params, ascent + ft.cost, ft.metrics,
                        {"steps": steps, "stopped_early": bool(stopped), "radius": radius, "tau_abs": tau_abs,
                         "unlearned_params": unlearned, "ascent_cost": ascent})
