"""``poisonjax`` command line: run | list | sweep | report | data.

Studies are pairs ``configs/<study>.py`` (``get_config(variant)``) and ``experiments/<study>.py``
(``run(config, workdir) -> dict``) at the repository root.
"""
from __future__ import annotations

import argparse
import importlib
import itertools
import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from poisonjax.cli_support import (LIST_WIDTH, CLIError, apply_overrides, grid_keys, interrupt_guard, interrupt_message,
                                   is_jax_interrupt, narrow_table, remove_if_no_progress, split_overrides)

EPILOG_RUN = """examples:
  poisonjax run badnets                              # quick variant on built-in digits
  poisonjax run badnets --config.rate=0.05 --config.num_victims=8
  poisonjax run metattack --variant paper --config.dataset=cora --config.rate=0.05
  poisonjax run fl_robustness --workdir runs/fl1     # rerun the same command to resume

Config overrides use --config.<key>[.<subkey>]=<value>; values are parsed as Python literals
(numbers, True/False, tuples) and must match an existing key (the error lists the valid ones).
A scalar override replaces the study's grid over that key: --config.rate=0.05 runs rate 0.05 only,
even where config.rates holds a default grid (set --config.rates=0.01,0.05 to run a grid).
The default workdir is runs/<study>/<variant>-<hash of the config>, so rerunning the same command
resumes it (also after Ctrl-C). Data is read from the data root: $POISONJAX_DATA, else ../shared/data
beside a source checkout, else ~/.cache/poisonjax ('poisonjax data list' shows it).
Errors print one line and exit 2; add --debug for the traceback."""


def repo_root() -> Path:
    """Folder holding ``configs/`` and ``experiments/`` ($POISONJAX_ROOT overrides)."""
    env = os.environ.get("POISONJAX_ROOT")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent.parent
    if (here / "configs").is_dir():
        return here
    return Path.cwd()


def available_studies() -> List[str]:
    """Studies that have both a config and an experiment module."""
    root = repo_root()
    cfgs = {p.stem for p in (root / "configs").glob("*.py") if not p.stem.startswith("_")}
    exps = {p.stem for p in (root / "experiments").glob("*.py") if not p.stem.startswith("_")}
    return sorted(cfgs & exps)


def import_study(study: str):
    """``(configs.<study>, experiments.<study>)`` modules; an unknown study raises :class:`CLIError`."""
    studies = available_studies()
    if study not in studies:
        raise CLIError(f"unknown study {study!r}; valid studies: {', '.join(studies) or '(none found)'}")
    root = str(repo_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module(f"configs.{study}"), importlib.import_module(f"experiments.{study}")


_import_study = import_study  # the old name


def build_config(study: str, variant: str, overrides, log=None):
    """The study's ``get_config(variant)`` with ``--config.*`` overrides applied (see :func:`apply_overrides`)."""
    cfg_mod, _ = import_study(study)
    try:
        config = cfg_mod.get_config(variant)
    except ValueError as e:
        raise CLIError(f"{e}")
    return apply_overrides(config, overrides, log=log)


def _default_workdir(study: str, variant: str, config) -> Path:
    from poisonjax.core.runner import config_fingerprint
    return Path("runs") / study / f"{variant}-{config_fingerprint(config)[:8]}"


def cmd_run(args, extra) -> int:
    """``poisonjax run``: build the config, pick/validate the workdir, call ``experiments.<study>.run``."""
    from poisonjax.core.parallel import initialize_distributed, is_main_process
    if args.distributed or args.coordinator:
        kw = {}
        if args.coordinator:  # a plain cluster without SLURM / TPU auto-detection
            if args.num_processes is None or args.process_id is None:
                raise CLIError("--coordinator needs --num-processes N and --process-id I (0 <= I < N)")
            if not 0 <= args.process_id < args.num_processes:
                raise CLIError(f"--process-id must be in [0, {args.num_processes}), got {args.process_id}")
            kw = dict(coordinator_address=args.coordinator, num_processes=args.num_processes,
                      process_id=args.process_id)
        initialize_distributed(True, **kw)
    overrides = split_overrides(extra)
    config = build_config(args.study, args.variant, overrides, log=print)
    _, exp_mod = import_study(args.study)
    _require_study_data(args.study, config)
    workdir = Path(args.workdir) if args.workdir else _default_workdir(args.study, args.variant, config)
    if workdir.exists() and not workdir.is_dir():
        raise CLIError(f"--workdir {str(workdir)!r} is an existing file; pass a folder (created if missing)")
    created = not workdir.exists()
    before = set(workdir.iterdir()) if not created else set()
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f"--workdir {str(workdir)!r} cannot be created: {e.strerror or e}")
    from poisonjax.core.runner import config_fingerprint
    fp = config_fingerprint({"study": args.study, "config": config})
    info_path = workdir / "run_info.json"
    if info_path.exists():
        old = json.loads(info_path.read_text())
        if old.get("config_fingerprint") not in (None, fp):
            raise CLIError(f"workdir {str(workdir)!r} holds a run of a different study/config "
                           f"({old.get('study')}, overrides {old.get('overrides')}); use a new --workdir or delete it")
    info = {"study": args.study, "variant": args.variant, "overrides": dict(overrides), "config_fingerprint": fp,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if is_main_process():
        (workdir / "run_info.json").write_text(json.dumps(info, indent=2))
    print(f"poisonjax: running study {args.study!r} ({args.variant}) in {workdir}", flush=True)
    t0 = time.time()
    try:
        with interrupt_guard():
            exp_mod.run(config, str(workdir))
    except KeyboardInterrupt as e:  # keep the workdir: rerunning resumes it
        e.poisonjax_workdir = workdir
        raise
    except BaseException as e:
        if is_jax_interrupt(e):
            k = KeyboardInterrupt()
            k.poisonjax_workdir = workdir
            raise k from None
        remove_if_no_progress(workdir, created, before)
        raise
    print(f"poisonjax: done in {time.time() - t0:.1f} s; results in {workdir}/results.json, report in {workdir}/report.md")
    return 0


def _require_study_data(study: str, config) -> None:
    """Name every missing data file the study needs at once, with the fetch command (DataNotFoundError)."""
    from poisonjax.data import registry
    names = registry.study_datasets(study, config)
    if names:
        data_dir = config.get("data_dir") or None if hasattr(config, "get") else None
        registry.require_datasets(names, data_dir, what=f"study {study!r}")


def cmd_list(args, extra) -> int:
    """``poisonjax list``: the catalog (filtered) or the runnable studies."""
    from poisonjax import catalog
    if extra:
        raise CLIError(f"unrecognised arguments {extra}")
    if args.studies:
        for s in available_studies():
            print(s)
        return 0
    from poisonjax.cli_support import catalog_matrix, parse_axes, readme_table
    try:
        es = catalog.entries(domain=args.domain, family=args.family, kind=args.kind, axes=parse_axes(args.axis))
    except ValueError as e:
        raise CLIError(f"{e}")
    if args.matrix:
        print(catalog_matrix(es))
        return 0
    if args.readme:
        print(readme_table(es))
        return 0
    if args.json:
        import dataclasses
        print(json.dumps([dataclasses.asdict(e) for e in es], indent=2))
        return 0
    from poisonjax.core.reporting import text_table
    if args.wide:
        cols = ["name", "kind", "domain", "family", "objective", "goal", "knowledge", "stealthiness", "scope",
                "impact", "variability", "study", "config_name", "where", "paper"]
        rows = [{c: getattr(e, c, "") for c in cols} for e in es]
        for r, e in zip(rows, es):
            r["config_name"] = config_name(e)
        print(text_table(rows, cols))
    else:
        for kind in ("attack", "defense"):
            rows = [{"name": config_name(e) or e.name, "study": e.study or f"({e.domain})", "import path": e.where}
                    for e in es if e.kind == kind]
            if rows:
                print(f"{kind}s:")
                print(narrow_table(rows, LIST_WIDTH) + "\n")
    print(f"{len(es)} entries" + ("" if args.wide else "; names as in the study configs ('poisonjax run STUDY --help')"
                                    ";\n--wide adds the taxonomy, papers and catalog names"))
    return 0


def _config_values(study: str) -> set:
    """Every name a study's configs or modules use to select something: string values of its configs (all
    variants), keys of nested groups, and strings in the upper-case module constants of its config and
    experiment modules (``ALL_ATTACKS``, ``METHODS``, ``ATTACKS`` ...)."""
    vals: set = set()
    try:
        cfg_mod, exp_mod = import_study(study)
        configs = [cfg_mod.get_config(v) for v in getattr(cfg_mod, "VARIANTS", ("quick",))]
    except (CLIError, ValueError, ImportError):
        return vals

    def walk(c):
        for k in c.keys():
            v = c[k]
            if hasattr(v, "keys"):
                vals.update(v.keys())
                walk(v)
            elif isinstance(v, str):
                vals.add(v)
            elif isinstance(v, (tuple, list)):
                vals.update(x for x in v if isinstance(x, str))
    for c in configs:
        walk(c)
    for mod in (cfg_mod, exp_mod):
        for k in dir(mod):
            v = getattr(mod, k)
            if k.isupper() and isinstance(v, (tuple, list, set, frozenset, dict)):
                vals.update(x for x in v if isinstance(x, str))
    return vals


_CONFIG_VALUES: Dict[str, set] = {}


def config_name(entry) -> str:
    """The name that selects ``entry`` in its study's config (``fl_label_flip`` -> ``label_flip`` in
    ``fl_robustness``); ``""`` if the study's configs do not name it."""
    if not entry.study:
        return ""
    if entry.study not in _CONFIG_VALUES:
        _CONFIG_VALUES[entry.study] = _config_values(entry.study) if entry.study in available_studies() else set()
    vals = _CONFIG_VALUES[entry.study]
    toks = entry.name.split("_")
    # the catalog name, else its longest run of words that the study uses (``seq_random`` -> ``random``,
    # ``metattack_a_meta_self`` -> ``a_meta_self``); single words of under 3 letters never match
    for size in range(len(toks), 0, -1):
        for start in range(len(toks) - size + 1):
            cand = "_".join(toks[start:start + size])
            if cand in vals and len(cand) >= 3 and cand not in ("none", "attack", "defense"):
                return cand
    return ""


def cmd_sweep(args, extra) -> int:
    """``poisonjax sweep``: a grid of runs (skipping finished ones) aggregated into ``sweep.md``/``sweep.json``."""
    overrides = split_overrides(extra)
    cfg_mod, exp_mod = import_study(args.study)
    grid: Dict[str, list] = {}
    if args.grid:
        for g in args.grid:
            if "=" not in g:
                raise CLIError(f"--grid expects key=v1,v2,..., got {g!r}")
            k, vs = g.split("=", 1)
            grid[k] = vs.split(",")
    elif hasattr(cfg_mod, "sweep"):
        grid = {k: [repr(v) if not isinstance(v, str) else v for v in vals] for k, vals in cfg_mod.sweep().items()}
    else:
        raise CLIError(f"study {args.study!r} defines no sweep(); pass --grid key=v1,v2")
    root = Path(args.workdir or Path("runs") / f"{args.study}-sweep")
    rows = []
    keys = list(grid)
    combos = list(itertools.product(*(grid[k] for k in keys)))
    from tqdm.auto import tqdm
    for combo in tqdm(combos, desc=f"sweep {args.study}", unit="run"):
        ov = overrides + list(zip(keys, combo))
        config = build_config(args.study, args.variant, ov)
        name = "_".join(f"{k.replace('.', '-')}={v}" for k, v in zip(keys, combo))
        wd = root / name
        res_path = wd / "results.json"
        if not res_path.exists():  # skip finished runs
            wd.mkdir(parents=True, exist_ok=True)
            exp_mod.run(config, str(wd))
        res = json.loads(res_path.read_text())
        row = dict(zip(keys, combo))
        row.update(_scalar_summary(res))
        rows.append(row)
    from poisonjax.core.reporting import markdown_table, text_table
    cols = list(dict.fromkeys(k for r in rows for k in r))
    (root / "sweep.md").write_text(markdown_table(rows, cols))
    (root / "sweep.json").write_text(json.dumps(rows, indent=2))
    print(text_table(rows, cols))
    return 0


def _scalar_summary(res: dict, prefix: str = "", depth: int = 0) -> dict:
    out = {}
    for k, v in res.items():
        name = f"{prefix}{k}"
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            out[name] = v
        elif isinstance(v, dict) and "mean" in v and isinstance(v["mean"], (int, float)):
            out[name] = v["mean"]
        elif isinstance(v, dict) and depth < 1:
            out.update(_scalar_summary(v, name + ".", depth + 1))
    return dict(list(out.items())[:12])


def cmd_report(args, extra) -> int:
    """``poisonjax report``: re-render ``report.md`` (the study's own ``report()`` if it has one, else a
    generic table of scalar results plus metric curves from ``metrics.jsonl``)."""
    wd = Path(args.workdir)
    if not (wd / "results.json").exists():
        raise CLIError(f"{wd} has no results.json; is it the workdir of a finished run?")
    info = json.loads((wd / "run_info.json").read_text()) if (wd / "run_info.json").exists() else {}
    study = info.get("study")
    if study and study in available_studies():
        _, exp_mod = import_study(study)
        if hasattr(exp_mod, "report"):
            exp_mod.report(str(wd))
            print(f"wrote {wd / 'report.md'}")
            return 0
    from poisonjax.core import reporting
    res = json.loads((wd / "results.json").read_text())
    plots = sorted(p.name for p in wd.glob("*.png"))
    mpath = wd / "metrics.jsonl"
    if mpath.exists():
        recs = [json.loads(l) for l in mpath.read_text().splitlines() if l.strip()]
        keys = [k for k in (recs[0] if recs else {}) if k != "step"]
        if keys:
            fig, axes = reporting.new_figure(nrows=len(keys), figsize=(5, 2.2 * len(keys)), squeeze=False)
            for ax, k in zip(axes[:, 0], keys):
                ax.plot([r["step"] for r in recs], [r.get(k) for r in recs])
                ax.set_ylabel(k)
            axes[-1, 0].set_xlabel("step")
            reporting.save_figure(fig, wd / "metrics.png")
            plots.append("metrics.png")
    summary = _scalar_summary(res)
    table = reporting.markdown_table([{"metric": k, "value": v} for k, v in summary.items()])
    reporting.write_report(wd, f"Report: {study or wd.name}",
                           [("Run", f"```\n{json.dumps(info, indent=1)}\n```"), ("Results", table)], sorted(set(plots)))
    print(f"wrote {wd / 'report.md'}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    """The argparse parser with its sub-commands."""
    from poisonjax import __version__
    p = argparse.ArgumentParser(prog="poisonjax", description="JAX research library for data-poisoning attacks and defenses.",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="run 'poisonjax <command> --help' for each command; 'poisonjax list --studies' lists "
                                       "studies; errors print one line and exit 2 (--debug shows the traceback)")
    p.add_argument("--version", action="version", version=f"poisonjax {__version__}")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error (any position)")
    sub = p.add_subparsers(dest="command", metavar="{run,list,sweep,report,data,serve}")
    r = sub.add_parser("run", help="run a study (attack/defense experiment) and write results, plots and report.md",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG_RUN)
    r.add_argument("study", help="study name (see 'poisonjax list --studies')")
    r.add_argument("--variant", default="quick", help="config variant: 'quick' (laptop, ~minutes) or 'paper' (default: quick)")
    r.add_argument("--workdir", help="output folder; rerunning with the same folder resumes")
    r.add_argument("--distributed", action="store_true",
                   help="start JAX's multi-controller runtime (jax.distributed.initialize) for multi-host runs; "
                        "only process 0 writes results")
    r.add_argument("--coordinator", metavar="HOST:PORT",
                   help="multi-host without SLURM/TPU auto-detection: address of process 0's coordinator "
                        "(implies --distributed; needs --num-processes and --process-id)")
    r.add_argument("--num-processes", type=int, metavar="N", help="number of processes (with --coordinator)")
    r.add_argument("--process-id", type=int, metavar="I", help="this process's id, 0..N-1 (with --coordinator)")
    l = sub.add_parser("list", help="list registered attacks and defenses with their taxonomy tags")
    l.add_argument("--domain", help="filter: vision, graph, recsys, federated, llm")
    l.add_argument("--family", help="filter: heuristic, label_flipping, feature_space, bilevel, gradient_matching, "
                                    "influence, generative, model_poisoning, defense")
    l.add_argument("--kind", choices=["attack", "defense"], help="filter by kind")
    l.add_argument("--axis", action="append", default=[], metavar="AXIS=VALUE",
                   help="filter on a survey axis, e.g. goal=backdoor (repeatable; see --json for values)")
    l.add_argument("--matrix", action="store_true", help="domain x family table of entry counts")
    l.add_argument("--readme", action="store_true", help="the README's systems table (markdown), from the catalog")
    l.add_argument("--studies", action="store_true", help="list runnable studies instead")
    l.add_argument("--json", action="store_true", help="print JSON")
    l.add_argument("--wide", action="store_true", help="every column (taxonomy, paper); default fits 100 columns")
    s = sub.add_parser("sweep", help="run a grid of configs, skipping finished runs, and aggregate one table",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example: poisonjax sweep badnets --grid rate=0.01,0.05,0.1 --grid trigger_size=2,3")
    s.add_argument("study")
    s.add_argument("--variant", default="quick")
    s.add_argument("--workdir", help="root folder of the sweep (default runs/<study>-sweep)")
    s.add_argument("--grid", action="append", help="key=v1,v2,... (repeatable); default: the config's sweep()")
    rp = sub.add_parser("report", help="render report.md with PNG plots from a finished run's workdir")
    rp.add_argument("workdir")
    from poisonjax.data.cli import add_parser as add_data_parser
    d = add_data_parser(sub)
    from poisonjax.llm.serve import add_serve_parser
    sv = add_serve_parser(sub)
    p.subcommands = {"run": r, "list": l, "sweep": s, "report": rp, "data": d, "serve": sv}  # for per-study --help
    return p


def study_help(parser, argv) -> int:
    """``poisonjax run <study> --help``: the command's help, then the study's config documentation
    and every config key with its default for the chosen variant (``--variant``)."""
    cmd, study = argv[0], argv[1]
    variant = "quick"
    for i, a in enumerate(argv):
        if a == "--variant" and i + 1 < len(argv):
            variant = argv[i + 1]
        elif a.startswith("--variant="):
            variant = a.split("=", 1)[1]
    parser.subcommands[cmd].print_help()
    cfg_mod, _ = import_study(study)
    print(f"\nstudy {study!r}:\n")
    print(textwrap.indent(textwrap.dedent(cfg_mod.__doc__ or "").strip(), "  "))
    try:
        config = cfg_mod.get_config(variant)
    except ValueError as e:
        raise CLIError(f"{e}")
    print(f"\nconfig keys of variant {variant!r} (override with --config.<key>=<value>):\n")
    grids = grid_keys(config)

    def walk(c, prefix):
        for k in sorted(c.keys()):
            v = c[k]
            if hasattr(v, "keys"):
                walk(v, f"{prefix}{k}.")
            else:
                note = f"    # grid; --config.{grids[prefix + k]}=X replaces it" if prefix + k in grids else ""
                print(f"  {prefix}{k} = {v!r}{note}")
    walk(config, "")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``poisonjax`` console script."""
    parser = make_parser()
    from_console = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        return _dispatch(parser, argv, quiet_pipe=from_console)
    except CLIError as e:
        if debug:
            raise
        return _one_line_error(str(e))
    except KeyboardInterrupt as e:
        if debug:
            raise
        print(f"\n{interrupt_message(getattr(e, 'poisonjax_workdir', None))}", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 -- the library's own input errors become one line
        if debug or not isinstance(e, _user_errors()):
            raise
        return _one_line_error(str(e))


def _user_errors() -> tuple:
    """Exception types whose message is for the user (one line, exit 2) rather than a bug (traceback)."""
    from poisonjax.core.runner import CheckpointMismatchError, CorruptCheckpointError
    from poisonjax.core.validation import PoisonJaxInputError
    from poisonjax.data import DataNotFoundError
    from poisonjax.data.fetch import FetchError
    return (PoisonJaxInputError, DataNotFoundError, CheckpointMismatchError, CorruptCheckpointError, FetchError)


def _one_line_error(message: str) -> int:
    print("error: " + " ".join(message.split()), file=sys.stderr)
    return 2


def _dispatch(parser, argv, quiet_pipe: bool = False) -> int:
    if len(argv) >= 2 and argv[0] in ("run", "sweep") and any(a in ("-h", "--help") for a in argv) \
            and argv[1] in available_studies():
        return study_help(parser, argv)
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command in ("run", "sweep") and any(e in ("-h", "--help") for e in extra):
        parser.parse_args([args.command, "--help"])
    if args.command == "data":
        if extra:
            raise CLIError(f"unrecognised arguments {extra}")
        from poisonjax.data.cli import main as data_main
        return data_main(args)
    if args.command == "serve":
        from poisonjax.llm.serve import cmd_serve
        return cmd_serve(args, extra)
    if args.command == "list" and quiet_pipe and hasattr(signal, "SIGPIPE"):
        # `poisonjax list | head` ends quietly (console script only). Only `list`: a long `run`, `sweep` or
        # `serve` keeps Python's SIGPIPE handling, so a library writing to a closed pipe or socket (the
        # worker threads of JAX, orbax or the HTTP server) gets an EPIPE error instead of killing the run
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    fn = {"run": cmd_run, "list": cmd_list, "sweep": cmd_sweep, "report": cmd_report}[args.command]
    return fn(args, extra)


if __name__ == "__main__":
    sys.exit(main())
