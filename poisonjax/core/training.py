r"""Differentiable, vmappable training of victims (DESIGN.md section 2, "Victim").

Everything here is a pure function built on ``lax.scan`` over optax steps, so it can be

* differentiated end to end (bilevel attacks take gradients *through* training with respect to data
  or graph structure that the loss closes over),
* ``jax.vmap``-ed over PRNG keys to train K victims at once (:func:`train_ensemble`),
* ``jax.vmap``/``shard_map``-ed over clients with padded local datasets (masks).

Optimisation follows the usual update

.. math::  g_t = \nabla_\theta \frac{\sum_{i \in B_t} w_i \ell(\theta_t; x_i)}{\max(1, \sum_{i\in B_t} w_i)},
           \qquad (u_t, s_{t+1}) = \mathrm{opt.update}(g_t, s_t, \theta_t), \qquad \theta_{t+1} = \theta_t + u_t,

where :math:`w_i \in \{0, 1\}` is the padding mask (or any non-negative example weight). A step
whose batch holds no valid example (total weight 0) leaves parameters *and* optimiser state
unchanged, so a padded client with ``n_i`` examples makes exactly ``ceil(n_i / B)`` updates per epoch.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

PyTree = Any


class TrainResult(NamedTuple):
    """``params`` after training and the per-step training ``losses`` (shape ``[num_steps]``)."""

    params: PyTree
    losses: jax.Array


def _masked_update(do_update, new, old):
    return jax.tree.map(lambda n, o: jnp.where(do_update, n, o), new, old)


def train_full_batch(loss_fn: Callable[[PyTree, jax.Array], jax.Array], params: PyTree,
                     optimizer: optax.GradientTransformation, num_steps: int,
                     key: Optional[jax.Array] = None, *, remat: bool = False) -> TrainResult:
    r"""Run ``num_steps`` full-batch optimiser steps, :math:`\theta_{t+1} = \theta_t + \mathrm{opt}(\nabla_\theta L(\theta_t, k_t))`.

    Args:
      loss_fn: ``loss_fn(params, key) -> scalar``; it may close over traced values (e.g. an
        adjacency matrix) -- the result is differentiable with respect to them (unrolled
        meta-gradients).
      params: initial parameters (pytree).
      optimizer: an optax transformation.
      num_steps: static number of steps (the ``lax.scan`` length).
      key: PRNG key, split once per step (for dropout/sampling); a fixed key is used if ``None``.
      remat: wrap each step in ``jax.checkpoint`` so that reverse-mode memory is O(params)
        per step instead of O(activations) (use for long unrolls).

    Returns:
      :class:`TrainResult` with the final params and the ``[num_steps]`` losses.
    """
    key = jax.random.PRNGKey(0) if key is None else key
    opt_state = optimizer.init(params)

    def step(carry, k):
        p, s = carry
        loss, g = jax.value_and_grad(loss_fn)(p, k)
        upd, s = optimizer.update(g, s, p)
        return (optax.apply_updates(p, upd), s), loss

    if remat:
        step = jax.checkpoint(step)
    (params, _), losses = jax.lax.scan(step, (params, opt_state), jax.random.split(key, num_steps))
    return TrainResult(params, losses)


def epoch_batches(key: jax.Array, mask: jax.Array, batch_size: int):
    """Shuffle the valid examples of a padded dataset into fixed-size batches.

    Args:
      key: PRNG key.
      mask: ``[N]`` bool/float validity mask (padded examples are 0).
      batch_size: ``B``.

    Returns:
      ``(idx, weights)``, each ``[ceil(N / B), B]``: example indices (valid ones first, in random
      order) and their weights (0 for padding). Shapes depend only on ``N`` and ``B``.
    """
    n = mask.shape[0]
    n_batches = -(-n // batch_size)
    total = n_batches * batch_size
    u = jax.random.uniform(key, (n,))
    order = jnp.argsort(jnp.where(mask > 0, u, 2.0 + u))
    order = jnp.concatenate([order, jnp.zeros((total - n,), order.dtype)])
    w = jnp.concatenate([mask.astype(jnp.float32)[order[:n]], jnp.zeros((total - n,), jnp.float32)])
    return order.reshape(n_batches, batch_size), w.reshape(n_batches, batch_size)


def _trainable_optimizer(optimizer: optax.GradientTransformation, trainable) -> optax.GradientTransformation:
    """``optimizer`` on the leaves where ``trainable`` is True, zero updates elsewhere
    (``optax.multi_transform`` with :func:`optax.set_to_zero`: frozen leaves keep no optimiser state)."""
    def labels(params):
        t = trainable(params) if callable(trainable) else trainable
        return jax.tree.map(lambda b: "train" if bool(b) else "freeze", t)
    return optax.multi_transform({"train": optimizer, "freeze": optax.set_to_zero()}, labels)


def split_variables(variables: PyTree):
    """``(params, state)`` of a victim's variables: a flax ``{"params": ..., "batch_stats": ...}``
    dict gives its ``"params"`` collection and a dict of the other collections; any other pytree is
    all parameters (state ``None``)."""
    if isinstance(variables, dict) and "params" in variables:
        return variables["params"], {k: v for k, v in variables.items() if k != "params"}
    return variables, None


def merge_variables(params: PyTree, state) -> PyTree:
    """Inverse of :func:`split_variables`."""
    if state is None:
        return params
    return {"params": params, **state}


def prepare_optimizer(optimizer: optax.GradientTransformation, trainable=None) -> optax.GradientTransformation:
    """``optimizer`` restricted to the ``trainable`` leaves (``None``: all leaves); see :func:`train_minibatch`."""
    return optimizer if trainable is None else _trainable_optimizer(optimizer, trainable)


def init_train_carry(params: PyTree, optimizer: optax.GradientTransformation, *, stateful: bool = False):
    """``(theta, opt_state, state)``: the optimised ``"params"`` (or the whole pytree), the optimiser
    state and the other collections of ``params`` (see :func:`split_variables`); ``optimizer`` as
    returned by :func:`prepare_optimizer`. The carry of :func:`make_train_step`."""
    theta, state = split_variables(params)
    if stateful and not state:
        raise ValueError("stateful=True needs variables {'params': ..., <collections>} with at least one "
                         "non-'params' collection (e.g. 'batch_stats')")
    return theta, optimizer.init(theta), state


def minibatch_schedule(key: jax.Array, mask: jax.Array, epochs: int, batch_size: Optional[int]):
    r"""The per-step inputs of :func:`train_minibatch`: ``(idx [T, B], w [T, B], keys [T, 2])``.

    Mini-batches (``batch_size`` = ``B``): epoch ``e`` shuffles with ``split(key, epochs)[e]``
    (:func:`epoch_batches`), ``T = epochs * ceil(N / B)`` and the step keys are
    ``split(fold_in(key, 1), T)``. Full batch (``batch_size=None``): every step sees the whole
    dataset in its stored order, ``idx`` and ``w`` are ``None`` (the mask is the weight), ``T = epochs``
    and the step keys are ``split(key, epochs)`` (as :func:`train_full_batch`).
    """
    if batch_size is None:
        return None, None, jax.random.split(key, epochs)
    ekeys = jax.random.split(key, epochs)
    idx, w = jax.vmap(lambda k: epoch_batches(k, mask, batch_size))(ekeys)
    idx = idx.reshape(-1, batch_size)
    w = w.reshape(-1, batch_size)
    return idx, w, jax.random.split(jax.random.fold_in(key, 1), idx.shape[0])


def epoch_schedule(key: jax.Array, mask: jax.Array, epochs: int, batch_size: int, epoch):
    """Epoch ``epoch`` (may be traced) of :func:`minibatch_schedule`: ``(idx [S, B], w [S, B], keys [S, 2])``
    with ``S = ceil(N / B)``; concatenating epochs ``0..epochs-1`` gives the whole schedule bit for bit."""
    idx, w = epoch_batches(jax.random.split(key, epochs)[epoch], mask, batch_size)
    s = idx.shape[0]
    skeys = jax.random.split(jax.random.fold_in(key, 1), epochs * s)
    return idx, w, jax.lax.dynamic_slice_in_dim(skeys, epoch * s, s)


def make_train_step(per_example_loss: Callable, optimizer: optax.GradientTransformation, data: PyTree,
                    mask: jax.Array, *, stateful: bool = False,
                    augment: Optional[Callable[[jax.Array, jax.Array], jax.Array]] = None,
                    augment_key: str = "x", select: Optional[Callable[[PyTree], jax.Array]] = None):
    r"""The one optimiser step of :func:`train_minibatch`, for ``lax.scan``.

    ``step(carry, (idx [B] | None, w [B] | None, key)) -> (carry, loss)`` with
    ``carry = (theta, opt_state, state)`` (:func:`init_train_carry`), plus ``(best_theta, best_state,
    best_score)`` when ``select`` is given. ``idx=None`` is a full-batch step on ``data`` with weights
    ``mask`` (``mask=None``: the plain mean over the dataset). ``optimizer`` as returned by
    :func:`prepare_optimizer`.
    """
    def step(carry, xs):
        p, s, st = carry[:3]
        bidx, bw, k = xs
        batch = data if bidx is None else jax.tree.map(lambda a: a[bidx], data)
        bw = mask if bw is None else bw
        denom = None if bw is None else jnp.maximum(bw.sum(), 1.0)
        if augment is not None:
            batch = dict(batch)
            batch[augment_key] = augment(jax.random.fold_in(k, 0x61756720), batch[augment_key])
        # full batch without a mask: the plain mean (the same program as a hand-written full-batch loss)
        reduce = (lambda per: jnp.mean(per)) if bw is None else (lambda per: jnp.sum(per * bw) / denom)

        def loss(p_):
            if stateful:
                per, new_st = per_example_loss(merge_variables(p_, st), batch, k)
                return reduce(per), new_st
            return reduce(per_example_loss(merge_variables(p_, st), batch, k)), st

        (l, st2), g = jax.value_and_grad(loss, has_aux=True)(p)
        upd, s2 = optimizer.update(g, s, p)
        p2 = optax.apply_updates(p, upd)
        if stateful:
            st2 = {**st, **st2}
        if bw is None:
            new = (p2, s2, st2)
        else:
            has = bw.sum() > 0
            new = (_masked_update(has, p2, p), _masked_update(has, s2, s), _masked_update(has, st2, st))
        if select is not None:
            best_p, best_st, best_v = carry[3:]
            v = select(merge_variables(new[0], new[2]))
            better = v < best_v
            new = new + (_masked_update(better, new[0], best_p), _masked_update(better, new[2], best_st),
                         jnp.minimum(v, best_v))
        return new, l

    return step


def train_minibatch(per_example_loss: Callable[[PyTree, PyTree, jax.Array], jax.Array], params: PyTree,
                    optimizer: optax.GradientTransformation, data: PyTree, key: jax.Array, *,
                    epochs: int, batch_size: Optional[int], mask: Optional[jax.Array] = None,
                    remat: bool = False, stateful: bool = False, trainable=None,
                    augment: Optional[Callable[[jax.Array, jax.Array], jax.Array]] = None,
                    augment_key: str = "x", select: Optional[Callable[[PyTree], jax.Array]] = None) -> TrainResult:
    r"""Mini-batch (or full-batch) training over a (possibly padded) dataset, shuffled each epoch.

    The objective of a step is the weighted mean
    :math:`\sum_{i\in B} w_i \ell_i / \max(1, \sum_{i\in B} w_i)` of
    ``per_example_loss(params, batch, key) -> [B]``; empty batches are skipped (see module doc).

    Args:
      per_example_loss: ``(params, batch, key) -> [B]`` losses; ``batch`` is ``data`` indexed on its
        leading axis. With ``stateful=True`` it receives the full variables and returns
        ``([B] losses, updated_state)`` (flax ``mutable=`` output, e.g. ``{"batch_stats": ...}``).
      params: initial parameters: any pytree, or flax variables ``{"params": ..., <other
        collections>}``, of which only the ``"params"`` collection is optimised (and ``trainable``
        refers to it); the loss always receives the full variables.
      optimizer: optax transformation (weight decay: ``optax.chain(optax.add_decayed_weights(wd), ...)``).
      data: pytree whose leaves all have leading size ``N`` (e.g. ``{"x": [N,H,W,C], "y": [N]}``).
      key: PRNG key (shuffling and per-step keys, :func:`minibatch_schedule`).
      epochs: number of passes; the scan has ``epochs * ceil(N / batch_size)`` steps.
      batch_size: ``B`` (static); ``None``: full batch -- one step per epoch on the whole dataset in
        its order (transductive training: e.g. ``data = {"node": idx_train, "y": labels[idx_train]}``
        whose loss runs a GCN on the whole graph and reads the rows ``node``).
      mask: ``[N]`` validity mask or example weights; all ones if ``None`` (full batch without a
        mask: the objective is ``mean(loss)``, the same numbers as the weighted mean with unit weights).
      remat: ``jax.checkpoint`` each step (for differentiating through long training).
      stateful: the loss updates non-parameter collections (BatchNorm running statistics): the
        state returned by the loss replaces the old one after every non-empty step.
      trainable: optional pytree of bools over the parameters (or ``params -> pytree of bools``);
        False leaves get zero updates and stay bit-identical (``optax.multi_transform``).
      augment: optional ``augment(key, x) -> x`` applied to ``batch[augment_key]`` at every step
        (fresh key per step; the loss's key is unchanged).
      select: optional model selection ``select(variables) -> scalar`` (e.g. a validation loss),
        evaluated after every step: the variables of the step with the lowest value are returned
        instead of the last ones (the first such step on ties; the initial variables if no step is
        below ``inf``).

    Returns:
      :class:`TrainResult`; ``losses`` has one entry per step (0 for skipped empty batches).
    """
    n = jax.tree.leaves(data)[0].shape[0]
    if batch_size is not None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer or None (full batch), got {batch_size}")
        batch_size = min(batch_size, n)
    if mask is not None:
        mask = mask.astype(jnp.float32)
    elif batch_size is not None:
        mask = jnp.ones((n,), jnp.float32)
    idx, w, skeys = minibatch_schedule(key, mask, epochs, batch_size)
    optimizer = prepare_optimizer(optimizer, trainable)
    carry = init_train_carry(params, optimizer, stateful=stateful)
    if select is not None:
        carry = carry + (carry[0], carry[2], jnp.asarray(jnp.inf, jnp.float32))
    step = make_train_step(per_example_loss, optimizer, data, mask, stateful=stateful, augment=augment,
                           augment_key=augment_key, select=select)
    if remat:
        step = jax.checkpoint(step)
    carry, losses = jax.lax.scan(step, carry, (idx, w, skeys))
    theta, state = (carry[3], carry[4]) if select is not None else (carry[0], carry[2])
    return TrainResult(merge_variables(theta, state), losses)


def init_and_train(init_fn: Callable[[jax.Array], PyTree], per_example_loss, optimizer, data, key, *,
                   epochs: int, batch_size: int, mask=None, remat: bool = False, **train_kwargs) -> TrainResult:
    """Initialise a victim with ``init_fn(key)`` and train it with :func:`train_minibatch`
    (``train_kwargs``: ``stateful``, ``trainable``, ``augment``, ``augment_key``).

    A pure function of ``key`` (and of ``data``), so ``jax.vmap`` over keys trains K victims.
    """
    k_init, k_train = jax.random.split(key)
    return train_minibatch(per_example_loss, init_fn(k_init), optimizer, data, k_train,
                           epochs=epochs, batch_size=batch_size, mask=mask, remat=remat, **train_kwargs)


def train_ensemble(init_fn, per_example_loss, optimizer, data, keys: jax.Array, *, epochs: int,
                   batch_size: int, mask=None, data_axis: Optional[int] = None, chunk: Optional[int] = None,
                   mesh=None) -> TrainResult:
    """Train K victims at once: :func:`poisonjax.core.victims.train_victims` (a chunked, optionally
    sharded ``vmap`` of :func:`init_and_train` over ``keys`` ``[K, 2]``) for a stateless model.

    Args:
      data_axis: ``None`` if all victims share ``data``; ``0`` if every leaf of ``data`` (and
        ``mask``) carries a leading K axis (e.g. K different poisoned sets).
      chunk, mesh: victims per chunk and optional device mesh (:func:`poisonjax.core.parallel.chunked_vmap`).

    Returns:
      :class:`TrainResult` whose ``params`` leaves have a leading ``K`` axis (see
      :mod:`poisonjax.core.ensemble`) and ``losses`` is ``[K, steps]``.
    """
    from poisonjax.core.victims import Victim, train_victims
    res = train_victims(Victim(init_fn, per_example_loss, None), optimizer, data, keys, epochs=epochs,
                        batch_size=batch_size, mask=mask, data_axis=data_axis, chunk=chunk, mesh=mesh)
    return TrainResult(res.variables, res.losses)


# ---------------------------------------------------------------- common losses ----------------

def softmax_cross_entropy_loss(apply_fn: Callable, x_key: str = "x", y_key: str = "y"):
    r"""Per-example classification loss :math:`\ell_i = -\log \mathrm{softmax}(f_\theta(x_i))_{y_i}`.

    Returns ``loss(params, batch, key) -> [B]`` for :func:`train_minibatch`, with ``batch`` a dict
    holding integer labels under ``y_key``.
    """
    def loss(params, batch, key):
        logits = apply_fn(params, batch[x_key])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[y_key])
    return loss


def accuracy(logits: jax.Array, labels: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
    r"""Top-1 accuracy :math:`\frac{1}{\sum_i m_i}\sum_i m_i [\arg\max_c z_{ic} = y_i]` (logits ``[N, C]``)."""
    hit = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    if mask is None:
        return hit.mean()
    return jnp.sum(hit * mask) / jnp.maximum(mask.sum(), 1)


def feature_standardization(h: jax.Array, weights: Optional[jax.Array] = None, *, rtol: float = 1e-6):
    r"""Per-feature ``(mean, scale)`` for standardising features ``z = (h - mean) / scale`` (``h [N, D]``).

    With example weights :math:`w_i \ge 0` (default 1),

    .. math:: \mu_d = \frac{\sum_i w_i h_{id}}{\sum_i w_i}, \qquad
              \sigma_d = \sqrt{\frac{\sum_i w_i (h_{id} - \mu_d)^2}{\sum_i w_i}}, \qquad
              s_d = \begin{cases} \sigma_d & \sigma_d > \mathrm{rtol}\,(1 + |\mu_d|) \\ 1 & \text{otherwise,} \end{cases}

    i.e. a (near-)constant feature is centred but not scaled, as scikit-learn's ``StandardScaler`` does.
    Dividing such a feature by :math:`\sigma_d + 10^{-6}` instead multiplies any input that moves it (a trigger
    that wakes a ReLU channel dead on the training data) by :math:`10^6`, so whatever weight a head has left on
    it (its initial value, decayed by the L2 term) can decide the prediction. Every linear probe and
    standardised head in the package uses this one function."""
    h = jnp.asarray(h, jnp.float32)
    w = jnp.ones((h.shape[0],), jnp.float32) if weights is None else jnp.asarray(weights, jnp.float32)
    sw = jnp.maximum(w.sum(), 1e-12)
    mu = (h * w[:, None]).sum(0) / sw
    sd = jnp.sqrt(jnp.maximum(((h - mu) ** 2 * w[:, None]).sum(0) / sw, 0.0))
    return mu, jnp.where(sd > rtol * (1.0 + jnp.abs(mu)), sd, 1.0)
