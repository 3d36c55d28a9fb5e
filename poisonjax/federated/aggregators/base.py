"""The aggregator engine: input conversion (arrays, pytrees, lists of per-client updates), the
``@aggregator_fn`` decorator (validation, NaN-row exclusion, report defaults, the documented
signature), :class:`Aggregator` and shared linear-algebra helpers. See the package docstring
(:mod:`poisonjax.federated.aggregators`) for the aggregator protocol."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core.ensemble import flatten_stacked, index, unflatten_like
from poisonjax.core.validation import PoisonJaxInputError

PyTree = Any
AggOut = Tuple[Any, Any, dict]

__all__ = ["Aggregator", "aggregator_fn", "pairwise_sq_distances", "pairwise_cosine", "mmd2_matrix", "masked_median",
           "krum_scores", "weighted_mean", "dist_to", "krum_min_clients"]


# ----------------------------------------------------------------------------------- helpers ----

def pairwise_sq_distances(x: jax.Array) -> jax.Array:
    r"""``[n, d] -> [n, n]`` squared Euclidean distances :math:`\|x_i\|^2+\|x_j\|^2-2x_i^\top x_j`
    (one matrix product; clipped at 0, exact zeros on the diagonal)."""
    x = x.astype(jnp.float32)
    sq = jnp.sum(x * x, axis=1)
    g = jnp.matmul(x, x.T, precision=jax.lax.Precision.HIGHEST)
    d = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * g, 0.0)
    return d * (1.0 - jnp.eye(x.shape[0], dtype=d.dtype))


def pairwise_cosine(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    r"""``[n, d] -> [n, n]`` cosine similarities :math:`x_i^\top x_j / (\|x_i\|\|x_j\|)`."""
    x = x.astype(jnp.float32)
    xn = x / jnp.maximum(jnp.linalg.norm(x, axis=1, keepdims=True), eps)
    return jnp.matmul(xn, xn.T, precision=jax.lax.Precision.HIGHEST)


def masked_median(x: jax.Array, valid: jax.Array) -> jax.Array:
    """Coordinate-wise median of the valid rows of ``x [n, d]`` (``valid [n]`` bool) -> ``[d]``.

    With k valid rows: the mean of the sorted values at positions ``(k-1)//2`` and ``k//2``.
    """
    xs = jnp.sort(jnp.where(valid[:, None], x, jnp.inf), axis=0)
    k = jnp.sum(valid).astype(jnp.int32)
    lo = jnp.take(xs, jnp.maximum((k - 1) // 2, 0), axis=0)
    hi = jnp.take(xs, jnp.maximum(k // 2, 0), axis=0)
    return jnp.where(k > 0, 0.5 * (lo + hi), 0.0)


def krum_scores(x: jax.Array, valid: jax.Array, num_malicious: int,
                d2: Optional[jax.Array] = None) -> jax.Array:
    r"""Krum score :math:`s_i = \sum_{j \in N_i} \|x_i - x_j\|^2` over the :math:`k - f - 2`
    nearest valid neighbours of ``i`` (k = number of valid rows); ``inf`` for invalid rows."""
    n = x.shape[0]
    d2 = pairwise_sq_distances(x) if d2 is None else d2
    both = valid[:, None] & valid[None, :] & ~jnp.eye(n, dtype=bool)
    ds = jnp.sort(jnp.where(both, d2, jnp.inf), axis=1)
    k = jnp.sum(valid).astype(jnp.int32)
    m = jnp.maximum(k - num_malicious - 2, 1)
    take = jnp.arange(n)[None, :] < m
    s = jnp.sum(jnp.where(take, ds, 0.0), axis=1)
    return jnp.where(valid, s, jnp.inf)


def mmd2_matrix(feats: jax.Array, bandwidth: Optional[float] = None) -> jax.Array:
    r"""Pairwise squared MMD between clients' feature sets, Gaussian kernel.

    ``feats [n, A, h]`` (client i's penultimate features of the A server samples) -> ``[n, n]`` with
    :math:`\mathrm{MMD}^2(i,j) = \bar K_{ii} + \bar K_{jj} - 2\bar K_{ij}`,
    :math:`\bar K_{ij} = \frac{1}{A^2}\sum_{p,q} \exp(-\|f_{ip}-f_{jq}\|^2 / (2\sigma^2))`.
    ``bandwidth`` :math:`\sigma`; default: the median heuristic
    :math:`\sigma^2 = \mathrm{median}\,\|f-f'\|^2 / 2` over (up to 512) pooled features.
    Memory is ``O(A * n * A)`` (one client row at a time).
    """
    n, a, h = feats.shape
    f = feats.astype(jnp.float32)
    pool = f.reshape(n * a, h)
    if bandwidth is None:
        sub = pool[:: max(1, (n * a) // 512)]
        s2 = jnp.median(pairwise_sq_distances(sub)[jnp.triu_indices(sub.shape[0], 1)]) / 2.0
        s2 = jnp.maximum(s2, 1e-6)
    else:
        s2 = jnp.asarray(bandwidth, jnp.float32) ** 2
    psq = jnp.sum(pool * pool, axis=1)

    def row(fi):  # [A, h] -> [n] mean kernel against every client
        d2 = jnp.maximum(jnp.sum(fi * fi, 1)[:, None] + psq[None, :] - 2.0 * fi @ pool.T, 0.0)
        return jnp.exp(-d2 / (2.0 * s2)).reshape(a, n, a).mean(axis=(0, 2))

    kbar = jax.lax.map(row, f)  # [n, n]
    diag = jnp.diag(kbar)
    return jnp.maximum(diag[:, None] + diag[None, :] - kbar - kbar.T, 0.0)


def _is_tracer(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _stack_list(updates):
    """A Python list/tuple of per-client updates (arrays of one shape, or pytrees of one structure)
    -> the stacked form with a leading client axis; anything else is refused with what to pass."""
    if len(updates) == 0:
        raise PoisonJaxInputError("updates is an empty list; pass an [n_clients, d] array or a list of "
                                  "n_clients per-client updates")
    structs = {jax.tree.structure(u) for u in updates}
    shapes = {tuple(np.shape(l)) for u in updates for l in jax.tree.leaves(u)} if len(structs) == 1 else None
    if len(structs) != 1 or any(not hasattr(l, "shape") and not isinstance(l, (int, float))
                               for u in updates for l in jax.tree.leaves(u)):
        raise PoisonJaxInputError(
            "updates is a list whose entries differ in structure or are not arrays; pass an [n_clients, d] "
            "array (e.g. jnp.stack(list_of_updates)), a pytree whose leaves have a leading client axis, or a "
            "list of n_clients arrays (or pytrees) of one shape")
    try:
        return jax.tree.map(lambda *ls: jnp.stack([jnp.asarray(l) for l in ls]), *updates)
    except (ValueError, TypeError) as e:
        raise PoisonJaxInputError(
            f"updates is a list of per-client updates of different shapes ({sorted(shapes or [])[:4]}); every "
            "client's update must have the same shape: pass an [n_clients, d] array or a list of n_clients "
            "[d] arrays") from e


def _to_matrix(updates):
    """-> (X [n, d] float32, unflatten(row [d]) -> aggregate in the input's form). A Python list or
    tuple is a list of per-client updates (stacked; the aggregate has one client's form)."""
    if isinstance(updates, (list, tuple)) and not hasattr(updates, "_fields"):
        updates = _stack_list(updates)
    if isinstance(updates, (np.ndarray, jax.Array)) or _is_tracer(updates):
        x = jnp.asarray(updates)
        if x.ndim != 2:
            raise PoisonJaxInputError(
                f"updates must be an [n_clients, d] array or a pytree with a leading client axis, got shape {x.shape}")
        return x.astype(jnp.float32), (lambda v: v)
    leaves = jax.tree.leaves(updates)
    if not leaves:
        raise PoisonJaxInputError("updates is an empty pytree; expected leaves with a leading client axis")
    sizes = {l.shape[0] if getattr(l, "ndim", 0) else None for l in leaves}
    if len(sizes) != 1 or None in sizes:
        raise PoisonJaxInputError(f"every leaf of updates must share a leading client axis, got sizes {sizes}")
    like = index(updates, 0)
    return flatten_stacked(updates).astype(jnp.float32), (lambda v: unflatten_like(v, like))


_COMMON = [inspect.Parameter("updates", inspect.Parameter.POSITIONAL_OR_KEYWORD),
           inspect.Parameter("state", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
           inspect.Parameter("key", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
           inspect.Parameter("context", inspect.Parameter.KEYWORD_ONLY, default=None),
           inspect.Parameter("valid", inspect.Parameter.KEYWORD_ONLY, default=None),
           inspect.Parameter("weights", inspect.Parameter.KEYWORD_ONLY, default=None),
           inspect.Parameter("nan_policy", inspect.Parameter.KEYWORD_ONLY, default="raise")]


def _public_signature(inner) -> inspect.Signature:
    """The documented signature ``(updates, state=None, key=None, *, context=None, valid=None,
    weights=None, nan_policy='raise', <the rule's hyperparameters>)`` (what ``inspect.signature`` and
    ``help()`` show, instead of the inner ``(x, valid, state, key, context, weights, ...)``)."""
    hyper = [p for p in inspect.signature(inner).parameters.values() if p.kind == inspect.Parameter.KEYWORD_ONLY]
    return inspect.Signature(_COMMON + hyper)


def aggregator_fn(min_clients: Callable[[dict], Tuple[int, str]] = None):
    """Decorator turning ``inner(X [n, d], valid [n] bool, state, key, context, weights, **kw) ->
    (agg [d], state, report)`` into a full aggregator: array / pytree / list-of-updates input,
    validation (``min_clients(n, kw) -> (need, message)``), NaN-row exclusion, ``valid`` mask, report
    defaults, and the documented signature for ``inspect.signature``. ``wrapper.inner`` is ``inner``."""

    def deco(inner):
        @functools.wraps(inner)
        def wrapper(updates, state=None, key=None, *, context=None, valid=None, weights=None,
                    nan_policy: str = "raise", **kw):
            x, unflatten = _to_matrix(updates)
            n = x.shape[0]
            if n < 1:
                raise PoisonJaxInputError("updates must hold at least one client (got n_clients=0)")
            if nan_policy not in ("raise", "exclude"):
                raise PoisonJaxInputError(f"nan_policy must be 'raise' or 'exclude', got {nan_policy!r}")
            if min_clients is not None:
                need, why = min_clients(n, kw)
                if n < need:
                    raise PoisonJaxInputError(f"{inner.__name__}: {why} (got n_clients={n}, {kw})")
            finite = jnp.all(jnp.isfinite(x), axis=1)
            if nan_policy == "raise" and not _is_tracer(x):
                bad = np.flatnonzero(~np.asarray(finite))
                if bad.size:
                    raise PoisonJaxInputError(
                        f"updates of clients {bad.tolist()[:20]} contain NaN/inf; pass nan_policy='exclude' "
                        "to drop them from the aggregate (they are then reported in report['nonfinite'])")
            v = finite if valid is None else (jnp.asarray(valid, bool) & finite)
            x = jnp.where(finite[:, None], x, 0.0)
            w = None if weights is None else jnp.where(v, jnp.asarray(weights, jnp.float32), 0.0)
            key = jax.random.PRNGKey(0) if key is None else key
            agg, state, report = inner(x, v, state, key, context, w, **kw)
            report = dict(report)
            report.setdefault("scores", jnp.zeros((n,), jnp.float32))
            report.setdefault("flags", jnp.zeros((n,), bool))
            report["flags"] = report["flags"] | ~finite
            report["nonfinite"] = ~finite
            return unflatten(agg), state, report

        wrapper.inner = inner
        wrapper.__signature__ = _public_signature(inner)
        return wrapper

    return deco


def weighted_mean(x: jax.Array, w: jax.Array) -> jax.Array:
    r"""Weighted mean of the rows of ``x [n, d]`` with weights ``w [n]`` (>= 0):
    :math:`\sum_i w_i x_i / \sum_i w_i`, and zeros ``[d]`` when every weight is 0."""
    s = jnp.sum(w)
    return jnp.where(s > 0, (w @ x) / jnp.maximum(s, 1e-12), jnp.zeros((x.shape[1],), x.dtype))




def dist_to(x: jax.Array, c: jax.Array) -> jax.Array:
    """``[n]`` Euclidean distances of the rows of ``x [n, d]`` to ``c [d]``."""
    return jnp.linalg.norm(x - c[None, :], axis=1)


def krum_min_clients(n, kw):
    """``(2f + 3, message)``: Krum's client requirement for ``num_malicious`` f."""
    f = int(kw.get("num_malicious", 0))
    if f < 0:
        raise PoisonJaxInputError(f"num_malicious must be >= 0, got {f}")
    return 2 * f + 3, f"Krum needs n > 2f + 2 clients for num_malicious f={f}"


class Aggregator(NamedTuple):
    """An aggregator ready for the simulation.

    ``fn(updates, state, key, *, context, valid, nan_policy) -> (aggregate, state, report)`` with the
    hyperparameters bound; ``init(num_clients, dim) -> state`` gives the fixed-shape initial state
    (``None`` for stateless rules); ``needs`` lists what the simulation must put in the
    :class:`RoundContext`: ``"root_update"`` (server update on root data), ``"features"`` (aux data
    + features_fn), ``"client_params"`` (documentary: always available)."""

    name: str
    fn: Callable
    init: Callable = lambda num_clients, dim: None
    needs: tuple = ()
