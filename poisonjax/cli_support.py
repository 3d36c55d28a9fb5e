"""Helpers of the ``poisonjax`` CLI (:mod:`poisonjax.cli`): ``--config.*`` override parsing and checks, the
one-line error type, Ctrl-C handling and failed-run cleanup, terminal-width tables."""
from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

class CLIError(SystemExit):
    """A usage error: ``main`` prints ``error: <message>`` on one line and exits 2."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def parse_value(text: str, current):
    """Parse the text of a ``--config.KEY=VALUE`` override into the type of the key's ``current`` value."""
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
    if isinstance(current, float) and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if isinstance(current, int) and not isinstance(current, bool) and isinstance(v, float):
        if not v.is_integer():
            raise ValueError(f"expected an integer, got {text!r}")
        v = int(v)
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


#: grid keys a scalar override replaces: ``key`` -> ``(grid key, value the grid takes)``
def _grid_keys(node, key: str, value) -> List[Tuple[str, tuple]]:
    keys = list(node.keys()) if hasattr(node, "keys") else []
    out = []
    if f"{key}s" in keys and isinstance(node[f"{key}s"], (tuple, list)):
        out.append((f"{key}s", (value,)))
    if f"extra_{key}s" in keys and isinstance(node[f"extra_{key}s"], (tuple, list)):
        out.append((f"extra_{key}s", ()))
    return out


def grid_keys(config, prefix: str = "") -> Dict[str, str]:
    """``{grid key: scalar key}`` of every grid a scalar override replaces (for ``--help``)."""
    out = {}
    for k in config.keys():
        v = config[k]
        if hasattr(v, "keys"):
            out.update(grid_keys(v, f"{prefix}{k}."))
        elif not isinstance(v, (tuple, list)):
            for g, _ in _grid_keys(config, k, v):
                out[prefix + g] = prefix + k
    return out


def _check_seeds(config, prefix: str = "") -> None:
    for k in config.keys():
        v = config[k]
        if hasattr(v, "keys"):
            _check_seeds(v, f"{prefix}{k}.")
            continue
        if k == "seed" or k.endswith("_seed") or k == "seeds":
            vals = v if isinstance(v, (tuple, list)) else (v,)
            for x in vals:
                if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x < 2 ** 32:
                    raise CLIError(f"bad value for config.{prefix}{k}: expected "
                                   f"{'integers' if k == 'seeds' else 'an integer'} in [0, 2**32), got {v!r}")


def apply_overrides(config, overrides: Sequence[Tuple[str, str]], log=None):
    """Set ``config.<dotted key> = value`` for each ``(key, text)``; unknown keys or values of the wrong type
    raise :class:`CLIError` naming the key.

    A scalar override replaces the grid over that key unless the grid is overridden too: ``rate`` sets
    ``rates = (rate,)`` and ``extra_rates = ()`` where those keys exist (``log`` receives a note)."""
    from poisonjax.core.names import translate_override
    overrides = [(translate_override(config, k, log), t) for k, t in overrides]  # deprecated key names
    explicit = {k for k, _ in overrides}
    for key, text in overrides:
        parts = key.split(".")
        node = config
        for i, p in enumerate(parts):
            keys = list(node.keys()) if hasattr(node, "keys") else []
            if p not in keys:
                where = ".".join(parts[:i]) or "config"
                raise CLIError(f"unknown config key {'config.' + key!r}; valid keys of {where}: {', '.join(sorted(keys))}")
            if i < len(parts) - 1:
                node = node[p]
        if hasattr(node[parts[-1]], "keys"):
            raise CLIError(f"config.{key} is a group of keys ({', '.join(sorted(node[parts[-1]].keys()))}); "
                           f"override one of them, e.g. --config.{key}.{sorted(node[parts[-1]].keys())[0]}=...")
        try:
            value = parse_value(text, node[parts[-1]])
            with node.unlocked() if hasattr(node, "unlocked") else _nullctx():
                node[parts[-1]] = value
        except (ValueError, TypeError) as e:
            cur = node[parts[-1]]
            raise CLIError(f"bad value for config.{key}: {e if isinstance(e, ValueError) else ''}"
                           f"{'' if isinstance(e, ValueError) else f'expected a {type(cur).__name__} like {cur!r}, got {text!r}'}")
        if not isinstance(value, (tuple, list)):
            prefix = ".".join(parts[:-1])
            for gk, gv in _grid_keys(node, parts[-1], value):
                full = f"{prefix}.{gk}" if prefix else gk
                if full in explicit or tuple(node[gk]) == gv:
                    continue
                if log is not None:
                    log(f"poisonjax: --config.{key}={text} replaces the grid config.{full} (was {tuple(node[gk])!r}); "
                        f"override config.{full} to run a grid")
                with node.unlocked() if hasattr(node, "unlocked") else _nullctx():
                    node[gk] = gv
    _check_seeds(config)
    return config


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def split_overrides(extra: Sequence[str]) -> List[Tuple[str, str]]:
    """``["--config.a=1", "--config.b", "2"]`` -> ``[("a", "1"), ("b", "2")]``; anything else is an error."""
    out, i = [], 0
    extra = list(extra)
    while i < len(extra):
        a = extra[i]
        if not a.startswith("--config."):
            raise CLIError(f"unrecognised argument {a!r}; config overrides look like --config.key=value")
        body = a[len("--config."):]
        if "=" in body:
            k, v = body.split("=", 1)
        else:
            if i + 1 >= len(extra):
                raise CLIError(f"{a} needs a value (--config.key=value)")
            k, v = body, extra[i + 1]
            i += 1
        out.append((k, v))
        i += 1
    return out


def _drop_interrupt_records(record) -> bool:
    return not (record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt))


def is_jax_interrupt(e: BaseException) -> bool:
    """A KeyboardInterrupt raised inside a JAX host callback, re-raised by XLA as a runtime error."""
    return type(e).__name__ == "JaxRuntimeError" and "KeyboardInterrupt" in str(e)


class interrupt_guard:
    """Ctrl-C raises KeyboardInterrupt as usual, except while a checkpoint is being written (orbax on the stack):
    then it is delivered right after the write (polled every 50 ms), so an interrupt never tears a save and orbax
    prints no traceback. A second Ctrl-C interrupts at once. POSIX main thread only.

    An interrupt that lands in a JAX host callback reaches us as a ``JaxRuntimeError``; its log record is dropped
    here and :func:`cmd_run` turns the error back into an interrupt."""

    def __enter__(self):
        import signal
        import threading
        self.active = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
        if self.active:
            self.pending = False
            self.old = signal.signal(signal.SIGINT, self._on_sigint), signal.signal(signal.SIGALRM, self._on_alarm)
        import logging
        self.loggers = [logging.getLogger(n) for n in ("jax._src.debugging", "jax._src.callback")]
        for lg in self.loggers:
            lg.addFilter(_drop_interrupt_records)
        return self

    @staticmethod
    def _in_checkpoint_write(frame) -> bool:
        while frame is not None:
            if "orbax" in frame.f_code.co_filename:
                return True
            frame = frame.f_back
        return False

    def _on_sigint(self, signum, frame):
        import signal
        if self.pending or not self._in_checkpoint_write(frame):
            raise KeyboardInterrupt
        self.pending = True
        signal.setitimer(signal.ITIMER_REAL, 0.05)

    def _on_alarm(self, signum, frame):
        import signal
        if self._in_checkpoint_write(frame):
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            return
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        for lg in self.loggers:
            lg.removeFilter(_drop_interrupt_records)
        if self.active:
            import signal
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGINT, self.old[0])
            signal.signal(signal.SIGALRM, self.old[1])
        return False


_NO_PROGRESS = {"run_info.json", "config.json", "run_meta.json"}


def remove_if_no_progress(workdir: Path, created: bool, before: set) -> None:
    """After a failed run: delete what it wrote if it made no progress (only run_info/config/run_meta files, empty
    files or folders), so the next run, with any config, accepts the workdir; keep anything with progress."""
    try:
        for p in workdir.rglob("*"):
            if p.is_file() and p.name not in _NO_PROGRESS and p.stat().st_size > 0 and \
                    not any(p == b or b in p.parents for b in before):
                return
        if created:
            import shutil
            shutil.rmtree(workdir, ignore_errors=True)
            return
        for p in sorted(workdir.iterdir(), key=lambda q: -len(q.parts)):
            if p not in before:
                if p.is_dir():
                    import shutil
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink()
    except OSError:
        pass


def interrupt_message(workdir: Optional[Path]) -> str:
    """``interrupted at step N of M; rerun the same command to resume``, N and M read from the runner's files
    (``run_meta.json``, ``metrics*.jsonl``, ``checkpoints/``) of the most recently active run under ``workdir``."""
    tail = "rerun the same command to resume"
    if workdir is None or not Path(workdir).is_dir():
        return f"interrupted; {tail}"
    best = None
    for meta in Path(workdir).rglob("run_meta.json"):
        d = meta.parent
        logs = sorted(d.glob("*.jsonl"), key=lambda q: q.stat().st_mtime)
        t = max([meta.stat().st_mtime] + [q.stat().st_mtime for q in logs])
        if best is None or t > best[0]:
            best = (t, d, meta, logs[-1] if logs else None)
    if best is None:
        return f"interrupted before the first step was recorded; {tail}"
    _, d, meta, log = best
    try:
        total = json.loads(meta.read_text()).get("steps")
        step = 0
        if log is not None:
            lines = [l for l in log.read_text().splitlines() if l.strip()]
            step = json.loads(lines[-1]).get("step", 0) if lines else 0
        ckpts = [int(c.name) for c in (d / "checkpoints").glob("*") if c.name.isdigit()] if (d / "checkpoints").is_dir() else []
    except (OSError, ValueError):
        return f"interrupted; {tail}"
    where = f" ({d.relative_to(workdir)})" if d != Path(workdir) else ""
    ck = max(ckpts) if ckpts else 0
    resume = f" (from the checkpoint at step {ck})" if ck != step else ""
    return f"interrupted at step {step} of {total}{where}; {tail}{resume}"


LIST_WIDTH = 100


def narrow_table(rows, width: int) -> str:
    """A fixed-width table of string columns within ``width`` characters: a row whose last cell does not fit
    puts that cell on its own indented line (never cut)."""
    cols = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols[:-1]]
    lead = lambda cells: "  ".join(str(x).ljust(w) for x, w in zip(cells, widths))  # noqa: E731
    out = [(lead(cols[:-1]) + "  " + cols[-1]).rstrip(), lead(["-" * w for w in widths]) + "  " + "-" * len(cols[-1])]
    for r in rows:
        line = lead([r[c] for c in cols[:-1]]) + "  " + str(r[cols[-1]])
        out += [line] if len(line) <= width else [lead([r[c] for c in cols[:-1]]).rstrip(), "    " + str(r[cols[-1]])]
    return "\n".join(out)


def parse_axes(items: Sequence[str]) -> Dict[str, str]:
    """``["goal=backdoor", ...]`` -> ``{"goal": "backdoor"}``; a malformed item is a :class:`CLIError`."""
    out = {}
    for it in items or ():
        k, sep, v = it.partition("=")
        if not sep or not k or not v:
            raise CLIError(f"--axis expects AXIS=VALUE (e.g. goal=backdoor), got {it!r}")
        out[k.strip()] = v.strip()
    return out


def catalog_matrix(entries) -> str:
    """A domain x family table of entry counts (families in the catalog's order, the survey's first;
    ``.`` where a domain has none), with a total column and row."""
    from poisonjax import catalog
    short = {"heuristic": "heur", "label_flipping": "lflip", "feature_space": "feat", "bilevel": "bilev",
             "gradient_matching": "gmatch", "influence": "infl", "generative": "gen", "model_poisoning": "model",
             "defense": "defense"}
    fams = list(catalog.FAMILIES)
    doms = [d for d in catalog.DOMAINS if any(e.domain == d for e in entries)] or list(catalog.DOMAINS)
    head = ["domain"] + [short[f] for f in fams] + ["total"]
    rows = []
    for d in doms + ["total"]:
        sel = [e for e in entries if d == "total" or e.domain == d]
        cells = [sum(e.family == f for e in sel) for f in fams]
        rows.append([d] + [str(c) if c else "." for c in cells] + [str(len(sel))])
    w = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.rjust(x) if i else c.ljust(x) for i, (c, x) in enumerate(zip(r, w)))  # noqa: E731
    legend = ", ".join(f"{short[f]}={f}" for f in fams)
    mapped = ", ".join(f"{k} -> {v}" for k, v in catalog.FAMILY_TO_SURVEY.items())
    import textwrap
    notes = textwrap.wrap("families: " + legend, 100) + textwrap.wrap("mapped onto the survey's: " + mapped, 100)
    return "\n".join([fmt(head), fmt(["-" * x for x in w])] + [fmt(r) for r in rows] + [""] + notes)


def readme_table(entries) -> str:
    """The README's systems table as markdown, one row per study: study, domain, the attacks and the
    defenses the catalog registers for it (entries without a study are listed under ``(library)``)."""
    studies: Dict[str, Dict[str, list]] = {}
    for e in entries:
        s = studies.setdefault(e.study or "(library)", {"domain": [], "attack": [], "defense": []})
        if e.domain not in s["domain"]:
            s["domain"].append(e.domain)
        s[e.kind].append(e.name)
    lines = ["| study | domain | attacks | defenses |", "|---|---|---|---|"]
    for name in sorted(studies, key=lambda n: (n == "(library)", n)):
        s = studies[name]
        cell = lambda xs: ", ".join(f"`{x}`" for x in xs) or "-"  # noqa: E731
        study = f"`poisonjax run {name}`" if name != "(library)" else name
        lines.append(f"| {study} | {', '.join(s['domain'])} | {cell(s['attack'])} | {cell(s['defense'])} |")
    return "\n".join(lines)
