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

from poisonjax.core.metrics import roc_auc, roc_auc_delong  # noqa: F401  (re-exported)
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
