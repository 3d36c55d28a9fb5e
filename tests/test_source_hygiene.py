"""Source hygiene: every module compiles without warnings.

Python 3.12 turns an invalid escape sequence in a string (e.g. LaTeX ``\\mathrm`` in a docstring that is not
raw) into a ``SyntaxWarning`` printed at import (seen in the GPU logs of 2026-11-30), and a later Python into an
error; 3.11 raises it as a ``DeprecationWarning`` under ``-W error``."""
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_module_compiles_without_warnings():
    bad = []
    for sub in ("poisonjax", "experiments", "configs", "benchmarks"):
        for f in sorted((ROOT / sub).rglob("*.py")):
            if ".venvs" in f.parts:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                try:
                    compile(f.read_text(encoding="utf-8"), str(f), "exec")
                except (SyntaxError, SyntaxWarning, DeprecationWarning) as e:
                    bad.append(f"{f.relative_to(ROOT)}: {e}")
    assert not bad, "modules that compile with warnings:\n" + "\n".join(bad)
