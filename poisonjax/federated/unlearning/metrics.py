r"""How well a federated model forgot: accuracies, backdoor ASR, loss-threshold membership inference.

* ``retain_accuracy`` -- accuracy on the remaining clients' training data (pooled valid examples);
* ``forget_accuracy`` -- accuracy on the forgotten clients' data, with their own labels (for a
  backdoored client that includes the triggered examples labelled with the target class);
* ``accuracy`` -- clean test accuracy; ``asr`` -- backdoor attack success rate on every triggered
  non-target test image (``None`` without a backdoor);
* ``mia_auc`` -- loss-threshold membership inference (Yeom et al., CSF 2018): the attacker calls an
  example a member when its loss :math:`\ell(\theta; x, y)` is below a threshold; over all thresholds
  this is the ROC AUC of the score :math:`s = -\ell` with the forget set as positives and held-out
  non-members as negatives,

  .. math:: \mathrm{AUC} = \frac{1}{|P||N|} \sum_{i \in P} \sum_{j \in N}
            \big([s_i > s_j] + \tfrac12 [s_i = s_j]\big),

  computed from mid-ranks (Mann-Whitney U). 0.5: the model treats the forget set like unseen data.
"""
from __future__ import annotations

import functools
from typing import Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from poisonjax.core.metrics import auc_difference_se, roc_auc, roc_auc_delong  # noqa: F401  (re-exported)
from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.federated.unlearning.scenario import Scenario, pooled


@functools.lru_cache(maxsize=32)
def _loss_fn(apply_fn):
    return jax.jit(lambda p, xb, yb: optax.softmax_cross_entropy_with_integer_labels(apply_fn(p, xb), yb))


@functools.lru_cache(maxsize=32)
def _predict_fn(apply_fn):
    return jax.jit(lambda p, xb: jnp.argmax(apply_fn(p, xb), -1))


def example_losses(apply_fn, params, x, y, batch: int = 2048) -> np.ndarray:
    """Per-example cross-entropy ``[n]`` of ``params`` on ``(x, y)``, in batches."""
    f = _loss_fn(apply_fn)
    out = [np.asarray(f(params, jnp.asarray(x[i:i + batch]), jnp.asarray(y[i:i + batch])))
           for i in range(0, len(y), batch)]
    return np.concatenate(out) if out else np.zeros((0,), np.float32)


def mia_auc(apply_fn, params, member_x, member_y, nonmember_x, nonmember_y, *, with_se: bool = False):
    """Loss-threshold membership-inference AUC (module docstring): members = ``member_*``, non-members =
    ``nonmember_*``; score = minus the per-example cross-entropy. ``with_se``: ``(auc, se)`` with DeLong's
    standard error (:func:`roc_auc_delong`; ``None`` with fewer than two members or non-members)."""
    lm = example_losses(apply_fn, params, member_x, member_y)
    ln = example_losses(apply_fn, params, nonmember_x, nonmember_y)
    auc = roc_auc(-lm, -ln)
    if not with_se:
        return auc
    se = float(np.sqrt(max(roc_auc_delong(-lm, -ln)[1], 0.0))) if min(lm.size, ln.size) >= 2 else None
    return auc, se


def mia_auc_paired(apply_fn, params_seq, member_x, member_y, nonmember_x, nonmember_y):
    r"""Loss-threshold membership-inference AUCs of ``K`` models on the **same** members and non-members, with
    DeLong's covariance (:func:`roc_auc_delong`): ``(aucs [K], cov [K, K])``.

    Model :math:`k` scores example :math:`x` by :math:`s_k(x) = -\ell(\theta_k; x, y)`. Because every model
    scores the same examples, the AUCs are correlated, and the standard error of a gap is the paired one,

    .. math:: \mathrm{SE}(\mathrm{AUC}_a - \mathrm{AUC}_b) = \sqrt{C_{aa} + C_{bb} - 2 C_{ab}},

    which is smaller than :math:`\sqrt{C_{aa} + C_{bb}}` when the two models rank the examples alike (an
    unlearned model and the retrained one both find the same forget examples easy). Needs at least two members
    and two non-members."""
    params_seq = list(params_seq)
    if not params_seq:
        raise PoisonJaxInputError("mia_auc_paired: params_seq must hold at least one model's parameters, got none")
    lm = np.stack([example_losses(apply_fn, p, member_x, member_y) for p in params_seq])
    ln = np.stack([example_losses(apply_fn, p, nonmember_x, nonmember_y) for p in params_seq])
    aucs, cov = roc_auc_delong(-lm, -ln)
    return np.atleast_1d(np.asarray(aucs, np.float64)), np.atleast_2d(np.asarray(cov, np.float64))


def mia_gap(apply_fn, params_a, params_b, scenario: Scenario) -> Dict[str, Optional[float]]:
    r"""The membership-inference AUC gap of model ``a`` over model ``b`` on a :class:`Scenario`'s forget set
    (members) against its held-out data (non-members), paired on the same examples:
    ``{"gap": AUC_a - AUC_b, "se_paired": sqrt(C_aa + C_bb - 2 C_ab)}`` (:func:`mia_auc_paired`);
    ``se_paired`` is ``None`` with fewer than two members or non-members."""
    xf, yf = pooled(scenario.data, scenario.forget_ids)
    if min(len(yf), len(scenario.holdout_y)) < 2:
        a = mia_auc(apply_fn, params_a, xf, yf, scenario.holdout_x, scenario.holdout_y)
        b = mia_auc(apply_fn, params_b, xf, yf, scenario.holdout_x, scenario.holdout_y)
        return {"gap": float(a - b), "se_paired": None}
    aucs, cov = mia_auc_paired(apply_fn, [params_a, params_b], xf, yf, scenario.holdout_x, scenario.holdout_y)
    return {"gap": float(aucs[0] - aucs[1]), "se_paired": auc_difference_se(cov, 0, 1)}


def _acc(apply_fn, params, x, y, batch: int = 2048) -> float:
    if len(y) == 0:
        return float("nan")
    f = _predict_fn(apply_fn)
    hits = sum(int(np.sum(np.asarray(f(params, jnp.asarray(x[i:i + batch]))) == np.asarray(y[i:i + batch])))
               for i in range(0, len(y), batch))
    return hits / len(y)


def evaluate(apply_fn, params, scenario: Scenario) -> Dict[str, Optional[float]]:
    """``retain_accuracy``, ``forget_accuracy``, ``accuracy`` (clean test), ``asr`` (``None`` without a
    backdoor), ``mia_auc`` and its DeLong standard error ``mia_auc_se`` of ``params`` on a
    :class:`Scenario` (see the module docstring). A forget set of a few examples gives a wide ``mia_auc``:
    with 15 members the standard error is about 0.07."""
    d = scenario.data
    xr, yr = pooled(d, scenario.retain_ids)
    xf, yf = pooled(d, scenario.forget_ids)
    out = {"retain_accuracy": _acc(apply_fn, params, xr, yr), "forget_accuracy": _acc(apply_fn, params, xf, yf),
           "accuracy": _acc(apply_fn, params, np.asarray(d.x_test), np.asarray(d.y_test)),
           "asr": None}
    out["mia_auc"], out["mia_auc_se"] = mia_auc(apply_fn, params, xf, yf, scenario.holdout_x, scenario.holdout_y,
                                                with_se=True)
    if d.x_bd is not None:
        out["asr"] = _acc(apply_fn, params, np.asarray(d.x_bd), np.asarray(d.y_bd))
    return out
