"""Where data lives, and how missing files are reported (DESIGN.md section 5).

**The data root** is resolved in one documented order, the same for the CLI, the Python API and the tests:

1. ``data_dir=`` passed to a loader (the CLI's ``poisonjax data ... --data-dir``);
2. ``$POISONJAX_DATA`` if set;
3. ``shared/data`` beside the source checkout (``<checkout>/../shared/data``), if that folder exists
   (the development layout of this project; CI sets ``$POISONJAX_DATA`` to it explicitly);
4. ``~/.cache/poisonjax`` (where ``poisonjax data fetch`` writes by default).

A dataset is a folder of the root (``nsl_kdd/``, ``planetoid_cora_citeseer/`` ...; see
:mod:`poisonjax.data.registry`). :func:`require` returns the path of a file under the root or raises
:class:`DataNotFoundError` naming the dataset, the expected path and the ``poisonjax data fetch NAME`` command.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence, Tuple

_CHECKOUT = Path(__file__).resolve().parents[2]
#: ``<checkout>/../shared/data`` (step 3 of the resolution order; only for a source checkout, never site-packages).
CHECKOUT_SHARED = _CHECKOUT.parent / "shared" / "data" if (_CHECKOUT / "setup.py").is_file() else None
#: The default root (step 4).
DEFAULT_ROOT = Path.home() / ".cache" / "poisonjax"


class DataNotFoundError(FileNotFoundError):
    """Dataset files are missing. ``dataset`` names the dataset folder (``None`` if unknown), ``datasets`` all of
    them, ``missing`` the missing paths; the message lists them and the ``poisonjax data fetch`` command."""

    def __init__(self, message: str, *, dataset: Optional[str] = None, missing: Sequence[os.PathLike] = (),
                 datasets: Sequence[str] = ()):
        super().__init__(message)
        self.datasets = list(dict.fromkeys(list(datasets) or ([dataset] if dataset else [])))
        self.dataset = dataset if dataset is not None else (self.datasets[0] if self.datasets else None)
        self.missing = [Path(p) for p in missing]

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self):  # picklable across processes (pytest-xdist, multiprocessing)
        return (_rebuild_dnf, (str(self), self.dataset, [str(p) for p in self.missing], self.datasets))


def _rebuild_dnf(msg, dataset, missing, datasets):
    return DataNotFoundError(msg, dataset=dataset, missing=missing, datasets=datasets)


def data_root_and_source(data_dir: Optional[str | os.PathLike] = None) -> Tuple[Path, str]:
    """``(root, why)``: the data root by the resolution order above and which step chose it."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser(), "data_dir argument"
    env = os.environ.get("POISONJAX_DATA")
    if env:
        return Path(env).expanduser(), "$POISONJAX_DATA"
    if CHECKOUT_SHARED is not None and CHECKOUT_SHARED.is_dir():
        return CHECKOUT_SHARED, "shared/data beside the checkout"
    return DEFAULT_ROOT, "default ~/.cache/poisonjax"


def data_root(data_dir: Optional[str | os.PathLike] = None) -> Path:
    """The data root: ``data_dir`` > ``$POISONJAX_DATA`` > ``<checkout>/../shared/data`` (if it exists) >
    ``~/.cache/poisonjax``."""
    return data_root_and_source(data_dir)[0]


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for blk in iter(lambda: f.read(1 << 20), b""):
            h.update(blk)
    return h.hexdigest()


def fetch_command(datasets: Iterable[str], data_dir=None) -> str:
    """The shell command that fetches ``datasets`` into the root used by ``data_dir``."""
    names = " ".join(dict.fromkeys(datasets))
    root, why = data_root_and_source(data_dir)
    extra = f" --data-dir {root}" if why == "data_dir argument" else ""
    return f"poisonjax data fetch {names}{extra}"


def missing_message(missing: Sequence[Tuple[str, Path]], data_dir=None, what: str = "") -> str:
    """One message for all missing files ``[(dataset, path), ...]`` with the fetch command and the root."""
    root, why = data_root_and_source(data_dir)
    names = list(dict.fromkeys(d for d, _ in missing))
    files = ", ".join(str(p) for _, p in missing[:12]) + (f" (+{len(missing) - 12} more)" if len(missing) > 12 else "")
    head = f"{what}: " if what else ""
    return (f"{head}dataset {', '.join(names)} not found: missing {files}. Fetch it with: "
            f"{fetch_command(names, data_dir)} (data root {root}, from {why}; set POISONJAX_DATA or data_dir= "
            f"to use another folder)")


def require(relpath: str, data_dir=None, *, url: Optional[str] = None, sha256: Optional[str] = None,
            what: str = "") -> Path:
    """Path of ``relpath`` (``<dataset folder>/<file>``) under the data root.

    Raises:
      DataNotFoundError: naming the dataset, the expected path, the fetch command and the root's source.
    """
    root = data_root(data_dir)
    path = root / relpath
    dataset = Path(relpath).parts[0] if Path(relpath).parts else relpath
    if path.exists():
        if sha256 is not None and path.is_file() and sha256_file(path) != sha256:
            raise DataNotFoundError(f"{path} exists but its sha256 does not match the expected {sha256[:12]}...; "
                                    f"the file is corrupt or a different version -- delete it and run "
                                    f"{fetch_command([dataset], data_dir)}", dataset=dataset, missing=[path])
        return path
    if url is not None:
        from poisonjax.data.fetch import download
        try:
            return download(url, path, sha256)
        except OSError as e:
            what = f"{what} (download from {url} failed: {e})"
    missing = [(dataset, path)]
    from poisonjax.data import registry  # name every missing file of the dataset at once
    if dataset in registry.DATASETS:
        missing = registry.missing_files(dataset, data_dir) or missing
    raise DataNotFoundError(missing_message(missing, data_dir, what), dataset=dataset,
                            missing=[p for _, p in missing])
