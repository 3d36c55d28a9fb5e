r"""T-Core stage 3: bootstrapping the trusted set from the seeds.

Starting from the expanded seeds :math:`T_0`, every round :math:`r` trains a model on :math:`T_r`
(a linear probe on the channel-filtered encoder's features, :func:`~poisonjax.vision.tcore.common.train_head`),
computes every sample's loss :math:`\ell^{(r)}_i` on its given label, and grows the set
(:func:`grow`) by one of three rules, in this order (:func:`growth_plan`):

* ``"class"`` -- ``per_class_rounds`` (5) rounds adding, in every class :math:`c`,
  ``round(per_class x n_c)`` (2% of the class) untrusted samples of that class with the smallest loss
  (keeps the classes balanced while the model is weak);
* ``"global"`` -- ``global_rounds`` (5) rounds adding the ``round(global_growth x N)`` (2%) untrusted
  samples with the smallest loss, over all classes;
* ``"reduction"`` -- then rounds of ``round(loss_growth x N)`` (5%) by the *smallest loss reduction*
  :math:`\ell^{(r-1)}_i - \ell^{(r)}_i` between the previous and the current model, among the
  untrusted samples whose current loss is at most the median of the untrusted losses (our gate: a
  poisoned sample that the clean model cannot fit has a high loss that barely moves, and would otherwise
  be picked; a backdoor that leaked into :math:`T` shows as a *large* reduction on the other poisons);
  if the gate leaves too few, the rest are taken by smallest current loss,

until :math:`|T| = \mathrm{round}(\texttt{until} \times N)` (90%): the last round is cut to reach it
exactly. All fractions must lie in (0, 1].
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from poisonjax.core.validation import PoisonJaxInputError, check_fraction, check_positive_int

KINDS = ("class", "global", "reduction")


def check_schedule(per_class: float, global_growth: float, loss_growth: float, until: float) -> None:
    """Every growth fraction and the final size in (0, 1] (one-line error naming the argument)."""
    check_fraction("growth schedule per_class", per_class)
    check_fraction("growth schedule global_growth", global_growth)
    check_fraction("growth schedule loss_growth", loss_growth)
    check_fraction("growth schedule until", until)


def growth_plan(class_sizes: Sequence[int], n_start: int, *, per_class: float = 0.02, per_class_rounds: int = 5,
                global_growth: float = 0.02, global_rounds: int = 5, loss_growth: float = 0.05,
                until: float = 0.9) -> List[str]:
    """The list of round kinds that takes a trusted set of ``n_start`` rows to ``round(until x N)``
    (``N = sum(class_sizes)``), following the schedule of the module docstring; empty if already there."""
    check_schedule(per_class, global_growth, loss_growth, until)
    check_positive_int("per_class_rounds", per_class_rounds, minimum=0)
    check_positive_int("global_rounds", global_rounds, minimum=0)
    sizes = np.asarray(class_sizes)
    n = int(sizes.sum())
    target = int(round(until * n))
    size, plan = int(n_start), []
    steps = ([("class", int(sum(round(per_class * s) for s in sizes)))] * per_class_rounds
             + [("global", int(round(global_growth * n)))] * global_rounds)
    for kind, add in steps:
        if size >= target:
            return plan
        plan.append(kind)
        size += max(add, 1)
    add = max(int(round(loss_growth * n)), 1)
    while size < target:
        plan.append("reduction")
        size += add
    return plan


def grow(trusted, kind: str, loss_now, loss_prev, y, num_classes: int, *, per_class: float = 0.02,
         global_growth: float = 0.02, loss_growth: float = 0.05, until: float = 0.9) -> np.ndarray:
    """One growth round (module docstring): the new boolean ``[N]`` trusted mask (a superset of
    ``trusted``, at most ``round(until x N)`` rows). Host function of ``[N]`` arrays."""
    if kind not in KINDS:
        raise PoisonJaxInputError(f"kind must be one of {KINDS}, got {kind!r}")
    t = np.asarray(trusted, bool).copy()
    y = np.asarray(y)
    ln = np.asarray(loss_now, np.float64)
    n = len(t)
    room = int(round(until * n)) - int(t.sum())
    if room <= 0:
        return t
    if kind == "class":
        for c in range(num_classes):
            rows = np.flatnonzero((y == c) & ~t)
            k = int(min(len(rows), max(1, round(per_class * (y == c).sum())), room))
            if k > 0:
                pick = rows[np.argsort(ln[rows], kind="stable")[:k]]
                t[pick] = True
                room -= k
        return t
    cand = np.flatnonzero(~t)
    if kind == "global":
        k = int(min(len(cand), max(1, round(global_growth * n)), room))
        t[cand[np.argsort(ln[cand], kind="stable")[:k]]] = True
        return t
    k = int(min(len(cand), max(1, round(loss_growth * n)), room))
    red = np.asarray(loss_prev, np.float64)[cand] - ln[cand]
    gate = ln[cand] <= np.median(ln[cand])
    order = np.lexsort((ln[cand], red, ~gate))          # gated first, then smallest reduction, then loss
    t[cand[order[:k]]] = True
    return t
