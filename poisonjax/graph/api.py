r"""One-call API for the common case, on numpy arrays and scipy sparse matrices.

DeepRobust users write ``Metattack(...).attack(features, adj, labels, idx_train, idx_unlabeled, n)``; here::

    import poisonjax.graph as pg
    pert = pg.metattack(adj, features, labels, idx_train, budget=0.05)        # same kind as adj
    pg.evaluate_gcn(pert, features, labels, idx_train, idx_val, idx_test, seeds=5)["accuracy"]

Shapes: ``adj`` ``[N, N]`` symmetric 0/1 (scipy sparse or numpy; directed / weighted inputs are
symmetrised / binarised with a warning), ``features`` ``[N, F]`` (numpy or scipy sparse; ``None`` uses the
identity), ``labels`` ``[N]`` int, ``idx_*`` int index arrays. ``budget``: an ``int`` is a number of flips,
a ``float`` in ``(0, 1]`` a fraction of the clean edges (:math:`B = \lfloor \text{budget}\cdot|E| \rfloor`).

What an attack may see: the true labels of ``idx_train`` only. The other nodes get self-training labels
from a surrogate trained on ``idx_train`` (:func:`poisonjax.graph.attacks.attacker_labels`), unless you
pass ``self_labels="true", allow_test_labels=True`` (the oracle setting).

The attacks return the perturbed adjacency as the same kind as ``adj`` (scipy CSR for scipy input, a
numpy array of ``adj``'s dtype for numpy input); ``vgae_attack`` returns the perturbed *training* graph
of a :class:`~poisonjax.graph.splits.LinkSplit`. For control over every setting (checkpoints, resume,
the optimiser state) use the building blocks in :mod:`poisonjax.graph.attacks`.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import jax
import numpy as np
import scipy.sparse as sp

from poisonjax.core.validation import PoisonJaxInputError, check_choice, check_positive_int
from poisonjax.graph import attacks as A

Budget = Union[int, float]


def _prepare(adj, features, labels, idx_train):
    from poisonjax.data.graphs import as_symmetric_unweighted
    a = as_symmetric_unweighted(adj, "adj")
    n = a.shape[0]
    x = sp.eye(n, format="csr", dtype=np.float32) if features is None else features
    if x.shape[0] != n:
        raise PoisonJaxInputError(f"features must be [N, F] with N = {n} rows, got shape {x.shape}")
    y = np.asarray(labels)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer) or (n and y.min() < 0):
        raise PoisonJaxInputError(f"labels must be [N] = ({n},) non-negative ints, got shape {y.shape} dtype {y.dtype}")
    tr = np.asarray(idx_train, np.int64).ravel()
    if tr.size == 0 or tr.min() < 0 or tr.max() >= n:
        raise PoisonJaxInputError(f"idx_train must be non-empty node indices in [0, {n}), got {tr.size} indices")
    return a, x, y, tr


def _budget(budget, a) -> int:
    from poisonjax.graph.splits import budget_from_rate
    n = a.shape[0]
    if isinstance(budget, (bool, np.bool_)):
        raise PoisonJaxInputError(f"budget must be an int (flips) or a float in (0, 1] (fraction of edges), "
                                  f"got {budget!r}")
    if isinstance(budget, (int, np.integer)):
        check_positive_int("budget", int(budget))
        return int(budget)
    rate = float(budget)
    if not 0.0 < rate <= 1.0:
        raise PoisonJaxInputError(f"budget must be an int (flips) or a float in (0, 1] (fraction of edges), "
                                  f"got {budget!r}")
    return budget_from_rate(rate, int(sp.triu(a, 1).nnz), n * (n - 1) // 2)


def _same_kind(pert: sp.spmatrix, like):
    if sp.issparse(like):
        return sp.csr_matrix(pert, dtype=like.dtype if np.issubdtype(like.dtype, np.floating) else np.float32)
    dtype = np.asarray(like).dtype
    return np.asarray(pert.toarray(), dtype=dtype if dtype != np.bool_ else np.float32)


def _unlabeled(n, tr, idx_unlabeled):
    return np.setdiff1d(np.arange(n), tr) if idx_unlabeled is None else np.asarray(idx_unlabeled, np.int64)


def metattack(adj, features, labels, idx_train, budget: Budget, *, idx_unlabeled=None,
              variant: str = "meta_self", self_labels=None, allow_test_labels: bool = False,
              flips_per_step: int = 1, inner_steps: int = 100, lr: float = 0.1, momentum: float = 0.9,
              ll_constraint: bool = False, seed: int = 0, progress: bool = False, workdir=None):
    r"""Metattack (Zügner & Günnemann, ICLR 2019) in one call: returns the poisoned adjacency ``[N, N]``.

    Greedy: at each step a linearised GCN :math:`\mathrm{softmax}(\hat A^2 X W_1 W_2)` is trained for
    ``inner_steps`` steps of SGD with momentum on ``idx_train``, the meta-gradient
    :math:`\nabla_A \mathcal L_{atk}` of the attack loss after training is taken through the training,
    and the ``flips_per_step`` pairs with the largest score :math:`(g+g^\top)\odot(1-2A)` are flipped,
    until ``budget`` flips are spent. ``variant``: ``"meta_self"`` (loss on ``idx_unlabeled`` with the
    attacker's labels, :math:`\lambda=0`), ``"meta_train"`` (:math:`\lambda=1`), ``"a_meta_self"`` /
    ``"a_meta_train"`` (first-order approximation). ``flips_per_step=1`` is the paper's procedure;
    larger values trade strength for speed. ``idx_unlabeled`` defaults to every node outside
    ``idx_train``; labels: see the module doc. ``workdir`` makes the run checkpointed and resumable.
    Dense: :math:`O(N^2)` memory (use :func:`prbcd` for large graphs)."""
    check_choice("variant", variant, ("meta_self", "meta_train", "a_meta_self", "a_meta_train"))
    a, x, y, tr = _prepare(adj, features, labels, idx_train)
    n = a.shape[0]
    b = _budget(budget, a)
    k_sur, k_att = jax.random.split(jax.random.PRNGKey(seed))
    lam = 1.0 if variant.endswith("train") else 0.0
    prob = A.make_meta_problem(a, x, y, tr, _unlabeled(n, tr, idx_unlabeled), self_labels, lambda_=lam,
                               allow_test_labels=allow_test_labels, key=k_sur)
    cfg = A.MetattackConfig(budget=b, num_classes=int(y.max()) + 1, inner_steps=inner_steps, lr=lr,
                            momentum=momentum, lambda_=lam, first_order=variant.startswith("a_"),
                            flips_per_step=flips_per_step, ll_constraint=ll_constraint)
    st = A.run_metattack(prob, cfg, k_att, workdir=workdir, progress=progress)
    return _same_kind(A.state_to_adj(st), adj)


def meta_pgd(adj, features, labels, idx_train, budget: Budget, *, idx_val=None, idx_unlabeled=None,
             self_labels=None, allow_test_labels: bool = False, steps: int = 80, lr: float = 2.0,
             loss: str = "tanh_margin", samples: int = 20, select_seeds: int = 3, init: str = "meta_self",
             flips_per_step: int = 1, inner_steps: int = 100, seed: int = 0, progress: bool = False):
    r"""Meta-PGD (Mujkanovic et al., NeurIPS 2022) in one call: returns the poisoned adjacency ``[N, N]``.

    Relaxes the flips to :math:`p\in[0,1]^{N\times N}`, :math:`A(p) = A + (1-2A)\odot(p+p^\top)`, and
    runs ``steps`` projected ascent steps :math:`p \leftarrow \Pi(p + \eta_t \nabla_p/\lVert\nabla_p\rVert)`
    onto :math:`\{0\le p\le 1, \sum p\le B\}` with :math:`\eta_t = \text{lr}\sqrt{B/(t+1)}`, the gradient
    being Metattack's meta-gradient of the ``loss`` (``"tanh_margin"``, ``"ce"`` or ``"mce"``). ``init``:
    ``"meta_self"`` warm-starts from greedy Meta-Self flips (``flips_per_step`` per meta-gradient),
    ``"none"`` from :math:`p=0`. Then the top-:math:`B` entries, ``samples`` Bernoulli draws and the warm start
    are scored by an attacker-side proxy (``select_seeds`` GCNs trained on each candidate, agreement with
    the self-training labels on ``idx_unlabeled``; no test label) and the lowest is returned. ``idx_val``
    (labelled validation nodes) selects the proxy GCNs' parameters; without it they keep the last epoch.
    Dense: :math:`O(N^2)` memory."""
    from poisonjax.core.runner import run as run_steps
    from poisonjax.graph import models
    check_choice("init", init, ("meta_self", "none"))
    a, x, y, tr = _prepare(adj, features, labels, idx_train)
    n = a.shape[0]
    b = _budget(budget, a)
    un = _unlabeled(n, tr, idx_unlabeled)
    k_sur, k_att, k_pgd, k_sel = jax.random.split(jax.random.PRNGKey(seed), 4)
    prob = A.make_meta_problem(a, x, y, tr, un, self_labels, allow_test_labels=allow_test_labels, key=k_sur)
    ys = np.asarray(prob.labels)
    cfg = A.MetattackConfig(budget=b, num_classes=int(y.max()) + 1, inner_steps=inner_steps,
                            flips_per_step=flips_per_step, ll_constraint=False)
    init_flips = None
    if init == "meta_self":
        st = A.run_metattack(prob, cfg, k_att, progress=progress)
        init_flips = np.asarray(st.flips)[: int(st.n_flips)]
    p0 = A.flips_to_mask(n, init_flips) if init_flips is not None else None
    res = run_steps(A.meta_pgd(cfg._replace(loss=loss), steps, lr=lr, p0=p0), prob, steps, None, key=k_pgd,
                    chunk_size=5, progress=progress, desc="meta-pgd")
    sets = A.sample_flip_sets(np.asarray(res.state.p), a.toarray().astype(np.float32), b, samples, seed=seed)
    if init_flips is not None:
        sets.append(init_flips)
    gcfg = models.GCNConfig(val_selection=idx_val is not None)
    va = tr if idx_val is None else np.asarray(idx_val, np.int64)
    best, _ = A.select_flip_set(a, sets, x, ys, tr, va, un, jax.random.split(k_sel, select_seeds),
                                int(y.max()) + 1, gcfg)
    return _same_kind(A.flips_to_adj(a, sets[best]), adj)


def prbcd(adj, features, labels, idx_train, budget: Budget, *, idx_unlabeled=None, self_labels=None,
          allow_test_labels: bool = False, epochs: int = 100, block_size: Optional[int] = None,
          inner_steps: int = 20, lr_factor: float = 0.1, seed: int = 0, progress: bool = False, workdir=None):
    r"""PR-BCD (Geisler et al., NeurIPS 2021) with a Meta-Self poisoning loss in one call: returns the
    poisoned adjacency ``[N, N]`` in :math:`O(|E| + \text{block})` memory (never densified).

    Keeps a random block of ``block_size`` candidate pairs (default :math:`\max(4B, 10^4)` capped at the
    number of pairs) with weights :math:`p_b\in[0,1]`, takes ``epochs`` projected ascent steps on
    :math:`\mathcal L(p)` = the attack loss after ``inner_steps`` unrolled SGD steps of a linearised GCN on
    :math:`A(p)`, resampling the candidates whose weight vanished, then keeps the best of the top-:math:`B`
    and a few Bernoulli draws (:mod:`poisonjax.graph.attacks.prbcd`). Node pairs are int32 codes, so
    :math:`N \le 46{,}340`. The step is :math:`\text{lr\_factor}\cdot B/\sqrt{t+1}` along the unit gradient;
    ``lr_factor=0.1`` was the best of 1 / 0.1 / 0.02 on a 150-node SBM at a 25% budget (GCN accuracy 0.80 /
    0.30 / 0.57, random flips 0.79); it is not tuned on large graphs."""
    a, x, y, tr = _prepare(adj, features, labels, idx_train)
    n = a.shape[0]
    b = _budget(budget, a)
    k_sur, k_att = jax.random.split(jax.random.PRNGKey(seed))
    prob = A.make_prbcd_problem(a, x, y, tr, _unlabeled(n, tr, idx_unlabeled), self_labels,
                                allow_test_labels=allow_test_labels, key=k_sur)
    bs = block_size if block_size is not None else min(max(4 * b, 10_000), n * (n - 1) // 2)
    cfg = A.PRBCDConfig(budget=b, block_size=int(bs), num_classes=int(y.max()) + 1, num_nodes=n,
                        inner_steps=inner_steps, lr_factor=lr_factor)
    flips = A.run_prbcd(prob, cfg, epochs, k_att, workdir=workdir, progress=progress)
    return _same_kind(A.flips_to_adj_sparse(a, flips), adj)


def vgae_attack(split, features, budget: Budget, *, objective: str = "self", first_order: bool = True,
                steps_per_budget: int = 4, inner_steps: Optional[int] = None, victim=None,
                allow_test_labels: bool = False, seed: int = 0, progress: bool = False):
    r"""Poison VGAE link prediction (the seed paper's meta attack) in one call.

    ``split``: a :class:`~poisonjax.graph.splits.LinkSplit` (``poisonjax.graph.link_split(adj)``);
    ``features`` ``[N, F]`` (``None``: identity). The attacker flips up to ``budget`` pairs of
    ``split.adj_train`` (an int, or a fraction of its edges), never a validation / test pair, greedily on
    :math:`(g+g^\top)\odot(1-2A)` with :math:`g=\nabla_A \mathcal L_{out}(\theta_T(A))` through ``inner_steps``
    (default: ``victim.epochs``) unrolled Adam steps of the VGAE (``first_order=True``: the A-Meta sum
    along the trajectory, sparse fast path), ``budget / steps_per_budget`` flips per meta-gradient.
    ``objective``: ``"self"`` (pseudo-links of a surrogate VGAE; default), ``"train"`` (training pairs),
    ``"test"`` (the test pairs with their labels, white-box; needs ``allow_test_labels=True``). Returns the
    perturbed training adjacency (scipy CSR); evaluate with :func:`poisonjax.graph.evaluate_vgae`."""
    from poisonjax.graph import vgae_attacks as V
    from poisonjax.graph.models import VGAEConfig
    from poisonjax.graph.splits import LinkSplit
    if not isinstance(split, LinkSplit):
        raise PoisonJaxInputError(f"split must be a LinkSplit (poisonjax.graph.link_split(adj)), "
                                  f"got {type(split).__name__}")
    check_choice("objective", objective, ("self", "train", "test"))
    check_positive_int("steps_per_budget", steps_per_budget)
    at = split.adj_train
    n = at.shape[0]
    x = np.eye(n, dtype=np.float32) if features is None else (features.toarray() if sp.issparse(features)
                                                              else np.asarray(features, np.float32))
    if x.shape[0] != n:
        raise PoisonJaxInputError(f"features must be [N, F] with N = {n} rows, got shape {x.shape}")
    victim = VGAEConfig() if victim is None else victim
    b = _budget(budget, at)
    k_sur, k_att = jax.random.split(jax.random.PRNGKey(seed))
    pseudo = None
    if objective == "self":
        _, z = V.surrogate_vgae(at, x, k_sur, victim)
        pseudo = V.pseudo_links(z, split, seed=seed)
    pairs, labs = V.objective_pairs(split, objective, pseudo, allow_test_labels=allow_test_labels)
    prob = V.make_vgae_problem(split, x, pairs, labs)
    cfg = V.VGAEAttackConfig(budget=b, inner_steps=inner_steps or victim.epochs, first_order=first_order,
                             flips_per_step=max(1, -(-b // steps_per_budget)), victim=victim, fast=first_order)
    flips = V.run_vgae_meta_attack(prob, cfg, k_att, progress=progress)
    return A.flips_to_adj(at, flips)


def evaluate_gcn(adj, features, labels, idx_train, idx_val, idx_test, seeds: Union[int, Sequence[int]] = 5, *,
                 hidden: int = 16, dropout: float = 0.5, lr: float = 0.01, weight_decay: float = 5e-4,
                 epochs: int = 200, weight_init: str = "glorot") -> dict:
    r"""Train a two-layer GCN (Kipf & Welling, ICLR 2017), :math:`\mathrm{softmax}(\hat A\,
    \mathrm{ReLU}(\hat A X W_1) W_2)` with :math:`\hat A = \tilde D^{-1/2}(A+I)\tilde D^{-1/2}`, on ``adj``
    (``[N, N]``, scipy or numpy) and ``features`` ``[N, F]`` (``None``: identity) with Adam (``lr``,
    ``weight_decay``) for ``epochs`` epochs on ``idx_train``, keeping the parameters of the lowest
    validation loss on ``idx_val``, once per seed (vmapped), and score it on ``idx_test``.

    ``seeds``: a number of seeds (``0..k-1``) or a list of seeds. Returns ``{"accuracy": mean,
    "accuracy_std": std, "per_seed": [k], "seeds": [k]}`` (numpy floats as Python floats)."""
    from poisonjax.graph import models
    a, x, y, tr = _prepare(adj, features, labels, idx_train)
    seed_list = list(range(seeds)) if isinstance(seeds, (int, np.integer)) else [int(s) for s in seeds]
    if not seed_list:
        raise PoisonJaxInputError("seeds must be a positive number of seeds or a non-empty list of seeds")
    keys = jax.numpy.stack([jax.random.PRNGKey(s) for s in seed_list])
    cfg = models.GCNConfig(hidden=hidden, dropout=dropout, lr=lr, weight_decay=weight_decay, epochs=epochs,
                           weight_init=weight_init)
    xb = models.scipy_to_bcoo(sp.csr_matrix(x, dtype=np.float32))
    acc = models.gcn_accuracy_on(a, xb, y, tr, np.asarray(idx_val, np.int64), np.asarray(idx_test, np.int64), keys,
                                 int(y.max()) + 1, cfg)
    acc = np.asarray(acc, np.float64)
    return {"accuracy": float(acc.mean()), "accuracy_std": float(acc.std()), "per_seed": acc.tolist(),
            "seeds": seed_list}
