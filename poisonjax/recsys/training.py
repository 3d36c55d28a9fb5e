r"""Training sequential recommenders: next-item losses and K-seed (vmapped) victim training.

Losses, for hidden states :math:`h_{b\ell}` of a right-aligned sequence, positives
:math:`p_{b\ell}` (0 = padding, ignored) and item embeddings :math:`e`:

* ``"bce"`` (SASRec, Kang & McAuley 2018): one uniformly sampled negative :math:`n_{b\ell}` per
  position, :math:`\ell_b = \frac{1}{|\{\ell: p_{b\ell}>0\}|}\sum_{\ell: p_{b\ell}>0}
  -\log\sigma(h_{b\ell}^\top e_{p}) - \log(1-\sigma(h_{b\ell}^\top e_{n}))`.
* ``"sampled_softmax"``: ``num_negatives`` items shared by the batch,
  :math:`-\log \frac{\exp(h^\top e_p)}{\exp(h^\top e_p) + \sum_{j} \exp(h^\top e_{n_j})}` per position.

Simplified: negatives are uniform over ``1..V`` and are not rejected when they equal an item of
the user's history (the SASRec code rejects them); with thousands of items the difference is small.

Victims are trained with :func:`poisonjax.core.victims.train_victims` (a ``lax.scan`` over
mini-batches, chunked ``vmap`` over K PRNG keys), jit-compiled once per data *shape*: clean + fake
data of every attack have the same shape, so all attacks reuse one compiled program.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from poisonjax.core import training as core_training
from poisonjax.core import victims as core_victims
from poisonjax.core.validation import PoisonJaxInputError, check_choice

LOSSES = ("bce", "sampled_softmax")


def next_item_loss(model: nn.Module, num_items: int, loss: str = "bce", num_negatives: int = 100):
    """Per-example next-item loss in the one signature ``(params, batch, key) -> [B]`` for
    ``batch = {"x": [B, L], "y": [B, L]}`` (``key`` drives dropout and negative sampling)."""
    check_choice("loss", loss, LOSSES)

    def per_example(params, batch, key):
        k_drop, k_neg = jax.random.split(key)
        x, y = batch["x"], batch["y"]
        h = model.apply(params, x, False, rngs={"dropout": k_drop})           # [B, L, d]
        E = model.apply(params, method=lambda m: m.item_embeddings())         # [V+1, d]
        valid = (y > 0).astype(jnp.float32)
        pos = jnp.sum(h * E[y], -1)
        if loss == "bce":
            neg_ids = jax.random.randint(k_neg, y.shape, 1, num_items + 1)
            neg = jnp.sum(h * E[neg_ids], -1)
            per_pos = -jax.nn.log_sigmoid(pos) - jax.nn.log_sigmoid(-neg)
        else:
            neg_ids = jax.random.randint(k_neg, (num_negatives,), 1, num_items + 1)
            neg = h @ E[neg_ids].T                                               # [B, L, M]
            logits = jnp.concatenate([pos[..., None], neg], -1)
            per_pos = -jax.nn.log_softmax(logits, -1)[..., 0]
        return jnp.sum(per_pos * valid, -1) / jnp.maximum(valid.sum(-1), 1.0)

    return per_example


class VictimTrainer(NamedTuple):
    """Trains K victims (one per PRNG key) on ``(x, y)`` with one jit-compiled ``vmap``.

    ``trainer.train(x [N, L], y [N, L], keys [K, 2]) -> stacked params`` (leaves ``[K, ...]``);
    ``mask [N]`` (optional) gives example weights (0 = padding rows).
    ``trainer.train_many(xs [J, N, L], ys [J, N, L], keys [K, 2], masks [J, N], chunk=None)``
    trains ``J x K`` victims (J poisoned datasets, e.g. attacks x targets, times K seeds) in one
    program: :func:`poisonjax.core.parallel.chunked_vmap` over the J datasets (``chunk`` at a time,
    static) of the K-seed :func:`poisonjax.core.victims.train_victims`. For tiny recommenders on CPU
    this is several times faster than J separate calls, because every op works on many models at once.
    """

    model: nn.Module
    train: callable
    train_single: callable
    train_many: callable


def make_trainer(model: nn.Module, num_items: int, *, epochs: int, batch_size: int, lr: float = 1e-3,
                 loss: str = "bce", num_negatives: int = 100, weight_decay: float = 0.0) -> VictimTrainer:
    """Build the jitted K-seed trainer (Adam, as SASRec/GRU4Rec use)."""
    if epochs < 1 or batch_size < 1:
        raise PoisonJaxInputError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    per_example = next_item_loss(model, num_items, loss, num_negatives)
    opt = optax.adamw(lr, weight_decay=weight_decay) if weight_decay else optax.adam(lr)

    def init_fn(key, L):
        return model.init(key, jnp.ones((1, L), jnp.int32), True)

    def _victim(L):
        return core_victims.Victim(functools.partial(init_fn, L=L), per_example, None)

    def _train(x, y, keys, mask=None):
        return core_victims.train_victims(_victim(x.shape[1]), opt, {"x": x, "y": y}, keys, epochs=epochs,
                                          batch_size=batch_size, mask=mask).variables

    def _train_single(x, y, key, mask=None):
        fn = functools.partial(init_fn, L=x.shape[1])
        return core_training.init_and_train(fn, per_example, opt, {"x": x, "y": y}, key,
                                            epochs=epochs, batch_size=batch_size, mask=mask).params

    def _train_many(xs, ys, keys, masks, chunk=None):
        from poisonjax.core.parallel import chunked_vmap
        return chunked_vmap(lambda x, y, m: _train(x, y, keys, m), chunk=chunk)(xs, ys, masks)

    return VictimTrainer(model, jax.jit(_train), jax.jit(_train_single),
                         jax.jit(_train_many, static_argnames=("chunk",)))


# ------------------------------------------------------------- early stopping (resumable) ----

# The process itself is domain-agnostic and lives in core.victims; re-exported here for existing callers.
EarlyStoppingState = core_victims.EarlyStoppingState
EarlyStoppingTraining = core_victims.EarlyStoppingTraining


def validation_ndcg(model: nn.Module, chunk: int = 256, victim_chunk: int = 16):
    r"""``val_fn(variables [M, ...], (seqs [U, L], items [U], exclude [U, H])) -> [M]``: full-ranking
    NDCG@10 of each victim on the validation items,
    :math:`\frac1{|U|}\sum_u [r_u < 10]/\log_2(r_u + 2)` with :math:`r_u` the 0-based rank of the
    validation item among all items not in the user's history (:mod:`poisonjax.recsys.metrics`);
    ``chunk`` users and ``victim_chunk`` victims at a time (memory ``O(victim_chunk * chunk * V)``)."""
    from poisonjax.core.parallel import chunked_vmap
    from poisonjax.recsys.metrics import make_ranker
    rank = make_ranker(model, chunk)

    def val(variables, vp):
        seqs, items, exclude = vp
        M = jax.tree.leaves(variables)[0].shape[0]
        r = chunked_vmap(lambda p: rank(p, seqs, items, exclude), chunk=min(int(victim_chunk), M))(variables)
        return jnp.mean(jnp.where(r < 10, 1.0 / jnp.log2(r.astype(jnp.float32) + 2.0), 0.0), axis=1)

    return val


def early_stopping_trainer(model: nn.Module, num_items: int, *, max_epochs: int, batch_size: int, lr: float = 1e-3,
                           loss: str = "bce", num_negatives: int = 100, eval_every: int = 5, patience: int = 4,
                           victim_chunk=None, val_chunk: int = 256, val_victim_chunk: int = 16):
    """The :class:`EarlyStoppingTraining` of ``model`` (Adam, the same per-example loss as
    :func:`make_trainer`), its victims trained ``victim_chunk`` at a time (``None`` = all at once)."""
    from poisonjax.core.validation import check_positive_int
    check_positive_int("max_epochs", max_epochs)
    check_positive_int("eval_every", eval_every)
    check_positive_int("patience", patience)
    per_example = next_item_loss(model, num_items, loss, num_negatives)

    def init_fn(key, L):
        return model.init(key, jnp.ones((1, L), jnp.int32), True)

    class _Init(NamedTuple):          # hashable init (the runner caches compiled chunks by the process)
        L: int

        def __call__(self, key):
            return init_fn(key, self.L)

    def make(L):
        victim = core_victims.Victim(_Init(L), per_example, None)
        vt = core_victims.VictimTraining(victim, optax.adam(lr), int(max_epochs), int(batch_size), data_axis=0,
                                         chunk=victim_chunk)
        return EarlyStoppingTraining(vt, validation_ndcg(model, val_chunk, val_victim_chunk), int(eval_every),
                                     int(patience))

    return make


def train_early_stopping(make, xs, ys, ws, keys, val, *, workdir=None, checkpoint_every: int = 20,
                         progress: bool = False, config=None):
    r"""Train ``J x K`` victims (``J`` datasets ``xs, ys [J, N, L]``, weights ``ws [J, N]``, ``K`` seeds
    ``keys [K, 2]``) to convergence with :class:`EarlyStoppingTraining` through
    :func:`poisonjax.core.runner.run` (checkpoints in ``workdir`` every ``checkpoint_every`` epochs; a
    killed run resumes from the last one, and a finished one returns at once).

    Victim ``(j, k)`` is initialised and shuffled with ``keys[k]`` for every ``j`` (paired clean /
    poisoned comparisons). ``val = (seqs [U, L], items [U], exclude [U, H])``: the validation users.

    Returns ``(variables, info)``: the best (early-stopped) variables, leaves ``[J, K, ...]``, and
    ``info = {"best_epoch": [J, K], "best_val": [J, K], "epochs": int, "resumed_from": int | None}``.
    """
    from poisonjax.core import runner
    J, K = xs.shape[0], keys.shape[0]
    es = make(int(xs.shape[2]))
    rep = lambda a: jnp.repeat(jnp.asarray(a), K, axis=0)               # [J*K, ...], victim (j, k) at j*K + k
    tkeys = jnp.tile(jnp.asarray(keys), (J, 1))
    problem = {"train": es.vt.problem({"x": rep(xs), "y": rep(ys)}, tkeys, rep(ws)),
               "val": tuple(jnp.asarray(a) for a in val)}
    res = runner.run(es.as_attack_optimizer(), problem, es.vt.epochs, workdir, chunk_size=es.eval_every,
                     checkpoint_every=checkpoint_every, progress=progress, desc="victims", config=config,
                     stop_when=lambda s: bool(s.done))
    s = res.state
    unflat = lambda a: a.reshape((J, K) + a.shape[1:])
    info = {"best_epoch": np.asarray(unflat(s.best_epoch)).tolist(), "best_val": np.asarray(unflat(s.best_val)).tolist(),
            "epochs": int(s.train.epoch), "resumed_from": res.resumed_from}
    return jax.tree.map(unflat, s.best), info
