"""A fresh machine without datasets: data-dependent tests SKIP with one line naming the dataset and the
``poisonjax data fetch`` command; nothing fails and nothing is fetched (no network, no --fetch-data)."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FILES = ["tests/data/test_nslkdd.py", "tests/data/test_text_loaders.py", "tests/data/test_load_dataset.py",
         "tests/vision/test_image_loaders.py"]


def test_empty_data_root_skips_with_fetch_command(tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    env = dict(os.environ, POISONJAX_DATA=str(empty), JAX_PLATFORMS="cpu",
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")  # any network attempt fails
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("POISONJAX_REQUIRE_DATA", None)  # CI sets it; this test is about a machine without data
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:xdist", *FILES],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    m = re.search(r"(\d+) passed, (\d+) skipped", out)
    assert m and int(m.group(2)) >= 8 and "failed" not in out and "error" not in out.lower().split("summary")[-1], out
    skips = [l for l in out.splitlines() if l.startswith("SKIPPED")]
    for name in ("nsl_kdd", "sst2_trec_text", "mnist", "cifar10_jpeg_subset", "nettack_npz_cora_citeseer_polblogs"):
        assert any("run: poisonjax data fetch " in l and name in l and str(empty) in l for l in skips), (name, skips)
    assert not any("conftest" in l for l in skips)  # each skip points at its test
    assert not any(empty.iterdir())  # nothing was written into the data root


def test_ci_mode_fails_instead_of_skipping(tmp_path):
    """With POISONJAX_REQUIRE_DATA=1 (set by .ci/run, where the data is present) a missing dataset fails."""
    env = dict(os.environ, POISONJAX_DATA=str(tmp_path), POISONJAX_REQUIRE_DATA="1", JAX_PLATFORMS="cpu")
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:xdist",
                        "tests/data/test_text_loaders.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 1 and "2 failed" in p.stdout and "DataNotFoundError" in p.stdout, p.stdout[-2000:]
