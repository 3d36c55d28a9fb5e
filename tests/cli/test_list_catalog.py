"""`poisonjax list --matrix / --family / --axis / --json / --readme` (in-process, no subprocess)."""
import json

from poisonjax import catalog
from poisonjax.cli import main


def test_list_matrix_family_axis_json_readme(capsys):
    assert main(["list", "--matrix"]) == 0
    out = capsys.readouterr().out
    assert all(len(line) <= 100 for line in out.splitlines()), out
    lines = out.splitlines()
    total = [ln for ln in lines if ln.startswith("total")][0].split()
    assert int(total[-1]) == len(catalog.entries())
    vision = [ln for ln in lines if ln.startswith("vision")][0].split()
    assert int(vision[-1]) == len(catalog.entries(domain="vision"))
    assert main(["list", "--family", "bilevel", "--json"]) == 0
    names = {e["name"] for e in json.loads(capsys.readouterr().out)}
    assert {"metapoison", "witches_brew"} <= names
    assert main(["list", "--axis", "goal=backdoor", "--json"]) == 0
    es = json.loads(capsys.readouterr().out)
    assert es and all(e["goal"] == "backdoor" for e in es)
    assert len(es) == len(catalog.entries(axes={"goal": "backdoor"}))
    assert main(["list", "--readme"]) == 0
    assert "| `poisonjax run classics` | vision |" in capsys.readouterr().out
    assert main(["list"]) == 0
    assert all(len(line) <= 100 for line in capsys.readouterr().out.splitlines())


def test_list_bad_axis_is_one_line_error(capsys):
    assert main(["list", "--axis", "goal=chaos"]) != 0
    err = capsys.readouterr().err.strip()
    assert "goal" in err and "backdoor" in err and "\n" not in err
    assert main(["list", "--axis", "goal"]) != 0
    assert "AXIS=VALUE" in capsys.readouterr().err
