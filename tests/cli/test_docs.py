"""The documentation stays true: every dataset of the registry is in docs/data.md, every study-free page's
example runs (the slow ones under -m slow), and mkdocs builds it with warnings as errors where mkdocs is installed."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from poisonjax.data import registry

DOCS = Path(__file__).resolve().parents[2] / "docs"
FAST = ("own-data/vision.md", "own-data/recsys.md", "own-data/llm.md")


def _examples(page):
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.S)


def test_data_page_lists_every_dataset():
    text = (DOCS / "data.md").read_text()
    for name in registry.DATASETS:
        assert f"`{name}`" in text, name


@pytest.mark.parametrize("page", FAST)
def test_own_data_examples_run(page):
    blocks = _examples(page)
    assert blocks
    for i, block in enumerate(blocks):
        exec(compile(block, f"{page}[{i}]", "exec"), {})


@pytest.mark.slow
@pytest.mark.parametrize("page", sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")))
def test_every_docs_example_runs(page):
    for i, block in enumerate(_examples(page)):
        exec(compile(block, f"{page}[{i}]", "exec"), {})


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    assert shutil.which("mkdocs") is not None, "this slow test needs the docs extra: pip install -e '.[docs]'"
    p = subprocess.run(["mkdocs", "build", "--strict", "-d", str(tmp_path / "site")], cwd=DOCS.parent,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
