"""The engine's protocols (DESIGN.md section 2).

* :class:`AttackOptimizer` -- the optax-style pair of pure functions that every attack exposes::

      state = attack.init(key, problem)        # a pytree
      state = attack.step(state, problem)      # one optimisation step; jit-able, no side effects

  ``attack.metrics(state, problem) -> dict[str, scalar]`` is optional and is what
  :func:`poisonjax.core.runner.run` logs to ``metrics.jsonl``.

* A *victim* is a flax.linen module used through ``init(key, sample) -> params`` and
  ``apply(params, inputs) -> outputs`` plus a per-example loss (see :mod:`poisonjax.core.training`).

* An *aggregator / defense* is ``aggregate(updates, state, key) -> (aggregate, state, report)``
  over stacked pytrees whose leaves have a leading ``[n_clients, ...]`` axis (see
  :mod:`poisonjax.federated.aggregators`).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

PRNGKey = Any
PyTree = Any
Problem = Any
State = Any


class AttackOptimizer(NamedTuple):
    """An attack as two pure functions (and an optional metrics function).

    ``init(key, problem) -> state``; ``step(state, problem) -> state``;
    ``metrics(state, problem) -> dict`` of scalar arrays (optional).
    ``problem`` is a pytree of arrays closed over by nothing: everything the attack needs
    (data, surrogate params, budgets as arrays) lives in it, so ``step`` compiles once.
    """

    init: Callable[[PRNGKey, Problem], State]
    step: Callable[[State, Problem], State]
    metrics: Optional[Callable[[State, Problem], dict]] = None
