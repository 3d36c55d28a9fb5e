r"""Victims: train K models on K (poisoned) datasets and evaluate them -- one module for every room.

A *victim* is what a data-poisoning attack is measured on: a model trained from scratch (or
fine-tuned) on the poisoned training set. This module is data-generic: a dataset is any pytree whose
leaves share a leading example axis ``N`` (``{"x": [N, ...], "y": [N]}`` for classification,
``{"x": [N, L], "y": [N]}`` for next-item prediction, ...), and a model is given by a
:class:`Victim` (init, per-example loss, eval-mode apply).

**The one per-example-loss signature** (used by every room):

.. math:: \ell(\text{variables}, \text{batch}, k) \in \mathbb{R}^{B}

``loss(variables, batch, key) -> [B]``; ``variables`` is any parameter pytree or flax variables
``{"params": ..., "batch_stats": ...}``, ``batch`` the dataset pytree indexed on its leading axis,
``key`` a PRNG key (dropout, sampling). A *stateful* victim (BatchNorm) returns
``([B], updated_collections)`` in training mode, as flax's ``apply(..., mutable=["batch_stats"])``
does; its running statistics are updated at every step and used by the eval-mode ``apply``.

**Training** (:func:`train_victims`) of victim :math:`k = 1..K`:

.. math::
    \theta_k^{0} = \mathrm{init}(k^{init}_k)\ (\text{or given variables}),\qquad
    \theta_k^{t+1} = \theta_k^t + \mathrm{opt}\Big(\nabla_\theta
        \frac{\sum_{i \in B_t} m_{k,i}\,\ell(\theta_k^t, A(x_i), k_t)_i}{\max(1, \sum_{i\in B_t} m_{k,i})}\Big)
        \odot \tau,

with mini-batches :math:`B_t` of the (shared or victim-specific) dataset :math:`D_k`, reshuffled
every epoch, validity mask :math:`m_k` (padding), optional augmentation :math:`A` and optional
trainable mask :math:`\tau` (only BatchNorm parameters, only a head, only LoRA adapters: frozen leaves
stay bit-identical). The K trainings are one program: :func:`poisonjax.core.parallel.chunked_vmap`
over victims, ``chunk`` at a time (bounding memory) and sharded over a device ``mesh`` when given.

**Evaluation**: :func:`predict_victims` gives outputs ``[K, N, ...]`` of every victim in eval mode,
chunked over the test set (``batch_size`` test examples at a time) and over victims;
:func:`evaluate_victims` gives the top-1 accuracy ``[K]``
(:math:`\frac{1}{\sum_i m_i}\sum_i m_i[\arg\max_c f_{\theta_k}(x_i)_c = y_i]`).

Poisoned training sets that differ from a shared clean set only in ``P`` rows are trained without
copying the clean set per victim by :func:`train_on_poisoned` (the perturbations are added inside
each mini-batch).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from poisonjax.core.parallel import chunked_vmap
from poisonjax.core.training import init_and_train, train_minibatch
from poisonjax.core.validation import PoisonJaxInputError, check_positive_int

PyTree = Any
PerExampleLoss = Callable[[PyTree, PyTree, jax.Array], Any]
"""``loss(variables, batch, key) -> [B]`` (or ``([B], updated_collections)`` for a stateful victim)."""


class Victim(NamedTuple):
    """A victim model.

    Attributes:
      init: ``key -> variables`` (one model's parameters or flax variables).
      loss: the per-example training loss ``(variables, batch, key) -> [B]``; for a stateful
        victim (BatchNorm) it runs in training mode and returns ``([B], updated_collections)``.
      apply: eval-mode ``(variables, x) -> outputs`` (e.g. logits ``[B, C]``).
      stateful: True when ``loss`` returns updated collections (BatchNorm running statistics).
    """

    init: Callable[[jax.Array], PyTree]
    loss: PerExampleLoss
    apply: Callable[[PyTree, Any], jax.Array]
    stateful: bool = False


class VictimsResult(NamedTuple):
    """``variables``: stacked victim variables (every leaf ``[K, ...]``); ``losses``: ``[K, steps]``
    per-step training losses (weighted batch means; 0 for skipped empty batches)."""

    variables: PyTree
    losses: jax.Array


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    r""":math:`-\log\mathrm{softmax}(z_i)_{y_i}` per example (logits ``[B, C]``, labels ``[B]``)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def flax_victim(module, sample_x, *, loss: Callable[[jax.Array, jax.Array], jax.Array] = softmax_cross_entropy,
                x_key: str = "x", y_key: str = "y", train_kwarg: Optional[str] = "train",
                dropout: bool = False) -> Victim:
    """A :class:`Victim` for a flax.linen ``module`` mapping ``x -> outputs``, with or without BatchNorm.

    ``init(key) = module.init(key, sample_x[:1], ...)``. If the variables hold collections besides
    ``"params"`` (BatchNorm's ``"batch_stats"``) the victim is stateful: the training loss calls
    ``module.apply(v, x, **{train_kwarg: True}, mutable=[those collections])`` and returns the
    updated running statistics; ``apply`` is eval mode (``train_kwarg=False``), which reads them.
    Modules without a ``train_kwarg`` argument are called without it. In training mode BatchNorm
    normalises with the statistics of the whole mini-batch, padded rows included (a batch is padded
    only at the end of an epoch when ``B`` does not divide ``N``, or where the mask is 0).

    Args:
      module: flax module; ``module(x, train=...) -> outputs`` when ``train_kwarg`` is set.
      sample_x: one example batch (``[b, ...]``) to initialise shapes.
      loss: ``(outputs [B, ...], y [B]) -> [B]`` (softmax cross-entropy by default).
      x_key, y_key: where the batch dict holds inputs and targets.
      train_kwarg: name of the module's train/eval flag (``None``: the module has none).
      dropout: pass ``rngs={"dropout": key}`` in training mode.
    """
    sample = jnp.asarray(sample_x)[:1]
    kw_train = {} if train_kwarg is None else {train_kwarg: True}
    kw_eval = {} if train_kwarg is None else {train_kwarg: False}
    try:
        probe = jax.eval_shape(lambda k: module.init(k, sample, **kw_eval), jax.random.PRNGKey(0))
    except TypeError:
        if not kw_eval:
            raise
        kw_train, kw_eval = {}, {}   # the module has no train flag
        probe = jax.eval_shape(lambda k: module.init(k, sample), jax.random.PRNGKey(0))
    collections = tuple(c for c in probe if c != "params")

    def init(key):
        return module.init(key, sample, **kw_eval)

    def apply(variables, x):
        return module.apply(variables, x, **kw_eval)

    if collections:
        def train_loss(variables, batch, key):
            rngs = {"dropout": key} if dropout else None
            out, upd = module.apply(variables, batch[x_key], **kw_train, mutable=list(collections), rngs=rngs)
            return loss(out, batch[y_key]), upd
        return Victim(init, train_loss, apply, True)

    def plain_loss(variables, batch, key):
        rngs = {"dropout": key} if dropout else None
        return loss(module.apply(variables, batch[x_key], **kw_train, rngs=rngs), batch[y_key])

    return Victim(init, plain_loss, apply, False)


def as_victim(init_fn: Callable, loss: PerExampleLoss, apply_fn: Callable, stateful: bool = False) -> Victim:
    """Bundle plain functions into a :class:`Victim` (``loss`` in the one signature)."""
    return Victim(init_fn, loss, apply_fn, stateful)


def _axes_of(name, axis):
    if axis not in (None, 0):
        raise PoisonJaxInputError(f"{name} must be None (shared by all victims) or 0 (leading K axis), got {axis!r}")
    return axis


def _check_keys(keys):
    keys = jnp.asarray(keys)
    if keys.ndim != 2:
        raise PoisonJaxInputError(f"keys must be [K, 2] PRNG keys (jax.random.split(key, K)), got shape {keys.shape}")
    return keys


def _check_batch_size(batch_size):
    return None if batch_size is None else check_positive_int("batch_size", batch_size)


def _check_data(data, mask, k, data_axis):
    data_axis = _axes_of("data_axis", data_axis)
    if data_axis == 0:
        sizes = {l.shape[0] for l in jax.tree.leaves(data)}
        if sizes != {k}:
            raise PoisonJaxInputError(f"data with data_axis=0 must have leading size K={k} on every leaf, got {sorted(sizes)}")
    if mask is not None:
        want = (k, jax.tree.leaves(data)[0].shape[1]) if data_axis == 0 else jax.tree.leaves(data)[0].shape[:1]
        if tuple(jnp.shape(mask)) != tuple(want):
            raise PoisonJaxInputError(f"mask must have shape {tuple(want)} (following data_axis), got {jnp.shape(mask)}")
    return data_axis


def train_victim(victim: Victim, optimizer: optax.GradientTransformation, data: PyTree, key: jax.Array, *,
                 epochs: int, batch_size: Optional[int], mask: Optional[jax.Array] = None,
                 variables: Optional[PyTree] = None, split_key: bool = True, trainable=None,
                 augment: Optional[Callable[[jax.Array, jax.Array], jax.Array]] = None, augment_key: str = "x",
                 select: Optional[Callable[[PyTree], jax.Array]] = None, remat: bool = False) -> VictimsResult:
    r"""Train one victim (no victim axis): the per-victim program that :func:`train_victims` maps.

    From scratch (``variables=None``): ``k_init, k_train = split(key)``, ``victim.init(k_init)``,
    then :func:`poisonjax.core.training.train_minibatch` with ``k_train``. From given ``variables``
    (fine-tuning, a federated client starting from the global model): training key
    ``split(key)[1]`` (``split_key=True``) or ``key`` itself (``split_key=False``: the caller derived
    the victim's key already). ``batch_size=None`` is full-batch training (one step per epoch on the
    whole dataset; transductive models), ``select`` keeps the variables of the step with the lowest
    ``select(variables)`` (validation-loss model selection). Returns :class:`VictimsResult` without a
    leading K axis (``losses [steps]``).
    """
    kw = dict(epochs=check_positive_int("epochs", epochs), batch_size=_check_batch_size(batch_size), mask=mask,
              remat=remat, stateful=victim.stateful, trainable=trainable, augment=augment, augment_key=augment_key,
              select=select)
    if variables is None:
        res = init_and_train(victim.init, victim.loss, optimizer, data, key, **kw)
    else:
        res = train_minibatch(victim.loss, variables, optimizer, data,
                              jax.random.split(key)[1] if split_key else key, **kw)
    return VictimsResult(res.params, res.losses)


def train_victims(victim: Victim, optimizer: optax.GradientTransformation, data: PyTree, keys: jax.Array, *,
                  epochs: int, batch_size: Optional[int], mask: Optional[jax.Array] = None,
                  data_axis: Optional[int] = None, variables: Optional[PyTree] = None,
                  variables_axis: Optional[int] = 0, split_keys: bool = True, trainable=None,
                  augment: Optional[Callable[[jax.Array, jax.Array], jax.Array]] = None, augment_key: str = "x",
                  select: Optional[Callable[[PyTree], jax.Array]] = None,
                  chunk: Optional[int] = None, mesh=None, remat: bool = False) -> VictimsResult:
    r"""Train K victims, one per key, as one vmapped (chunked, optionally sharded) program.

    Victim ``k`` starts from ``victim.init(split(keys[k])[0])`` (or from ``variables``) and runs
    ``epochs`` passes of mini-batch training (:func:`poisonjax.core.training.train_minibatch`) on its
    dataset with the key ``split(keys[k])[1]``; see the module docstring for the update and
    :func:`train_victim` for the single-victim program.

    Args:
      victim: :class:`Victim` (e.g. :func:`flax_victim`).
      optimizer: optax transformation (SGD, Adam, ..., weight decay via ``optax.chain``), the same for
        every victim.
      data: dataset pytree, leaves ``[N, ...]`` (shared, ``data_axis=None``) or ``[K, N, ...]``
        (one dataset per victim, ``data_axis=0``; pad to a common ``N`` and mask the padding).
      keys: ``[K, 2]`` PRNG keys, one per victim (``jax.random.split(key, K)``).
      epochs, batch_size: passes and mini-batch size ``B`` (static); ``batch_size=None``: full batch
        (one step per epoch on the whole dataset, e.g. the training nodes of a transductive GCN).
      mask: validity mask / example weights, ``[N]`` or ``[K, N]`` (following ``data_axis``).
      data_axis: ``None`` (shared dataset) or ``0`` (stacked per victim).
      variables: optional starting variables (fine-tuning, federated clients): one model's
        (``variables_axis=None``, broadcast to every victim) or stacked ``[K, ...]`` (``variables_axis=0``).
        ``keys`` then only drive shuffling and the loss's randomness.
      split_keys: with ``variables``, victim ``k`` trains with ``split(keys[k])[1]`` (True) or with
        ``keys[k]`` itself (False).
      trainable: optional pytree of bools over the ``"params"`` collection (or a function
        ``params -> pytree of bools``); frozen leaves keep their exact value.
      augment: optional ``augment(key, x) -> x`` applied to ``batch[augment_key]`` at every step.
      select: optional ``select(variables) -> scalar`` evaluated after every step; each victim returns
        its variables of the lowest value (e.g. the validation loss: best-validation model selection).
      chunk: victims per vmapped chunk (``None``: all K at once).
      mesh: optional 1-D device mesh: each chunk's victims are sharded over its devices.
      remat: checkpoint each training step (when differentiating through training).

    Returns:
      :class:`VictimsResult` with stacked ``variables`` (leaves ``[K, ...]``) and ``losses [K, steps]``.
    """
    epochs = check_positive_int("epochs", epochs)
    batch_size = _check_batch_size(batch_size)
    keys = _check_keys(keys)
    data_axis = _check_data(data, mask, keys.shape[0], data_axis)
    kw = dict(epochs=epochs, batch_size=batch_size, remat=remat, trainable=trainable, augment=augment,
              augment_key=augment_key, select=select, split_key=split_keys)
    m_axis = data_axis if mask is not None else None
    if variables is None:
        fn = chunked_vmap(lambda key, d, m: train_victim(victim, optimizer, d, key, mask=m, **kw),
                          chunk=chunk, mesh=mesh, in_axes=(0, data_axis, m_axis))
        return fn(keys, data, mask)
    variables_axis = _axes_of("variables_axis", variables_axis)
    fn = chunked_vmap(lambda key, d, m, v: train_victim(victim, optimizer, d, key, mask=m, variables=v, **kw),
                      chunk=chunk, mesh=mesh, in_axes=(0, data_axis, m_axis, variables_axis))
    return fn(keys, data, mask, variables)


def eval_batches(x, batch_size: Optional[int]):
    r"""Split the leading axis of every leaf of ``x`` (``N`` rows) into blocks of
    :math:`b = \min(\text{batch\_size}, N)` rows (``None``: one block), padding with copies of the last row to
    :math:`\lceil N/b \rceil\, b` rows. Returns ``(blocks [N_b, b, ...], N)``: map over the blocks, then keep
    the first ``N`` rows of the flattened outputs."""
    n = jax.tree.leaves(x)[0].shape[0]
    b = n if batch_size is None else max(1, min(int(batch_size), n))
    pad = (-n) % b
    xp = jax.tree.map(lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) if pad else a, x)
    return jax.tree.map(lambda a: a.reshape((-1, b) + a.shape[1:]), xp), n


def predict_victims(apply_fn: Callable, variables: PyTree, x, *, batch_size: Optional[int] = 1024,
                    chunk: Optional[int] = None, mesh=None, x_axis: Optional[int] = None) -> jax.Array:
    r"""Eval-mode outputs :math:`f_{\theta_k}(x_i)` of every victim: ``[K, N, ...]``.

    Args:
      apply_fn: eval-mode ``(variables, x [b, ...]) -> outputs [b, ...]`` (e.g. ``Victim.apply``).
      variables: stacked victims (leaves ``[K, ...]``).
      x: test inputs (array or pytree), leaves ``[N, ...]`` (shared) or ``[K, N, ...]`` (``x_axis=0``).
      batch_size: test examples per forward pass (``lax.map`` over ``ceil(N / batch_size)``
        batches, bounding activation memory); ``None``: all at once.
      chunk, mesh: victims per chunk and optional device mesh (:func:`chunked_vmap`).
    """
    x_axis = _axes_of("x_axis", x_axis)

    def one(v, xs):
        blocks, n = eval_batches(xs, batch_size)
        out = jax.lax.map(lambda b: apply_fn(v, b), blocks)
        return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:])[:n], out)

    return chunked_vmap(one, chunk=chunk, mesh=mesh, in_axes=(0, x_axis))(variables, x)


def evaluate_victims(apply_fn: Callable, variables: PyTree, x, y, *, mask: Optional[jax.Array] = None,
                     batch_size: Optional[int] = 1024, chunk: Optional[int] = None, mesh=None,
                     x_axis: Optional[int] = None) -> jax.Array:
    r"""Top-1 accuracy of every victim, ``[K]``:
    :math:`a_k = \sum_i m_i [\arg\max_c f_{\theta_k}(x_i)_c = y_i] / \max(1, \sum_i m_i)`.

    Args as :func:`predict_victims`; ``y``: ``[N]`` (or ``[K, N]`` with ``x_axis=0``) integer
    labels; ``mask``: optional ``[N]`` / ``[K, N]`` validity mask (padding).
    """
    logits = predict_victims(apply_fn, variables, x, batch_size=batch_size, chunk=chunk, mesh=mesh, x_axis=x_axis)
    hit = (jnp.argmax(logits, -1) == jnp.asarray(y)).astype(jnp.float32)
    if mask is None:
        return hit.mean(-1)
    m = jnp.broadcast_to(jnp.asarray(mask, jnp.float32), hit.shape)
    return (hit * m).sum(-1) / jnp.maximum(m.sum(-1), 1.0)


# ------------------------------------------------------------------ poisoned sets without copies ----

def poison_slots(poison_index, n: int) -> jax.Array:
    """``slot [N]``: for training example ``j``, its row in the poison array if it is a poison
    (``poison_index[i] = j``), else ``P`` (a zero row). ``poison_index [P]``, ``-1`` = unused."""
    poison_index = jnp.asarray(poison_index)
    p = poison_index.shape[0]
    return jnp.full((n,), p, jnp.int32).at[jnp.where(poison_index >= 0, poison_index, n)].set(
        jnp.arange(p, dtype=jnp.int32), mode="drop")


def poisoned_images(train_x, poison_index, poison_delta):
    """``train_x`` with ``poison_delta [P, ...]`` added at rows ``poison_index [P]`` (a copy)."""
    slot = poison_slots(jnp.asarray(poison_index), train_x.shape[0])
    dpad = jnp.concatenate([poison_delta, jnp.zeros((1,) + poison_delta.shape[1:], poison_delta.dtype)])
    return train_x + dpad[slot]


def train_on_poisoned(init_fn: Callable, per_example_loss: PerExampleLoss, optimizer, train_x, train_y, key,
                      poison_index, poison_delta, *, epochs: int, batch_size: int, **train_kwargs):
    r"""Train one victim from scratch on the poisoned set :math:`\{(x_j + \delta_{s(j)}, y_j)\}`.

    The clean set is not copied: each mini-batch adds the perturbations of the poisons it contains
    (:func:`poison_slots`), so vmapping over victims with different poisons costs O(P) memory per
    victim, not O(N). ``per_example_loss(variables, {"x", "y"}, key) -> [B]`` (the one signature;
    with ``stateful=True`` in ``train_kwargs`` it returns ``([B], collections)``). Returns the
    trained variables.
    """
    train_x = jnp.asarray(train_x)
    slot = poison_slots(jnp.asarray(poison_index), train_x.shape[0])
    dpad = jnp.concatenate([poison_delta, jnp.zeros((1,) + poison_delta.shape[1:], poison_delta.dtype)])

    def loss(params, batch, k):
        x = batch["x"] + dpad[batch["slot"]]
        return per_example_loss(params, {"x": x, "y": batch["y"]}, k)

    data = {"x": train_x, "y": jnp.asarray(train_y), "slot": slot}
    return init_and_train(init_fn, loss, optimizer, data, key, epochs=epochs, batch_size=batch_size,
                          **train_kwargs).params


def stack_datasets(datasets, pad_to: Optional[int] = None):
    """Stack K datasets (pytrees with leaves ``[N_k, ...]``) into ``(data [K, N, ...], mask [K, N])``,
    zero-padding each to ``N = max(N_k)`` (or ``pad_to``); the mask is 1 on real examples."""
    datasets = list(datasets)
    if not datasets:
        raise PoisonJaxInputError("datasets must be a non-empty sequence of dataset pytrees")
    sizes = [jax.tree.leaves(d)[0].shape[0] for d in datasets]
    n = max(sizes) if pad_to is None else int(pad_to)
    if n < max(sizes):
        raise PoisonJaxInputError(f"pad_to={pad_to} is smaller than the largest dataset ({max(sizes)})")
    pad = lambda a, m: np.concatenate([np.asarray(a), np.zeros((n - m,) + np.shape(a)[1:], np.asarray(a).dtype)])
    data = jax.tree.map(lambda *ls: jnp.asarray(np.stack([pad(l, s) for l, s in zip(ls, sizes)])), *datasets)
    mask = jnp.asarray(np.stack([np.arange(n) < s for s in sizes]).astype(np.float32))
    return data, mask


# ------------------------------------------------------------------ resumable K-victim training ----

class VictimTrainingState(NamedTuple):
    """State of :class:`VictimTraining` (a pytree; checkpointed by :mod:`poisonjax.core.runner`).

    ``params``/``opt_state``/``collections``: every victim's optimised parameters, optimiser state and
    other variable collections (BatchNorm statistics; ``{}`` or ``None`` without), leaves ``[K, ...]``;
    ``keys [K, 2]``: each victim's training key; ``epoch``: epochs done (int32);
    ``losses [K, S]``: the last epoch's per-step training losses."""

    params: PyTree
    opt_state: PyTree
    collections: PyTree
    keys: jax.Array
    epoch: jax.Array
    losses: jax.Array


class VictimTraining(NamedTuple):
    r"""K-victim mini-batch training as a resumable iterative process (an
    :class:`~poisonjax.core.types.AttackOptimizer`: ``init``/``step``/``metrics``), one ``step`` = one
    epoch of every victim, so :func:`poisonjax.core.runner.run` can checkpoint it every few epochs and
    resume a killed run from its last checkpointed epoch.

    The steps are those of :func:`train_victims` (same keys, shuffles, per-step keys and update:
    :func:`poisonjax.core.training.epoch_schedule` is the slice of the whole schedule for one epoch),
    so running ``epochs`` steps gives the victims of ``train_victims(victim, optimizer, data, keys,
    epochs=epochs, ...)``; a resumed run is the same program as an uninterrupted one (bit-equal).

    The problem (a pytree: :meth:`problem`) holds the dataset, the mask, the victims' keys ``[K, 2]``
    and optionally starting variables; the runner's own key is not used (the victims' keys are).
    Mini-batches only (no ``select``; full-batch training of a small graph is cheap enough not to resume).

    Fields: ``victim``, ``optimizer``, ``epochs``, ``batch_size`` (as :func:`train_victims`),
    ``data_axis`` (``None`` shared / ``0`` per victim), ``variables_axis``, ``split_keys``,
    ``trainable``, ``augment``, ``augment_key``, ``chunk``, ``mesh``.

    Example::

        vt = VictimTraining(flax_victim(model, x[:1]), optax.adam(1e-3), epochs=30, batch_size=64)
        res = runner.run(vt.as_attack_optimizer(), vt.problem({"x": x, "y": y}, keys), vt.epochs,
                         workdir="cell", checkpoint_every=5, chunk_size=5)
        variables = vt.variables(res.state)            # leaves [K, ...]
    """

    victim: Victim
    optimizer: optax.GradientTransformation
    epochs: int
    batch_size: int
    data_axis: Optional[int] = None
    variables_axis: Optional[int] = 0
    split_keys: bool = True
    trainable: Any = None
    augment: Optional[Callable[[jax.Array, jax.Array], jax.Array]] = None
    augment_key: str = "x"
    chunk: Optional[int] = None
    mesh: Any = None

    def problem(self, data: PyTree, keys: jax.Array, mask: Optional[jax.Array] = None,
                variables: Optional[PyTree] = None) -> dict:
        """The runner's problem: ``{"data", "mask", "keys", "variables"}`` (checked as in :func:`train_victims`)."""
        keys = _check_keys(keys)
        _check_data(data, mask, keys.shape[0], self.data_axis)
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        if variables is not None:
            _axes_of("variables_axis", self.variables_axis)
        return {"data": data, "mask": None if mask is None else jnp.asarray(mask, jnp.float32), "keys": keys,
                "variables": variables}

    def _opt(self):
        from poisonjax.core.training import prepare_optimizer
        return prepare_optimizer(self.optimizer, self.trainable)

    def init(self, key, problem) -> VictimTrainingState:
        """Every victim initialised (``victim.init(split(keys[k])[0])`` or the given variables)."""
        from poisonjax.core.training import init_train_carry
        opt = self._opt()
        has_v = problem["variables"] is not None

        def one(k, v):
            if has_v:
                kt = jax.random.split(k)[1] if self.split_keys else k
            else:
                k_init, kt = jax.random.split(k)
                v = self.victim.init(k_init)
            return init_train_carry(v, opt, stateful=self.victim.stateful) + (kt,)

        v_axis = self.variables_axis if has_v else None
        p, s, c, kt = chunked_vmap(one, chunk=self.chunk, mesh=self.mesh, in_axes=(0, v_axis))(
            problem["keys"], problem["variables"])
        n = jax.tree.leaves(problem["data"])[0].shape[1 if self.data_axis == 0 else 0]
        steps = -(-n // min(int(self.batch_size), n))
        return VictimTrainingState(p, s, c, kt, jnp.int32(0), jnp.zeros((kt.shape[0], steps), jnp.float32))

    def step(self, st: VictimTrainingState, problem) -> VictimTrainingState:
        """One epoch of every victim (:func:`poisonjax.core.training.make_train_step` scanned over the
        epoch's mini-batches)."""
        from poisonjax.core.training import epoch_schedule, make_train_step
        opt = self._opt()
        has_mask = problem["mask"] is not None

        def one(p, s, c, kt, d, m):
            n = jax.tree.leaves(d)[0].shape[0]
            m = jnp.ones((n,), jnp.float32) if m is None else m
            idx, w, skeys = epoch_schedule(kt, m, self.epochs, min(int(self.batch_size), n), st.epoch)
            step = make_train_step(self.victim.loss, opt, d, m, stateful=self.victim.stateful,
                                   augment=self.augment, augment_key=self.augment_key)
            (p, s, c), losses = jax.lax.scan(step, (p, s, c), (idx, w, skeys))
            return p, s, c, losses

        axes = (0, 0, 0, 0, self.data_axis, self.data_axis if has_mask else None)
        p, s, c, losses = chunked_vmap(one, chunk=self.chunk, mesh=self.mesh, in_axes=axes)(
            st.params, st.opt_state, st.collections, st.keys, problem["data"], problem["mask"])
        return VictimTrainingState(p, s, c, st.keys, st.epoch + 1, losses)

    def metrics(self, st: VictimTrainingState, problem) -> dict:
        """``loss``: the last epoch's mean training loss over victims and non-empty steps; ``epoch``."""
        nz = jnp.maximum(jnp.sum(st.losses != 0), 1)
        return {"loss": jnp.sum(st.losses) / nz, "epoch": st.epoch.astype(jnp.float32)}

    def variables(self, st: VictimTrainingState) -> PyTree:
        """The victims' variables (leaves ``[K, ...]``), as ``train_victims(...).variables``."""
        from poisonjax.core.training import merge_variables
        return merge_variables(st.params, st.collections)

    def as_attack_optimizer(self):
        """``AttackOptimizer(init, step, metrics)`` for :func:`poisonjax.core.runner.run` (steps = epochs)."""
        from poisonjax.core.types import AttackOptimizer
        return AttackOptimizer(self.init, self.step, self.metrics)


# ------------------------------------------------------------- early stopping (resumable) ----

class EarlyStoppingState(NamedTuple):
    """State of :class:`EarlyStoppingTraining` (a pytree, checkpointed by :mod:`poisonjax.core.runner`).

    ``train``: the :class:`VictimTrainingState` of all ``M`` victims;
    ``best``: each victim's variables at its best validation score (leaves ``[M, ...]``);
    ``best_val [M]``, ``best_epoch [M]`` (0 = the initial model), ``bad [M]``: evaluations since the
    last improvement; ``done``: every victim has ``bad >= patience`` (or ``max_epochs`` reached)."""

    train: object
    best: object
    best_val: jax.Array
    best_epoch: jax.Array
    bad: jax.Array
    done: jax.Array


class EarlyStoppingTraining(NamedTuple):
    r"""K-victim training to convergence with per-victim early stopping on a validation score (any domain:
    ``val_fn`` is the score; recsys uses full-ranking validation NDCG@10, as SASRec's protocol, Kang & McAuley
    2018, and S3-Rec / CL4SRec / DuoRec select the epoch).

    One runner step = one epoch of every victim (:class:`VictimTraining`). Every
    ``eval_every`` epochs each victim :math:`m` is scored on the validation items,
    :math:`v_m = \mathrm{val\_fn}` (e.g. :func:`poisonjax.recsys.training.validation_ndcg`); if
    :math:`v_m > \text{best}_m` its variables are kept as ``best``, else its ``bad`` counter grows.
    Once **every** victim has ``bad >= patience`` (or ``max_epochs`` epochs ran) the process is done
    and further steps are no-ops (``lax.cond`` on a scalar, so they cost nothing); the victims used
    afterwards are ``best`` (the early-stopped models). Victims that stopped earlier than the last
    one keep training but their ``best`` no longer changes once they are past patience (the usual
    "train to the last improvement + patience, keep the best" rule, per victim).

    Fields: ``vt`` (the epoch process; ``vt.epochs`` = ``max_epochs``), ``val_fn(variables [M, ...],
    val_problem) -> [M]`` (higher is better), ``eval_every``, ``patience`` (in evaluations).
    Run with :func:`poisonjax.core.runner.run` (``stop_when=lambda s: s.done``) for checkpoints and
    resume mid-training (e.g. :func:`poisonjax.recsys.training.train_early_stopping`).
    """

    vt: object
    val_fn: callable
    eval_every: int
    patience: int

    def init(self, key, problem) -> EarlyStoppingState:
        st = self.vt.init(key, problem["train"])
        M = st.keys.shape[0]
        return EarlyStoppingState(st, self.vt.variables(st), jnp.full((M,), -jnp.inf, jnp.float32),
                                  jnp.zeros((M,), jnp.int32), jnp.zeros((M,), jnp.int32), jnp.array(False))

    def step(self, s: EarlyStoppingState, problem) -> EarlyStoppingState:
        def go(s):
            t = self.vt.step(s.train, problem["train"])
            ep = t.epoch

            def evaluate(s):
                v = self.val_fn(self.vt.variables(t), problem["val"]).astype(jnp.float32)
                active = s.bad < self.patience
                better = (v > s.best_val) & active
                pick = lambda b, n: jnp.where(better.reshape((-1,) + (1,) * (n.ndim - 1)), n, b)
                best = jax.tree.map(pick, s.best, self.vt.variables(t))
                bad = jnp.where(better, 0, s.bad + active.astype(jnp.int32))
                return EarlyStoppingState(t, best, jnp.where(better, v, s.best_val),
                                          jnp.where(better, ep, s.best_epoch), bad, s.done)

            do_eval = (ep % self.eval_every == 0) | (ep >= self.vt.epochs)
            s = jax.lax.cond(do_eval, evaluate, lambda s: s._replace(train=t), s)
            return s._replace(done=jnp.all(s.bad >= self.patience) | (ep >= self.vt.epochs))

        return jax.lax.cond(s.done, lambda s: s, go, s)

    def metrics(self, s: EarlyStoppingState, problem) -> dict:
        m = self.vt.metrics(s.train, problem["train"])
        return dict(m, best_val=jnp.mean(jnp.where(jnp.isfinite(s.best_val), s.best_val, 0.0)),
                    stopped=jnp.mean((s.bad >= self.patience).astype(jnp.float32)))

    def as_attack_optimizer(self):
        from poisonjax.core.types import AttackOptimizer
        return AttackOptimizer(self.init, self.step, self.metrics)
