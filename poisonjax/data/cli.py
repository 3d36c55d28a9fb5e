"""``poisonjax data list | check [NAME...] | fetch NAME... [--mirror URL]`` (wired into :mod:`poisonjax.cli`)."""
from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap

from poisonjax.data import registry
from poisonjax.data._base import data_root_and_source

EPILOG = """The data root is, in this order: --data-dir; $POISONJAX_DATA; ../shared/data beside a source checkout
(if it exists); ~/.cache/poisonjax. The same order holds for the Python API (data_dir=) and the tests.

examples:
  poisonjax data list                               # every dataset: files, size, licence, source, studies
  poisonjax data check                              # verify every dataset present under the data root
  poisonjax data fetch nsl_kdd                      # download from the pinned source, verify SHA-256
  poisonjax data fetch mnist --mirror https://example.org/poisonjax-data   # reads URL/mnist/<file>"""


def add_parser(sub) -> argparse.ArgumentParser:
    """Add the ``data`` sub-command (and its list/check/fetch sub-commands) to ``sub``."""
    d = sub.add_parser("data", help="list, check (SHA-256) and fetch the datasets",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    dsub = d.add_subparsers(dest="data_command", metavar="{list,check,fetch}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", help="data root (overrides $POISONJAX_DATA)")
    ls = dsub.add_parser("list", parents=[common], help="every dataset: files, size, licence, source, studies")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ck = dsub.add_parser("check", parents=[common], help="verify files against the shipped SHA-256 table")
    ck.add_argument("names", nargs="*", metavar="NAME", help="datasets (default: every one present)")
    fe = dsub.add_parser("fetch", parents=[common], help="download, verify and atomically install datasets")
    fe.add_argument("names", nargs="+", metavar="NAME", help="datasets (see 'poisonjax data list')")
    fe.add_argument("--mirror", help="base URL laid out as URL/<name>/<file> (http(s):// or file://)")
    fe.add_argument("--timeout", type=float, default=30.0, help="seconds per connection/read (default 30)")
    fe.add_argument("--force", action="store_true", help="download again even files that verify")
    d.set_defaults(data_parser=d)
    return d


def _merge(found, noted) -> list:
    """Studies found in the configs, then the registry's notes on options (``witches_brew (dataset=cifar10)``) for
    studies not found already."""
    seen = {s.split()[0] for s in found}
    return list(found) + [s for s in noted if s.split()[0] not in seen]


def _files(n: int) -> str:
    return f"{n} file" + ("" if n == 1 else "s")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return str(n)


def _files_summary(name: str, data_dir) -> str:
    try:
        fs = registry.files(name, data_dir)
    except Exception:  # noqa: BLE001 -- manifest-only dataset without its manifest
        return f"{registry.get(name).n_files} files (listed in its SHA256SUMS)"
    if len(fs) <= 4:
        return ", ".join(fs)
    tops = sorted({f.split("/")[0] + ("/" if "/" in f else "") for f in fs})
    return f"{len(fs)} files" + (f" in {', '.join(tops[:6])}{' ...' if len(tops) > 6 else ''}" if len(tops) < len(fs) else "")


def studies_using() -> dict:
    """``{dataset: ["study (variant)", ...]}`` read from every study's configs (``registry.study_datasets``)."""
    out: dict = {}
    try:
        from poisonjax.cli import available_studies, import_study
        studies = available_studies()
    except Exception:  # noqa: BLE001 -- an installed package without the repository's configs/
        return out
    for study in studies:
        try:
            cfg_mod, _ = import_study(study)
        except BaseException:  # noqa: BLE001 -- a study that does not import is not listed
            continue
        for variant in getattr(cfg_mod, "VARIANTS", ("quick",)):
            try:
                names = registry.study_datasets(study, cfg_mod.get_config(variant))
            except Exception:  # noqa: BLE001
                continue
            for n in names:
                if f"{study} ({variant})" not in out.setdefault(n, []):
                    out[n].append(f"{study} ({variant})")
    return out


def cmd_list(args) -> int:
    """``poisonjax data list``: every dataset with its files, size, licence, source and the studies using it."""
    root, why = data_root_and_source(args.data_dir)
    rows = []
    using = studies_using()
    for name, ds in registry.DATASETS.items():
        miss = registry.missing_files(name, args.data_dir)
        state = "present" if not miss else ("absent" if len(miss) >= ds.n_files else f"{len(miss)} files missing")
        rows.append(dict(name=name, state=state, title=ds.title, n_files=ds.n_files, bytes=ds.n_bytes,
                         files=_files_summary(name, args.data_dir), licence=ds.licence, source=ds.source,
                         studies=_merge(using.get(name, []), ds.studies), fetch=f"poisonjax data fetch {name}"))
    if args.json:
        print(json.dumps({"data_root": str(root), "data_root_from": why, "datasets": rows}, indent=2))
        return 0
    print(f"data root: {root} ({why})\n")
    wrap = lambda label, text: textwrap.fill(text, 98, initial_indent=f"  {label:<9}",  # noqa: E731
                                             subsequent_indent=" " * 11, break_on_hyphens=False,
                                             break_long_words=False)
    for r in rows:
        print(f"{r['name']}  [{r['state']}]  {_files(r['n_files'])}, {_size(r['bytes'])}")
        print(textwrap.fill(r["title"], 98, initial_indent="  ", subsequent_indent="  "))
        print(wrap("files:", r["files"]))
        print(wrap("licence:", r["licence"]))
        url = re.sub(r"/tree/([0-9a-f]{12})[0-9a-f]{28}", r"/tree/\1", r["source"])  # GitHub accepts short SHAs
        src = wrap("source:", url)
        print(src if max(map(len, src.splitlines())) <= 100 else "  source:\n    " + url)
        print(wrap("used by:", ", ".join(r["studies"]) or "(no study; tests, benchmarks or your own use)"))
        print()
    print("verify with 'poisonjax data check [NAME]'; get one with 'poisonjax data fetch NAME [--mirror URL]'")
    return 0


def cmd_check(args) -> int:
    """``poisonjax data check [NAME ...]``: verify files against the shipped SHA-256 table; exit 1 on a mismatch."""
    from poisonjax.data.fetch import check
    root, why = data_root_and_source(args.data_dir)
    names = args.names or [n for n in registry.DATASETS if (root / n).is_dir()]
    for n in args.names:
        registry.get(n)  # unknown names: one error listing the valid ones
    print(f"data root: {root} ({why})")
    if not names:
        print("no dataset present; get one with 'poisonjax data fetch NAME' (see 'poisonjax data list')")
        return 1
    failed = 0
    for n in names:
        r = check(n, args.data_dir)
        if r.passed:
            print(f"{n}: ok ({_files(len(r.ok))} verified)")
            continue
        failed += 1
        parts = []
        if r.bad:
            parts.append(f"{len(r.bad)} corrupt (sha256 differs): {', '.join(r.bad[:5])}{' ...' if len(r.bad) > 5 else ''}")
        if r.missing:
            parts.append(f"{len(r.missing)} missing: {', '.join(r.missing[:5])}{' ...' if len(r.missing) > 5 else ''}")
        print(f"{n}: FAILED, {'; '.join(parts)}; repair with: poisonjax data fetch {n}")
    return 1 if failed else 0


def cmd_fetch(args) -> int:
    """``poisonjax data fetch NAME [--mirror URL]``: download, verify the checksum and install atomically."""
    from poisonjax.data.fetch import FetchError, fetch
    for n in args.names:
        registry.get(n)
    root, why = data_root_and_source(args.data_dir)
    print(f"data root: {root} ({why})", flush=True)
    failed = []
    for n in args.names:
        try:
            fetch(n, args.data_dir, mirror=args.mirror, timeout=args.timeout, force=args.force)
        except FetchError as e:
            failed.append(n)
            print(f"error: {e}", file=sys.stderr)
    if failed:
        print(f"error: not fetched: {', '.join(failed)}; retry, or pass --mirror URL (layout URL/<name>/<file>)",
              file=sys.stderr)
        return 1
    return 0


def main(args) -> int:
    """Dispatch ``poisonjax data <command>``."""
    fn = {"list": cmd_list, "check": cmd_check, "fetch": cmd_fetch}.get(args.data_command)
    if fn is None:
        args.data_parser.print_help()
        return 2
    return fn(args)
