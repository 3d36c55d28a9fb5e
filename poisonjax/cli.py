"""``poisonjax`` command line: run | list | sweep | report.

Studies are pairs ``configs/<study>.py`` (``get_config(variant)``) and ``experiments/<study>.py``
(``run(config, workdir) -> dict``) at the repository root.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import itertools
import json
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

EPILOG_RUN = """examples:
  poisonjax run badnets                              # quick variant on built-in digits
  poisonjax run badnets --config.rate=0.05 --config.num_victims=8
  poisonjax run metattack --variant paper --config.dataset=cora --config.rate=0.05
  poisonjax run fl_robustness --workdir runs/fl1     # rerun the same command to resume

Config overrides use --config.<key>[.<subkey>]=<value>; values are parsed as Python literals
(numbers, True/False, tuples) and must match an existing key (the error lists the valid ones).
The default workdir is runs/<study>/<variant>-<hash of the config>, so rerunning the same command
resumes it. Data is read from $POISONJAX_DATA (or ~/.cache/poisonjax)."""


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


def _import_study(study: str):
    studies = available_studies()
    if study not in studies:
        raise SystemExit(f"error: unknown study {study!r}; valid studies: {', '.join(studies) or '(none found)'}")
    root = str(repo_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module(f"configs.{study}"), importlib.import_module(f"experiments.{study}")


def _parse_value(text: str, current):
    if isinstance(current, bool):
        low = text.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ValueError(f"expected a boolean (true/false), got {text!r}")
    if isinstance(current, str) or current is None:
        try:
            v = ast.literal_eval(text)
            return v if current is None else (text if not isinstance(v, str) else v)
        except (ValueError, SyntaxError):
            return text
    try:
        v = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if isinstance(current, (tuple, list)):
            v = tuple(_auto(x) for x in text.split(",") if x != "")
        else:
            raise ValueError(f"cannot parse {text!r} as a {type(current).__name__}")
    if isinstance(current, float) and isinstance(v, int):
        v = float(v)
    if isinstance(current, (tuple, list)) and not isinstance(v, (tuple, list)):
        v = (v,)
    if isinstance(current, (int, float)) and not isinstance(v, (int, float)):
        raise ValueError(f"expected a {type(current).__name__}, got {text!r}")
    if isinstance(current, (tuple, list)):
        v = tuple(v)
    return v


def _auto(x: str):
    try:
        return ast.literal_eval(x)
    except (ValueError, SyntaxError):
        return x


def apply_overrides(config, overrides: Sequence[Tuple[str, str]]):
    """Set ``config.<dotted key> = value`` for each ``(key, text)``; unknown keys raise SystemExit."""
    for key, text in overrides:
        parts = key.split(".")
        node = config
        for i, p in enumerate(parts):
            keys = list(node.keys()) if hasattr(node, "keys") else []
            if p not in keys:
                where = ".".join(parts[:i]) or "config"
                raise SystemExit(f"error: unknown config key {'config.' + key!r}; valid keys of {where}: {', '.join(sorted(keys))}")
            if i < len(parts) - 1:
                node = node[p]
        try:
            value = _parse_value(text, node[parts[-1]])
        except ValueError as e:
            raise SystemExit(f"error: bad value for config.{key}: {e}")
        with node.unlocked() if hasattr(node, "unlocked") else _nullctx():
            node[parts[-1]] = value
    return config


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _split_overrides(extra: Sequence[str]) -> List[Tuple[str, str]]:
    out, i = [], 0
    extra = list(extra)
    while i < len(extra):
        a = extra[i]
        if not a.startswith("--config."):
            raise SystemExit(f"error: unrecognised argument {a!r}; config overrides look like --config.key=value")
        body = a[len("--config."):]
        if "=" in body:
            k, v = body.split("=", 1)
        else:
            if i + 1 >= len(extra):
                raise SystemExit(f"error: {a} needs a value (--config.key=value)")
            k, v = body, extra[i + 1]
            i += 1
        out.append((k, v))
        i += 1
    return out


def build_config(study: str, variant: str, overrides):
    """The study's ``get_config(variant)`` with ``--config.*`` overrides applied."""
    cfg_mod, _ = _import_study(study)
    try:
        config = cfg_mod.get_config(variant)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    return apply_overrides(config, overrides)


def _default_workdir(study: str, variant: str, config) -> Path:
    from poisonjax.core.runner import config_fingerprint
    return Path("runs") / study / f"{variant}-{config_fingerprint(config)[:8]}"


def cmd_run(args, extra) -> int:
    """``poisonjax run``: build the config, pick/validate the workdir, call ``experiments.<study>.run``."""
    from poisonjax.core.parallel import initialize_distributed, is_main_process
    if args.distributed:
        initialize_distributed(True)
    overrides = _split_overrides(extra)
    config = build_config(args.study, args.variant, overrides)
    _, exp_mod = _import_study(args.study)
    workdir = Path(args.workdir) if args.workdir else _default_workdir(args.study, args.variant, config)
    workdir.mkdir(parents=True, exist_ok=True)
    from poisonjax.core.runner import config_fingerprint
    fp = config_fingerprint({"study": args.study, "config": config})
    info_path = workdir / "run_info.json"
    if info_path.exists():
        old = json.loads(info_path.read_text())
        if old.get("config_fingerprint") not in (None, fp):
            raise SystemExit(f"error: workdir {str(workdir)!r} holds a run of a different study/config "
                             f"({old.get('study')}, overrides {old.get('overrides')}); use a new --workdir or delete it")
    info = {"study": args.study, "variant": args.variant, "overrides": dict(overrides), "config_fingerprint": fp,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if is_main_process():
        (workdir / "run_info.json").write_text(json.dumps(info, indent=2))
    print(f"poisonjax: running study {args.study!r} ({args.variant}) in {workdir}", flush=True)
    t0 = time.time()
    exp_mod.run(config, str(workdir))
    print(f"poisonjax: done in {time.time() - t0:.1f} s; results in {workdir}/results.json, report in {workdir}/report.md")
    return 0


def cmd_list(args, extra) -> int:
    """``poisonjax list``: the catalog (filtered) or the runnable studies."""
    from poisonjax import catalog
    if extra:
        raise SystemExit(f"error: unrecognised arguments {extra}")
    if args.studies:
        for s in available_studies():
            print(s)
        return 0
    try:
        es = catalog.entries(domain=args.domain, family=args.family, kind=args.kind)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    if args.json:
        import dataclasses
        print(json.dumps([dataclasses.asdict(e) for e in es], indent=2))
        return 0
    from poisonjax.core.reporting import text_table
    cols = ["name", "kind", "domain", "family", "objective", "goal", "knowledge", "stealthiness", "scope",
            "impact", "variability", "paper"]
    print(text_table([{c: getattr(e, c) for c in cols} for e in es], cols))
    print(f"\n{len(es)} entries")
    return 0


def cmd_sweep(args, extra) -> int:
    """``poisonjax sweep``: a grid of runs (skipping finished ones) aggregated into ``sweep.md``/``sweep.json``."""
    overrides = _split_overrides(extra)
    cfg_mod, exp_mod = _import_study(args.study)
    grid: Dict[str, list] = {}
    if args.grid:
        for g in args.grid:
            if "=" not in g:
                raise SystemExit(f"error: --grid expects key=v1,v2,..., got {g!r}")
            k, vs = g.split("=", 1)
            grid[k] = vs.split(",")
    elif hasattr(cfg_mod, "sweep"):
        grid = {k: [repr(v) if not isinstance(v, str) else v for v in vals] for k, vals in cfg_mod.sweep().items()}
    else:
        raise SystemExit(f"error: study {args.study!r} defines no sweep(); pass --grid key=v1,v2")
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
        raise SystemExit(f"error: {wd} has no results.json; is it the workdir of a finished run?")
    info = json.loads((wd / "run_info.json").read_text()) if (wd / "run_info.json").exists() else {}
    study = info.get("study")
    if study and study in available_studies():
        _, exp_mod = _import_study(study)
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
    """The argparse parser with its four sub-commands."""
    p = argparse.ArgumentParser(prog="poisonjax", description="JAX research library for data-poisoning attacks and defenses.",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="run 'poisonjax <command> --help' for each command; 'poisonjax list --studies' lists studies")
    sub = p.add_subparsers(dest="command", metavar="{run,list,sweep,report}")
    r = sub.add_parser("run", help="run a study (attack/defense experiment) and write results, plots and report.md",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG_RUN)
    r.add_argument("study", help="study name (see 'poisonjax list --studies')")
    r.add_argument("--variant", default="quick", help="config variant: 'quick' (laptop, ~minutes) or 'paper' (default: quick)")
    r.add_argument("--workdir", help="output folder; rerunning with the same folder resumes")
    r.add_argument("--distributed", action="store_true",
                   help="start JAX's multi-controller runtime (jax.distributed.initialize) for multi-host runs; "
                        "only process 0 writes results")
    l = sub.add_parser("list", help="list registered attacks and defenses with their taxonomy tags")
    l.add_argument("--domain", help="filter: vision, graph, recsys, federated, llm")
    l.add_argument("--family", help="filter: heuristic, label_flipping, feature_space, bilevel, gradient_matching, "
                                    "influence, generative, model_poisoning, defense")
    l.add_argument("--kind", choices=["attack", "defense"], help="filter by kind")
    l.add_argument("--studies", action="store_true", help="list runnable studies instead")
    l.add_argument("--json", action="store_true", help="print JSON")
    s = sub.add_parser("sweep", help="run a grid of configs, skipping finished runs, and aggregate one table",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example: poisonjax sweep badnets --grid rate=0.01,0.05,0.1 --grid trigger_size=2,3")
    s.add_argument("study")
    s.add_argument("--variant", default="quick")
    s.add_argument("--workdir", help="root folder of the sweep (default runs/<study>-sweep)")
    s.add_argument("--grid", action="append", help="key=v1,v2,... (repeatable); default: the config's sweep()")
    rp = sub.add_parser("report", help="render report.md with PNG plots from a finished run's workdir")
    rp.add_argument("workdir")
    p.subcommands = {"run": r, "list": l, "sweep": s, "report": rp}  # for per-study --help
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
    cfg_mod, _ = _import_study(study)
    print(f"\nstudy {study!r}:\n")
    print(textwrap.indent(textwrap.dedent(cfg_mod.__doc__ or "").strip(), "  "))
    try:
        config = cfg_mod.get_config(variant)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    print(f"\nconfig keys of variant {variant!r} (override with --config.<key>=<value>):\n")

    def walk(c, prefix):
        for k in sorted(c.keys()):
            v = c[k]
            if hasattr(v, "keys"):
                walk(v, f"{prefix}{k}.")
            else:
                print(f"  {prefix}{k} = {v!r}")
    walk(config, "")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``poisonjax`` console script."""
    import signal
    if hasattr(signal, "SIGPIPE"):  # `poisonjax list | head` ends quietly
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = make_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) >= 2 and argv[0] in ("run", "sweep") and any(a in ("-h", "--help") for a in argv) \
            and argv[1] in available_studies():
        return study_help(parser, argv)
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command in ("run", "sweep") and any(e in ("-h", "--help") for e in extra):
        parser.parse_args([args.command, "--help"])
    fn = {"run": cmd_run, "list": cmd_list, "sweep": cmd_sweep, "report": cmd_report}[args.command]
    return fn(args, extra)


if __name__ == "__main__":
    sys.exit(main())
