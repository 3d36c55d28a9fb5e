"""Writing a run's outputs: ``config.json``, ``results.json``, markdown tables, PNG plots, ``report.md``.

Only process 0 writes (multi-host runs). Plots use matplotlib's Agg backend (no screen needed).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Sequence

import numpy as np


def jsonable(x):
    """``x`` as plain JSON types: ConfigDicts, numpy/JAX scalars and arrays, tuples and paths converted recursively."""
    if hasattr(x, "to_dict"):
        x = x.to_dict()
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.generic,)):
        x = x.item()
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        return jsonable(np.asarray(x).tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else (1e308 if x > 0 else -1e308)
    return x


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` (numpy/JAX arrays and ConfigDicts converted) as indented JSON."""
    from poisonjax.core.parallel import is_main_process
    path = Path(path)
    if is_main_process():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(jsonable(obj), indent=2, sort_keys=False))
    return path


def _cell(v, floatfmt: str, pm: str) -> str:
    """A table cell: floats with ``floatfmt``, ``{"mean", "std"}`` dicts as ``mean ± std``, ``None``
    (an undefined metric, e.g. detection recall when no client attacks) as ``n/a``."""
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return format(v, floatfmt)
    if isinstance(v, dict) and "mean" in v:
        return f"{v['mean']:{floatfmt}}{pm}{v.get('std', 0.0):{floatfmt}}"
    return str(v)


def markdown_table(rows: Sequence[Dict[str, Any]], columns: Optional[Sequence[str]] = None, floatfmt: str = ".4f") -> str:
    """Render a list of dicts as a GitHub markdown table."""
    if not rows:
        return "(no rows)\n"
    columns = list(columns or rows[0].keys())
    fmt = lambda v: _cell(v, floatfmt, " ± ")
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def text_table(rows: Sequence[Dict[str, Any]], columns: Optional[Sequence[str]] = None, floatfmt: str = ".4f") -> str:
    """A plain fixed-width table for the terminal."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    fmt = lambda v: _cell(v, floatfmt, "±")
    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(x.ljust(w) for x, w in zip(row, widths)) for row in cells]
    return "\n".join(out)


def new_figure(**kw):
    """A matplotlib (Agg) figure and axes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt.subplots(**kw)


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Save a figure as PNG (process 0 only) and close it."""
    import matplotlib.pyplot as plt
    from poisonjax.core.parallel import is_main_process
    path = Path(path)
    if is_main_process():
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def grid_from_rows(rows: Sequence[Dict[str, Any]], row_key, col_key: str, value_key: str):
    r"""Pivot flat result rows into a matrix: :math:`G_{ij}` = ``row[value_key]`` of the row whose row label is the
    i-th and whose ``row[col_key]`` is the j-th distinct value, in order of first appearance; NaN where no row (or a
    ``None`` value) fills a cell. ``row_key``: a key, or a function of the row giving its label. Returns
    ``(G, row_labels, col_labels)``."""
    label = row_key if callable(row_key) else (lambda r: r[row_key])
    ys = list(dict.fromkeys(label(r) for r in rows))
    xs = list(dict.fromkeys(r[col_key] for r in rows))
    grid = np.full((len(ys), len(xs)), np.nan)
    for r in rows:
        v = r.get(value_key)
        if v is not None:
            grid[ys.index(label(r)), xs.index(r[col_key])] = float(v)
    return grid, ys, xs


def save_heatmap(path: str | os.PathLike, grid, row_labels: Sequence[str], col_labels: Sequence[str], *, title: str,
                 cmap: str = "Reds", colorbar_label: str = "", vmin: float = 0.0, vmax: float = 1.0,
                 cell_width: float = 0.8, label_width: float = 1.0, fontsize: int = 7) -> Path:
    r"""An annotated heat map as PNG (process 0 only): cell :math:`(i, j)` coloured by ``grid[i, j]`` on
    ``[vmin, vmax]`` with its value printed to two decimals (white on dark cells: luminance :math:`0.299R + 0.587G + 0.114B < 0.5`);
    NaN cells are left blank. Figure width ``label_width + cell_width * columns`` inches."""
    grid = np.asarray(grid, float)
    if grid.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"grid: expected shape ({len(row_labels)}, {len(col_labels)}) from the labels, "
                         f"got {grid.shape}")
    fig, ax = new_figure(figsize=(label_width + cell_width * len(col_labels), 1.0 + 0.45 * len(row_labels)))
    im = ax.imshow(grid, vmin=vmin, vmax=vmax, cmap=cmap)
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=45, ha="right", fontsize=fontsize)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=fontsize)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if np.isfinite(grid[i, j]):
                r, g, b, _ = im.cmap(im.norm(grid[i, j]))
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.03, label=colorbar_label)
    ax.set_title(title, fontsize=8)
    return save_figure(fig, path)


def write_report(workdir: str | os.PathLike, title: str, sections: Iterable[tuple], plots: Iterable[str] = ()) -> Path:
    """Write ``workdir/report.md``: a title, ``(heading, markdown)`` sections, then the PNG plots
    (paths relative to the workdir)."""
    from poisonjax.core.parallel import is_main_process
    wd = Path(workdir)
    parts = [f"# {title}\n"]
    for heading, body in sections:
        parts.append(f"## {heading}\n\n{body}\n")
    for p in plots:
        parts.append(f"![{Path(p).stem}]({p})\n")
    path = wd / "report.md"
    if is_main_process():
        wd.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(parts))
    return path


def prepare_workdir(workdir: str | os.PathLike, config: Any, *, mutable=()) -> Path:
    """Create ``workdir`` and write ``config.json``; refuse a workdir that holds another config's run.
    (Kept for existing callers: :func:`poisonjax.core.study.prepare_workdir`.)

    Raises:
      poisonjax.core.runner.CheckpointMismatchError: ``workdir/config.json`` exists and differs.
    """
    from poisonjax.core.study import prepare_workdir as _prepare
    return _prepare(workdir, config, mutable=mutable)
