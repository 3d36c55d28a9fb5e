r"""Stacked parameters: K victims as one pytree whose leaves carry a leading ``[K, ...]`` axis.

``stack([p_1..p_K])`` and ``unstack`` convert between a list of pytrees and the stacked form;
:func:`ensemble_apply` evaluates all K victims on the same inputs with one ``vmap``
(:math:`y_k = f(\theta_k, x)`), and :func:`mean_std` summarises a per-victim metric.
"""
from __future__ import annotations

from typing import Any, Callable, List, Sequence

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any


def stack(trees: Sequence[PyTree]) -> PyTree:
    """Stack K pytrees of identical structure into one with leading axis K."""
    if len(trees) == 0:
        raise ValueError("trees must be a non-empty sequence of pytrees")
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree: PyTree) -> List[PyTree]:
    """Inverse of :func:`stack`: a list of K pytrees."""
    leaves, treedef = jax.tree.flatten(tree)
    k = leaves[0].shape[0]
    return [jax.tree.unflatten(treedef, [l[i] for l in leaves]) for i in range(k)]


def ensemble_size(tree: PyTree) -> int:
    """K, the leading axis size shared by every leaf."""
    sizes = {l.shape[0] for l in jax.tree.leaves(tree)}
    if len(sizes) != 1:
        raise ValueError(f"stacked params must share one leading axis size, got {sorted(sizes)}")
    return sizes.pop()


def index(tree: PyTree, i) -> PyTree:
    """Victim ``i`` of a stacked pytree."""
    return jax.tree.map(lambda l: l[i], tree)


def ensemble_apply(apply_fn: Callable, stacked_params: PyTree, *inputs, inputs_stacked: bool = False):
    """``[f(theta_k, *inputs) for k]`` as one vmapped call; outputs gain a leading K axis.

    ``inputs_stacked=True`` maps over a leading K axis of the inputs too (victim k sees input k).
    """
    in_axes = (0,) + ((0 if inputs_stacked else None),) * len(inputs)
    return jax.vmap(apply_fn, in_axes=in_axes)(stacked_params, *inputs)


def flatten_params(params: PyTree) -> jax.Array:
    """One model's params as a float32 vector ``[d]`` (leaf order of ``jax.tree``, the same order as
    one row of :func:`flatten_stacked`)."""
    return jnp.concatenate([l.reshape(-1).astype(jnp.float32) for l in jax.tree.leaves(params)])


def flatten_stacked(tree: PyTree) -> jax.Array:
    """Flatten each victim/client's pytree into one row: ``[K, d]`` (leaf order of ``jax.tree``)."""
    leaves = jax.tree.leaves(tree)
    k = leaves[0].shape[0]
    return jnp.concatenate([l.reshape(k, -1) for l in leaves], axis=1)


def unflatten_like(flat: jax.Array, like: PyTree) -> PyTree:
    """Inverse of :func:`flatten_stacked` for one row ``[d]`` given an unstacked template ``like``."""
    leaves, treedef = jax.tree.flatten(like)
    out, o = [], 0
    for l in leaves:
        out.append(flat[o:o + l.size].reshape(l.shape).astype(l.dtype))
        o += l.size
    return jax.tree.unflatten(treedef, out)


def mean_std(values) -> dict:
    """``{"mean": ..., "std": ..., "values": [...]}`` of a per-victim metric (population std)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    return {"mean": float(v.mean()), "std": float(v.std()), "values": [float(x) for x in v]}
