r"""Units of a network: capture activations, score units, build top-k unit masks, apply masks to params.

A *unit* is one output neuron of a ``Dense`` layer or one output channel of a ``Conv`` layer (the last
axis of the layer's kernel, of its bias, and of the BatchNorm that follows). Fine-pruning (Liu et al.
2018), CLP (Zheng et al. 2022), T-Core's channel filter and SoUL's selective pruning all act on units,
so the pieces live here, once:

* :func:`capture_activations` -- the outputs of every (or selected) flax submodule for a batch
  (flax's ``capture_intermediates``), as a flat ``{"path/to/layer": array}`` dict.
* :func:`unit_activation_stats` -- per unit, the mean absolute activation over every axis but the
  last: :math:`a_u = \frac{1}{|B| \cdot |S|} \sum_{i \in B} \sum_{s \in S} |h_{i,s,u}|` (``S`` the
  spatial positions of a conv layer).
* :func:`unit_importance_ratio` -- SoUL's score :math:`r_u = a_u^{\text{forget}} / (a_u^{\text{retain}} + \epsilon)`.
* :func:`topk_unit_mask` -- keep-mask per layer that removes the top ``fraction`` of units by score
  (per layer, or globally across layers).
* :func:`apply_unit_mask` -- zero the kernel columns (and biases, and BatchNorm scale/bias) of masked
  units; the masked network's unit output is exactly 0 before its nonlinearity.
* :func:`unit_param_mask` -- the same mask as a params-shaped pytree of 0/1 (for ``optax.masked`` or
  for freezing pruned units during fine-tuning).

Layer names are ``"/"``-joined module paths, the same in captured activations and in params (flax's
``capture_intermediates`` records ``__call__`` outputs under the module's path).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core.validation import PoisonJaxInputError, check_fraction

PyTree = Any


def _flatten_dict(d: Mapping, prefix: str = "") -> Dict[str, Any]:
    out = {}
    for k, v in d.items():
        path = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(_flatten_dict(v, path))
        else:
            out[path] = v
    return out


def capture_activations(module, variables: PyTree, x: jax.Array, layers: Optional[Sequence[str]] = None,
                        **apply_kwargs) -> Dict[str, jax.Array]:
    r"""Outputs of the submodules of a flax ``module`` on the batch ``x``.

    Args:
      module: a ``flax.linen.Module``.
      variables: its variables (``{"params": ..., "batch_stats": ...}``) or bare params.
      x: a batch ``[B, ...]``.
      layers: module paths to keep (``"Dense_0"``, ``"block1/Conv_0"``); all submodules if ``None``.
      apply_kwargs: passed to ``module.apply`` (e.g. ``train=False``).
    Returns:
      ``{path: activation [B, ..., units]}``; the root module's own output is not included.
    """
    if not (isinstance(variables, Mapping) and "params" in variables):
        variables = {"params": variables}
    _, state = module.apply(variables, x, capture_intermediates=True, mutable=["intermediates"], **apply_kwargs)
    flat = _flatten_dict(state["intermediates"])
    acts = {}
    for path, val in flat.items():
        name = path[: -len("/__call__")] if path.endswith("/__call__") else path
        if name == "__call__" or name == "":
            continue
        act = val[0] if isinstance(val, tuple) else val
        if not hasattr(act, "shape"):
            continue
        acts[name] = act
    if layers is not None:
        missing = [l for l in layers if l not in acts]
        if missing:
            raise PoisonJaxInputError(f"layers {missing} not found among captured modules {sorted(acts)}")
        acts = {l: acts[l] for l in layers}
    return acts


def unit_activation_stats(acts: Mapping[str, jax.Array]) -> Dict[str, jax.Array]:
    r"""Per layer, :math:`a_u` = mean of :math:`|h|` over every axis but the last (``[units]``)."""
    return {k: jnp.mean(jnp.abs(v).reshape(-1, v.shape[-1]), axis=0) for k, v in acts.items()}


def unit_importance_ratio(forget_stats: Mapping[str, jax.Array], retain_stats: Mapping[str, jax.Array],
                          eps: float = 1e-8) -> Dict[str, jax.Array]:
    r"""SoUL's unit importance :math:`r_u = a_u^{f} / (a_u^{r} + \epsilon)`: high for units that fire
    on the data to forget and little on the data to retain."""
    if set(forget_stats) != set(retain_stats):
        raise PoisonJaxInputError("forget_stats and retain_stats must cover the same layers")
    return {k: forget_stats[k] / (retain_stats[k] + eps) for k in forget_stats}


def topk_unit_mask(scores: Mapping[str, jax.Array], fraction: float, per_layer: bool = True,
                   largest: bool = True, min_keep: int = 1) -> Dict[str, jax.Array]:
    r"""Keep-masks that prune the ``fraction`` of units with the largest (``largest=True``) or smallest
    scores, per layer (``round(fraction * U_l)`` units of each layer) or globally across layers.

    Returns ``{layer: [U_l] float32 in {0, 1}}`` (1 = keep). Refuses to leave a layer fewer than
    ``min_keep`` units."""
    fraction = check_fraction("fraction", fraction, low_inclusive=True)
    out = {}
    if per_layer:
        for k, s in scores.items():
            s = jnp.asarray(s)
            n = int(round(fraction * s.shape[0]))
            if s.shape[0] - n < min_keep:
                raise PoisonJaxInputError(f"pruning fraction={fraction} leaves layer {k!r} with "
                                          f"{s.shape[0] - n} units (< {min_keep})")
            order = jnp.argsort(-s if largest else s)
            out[k] = jnp.ones(s.shape, jnp.float32).at[order[:n]].set(0.0)
        return out
    names = list(scores)
    flat = jnp.concatenate([jnp.asarray(scores[k]).reshape(-1) for k in names])
    n = int(round(fraction * flat.shape[0]))
    order = jnp.argsort(-flat if largest else flat)
    keep = jnp.ones(flat.shape, jnp.float32).at[order[:n]].set(0.0)
    o = 0
    for k in names:
        u = int(np.prod(jnp.shape(scores[k])))
        out[k] = keep[o:o + u]
        if float(out[k].sum()) < min_keep:
            raise PoisonJaxInputError(f"pruning fraction={fraction} (global) leaves layer {k!r} with "
                                      f"{int(out[k].sum())} units (< {min_keep})")
        o += u
    return out


def _layer_params(params: Mapping, path: str):
    node = params
    for part in path.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def unit_param_mask(params: PyTree, unit_masks: Mapping[str, jax.Array]) -> PyTree:
    r"""A params-shaped pytree of 0/1: for each masked layer, every leaf of the layer (kernel, bias,
    BatchNorm scale/bias) whose last axis has the layer's unit count is multiplied by the unit mask
    along that axis; all other leaves are 1."""
    flat = _flatten_dict(params)
    for layer in unit_masks:
        if _layer_params(params, layer) is None:
            raise PoisonJaxInputError(f"unit mask layer {layer!r} is not a module path in params; "
                                      f"known: {sorted({p.rsplit('/', 1)[0] for p in flat})}")
    out = {}
    for path, leaf in flat.items():
        layer = path.rsplit("/", 1)[0]
        m = unit_masks.get(layer)
        if m is not None and leaf.ndim >= 1 and leaf.shape[-1] == m.shape[0]:
            out[path] = jnp.broadcast_to(m.astype(leaf.dtype), leaf.shape)
        else:
            out[path] = jnp.ones(leaf.shape, leaf.dtype)
    return _unflatten_like(params, out)


def _unflatten_like(tree: Mapping, flat: Mapping[str, Any], prefix: str = ""):
    res = {}
    for k, v in tree.items():
        path = f"{prefix}/{k}" if prefix else str(k)
        res[k] = _unflatten_like(v, flat, path) if isinstance(v, Mapping) else flat[path]
    return type(tree)(res) if not hasattr(tree, "unfreeze") else res


def apply_unit_mask(params: PyTree, unit_masks: Mapping[str, jax.Array]) -> PyTree:
    r"""Prune units: :math:`\theta \leftarrow \theta \odot m` with :func:`unit_param_mask`, so a masked
    unit's pre-activation is exactly 0 (its kernel column and bias are zero)."""
    pm = unit_param_mask(params, unit_masks)
    return jax.tree.map(lambda p, m: p * m, params, pm)


def masked_fraction(unit_masks: Mapping[str, jax.Array]) -> float:
    """Fraction of units pruned over all masked layers."""
    tot = sum(int(m.shape[0]) for m in unit_masks.values())
    return float(sum(float(m.shape[0] - m.sum()) for m in unit_masks.values()) / max(tot, 1))
