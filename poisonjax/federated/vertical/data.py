r"""Vertical splits: which columns each party holds, padded to one width so parties stack and vmap.

A vertical dataset of ``N`` users and ``F`` features is split into ``P`` column groups; party ``k`` holds
``x[:, cols_k]``. Party 0 is the *active* party (labels + top model). To run all bottom models in one
``jax.vmap``, every party's block is zero-padded to ``d_max = max_k |cols_k|``:
``x_parts [P, N, d_max]`` with ``widths [P]`` (the true ``|cols_k|``); zero columns get zero gradient,
so the padded model computes exactly the unpadded one.

* :func:`image_strips` -- images ``[N, H, W, C]`` into vertical strips of ``strip_widths`` pixel columns
  (MNIST: 4 strips of 7; CIFAR-10: 4 strips of 8), each flattened to ``H * w * C`` features.
* :func:`column_groups` -- a tabular ``[N, F]`` array (e.g. NSL-KDD) by explicit index groups, or into
  ``P`` near-equal contiguous groups.
* :func:`make_vertical` -- either of the above plus validation (``num_parties``, empty parties, a single
  label holder, which is moved to index 0).
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import numpy as np

from poisonjax.core.validation import PoisonJaxInputError, check_positive_int


class VerticalData(NamedTuple):
    """``x_parts [P, N, d_max]`` float32 (zero-padded), ``widths [P]`` int (true feature counts),
    ``columns`` (list of P index arrays into the original flattened features), ``strip_shape``
    (per-party original shape of one sample, e.g. ``(28, 7, 1)``, or ``(w,)`` for tabular)."""

    x_parts: np.ndarray
    widths: np.ndarray
    columns: list
    strip_shapes: list


def _pad_stack(blocks):
    d_max = max(b.shape[1] for b in blocks)
    out = np.zeros((len(blocks), blocks[0].shape[0], d_max), np.float32)
    for k, b in enumerate(blocks):
        out[k, :, :b.shape[1]] = b
    return out


def strip_widths_for(width: int, num_parties: int, strip_width: Optional[int] = None) -> list:
    """Pixel-column widths of ``num_parties`` strips of an image ``width`` wide: ``strip_width`` each
    (the last takes the rest), or near-equal when ``strip_width`` is None."""
    num_parties = check_positive_int("num_parties", num_parties)
    if num_parties > width:
        raise PoisonJaxInputError(f"num_parties={num_parties} is larger than the feature width {width}; "
                                  "every party needs at least one column")
    if strip_width is None:
        return [len(a) for a in np.array_split(np.arange(width), num_parties)]
    strip_width = check_positive_int("strip_width", strip_width)
    ws = [strip_width] * (num_parties - 1)
    last = width - strip_width * (num_parties - 1)
    if last < 1:
        raise PoisonJaxInputError(f"strip_width={strip_width} x {num_parties - 1} parties leaves the last party "
                                  f"no columns of the {width}-pixel-wide image")
    return ws + [last]


def image_strips(images: np.ndarray, strip_widths: Sequence[int]):
    """Split ``images [N, H, W, C]`` into vertical strips of ``strip_widths`` columns (sum = W).

    Returns ``(blocks, shapes)``: ``blocks[k] [N, H * w_k * C]`` and ``shapes[k] = (H, w_k, C)``.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise PoisonJaxInputError(f"images must have shape (N, H, W, C), got {images.shape}")
    n, h, w, c = images.shape
    sw = [int(s) for s in strip_widths]
    if any(s < 1 for s in sw):
        raise PoisonJaxInputError(f"strip_widths must all be >= 1 (a party with no columns), got {sw}")
    if sum(sw) != w:
        raise PoisonJaxInputError(f"strip_widths must sum to the image width {w}, got {sw} (sum {sum(sw)})")
    edges = np.cumsum([0] + sw)
    blocks = [images[:, :, edges[k]:edges[k + 1], :].reshape(n, -1) for k in range(len(sw))]
    return blocks, [(h, s, c) for s in sw]


def column_groups(num_features: int, num_parties: Optional[int] = None,
                  groups: Optional[Sequence[Sequence[int]]] = None) -> list:
    """Feature index groups: ``groups`` as given (checked: non-empty, disjoint, in range) or
    ``num_parties`` contiguous near-equal groups."""
    if groups is None:
        if num_parties is None:
            raise PoisonJaxInputError("column_groups: give num_parties or groups")
        num_parties = check_positive_int("num_parties", num_parties)
        if num_parties > num_features:
            raise PoisonJaxInputError(f"num_parties={num_parties} is larger than the feature width {num_features}; "
                                      "every party needs at least one column")
        return [np.asarray(a) for a in np.array_split(np.arange(num_features), num_parties)]
    out, seen = [], set()
    for k, g in enumerate(groups):
        g = np.asarray(list(g), np.int64)
        if g.size == 0:
            raise PoisonJaxInputError(f"split: party {k} has no columns; every party needs at least one")
        if g.min() < 0 or g.max() >= num_features:
            raise PoisonJaxInputError(f"split: party {k} has column indices outside [0, {num_features})")
        if seen & set(g.tolist()):
            raise PoisonJaxInputError(f"split: party {k} shares columns with an earlier party; groups must be disjoint")
        seen |= set(g.tolist())
        out.append(g)
    return out


def make_vertical(x: np.ndarray, *, num_parties: int = 4, strip_widths: Optional[Sequence[int]] = None,
                  groups: Optional[Sequence[Sequence[int]]] = None, label_holders: Sequence[int] = (0,)) -> VerticalData:
    """Split ``x`` (images ``[N, H, W, C]`` by pixel-column strips, or tabular ``[N, F]`` by ``groups``
    / ``num_parties`` contiguous groups) among parties; the single label holder becomes party 0.

    Raises :class:`PoisonJaxInputError` (one line, naming the argument) for ``num_parties`` larger than the
    feature width, a split leaving a party no columns, and labels held by zero or several parties.
    """
    x = np.asarray(x, np.float32)
    holders = [int(h) for h in label_holders]
    if len(holders) != 1:
        raise PoisonJaxInputError(f"label_holders: exactly one party may hold the labels (the active party), "
                                  f"got {holders}")
    if x.ndim == 4:
        sw = list(strip_widths) if strip_widths is not None else strip_widths_for(x.shape[2], num_parties)
        if len(sw) > x.shape[2]:
            raise PoisonJaxInputError(f"num_parties={len(sw)} is larger than the feature width {x.shape[2]}")
        blocks, shapes = image_strips(x, sw)
        edges = np.cumsum([0] + sw)
        n, h, w, c = x.shape
        grid = np.arange(h * w * c).reshape(h, w, c)
        cols = [grid[:, edges[k]:edges[k + 1], :].reshape(-1) for k in range(len(sw))]
    elif x.ndim == 2:
        cols = column_groups(x.shape[1], num_parties, groups)
        blocks = [x[:, g] for g in cols]
        shapes = [(len(g),) for g in cols]
    else:
        raise PoisonJaxInputError(f"x must be images (N, H, W, C) or a table (N, F), got shape {x.shape}")
    p = len(blocks)
    if not 0 <= holders[0] < p:
        raise PoisonJaxInputError(f"label_holders: party {holders[0]} does not exist (there are {p} parties)")
    order = [holders[0]] + [k for k in range(p) if k != holders[0]]
    blocks, shapes, cols = [blocks[k] for k in order], [shapes[k] for k in order], [cols[k] for k in order]
    return VerticalData(_pad_stack(blocks), np.asarray([b.shape[1] for b in blocks]), cols, shapes)


def apply_split(vd: VerticalData, x: np.ndarray) -> np.ndarray:
    """Split new rows ``x`` (same layout as the array given to :func:`make_vertical`) with ``vd``'s columns;
    returns ``[P, M, d_max]``."""
    flat = np.asarray(x, np.float32).reshape(len(x), -1)
    return _pad_stack([flat[:, c] for c in vd.columns])


def stamp_strip_trigger(x_parts, party: int, strip_shape, size: int = 3, value: float = 1.0):
    """Set a ``size x size`` patch at the bottom-right corner of ``party``'s image strip to ``value``
    (``x_parts [P, N, d_max]``; works on numpy or jax arrays; returns a new array). For tabular strips
    (1-D shape) the last ``size`` features are set."""
    import jax.numpy as jnp
    mask = np.zeros((x_parts.shape[-1],), np.float32)
    if len(strip_shape) == 3:
        h, w, c = strip_shape
        m = np.zeros(strip_shape, np.float32)
        m[h - 1 - size:h - 1, w - size:w, :] = 1.0
        mask[:m.size] = m.reshape(-1)
    else:
        mask[strip_shape[0] - size:strip_shape[0]] = 1.0
    xp = jnp.asarray(x_parts)
    return xp.at[party].set(xp[party] * (1 - mask) + value * mask)


def trigger_mask(d_max: int, strip_shape, size: int = 3) -> np.ndarray:
    """The ``[d_max]`` 0/1 mask of :func:`stamp_strip_trigger`'s patch."""
    z = np.zeros((1, 1, d_max), np.float32)
    return np.asarray(stamp_strip_trigger(z, 0, strip_shape, size, 1.0))[0, 0]
