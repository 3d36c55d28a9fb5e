r"""Meta-PGD (Mujkanovic et al., NeurIPS 2022): projected gradient ascent on relaxed flips driven by
Metattack's meta-gradient, and turning relaxed flips into discrete flip sets (Bernoulli sampling and the
attacker-side selection among candidates); :func:`tune_meta_pgd` chooses the step size and the number of
steps by attacker-side scores (self-training labels, held-out training labels), never test labels.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from poisonjax.core.types import AttackOptimizer
from poisonjax.core.validation import PoisonJaxInputError, check_choice, check_positive_int
from poisonjax.graph.attacks.flips import drop_singleton_flips, flips_to_adj
from poisonjax.graph.attacks.metagrad import (ATTACK_LOSSES, MetattackConfig, adj_grad_from_hat,
                                              meta_grad_hat_dense)


class MetaPGDState(NamedTuple):
    """``p`` ``[N, N]`` relaxed flips in [0, 1] (upper triangle of allowed pairs); ``t`` step count;
    ``key``; ``loss`` (attack loss at ``p`` before the last update)."""

    p: jax.Array
    t: jax.Array
    key: jax.Array
    loss: jax.Array


def relaxed_adj(a_clean: jax.Array, p: jax.Array) -> jax.Array:
    r""":math:`A(p) = A + (1 - 2A)\odot(p + p^\top)` for upper-triangular ``p`` ``[N, N]``."""
    return a_clean + (1.0 - 2.0 * a_clean) * (p + p.T)


def pgd_ascent_step(p: jax.Array, grad: jax.Array, eta, allowed: jax.Array, budget) -> jax.Array:
    r"""One projected ascent step on relaxed flips:
    :math:`p \leftarrow \Pi\big(p + \eta\, \nabla / \lVert\nabla\rVert_2\big)`, where :math:`\Pi` projects
    onto :math:`\{0 \le p \le 1, \sum p \le B\}` (:func:`~poisonjax.core.projections.project_capped_simplex`)
    and ``allowed`` ``[N, N]`` (0/1) masks both the gradient and the result."""
    from poisonjax.core.projections import project_capped_simplex
    g = grad * allowed
    p = p + eta * g / (jnp.linalg.norm(g) + 1e-12)
    return project_capped_simplex(p * allowed, budget) * allowed


def _pgd_init_and_step(cfg: MetattackConfig, p0=None):
    """``(init(key, prob), step(state, prob, lr))`` of :func:`meta_pgd` (shared by :func:`meta_pgd_lr_batch`)."""
    budget = float(cfg.budget)

    def init(key, prob) -> MetaPGDState:
        p = jnp.zeros_like(prob.a_clean) if p0 is None else jnp.asarray(p0, jnp.float32) * prob.allowed
        return MetaPGDState(p=p, t=jnp.int32(0), key=key, loss=jnp.float32(0.0))

    def step(state: MetaPGDState, prob, lr) -> MetaPGDState:
        key, sub = jax.random.split(state.key)
        allowed = prob.allowed.astype(jnp.float32)
        a = relaxed_adj(prob.a_clean, state.p)
        loss, g_hat, s = meta_grad_hat_dense(prob, a, cfg, sub)
        g = adj_grad_from_hat(g_hat, a, s)
        gp = (g + g.T) * (1.0 - 2.0 * prob.a_clean) * allowed
        eta = lr * jnp.sqrt(budget / (state.t.astype(jnp.float32) + 1.0))
        p = pgd_ascent_step(state.p, gp, eta, allowed, budget)
        return MetaPGDState(p=p, t=state.t + 1, key=key, loss=loss.astype(jnp.float32))

    return init, step


def check_pgd_lr(name: str, value) -> float:
    """A Meta-PGD step size: a finite number > 0 (numeric strings such as ``"2"`` are accepted, as the CLI
    passes them); anything else raises :class:`PoisonJaxInputError` naming ``name``."""
    v = value
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            raise PoisonJaxInputError(f"{name} must be a number > 0 or 'auto', got {value!r}") from None
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v) \
            or not v > 0:
        raise PoisonJaxInputError(f"{name} must be a finite number > 0 (or 'auto' in the study), got {value!r}")
    return float(v)


def meta_pgd(cfg: MetattackConfig, steps: int, lr: float = 2.0, p0: Optional[jax.Array] = None) -> AttackOptimizer:
    r"""Meta-PGD (Mujkanovic et al., "Are Defenses for Graph Neural Networks Robust?", NeurIPS 2022):
    the PGD topology attack of Xu et al. (2019) driven by Metattack's meta-gradient, i.e. projected
    gradient ascent on the relaxed bilevel problem

    .. math::
        \max_{p \in \mathcal P} \mathcal L_{atk}\big(\theta^*(A(p)), A(p)\big), \quad
        \theta^* = \text{T unrolled training steps on } A(p), \quad
        \mathcal P = \{0 \le p \le 1,\ \textstyle\sum p \le B\},

    with :math:`A(p)` from :func:`relaxed_adj`. Step :math:`t`:
    :math:`p \leftarrow \Pi_{\mathcal P}\big(p + \eta_t\, \nabla_p / \lVert\nabla_p\rVert_2\big)`,
    :math:`\eta_t = \text{lr}\sqrt{B / (t+1)}` (the feasible set has diameter about
    :math:`\sqrt{2B}`), :math:`\nabla_p = (g + g^\top)\odot(1-2A)` restricted to allowed pairs with
    :math:`g` the meta-gradient of :func:`meta_grad_hat_dense` (exact or first-order per ``cfg``,
    attack loss ``cfg.loss``; a fresh inner initialisation each step). ``p0`` warm-starts from a
    discrete solution (e.g. greedy Metattack's flips, as Mujkanovic et al. suggest); turn ``p`` into
    flips with :func:`sample_flip_sets`. Dense: :math:`O(T N^2 C)` per step and an ``[N, N]`` state.

    Reconstructed from the method's description (meta-gradient + PGD on the relaxation + sampling):
    the step schedule, the unit-gradient normalisation and the default ``tanh_margin`` loss are this
    library's choices, not the authors' published hyperparameters. The default ``lr`` 2 was once picked
    by test accuracy on Cora 20% (against 0.5 and 1); :func:`tune_meta_pgd` chooses ``lr`` and ``steps``
    by an attacker-side protocol without test labels (the Metattack study's ``pgd.lr="auto"``)."""
    check_positive_int("steps", steps)
    check_positive_int("inner_steps", cfg.inner_steps)
    check_choice("loss", cfg.loss, ATTACK_LOSSES)
    lr = check_pgd_lr("lr", lr)

    init, lr_step = _pgd_init_and_step(cfg, p0)

    def step(state: MetaPGDState, prob) -> MetaPGDState:
        return lr_step(state, prob, lr)

    def metrics(state, prob):
        return {"attack_loss": state.loss, "mass": jnp.sum(state.p)}

    return AttackOptimizer(init, step, metrics)


def sample_flip_sets(p: np.ndarray, a_clean: np.ndarray, budget: int, samples: int, seed: int = 0) -> list:
    r"""Discrete flip sets ``[<=B, 2]`` from relaxed flips ``p`` (upper triangle): the top-``B``
    entries of ``p``, then ``samples`` draws :math:`m \sim \mathrm{Bernoulli}(p)` (a draw with more
    than ``B`` flips keeps its ``B`` most probable ones). Removals that would leave a node without
    edges are dropped (:func:`drop_singleton_flips`), so every set is valid."""
    check_positive_int("budget", budget)
    check_positive_int("samples", samples, minimum=0)
    p = np.asarray(p, np.float64)
    if p.ndim != 2 or p.shape != np.shape(a_clean):
        raise PoisonJaxInputError(f"p must be [N, N] like a_clean {np.shape(a_clean)}, got shape {p.shape}")
    iu = np.argwhere(p > 0)
    w = p[iu[:, 0], iu[:, 1]]
    order = np.argsort(-w, kind="stable")
    out = [drop_singleton_flips(a_clean, iu[order[:budget]])]
    rng = np.random.default_rng(seed)
    for _ in range(samples):
        hit = rng.random(w.shape[0]) < w
        idx = np.flatnonzero(hit)
        idx = idx[np.argsort(-w[idx], kind="stable")][:budget]
        out.append(drop_singleton_flips(a_clean, iu[idx]))
    return out


def select_flip_set(adj: sp.spmatrix, flip_sets: list, features, self_labels, idx_train, idx_val, idx_unlabeled,
                    keys, num_classes: int, gcn_cfg=None) -> tuple:
    r"""Attacker-side choice among candidate flip sets (e.g. from :func:`sample_flip_sets`): poison
    ``adj`` with each set, train ``len(keys)`` GCNs on it (``gcn_cfg``, the attacker's guess of the
    victim's training; labels = ``self_labels``, true on ``idx_train``) and estimate the victim's
    accuracy as the mean agreement with the self-training labels on ``idx_unlabeled``,

    .. math:: \hat a(F) = \frac{1}{K|U|}\sum_k \sum_{i \in U} [\hat y^{(k)}_i(A \oplus F) = y^{self}_i].

    Returns ``(best, proxy)``: the index of the set with the lowest :math:`\hat a` and ``proxy``
    ``[len(flip_sets)]``. No test label is used."""
    from poisonjax.graph import models
    if not flip_sets:
        raise PoisonJaxInputError("flip_sets must hold at least one candidate flip set, got none")
    cfg = gcn_cfg if gcn_cfg is not None else models.GCNConfig()
    x = models.scipy_to_bcoo(sp.csr_matrix(features, dtype=np.float32))
    pad = int(adj.nnz + adj.shape[0] + 2 * max(len(f) for f in flip_sets))
    proxy = np.array([models.gcn_accuracy_on(flips_to_adj(adj, f), x, self_labels, idx_train, idx_val, idx_unlabeled,
                                             keys, num_classes, cfg, pad).mean() for f in flip_sets])
    return int(np.argmin(proxy)), proxy


def meta_pgd_lr_batch(cfg: MetattackConfig, lrs, p0: Optional[jax.Array] = None) -> AttackOptimizer:
    r""":func:`meta_pgd` for ``L = len(lrs)`` step sizes at once: the state is :class:`MetaPGDState` with a
    leading ``[L]`` axis (``p`` ``[L, N, N]``) and one step is the single-lr step ``vmap``-ed over
    ``(state, lr)``. Every run starts from the same ``p0`` and uses the same PRNG keys (common random
    numbers: the inner initialisations of step :math:`t` are the same for every lr), so the runs differ
    only by the step size. Costs ``L`` meta-gradients per step (one batched program: on a GPU close to
    the time of one when the ``[N, N]`` products do not fill it). Metrics: ``attack_loss_<i>`` and
    ``mass_<i>`` per run ``i``."""
    lrs = tuple(check_pgd_lr("lrs", v) for v in lrs)
    if not lrs:
        raise PoisonJaxInputError("lrs must hold at least one step size, got none")
    check_positive_int("inner_steps", cfg.inner_steps)
    check_choice("loss", cfg.loss, ATTACK_LOSSES)
    init1, step1 = _pgd_init_and_step(cfg, p0)
    lr_arr = jnp.asarray(lrs, jnp.float32)
    n_lr = len(lrs)

    def init(key, prob) -> MetaPGDState:
        s = init1(key, prob)
        return jax.tree.map(lambda v: jnp.broadcast_to(v, (n_lr,) + v.shape), s)

    def step(state: MetaPGDState, prob) -> MetaPGDState:
        return jax.vmap(step1, in_axes=(0, None, 0))(state, prob, lr_arr)

    def metrics(state, prob):
        out = {}
        for i in range(n_lr):
            out[f"attack_loss_{i}"] = state.loss[i]
            out[f"mass_{i}"] = jnp.sum(state.p[i])
        return out

    return AttackOptimizer(init, step, metrics)


_LR_BATCH_CACHE: dict = {}


def _lr_batch_cached(cfg: MetattackConfig, lrs: tuple, p0) -> AttackOptimizer:
    """:func:`meta_pgd_lr_batch`, reused for equal ``(cfg, lrs, p0)`` (the runner's compiled chunk is cached
    per optimizer object, so a rerun or resume in the same process does not compile again); keeps 2."""
    import hashlib
    h = None if p0 is None else hashlib.sha1(np.ascontiguousarray(np.asarray(p0, np.float32)).tobytes()).hexdigest()
    k = (cfg, tuple(lrs), h)
    if k not in _LR_BATCH_CACHE:
        while len(_LR_BATCH_CACHE) >= 2:
            _LR_BATCH_CACHE.pop(next(iter(_LR_BATCH_CACHE)))
        _LR_BATCH_CACHE[k] = meta_pgd_lr_batch(cfg, lrs, p0)
    return _LR_BATCH_CACHE[k]


def holdout_split(idx_train, frac: float, seed: int = 0) -> tuple:
    """``(fit, held)``: a seeded random ``frac`` of ``idx_train`` (at least one node, and at least one left
    to fit on) held out from the attacker's scoring GCNs (:func:`attacker_scores`)."""
    idx_train = np.asarray(idx_train)
    if not (isinstance(frac, (int, float)) and 0 < frac < 1):
        raise PoisonJaxInputError(f"holdout_frac must be a number in (0, 1), got {frac!r}")
    if idx_train.size < 2:
        raise PoisonJaxInputError(f"idx_train needs at least 2 nodes to hold some out, got {idx_train.size}")
    k = int(np.clip(round(frac * idx_train.size), 1, idx_train.size - 1))
    perm = np.random.default_rng(seed).permutation(idx_train.size)
    return np.sort(idx_train[perm[k:]]), np.sort(idx_train[perm[:k]])


def attacker_scores(adj: sp.spmatrix, flip_sets: list, features, self_labels, idx_train, idx_val, idx_unlabeled,
                    keys, num_classes: int, gcn_cfg=None, holdout=None) -> dict:
    r"""Attacker-side estimates of the victim's accuracy after each candidate flip set ``F`` (lower is a
    stronger attack), from labels the attacker has: ``self_labels`` ``[N]`` (true on ``idx_train``,
    the attacker's surrogate predictions elsewhere) and nothing else.

    * ``self_label_acc`` ``[len(flip_sets)]``: GCNs (``gcn_cfg``, seeds ``keys``) trained on
      :math:`A \oplus F` with the labels of ``idx_train`` (validation selection against the self labels
      of ``idx_val``), scored against the self-training labels of ``idx_unlabeled`` (``U``):
      :math:`\hat a_{self}(F) = \frac{1}{K|U|}\sum_k\sum_{i\in U}[\hat y^{(k)}_i(A\oplus F) = y^{self}_i]`.
    * ``holdout_acc`` (if ``holdout = (fit, held)``, a split of ``idx_train`` from :func:`holdout_split`):
      the same GCNs trained on ``fit`` only and scored against the *true* labels of ``held``:
      :math:`\hat a_{ho}(F) = \frac{1}{K|H|}\sum_k\sum_{i\in H}[\hat y^{(k)}_i(A\oplus F) = y_i]`
      (``None`` otherwise).

    Only ``self_labels`` is read, so no test label can enter (``self_labels`` must itself come from the
    training labels only, e.g. :func:`~poisonjax.graph.attacks.self_training_labels`)."""
    from poisonjax.graph import models
    if not flip_sets:
        raise PoisonJaxInputError("flip_sets must hold at least one candidate flip set, got none")
    cfg = gcn_cfg if gcn_cfg is not None else models.GCNConfig()
    x = models.scipy_to_bcoo(sp.csr_matrix(features, dtype=np.float32))
    pad = int(adj.nnz + adj.shape[0] + 2 * max(len(f) for f in flip_sets))
    selfacc, hoacc = [], []
    for f in flip_sets:
        a = flips_to_adj(adj, f)
        selfacc.append(models.gcn_accuracy_on(a, x, self_labels, idx_train, idx_val, idx_unlabeled, keys,
                                              num_classes, cfg, pad).mean())
        if holdout is not None:
            hoacc.append(models.gcn_accuracy_on(a, x, self_labels, holdout[0], idx_val, holdout[1], keys,
                                                num_classes, cfg, pad).mean())
    return {"self_label_acc": np.asarray(selfacc, np.float64),
            "holdout_acc": np.asarray(hoacc, np.float64) if holdout is not None else None}


SELECT_BY = ("self_labels", "holdout", "mean")


def tune_meta_pgd(prob, cfg: MetattackConfig, lrs, steps_grid, key, adj: sp.spmatrix, features, self_labels,
                  idx_train, idx_val, idx_unlabeled, num_classes: int, select_seeds: int = 3,
                  select_by: str = "self_labels", holdout_frac: float = 0.3, gcn_cfg=None,
                  p0: Optional[jax.Array] = None, workdir=None, chunk_size: int = 5, progress: bool = False,
                  config=None, seed: int = 0) -> dict:
    r"""Meta-PGD's step size and number of steps chosen by a protocol the attacker can run (no test labels).

    Candidates: every :math:`(\text{lr}, S)` in ``lrs`` :math:`\times` ``steps_grid``. One PGD run per lr
    (:func:`meta_pgd_lr_batch`, all lrs in one vmapped program, same warm start ``p0`` and PRNG keys) is
    advanced to each :math:`S` in increasing order; the relaxed flips :math:`p_{\text{lr}, S}` are
    turned into their top-``B`` flip set :math:`F_{\text{lr}, S}` (:func:`sample_flip_sets` with no
    draws) and scored by :func:`attacker_scores` with ``select_seeds`` GCN seeds:

    .. math::
        (\text{lr}^*, S^*) = \arg\min_{\text{lr}, S}\ \mathrm{score}(F_{\text{lr}, S}),\qquad
        \mathrm{score} = \begin{cases}
          \hat a_{self} & \texttt{select\_by="self\_labels"} \\
          \hat a_{ho} & \texttt{select\_by="holdout"} \\
          (\hat a_{self} + \hat a_{ho}) / 2 & \texttt{select\_by="mean"}
        \end{cases}

    (ties: the fewest steps, then the smallest lr). :math:`\hat a_{self}` is the GCNs' agreement with the
    self-training labels on ``idx_unlabeled`` after training on all of ``idx_train``; :math:`\hat a_{ho}`
    their accuracy on a held-out ``holdout_frac`` of ``idx_train`` (:func:`holdout_split`, ``seed``) after
    training on the rest. The attack itself is unchanged (its inner training still uses all of
    ``idx_train``), so :math:`\hat a_{ho}` measures how much the graph hurts nodes the attack did not
    target -- a conservative, label-true estimate -- while :math:`\hat a_{self}` measures the attacked
    nodes against the attacker's own (noisy) labels. Every label read comes from ``self_labels``
    (true on ``idx_train``): permuting the labels of any other node cannot change the choice.

    ``workdir`` (optional) checkpoints the PGD runs (:func:`poisonjax.core.runner.run`) and keeps each
    finished :math:`S`'s scores (``scores_<S>.json``) and the best :math:`p` so far (``best_p.npy``), so an
    interrupted tuning resumes. Returns ``{"lr", "steps", "p" [N, N], "scores": [{"lr", "steps",
    "self_label_acc", "holdout_acc", "score", "flips"}], "seconds", "resumed_from"}``; the caller samples
    and selects the final flip set from ``p`` as with a fixed lr."""
    import json
    import time
    from pathlib import Path
    from poisonjax.core.runner import run as run_steps
    check_choice("select_by", select_by, SELECT_BY)
    lrs = tuple(check_pgd_lr("lrs", v) for v in lrs)
    if not lrs:
        raise PoisonJaxInputError("lrs must hold at least one step size, got none")
    steps_grid = tuple(steps_grid)
    if not steps_grid:
        raise PoisonJaxInputError("steps_grid must hold at least one number of steps, got none")
    for s in steps_grid:
        check_positive_int("steps_grid", s)
    steps_grid = tuple(sorted(set(int(s) for s in steps_grid)))
    check_positive_int("select_seeds", select_seeds)
    budget = int(cfg.budget)
    holdout = holdout_split(idx_train, holdout_frac, seed)
    keys = jax.random.split(jax.random.fold_in(key, 2), select_seeds)
    a_np = adj.toarray().astype(np.float32)
    opt = _lr_batch_cached(cfg, lrs, p0)
    wd = Path(workdir) if workdir is not None else None
    rows, best, best_p, resumed_from, t0 = [], None, None, None, time.time()
    pgd_seconds = 0.0
    for s_k in steps_grid:
        cached = wd / f"scores_{s_k}.json" if wd is not None else None
        if cached is not None and cached.is_file() and (wd / "best_p.npy").is_file():
            stage = json.loads(cached.read_text())
            resumed_from = s_k
        else:
            res = run_steps(opt, prob, s_k, wd, key=key, chunk_size=chunk_size, progress=progress,
                            desc=f"meta-pgd x{len(lrs)} lr", config=config, checkpoint_every=4 * chunk_size)
            pgd_seconds += res.seconds
            if res.resumed_from is not None and resumed_from is None:
                resumed_from = res.resumed_from
            p_all = np.asarray(res.state.p)
            sets = [sample_flip_sets(p_all[i], a_np, budget, 0)[0] for i in range(len(lrs))]
            sc = attacker_scores(adj, sets, features, self_labels, idx_train, idx_val, idx_unlabeled, keys,
                                 num_classes, gcn_cfg, holdout=holdout)
            stage = []
            for i, lr in enumerate(lrs):
                a_s, a_h = float(sc["self_label_acc"][i]), float(sc["holdout_acc"][i])
                score = {"self_labels": a_s, "holdout": a_h, "mean": 0.5 * (a_s + a_h)}[select_by]
                stage.append({"lr": lr, "steps": s_k, "self_label_acc": a_s, "holdout_acc": a_h, "score": score,
                              "flips": int(len(sets[i]))})
            j = int(np.argmin([r["score"] for r in stage]))
            if best is None or stage[j]["score"] < best["score"]:
                best_p = p_all[j].copy()
                if wd is not None:
                    np.save(wd / "best_p.npy", best_p)
            if cached is not None:
                cached.write_text(json.dumps(stage))
        rows.extend(stage)
        j = int(np.argmin([r["score"] for r in stage]))
        if best is None or stage[j]["score"] < best["score"]:
            best = stage[j]
    if best_p is None:  # every stage came from the cache
        best_p = np.load(wd / "best_p.npy")
    return {"lr": best["lr"], "steps": best["steps"], "p": best_p, "scores": rows, "select_by": select_by,
            "holdout_nodes": int(len(holdout[1])), "seconds": time.time() - t0, "pgd_seconds": pgd_seconds,
            "resumed_from": resumed_from}
