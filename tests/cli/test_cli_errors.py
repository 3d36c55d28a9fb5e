"""CLI errors are one line (exit 2), dependency errors name the key, Ctrl-C says where to resume, failed runs
leave nothing behind, a scalar override replaces its grid, --version, and `list` fits 100 columns."""
import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from poisonjax import cli

REPO = Path(__file__).resolve().parents[2]


def _one_line_error(capsys, argv, *needles):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


def test_dependency_errors_name_the_key(capsys, tmp_path):
    _one_line_error(capsys, ["run", "badnets", "--config.seed=-1"], "config.seed", "[0, 2**32)")
    _one_line_error(capsys, ["run", "badnets", "--config.train.epochs=2.5"], "config.train.epochs", "integer")
    _one_line_error(capsys, ["run", "badnets", "--config.train=3"], "config.train is a group")
    f = tmp_path / "file"
    f.write_text("x")
    _one_line_error(capsys, ["run", "badnets", "--workdir", str(f)], "--workdir", "existing file")


def test_library_input_error_is_one_line_and_leaves_no_workdir(capsys, tmp_path):
    wd = tmp_path / "new"
    _one_line_error(capsys, ["run", "badnets", "--workdir", str(wd), "--config.rate=1.5"], "config.rate", "1.5")
    assert not wd.exists()  # created by the failed run, removed with it
    old = tmp_path / "old"
    old.mkdir()
    (old / "notes.txt").write_text("mine")
    _one_line_error(capsys, ["run", "badnets", "--workdir", str(old), "--config.rate=1.5"], "config.rate")
    assert sorted(p.name for p in old.iterdir()) == ["notes.txt"]  # only what the run wrote is gone
    with pytest.raises(ValueError, match="config.rate"):  # --debug: the exception with its traceback
        cli.main(["--debug", "run", "badnets", "--workdir", str(wd), "--config.rate=1.5"])


def test_missing_data_names_all_files_and_fetch_command(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("POISONJAX_DATA", str(tmp_path / "empty"))
    err = _one_line_error(capsys, ["run", "weidetect", "--workdir", str(tmp_path / "w")],
                          "poisonjax data fetch nsl_kdd", "KDDTrain+_20Percent.txt", "KDDTest+.txt")
    assert str(tmp_path / "empty") in err and not (tmp_path / "w").exists()


def test_scalar_override_replaces_the_grid(capsys):
    c = cli.build_config("badnets", "paper", [("rate", "0.05")], log=print)
    assert c.rate == 0.05 and tuple(c.rates) == (0.05,)
    assert "replaces the grid config.rates" in capsys.readouterr().out
    c = cli.build_config("badnets", "paper", [("rate", "0.05"), ("rates", "0.01,0.2")])
    assert tuple(c.rates) == (0.01, 0.2)  # an explicit grid wins
    assert cli.main(["run", "badnets", "--help"]) == 0
    assert "rates = (0.1,)    # grid; --config.rate=X replaces it" in capsys.readouterr().out


def test_version_and_list_width(capsys):
    from poisonjax import __version__
    with pytest.raises(SystemExit) as ei:
        cli.main(["--version"])
    assert ei.value.code == 0 and capsys.readouterr().out.strip() == f"poisonjax {__version__}"
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 100 and not any(l.endswith("~") for l in lines)
    joined = []  # a long import path goes on its own indented line
    for l in lines:
        if l.startswith("    poisonjax.") and joined:
            joined[-1] += " " + l.strip()
        else:
            joined.append(l)
    rows = [l.split() for l in joined if l.count("poisonjax.") == 1 and ":" in l]
    assert len(rows) > 20
    for name, study, where in rows:  # the import path imports; the name is the study config's name
        mod, attr = where.split(":")
        assert hasattr(importlib.import_module(mod), attr), where
    names = {(r[0], r[1]) for r in rows}
    assert ("label_flip", "fl_robustness") in names and ("fl_label_flip", "fl_robustness") not in names
    assert cli.main(["list", "--wide"]) == 0
    wide = capsys.readouterr().out
    assert "stealthiness" in wide and "fl_label_flip" in wide


TOY_CONFIG = '''
import ml_collections
def get_config(variant="quick"):
    c = ml_collections.ConfigDict()
    c.steps = 200
    c.fail = False
    return c
'''
TOY_EXPERIMENT = '''
import json, os, time
from pathlib import Path
import jax, jax.numpy as jnp
from poisonjax.core.runner import run as run_steps
from poisonjax.core.types import AttackOptimizer

def run(config, workdir):
    if config.fail:
        from poisonjax.core.validation import PoisonJaxInputError
        (Path(workdir) / "config.json").write_text(json.dumps(config.to_dict()))  # what studies write first
        raise PoisonJaxInputError("config.fail is set")
    def step(s, p):
        jax.debug.callback(lambda: time.sleep(float(os.environ.get("TOY_SLEEP", "0"))))
        return {"s": s["s"] + p}
    att = AttackOptimizer(lambda k, p: {"s": jnp.zeros(())}, step, lambda s, p: {"s": s["s"]})
    res = run_steps(att, jnp.ones(()), config.steps, Path(workdir) / "attack", chunk_size=5, config=config.to_dict(),
                    progress=False)
    out = {"final": float(res.state["s"]), "resumed_from": res.resumed_from}
    (Path(workdir) / "results.json").write_text(json.dumps(out))
    return out
'''


def test_failed_run_leaves_folder_and_ctrl_c_says_step_and_resumes(tmp_path):
    root = tmp_path / "root"
    for sub, text in (("configs", TOY_CONFIG), ("experiments", TOY_EXPERIMENT)):
        (root / sub).mkdir(parents=True)
        (root / sub / "toy.py").write_text(textwrap.dedent(text))
        (root / sub / "__init__.py").write_text("")
    env = dict(os.environ, POISONJAX_ROOT=str(root), JAX_PLATFORMS="cpu", TOY_SLEEP="0.05")
    wd = tmp_path / "wd"
    wd.mkdir()
    cmd = [sys.executable, "-m", "poisonjax.cli", "run", "toy", "--workdir", str(wd)]
    # a failed run (another config) leaves the folder as it was, so this run's config is accepted
    f = subprocess.run(cmd + ["--config.fail=True"], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert f.returncode == 2 and f.stderr.strip() == "error: config.fail is set", f.stderr[-2000:]
    assert list(wd.iterdir()) == []
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    metrics = wd / "attack" / "metrics.jsonl"
    t0 = time.time()
    while time.time() - t0 < 120 and p.poll() is None and not (
            metrics.exists() and len(metrics.read_text().splitlines()) >= 20):
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err[-2000:]
    last = err.strip().splitlines()[-1]
    n = len(metrics.read_text().splitlines())
    assert last.startswith(f"interrupted at step {n} of 200 (attack); rerun the same command to resume"), err[-2000:]
    assert "Traceback" not in err
    # rerunning the same command resumes from the checkpoint and finishes (without the sleep)
    env["TOY_SLEEP"] = "0"
    q = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert q.returncode == 0, q.stderr[-2000:]
    res = json.loads((wd / "results.json").read_text())
    assert res["final"] == 200.0 and res["resumed_from"] is not None and res["resumed_from"] >= 5
