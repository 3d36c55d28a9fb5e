"""Where data lives, and how missing files are reported (DESIGN.md section 5).

The data root is ``data_dir`` if given, else ``$POISONJAX_DATA``, else ``~/.cache/poisonjax``.
:func:`require` returns the path of a file under the root or raises :class:`DataNotFoundError`
saying exactly where to put it; :func:`download` fetches a URL into the cache and checks its sha256.
"""
from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path
from typing import Optional


class DataNotFoundError(FileNotFoundError):
    """A dataset file is missing; the message says where it was looked for."""


def data_root(data_dir: Optional[str | os.PathLike] = None) -> Path:
    """``data_dir`` > ``$POISONJAX_DATA`` > ``~/.cache/poisonjax``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get("POISONJAX_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "poisonjax"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for blk in iter(lambda: f.read(1 << 20), b""):
            h.update(blk)
    return h.hexdigest()


def require(relpath: str, data_dir=None, *, url: Optional[str] = None, sha256: Optional[str] = None,
            what: str = "") -> Path:
    """Path of ``relpath`` under the data root; download it from ``url`` if missing and known.

    Raises:
      DataNotFoundError: naming the expected location and the ``POISONJAX_DATA`` convention.
    """
    root = data_root(data_dir)
    path = root / relpath
    if path.exists():
        if sha256 is not None and sha256_file(path) != sha256:
            raise DataNotFoundError(f"{path} exists but its sha256 does not match the expected {sha256[:12]}...; "
                                    "the file is corrupt or a different version -- replace it")
        return path
    if url is not None:
        try:
            return download(url, path, sha256)
        except OSError as e:
            reason = f" (download from {url} failed: {e})"
    else:
        reason = ""
    raise DataNotFoundError(
        f"{what or 'data file'} not found: expected {path}{reason}. Put the file there, or point "
        f"POISONJAX_DATA (or data_dir=) at the folder that holds {relpath!r}.")


def download(url: str, dest: Path, sha256: Optional[str] = None) -> Path:
    """Download ``url`` to ``dest`` (atomically) and verify ``sha256`` if given."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
        while True:
            blk = r.read(1 << 20)
            if not blk:
                break
            f.write(blk)
    if sha256 is not None and sha256_file(tmp) != sha256:
        tmp.unlink()
        raise OSError(f"sha256 mismatch for {url}")
    tmp.replace(dest)
    return dest
