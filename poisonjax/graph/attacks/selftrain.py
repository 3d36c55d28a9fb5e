r"""Self-training labels: the attacker's labels for the unlabelled nodes (Metattack's Meta-Self), and
the rule that decides which labels an attack may see (:func:`attacker_labels`).
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from poisonjax.core.validation import PoisonJaxInputError, check_choice


SURROGATES = ("deeprobust", "prognn")


def self_training_labels(adj: sp.spmatrix, features, labels, idx_train, idx_val, key,
                         epochs: int = 200, surrogate: str = "deeprobust",
                         num_classes: Optional[int] = None) -> np.ndarray:
    r"""Metattack's self-training labels: the argmax predictions ``[N]`` of a linearised GCN surrogate
    (hidden 16, no ReLU; Adam lr 0.01, no weight decay, 200 epochs) trained on the clean graph,
    with the true labels kept on ``idx_train``. ``surrogate`` picks the surrogate's remaining settings:

    * ``"deeprobust"`` (DeepRobust's Metattack example): no bias, no dropout, parameters of the best
      validation loss;
    * ``"prognn"`` (Pro-GNN's ``generate_attack.py``, which made the reference perturbed graphs):
      bias, dropout 0.5 on the hidden layer, trained on ``idx_train`` only, last epoch's parameters.

    Both follow DeepRobust's ``GCN`` exactly: ``GraphConvolution`` init (weights and biases from
    :math:`U(\pm 1/\sqrt{d_{out}})`) and *no* weight decay, because DeepRobust's ``GCN.__init__``
    sets ``weight_decay = 0`` whenever ``with_relu=False``, whatever the caller passes. With weight
    decay 5e-4 the ``prognn`` surrogate labels Cora's unlabelled nodes with accuracy 0.828; as
    DeepRobust trains it, 0.818 (DeepRobust itself: 0.819; 5 seeds each,
    ``benchmarks/surrogate_labels_vs_deeprobust.py``).

    Labels read: ``labels[idx_train]`` and, for ``"deeprobust"`` (validation-loss selection),
    ``labels[idx_val]``; every other entry of ``labels`` is ignored (``idx_val`` may be ``None`` for
    ``"prognn"``). ``num_classes`` defaults to ``max(labels) + 1``.
    """
    from poisonjax.graph.models import GCNConfig, normalize_adj_sparse, train_gcn
    check_choice("surrogate", surrogate, SURROGATES)
    if surrogate == "deeprobust":
        cfg = GCNConfig(dropout=0.0, with_relu=False, with_bias=False, epochs=epochs, weight_init="deeprobust",
                        weight_decay=0.0)
    else:
        cfg = GCNConfig(dropout=0.5, with_relu=False, with_bias=True, epochs=epochs, val_selection=False,
                        weight_init="deeprobust", weight_decay=0.0)
    labels = np.asarray(labels)
    idx_train = np.asarray(idx_train)
    if idx_val is None:
        if surrogate == "deeprobust":
            raise PoisonJaxInputError("idx_val: the 'deeprobust' surrogate selects its parameters on the validation "
                                      "nodes; pass idx_val, or use surrogate='prognn' (no validation labels)")
        idx_val = idx_train
    idx_val = np.asarray(idx_val)
    known = np.zeros(labels.shape[0], np.int32)  # only the labels the surrogate may read
    known[idx_train] = labels[idx_train]
    if surrogate == "deeprobust":
        known[idx_val] = labels[idx_val]
    a_hat = normalize_adj_sparse(adj)
    f = sp.csr_matrix(features, dtype=np.float32)
    if f.shape[0] * f.shape[1] > 50_000_000:  # e.g. identity features of PubMed: keep them sparse
        from poisonjax.graph.models import scipy_to_bcoo
        x = scipy_to_bcoo(f)
    else:
        x = jnp.asarray(f.toarray(), jnp.float32)
    nc = int(np.max(labels)) + 1 if num_classes is None else int(num_classes)
    model, p = train_gcn(a_hat, x, jnp.asarray(known), jnp.asarray(idx_train), jnp.asarray(idx_val), key, nc, cfg)
    pred = np.asarray(jnp.argmax(model.apply(p, a_hat, x), -1)).astype(np.int32)
    pred[idx_train] = labels[idx_train]
    return pred


def attacker_labels(adj: sp.spmatrix, features, labels, idx_train, self_labels=None,
                    allow_test_labels: bool = False, key=None, num_classes: Optional[int] = None,
                    caller: str = "the attack") -> np.ndarray:
    r"""The labels ``[N]`` (int32) an attack's loss uses: the true labels on ``idx_train`` and, elsewhere,

    * ``self_labels`` ``[N]`` if given (the attacker's own predictions, e.g. :func:`self_training_labels`);
    * ``None`` (default): self-training labels of the ``"prognn"`` surrogate (:func:`self_training_labels`
      trained on ``idx_train`` only, with ``key``, default ``PRNGKey(0)``);
    * ``"true"``: the true labels of every node -- the oracle setting, in which the attack sees the labels
      of the test nodes it is scored on. Refused unless ``allow_test_labels=True``.

    Without ``allow_test_labels`` only ``labels[idx_train]`` is read, so the result cannot depend on
    held-out labels (Zügner & Günnemann 2019: the attacker knows the training labels and uses
    self-training for the rest)."""
    labels = np.asarray(labels)
    n = labels.shape[0]
    idx_train = np.asarray(idx_train)
    if isinstance(self_labels, str):
        if self_labels != "true":
            raise PoisonJaxInputError(f"self_labels must be an array [N], None or 'true', got {self_labels!r}")
        if not allow_test_labels:
            raise PoisonJaxInputError(
                f"{caller}: self_labels='true' gives the attack the true labels of the non-training nodes (test nodes "
                "included); pass allow_test_labels=True for this oracle setting, or leave self_labels=None for "
                "self-training labels")
        y = labels.astype(np.int32).copy()
    elif self_labels is None:
        k = jax.random.PRNGKey(0) if key is None else key
        y = self_training_labels(adj, features, labels, idx_train, None, k, surrogate="prognn",
                                 num_classes=num_classes)
    else:
        y = np.asarray(self_labels, np.int32).copy()
        if y.shape != (n,):
            raise PoisonJaxInputError(f"self_labels must have shape [N] = ({n},), got {y.shape}")
    y[idx_train] = labels[idx_train]
    return y
