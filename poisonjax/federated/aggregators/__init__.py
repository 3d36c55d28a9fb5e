r"""Robust aggregation rules for federated learning, as pure functions.

Every aggregator has the signature::

    aggregate, state, report = agg(updates, state=None, key=None, *, context=None, valid=None,
                                   weights=None, nan_policy="raise", **hyperparameters)

* ``updates``: an ``[n, d]`` array (one flattened update per client) or a pytree whose leaves carry a
  leading client axis ``[n, ...]``. The aggregate has the same form without the client axis
  (``[d]`` or the unstacked pytree).
* ``state``: aggregator state carried across rounds (``None`` for stateless rules; FoolsGold keeps
  client histories, centered clipping keeps its last center). ``None`` on the first call is fine:
  stateful rules initialise themselves (see :func:`get_aggregator` ``.init`` for a fixed-shape state
  to carry in a ``lax.scan``).
* ``key``: PRNG key for randomised rules (FLAME noise, DnC coordinate sampling).
* ``context``: a :class:`poisonjax.federated.simulation.RoundContext` (global params, client params,
  ``features_fn``, server data, root update) for rules that need more than the updates (FLTrust,
  FLARE, and defenses built on this engine).
* ``valid``: ``[n]`` bool, clients to consider (others are ignored); ``weights``: ``[n]`` client
  weights (e.g. sample counts) where the rule uses them.
* ``nan_policy``: ``"raise"`` -- concrete (non-traced) updates with NaN/inf raise
  :class:`~poisonjax.core.validation.PoisonJaxInputError` naming the clients; ``"exclude"`` -- such
  rows are zeroed, never aggregated, and reported in ``report["nonfinite"]``. Inside ``jit`` (the
  simulation) non-finite rows are always excluded and reported.
* ``report``: dict with at least ``scores`` (``[n]`` float, higher = more suspicious), ``flags``
  (``[n]`` bool, True = flagged/excluded as malicious), ``weights`` (``[n]``, the weight each client
  got in the aggregate, or the fraction of its coordinates kept for coordinate-wise rules) and
  ``nonfinite`` (``[n]`` bool). Detection precision/recall compare ``flags`` with the truth
  (:mod:`poisonjax.federated.metrics`).

Pairwise distances are matrix products over the stacked updates
(:math:`\|x_i-x_j\|^2 = \|x_i\|^2 + \|x_j\|^2 - 2 x_i^\top x_j`), never Python loops over clients.

A Python list of per-client updates (``[d]`` arrays of one shape, or pytrees of one structure) is
stacked and accepted; a list of mismatched shapes is refused with a message saying what to pass.
``inspect.signature`` of every rule shows the signature above with the rule's hyperparameters.

The package: :mod:`~poisonjax.federated.aggregators.base` (the decorator :func:`aggregator_fn`,
:class:`Aggregator`, pairwise-distance helpers, :func:`weighted_mean`),
:mod:`~poisonjax.federated.aggregators.rules` (the 13 classic rules) and, here, the registry
:data:`AGGREGATORS` / :func:`get_aggregator`, which also holds GeminiGuard
(:mod:`poisonjax.federated.geminiguard`) and WeiDetect (:mod:`poisonjax.federated.weidetect`).
"""
from __future__ import annotations

import functools
import importlib

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.federated.aggregators.base import (Aggregator, aggregator_fn, dist_to, krum_min_clients,
                                                  krum_scores, masked_median, mmd2_matrix, pairwise_cosine,
                                                  pairwise_sq_distances, weighted_mean)
from poisonjax.federated.aggregators.rules import (bulyan, centered_clipping, centered_clipping_init, dnc, fedavg,
                                                   flame, flare, fltrust, foolsgold, foolsgold_init, krum, median,
                                                   multi_krum, rfa, trimmed_mean)

__all__ = [
    "fedavg", "krum", "multi_krum", "median", "trimmed_mean", "bulyan", "rfa", "fltrust", "flame",
    "foolsgold", "dnc", "centered_clipping", "flare", "geminiguard", "weidetect", "Aggregator", "get_aggregator",
    "AGGREGATORS", "USES_NUM_MALICIOUS", "aggregator_fn", "pairwise_sq_distances", "pairwise_cosine", "mmd2_matrix",
    "masked_median", "krum_scores", "weighted_mean", "dist_to", "krum_min_clients",
]

_STATELESS = lambda num_clients, dim: None  # noqa: E731

# defenses defined in their own modules (imported on first use: they build on this package)
_EXTERNAL = {"geminiguard": ("poisonjax.federated.geminiguard", "geminiguard"),
             "weidetect": ("poisonjax.federated.weidetect", "weidetect_aggregator")}


def _external(name):
    mod, attr = _EXTERNAL[name]
    return getattr(importlib.import_module(mod), attr)


def _lazy(name):
    def fn(updates, state=None, key=None, **kw):
        return _external(name)(updates, state, key, **kw)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"{name} (see :mod:`{_EXTERNAL[name][0]}`); resolved on first call."
    return fn


#: name -> ``(fn, init, needs)``: the 13 classic rules, GeminiGuard and WeiDetect.
AGGREGATORS = {
    "fedavg": (fedavg, _STATELESS, ()),
    "krum": (krum, _STATELESS, ()),
    "multi_krum": (multi_krum, _STATELESS, ()),
    "median": (median, _STATELESS, ()),
    "trimmed_mean": (trimmed_mean, _STATELESS, ()),
    "bulyan": (bulyan, _STATELESS, ()),
    "rfa": (rfa, _STATELESS, ()),
    "fltrust": (fltrust, _STATELESS, ("root_update",)),
    "flame": (flame, _STATELESS, ()),
    "foolsgold": (foolsgold, foolsgold_init, ()),
    "dnc": (dnc, _STATELESS, ()),
    "centered_clipping": (centered_clipping, centered_clipping_init, ()),
    "flare": (flare, _STATELESS, ("features",)),
    "geminiguard": (_lazy("geminiguard"), _STATELESS, ("features",)),
    "weidetect": (_lazy("weidetect"), _STATELESS, ()),
}

# hyperparameters that take the number of malicious clients per round
USES_NUM_MALICIOUS = ("krum", "multi_krum", "bulyan", "dnc")


def get_aggregator(name: str, **kwargs) -> Aggregator:
    """Build :class:`Aggregator` ``name`` (one of :data:`AGGREGATORS`) with hyperparameters bound.

    Example: ``get_aggregator("krum", num_malicious=4)``, ``get_aggregator("trimmed_mean", beta=0.2)``,
    ``get_aggregator("geminiguard", fusion="union")``, ``get_aggregator("weidetect", metric="macro_f1")``.
    """
    if name not in AGGREGATORS:
        raise PoisonJaxInputError(f"unknown aggregator {name!r}; expected one of {sorted(AGGREGATORS)}")
    if name in _EXTERNAL:
        return importlib.import_module(_EXTERNAL[name][0]).make_aggregator(**kwargs)
    fn, init, needs = AGGREGATORS[name]
    return Aggregator(name, functools.partial(fn, **kwargs), init, needs)


def __getattr__(name):  # A.geminiguard / A.weidetect: the functions of their modules
    if name in _EXTERNAL:
        return _external(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
