"""CLI: --help, list, unknown study/key errors, overrides, run+report on a tiny config."""
import json
import subprocess
import sys

import pytest

from poisonjax import cli


def test_help_and_errors(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    assert "--config." in capsys.readouterr().out
    for argv, pattern in ((["run", "nope"], "unknown study 'nope'"),
                          (["run", "badnets", "--config.bogus=1"], "unknown config key 'config.bogus'"),
                          (["run", "badnets", "--config.rate=high"], "bad value for config.rate")):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and pattern in err and err.count("\n") == 1, err
    with pytest.raises(SystemExit, match="unknown study 'nope'.*badnets"):  # --debug: the exception itself
        cli.main(["run", "nope", "--debug"])


def test_study_help_lists_config_keys(capsys):
    assert cli.main(["run", "metattack", "--variant", "paper", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--config." in out and "Meta-PGD" in out  # command help, then the study's documentation
    assert "  pgd.steps = 80" in out and "  flips_per_step = 1" in out  # paper variant's defaults
    assert cli.main(["run", "metattack", "--variant=huge", "--help"]) == 2
    assert "unknown variant" in capsys.readouterr().err


def _victims_key():  # n_victims (standard name) or, before the rename, num_victims
    return "n_victims" if "n_victims" in cli.build_config("badnets", "quick", []) else "num_victims"


def test_overrides_parse_types():
    nv = _victims_key()
    c = cli.build_config("badnets", "quick", [("rate", "0.2"), (nv, "3"), ("attacks", "none,badnets"),
                                              ("train.epochs", "5")])
    assert c.rate == 0.2 and c[nv] == 3 and c.attacks == ("none", "badnets") and c.train.epochs == 5
    assert cli.build_config("badnets", "quick", [("train.epochs", "4.0")]).train.epochs == 4
    with pytest.raises(SystemExit, match="unknown variant"):
        cli.build_config("badnets", "huge", [])


def test_list_runs():
    out = subprocess.run([sys.executable, "-m", "poisonjax.cli", "list", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    entries = json.loads(out.stdout)
    assert any(e["name"] == "badnets" for e in entries)
    out = subprocess.run([sys.executable, "-m", "poisonjax.cli", "list", "--domain", "atlantis"], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown domain" in out.stderr and "Traceback" not in out.stderr


def test_run_then_report(tmp_path):
    wd = tmp_path / "run"
    nv = _victims_key()
    args = ["run", "badnets", "--workdir", str(wd), f"--config.{nv}=1", "--config.attacks=none,",
            "--config.train.epochs=2"]
    assert cli.main(args) == 0
    res = json.loads((wd / "results.json").read_text())
    assert res.get(nv, res.get("num_victims", res.get("n_victims"))) == 1 and "none" in json.dumps(res)
    (wd / "report.md").unlink()
    assert cli.main(["report", str(wd)]) == 0
    assert (wd / "report.md").exists()


def test_workdir_of_another_config_is_refused(tmp_path, capsys):
    wd = tmp_path / "w"
    (wd).mkdir()
    (wd / "run_info.json").write_text(json.dumps({"study": "badnets", "config_fingerprint": "abc", "overrides": {}}))
    assert cli.main(["run", "badnets", "--workdir", str(wd)]) == 2
    assert "different study/config" in capsys.readouterr().err
    from poisonjax.core import reporting
    from poisonjax.core.runner import CheckpointMismatchError
    reporting.prepare_workdir(tmp_path / "x", {"a": 1})
    reporting.prepare_workdir(tmp_path / "x", {"a": 1})      # same config: fine
    with pytest.raises(CheckpointMismatchError, match="different config"):
        reporting.prepare_workdir(tmp_path / "x", {"a": 2})
