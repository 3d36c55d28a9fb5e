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
