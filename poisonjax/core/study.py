"""What every study (``experiments/<study>.py``) shares: its workdir, its finished-cell cache, its results.

* :func:`prepare_workdir` -- upgrade deprecated config keys (:func:`poisonjax.core.names.upgrade_config`),
  create the workdir and write ``config.json``; refuse a workdir that holds another config's run
  (``mutable`` keys may differ: settings that do not change what was computed and cached).
* :class:`CellCache` -- a study is a grid of *cells* (attack x defense x ...); a finished cell is a
  JSON file ``cells/<name>.json`` and is never recomputed; an unfinished cell's iterative process
  (FL rounds, attack steps) checkpoints under ``cells/<name>/`` through :mod:`poisonjax.core.runner`,
  so a killed study resumes mid-cell.
* :func:`write_results` -- ``results.json`` with the table as ``rows`` (a list of flat dicts using the
  standard names of :mod:`poisonjax.core.names`) plus any study-specific entries.
* :func:`main_print` -- print on process 0 only (multi-host runs: every process computes, one writes).

Only process 0 writes files (:func:`poisonjax.core.parallel.is_main_process`).
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

from poisonjax.core.names import upgrade_config
from poisonjax.core.parallel import is_main_process
from poisonjax.core.reporting import jsonable, write_json

__all__ = ["upgrade_config", "prepare_workdir", "CellCache", "write_results", "flat_row", "main_print", "is_main_process"]


def _drop(d: Any, keys: Sequence[str]) -> Any:
    if not isinstance(d, dict):
        return d
    return {k: v for k, v in d.items() if k not in keys}


def prepare_workdir(workdir: str | os.PathLike, config: Any, *, mutable: Sequence[str] = ()) -> Path:
    """Create ``workdir`` and write ``config.json``; refuse a workdir that holds another config's run.

    Deprecated config keys are first moved to their new names (in place; with a deprecation message).
    Top-level keys in ``mutable`` may differ from the stored config (e.g. evaluation settings or a
    progress flag that do not invalidate cached results); ``config.json`` is then rewritten with the new
    values. Only process 0 writes.

    Raises:
      poisonjax.core.runner.CheckpointMismatchError: ``workdir/config.json`` exists and differs in a
        key outside ``mutable``.
      poisonjax.core.validation.PoisonJaxInputError: ``workdir`` exists and is not a folder.
    """
    from poisonjax.core.runner import CheckpointMismatchError
    from poisonjax.core.validation import PoisonJaxInputError
    upgrade_config(config)
    wd = Path(workdir)
    if wd.exists() and not wd.is_dir():
        raise PoisonJaxInputError(f"workdir {str(wd)!r} exists and is not a folder; pass a new --workdir")
    new = json.loads(json.dumps(jsonable(config)))
    path = wd / "config.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            old = None
        if _drop(old, mutable) != _drop(new, mutable):
            diff = sorted(k for k in set(old or {}) | set(new) if (old or {}).get(k) != new.get(k)
                          and k not in mutable) if isinstance(old, dict) else ["(unreadable config.json)"]
            raise CheckpointMismatchError(
                f"workdir {str(wd)!r} holds results of a different config (differs in {', '.join(diff[:8])}; "
                "see its config.json); use a new --workdir, or delete the old one to start over")
    if is_main_process():
        wd.mkdir(parents=True, exist_ok=True)
    write_json(path, new)
    return wd


class CellCache:
    """Finished cells of a study grid, one JSON file each under ``workdir/<folder>/``.

    ``cache.get(name)`` -> the stored dict or ``None``; ``cache.put(name, cell)`` stores it (process 0)
    and removes the cell's checkpoint folder; ``cache.run_dir(name)`` is the folder an unfinished cell
    gives :func:`poisonjax.core.runner.run` (checkpoints, metrics.jsonl) so it resumes mid-cell;
    ``cache.cached(name, compute)`` combines them. Names may contain letters, digits and ``._-``.
    """

    def __init__(self, workdir: str | os.PathLike, folder: str = "cells"):
        self.root = Path(workdir) / folder
        if is_main_process():
            self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _check(name: str) -> str:
        from poisonjax.core.validation import PoisonJaxInputError
        if not name or any(not (c.isalnum() or c in "._-") for c in name):
            raise PoisonJaxInputError(f"cell name must use letters, digits and '._-', got {name!r}")
        return name

    def path(self, name: str) -> Path:
        """``<folder>/<name>.json``."""
        return self.root / f"{self._check(name)}.json"

    def run_dir(self, name: str) -> Path:
        """``<folder>/<name>/``: the unfinished cell's runner workdir (checkpoints, metrics.jsonl)."""
        return self.root / self._check(name)

    def __contains__(self, name: str) -> bool:
        return self.path(name).exists()

    def get(self, name: str) -> Optional[dict]:
        """The finished cell, or ``None``."""
        p = self.path(name)
        return json.loads(p.read_text()) if p.exists() else None

    def put(self, name: str, cell: dict, *, keep_checkpoints: bool = False) -> dict:
        """Store a finished cell (atomically: a killed write never looks finished); returns ``cell``
        as stored (JSON types). The cell's checkpoints (every ``checkpoints/`` folder under
        :meth:`run_dir`, so also those of a cell's separately resumable parts) are deleted unless
        ``keep_checkpoints``."""
        cell = json.loads(json.dumps(jsonable(cell)))
        if is_main_process():
            p = self.path(name)
            tmp = p.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(cell, indent=2))
            os.replace(tmp, p)
            rd = self.run_dir(name)
            if not keep_checkpoints and rd.exists():
                # the cell's own runner checkpoints and those of its parts (rd/<part>/checkpoints)
                for ck in sorted(rd.rglob("checkpoints"), key=lambda q: len(q.parts), reverse=True):
                    if ck.is_dir():
                        shutil.rmtree(ck, ignore_errors=True)
        return cell

    def cached(self, name: str, compute: Callable[[Path], dict]) -> dict:
        """``get(name)``, or ``put(name, compute(run_dir(name)))``."""
        cell = self.get(name)
        return cell if cell is not None else self.put(name, compute(self.run_dir(name)))


def flat_row(row: Dict[str, Any]) -> Dict[str, Any]:
    """A row with scalar values only: ``{"mean": m, "std": s}`` under ``k`` becomes ``k = m`` and
    ``k_std = s``; any other nested dict ``{sub: v}`` becomes ``k_sub = v``; numpy scalars become
    Python numbers; non-finite floats become ``None``. Lists are refused (keep curves out of rows).
    """
    from poisonjax.core.validation import PoisonJaxInputError
    out: Dict[str, Any] = {}
    for k, v in row.items():
        v = jsonable(v)
        if isinstance(v, dict):
            if "mean" in v:
                out[k] = v["mean"]
                if "std" in v:
                    out[f"{k}_std"] = v["std"]
            else:
                out.update(flat_row({f"{k}_{s}": w for s, w in v.items()}))
            continue
        if isinstance(v, list):
            raise PoisonJaxInputError(f"results row key {k!r} holds a list; rows are flat (scalars only)")
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
    return out


def write_results(workdir: str | os.PathLike, rows: Sequence[Dict[str, Any]], **extra) -> dict:
    """Write ``workdir/results.json`` = ``{"rows": [flat rows], **extra}`` (process 0) and return it.

    ``rows`` is the study's table (one flat dict per row, standard names; see :func:`flat_row`);
    ``extra`` holds the study's other outputs (settings, per-cell details, curves)."""
    results = {"rows": [flat_row(r) for r in rows], **extra}
    write_json(Path(workdir) / "results.json", results)
    return results


def main_print(*args, **kwargs) -> None:
    """``print`` on process 0 only."""
    if is_main_process():
        print(*args, **kwargs)
