"""The Metattack study's options: attack=prbcd end to end, the dense-memory refusal that points to PR-BCD,
DICE on the attacker's labels (oracle only with allow_test_labels), and the speed-setting note."""
import json

import pytest

from poisonjax.core.validation import PoisonJaxInputError


def _tiny_config(attack):
    from configs.metattack import get_config
    c = get_config("quick")
    c.attack, c.rate, c.n_victims, c.progress = attack, 0.002, 1, False
    c.gcn.epochs = 20
    c.prbcd.epochs, c.prbcd.inner_steps, c.prbcd.block_size = 3, 5, 2000
    return c


def _run_or_skip(c, wd):
    from experiments.metattack import run
    return run(c, wd)  # a missing dataset becomes a skip (tests/conftest.py)


def test_dense_attack_refused_where_it_cannot_fit(monkeypatch, capsys):
    from experiments import metattack as study
    from poisonjax.graph import attacks as A
    c = _tiny_config("meta_self")
    monkeypatch.setattr(A, "available_memory_bytes", lambda: 8 * 2 ** 30)
    est = study._check_dense_fits(c, 2485, 253)  # Cora fits in 8 GiB
    assert est["memory_gib"] < 1 and "GiB" in capsys.readouterr().out
    with pytest.raises(PoisonJaxInputError, match="attack=prbcd"):
        study._check_dense_fits(c, 19717, 443)  # PubMed: ~14.5 GiB of [N, N] arrays
    c.attack = "prbcd"
    assert study._check_dense_fits(c, 19717, 443) is None  # PR-BCD is never refused


@pytest.mark.slow  # three small Cora runs (~2-3 min on 2 free cores)
@pytest.mark.requires_data("cora")
def test_prbcd_and_dice_run_from_the_study(tmp_path):
    r = _run_or_skip(_tiny_config("prbcd"), tmp_path / "prbcd")
    assert 0 < r["n_perturbations"] <= r["budget"] == 10
    assert r["attack_labels"].startswith("attacker")
    assert json.loads((tmp_path / "prbcd" / "results.json").read_text())["attack"] == "prbcd"
    d = _run_or_skip(_tiny_config("dice"), tmp_path / "dice")
    assert d["attack_labels"].startswith("attacker") and d["n_perturbations"] == 10
    c = _tiny_config("dice")
    c.allow_test_labels = True
    o = _run_or_skip(c, tmp_path / "dice_oracle")
    assert o["attack_labels"].startswith("oracle")
    assert "oracle" in (tmp_path / "dice_oracle" / "report.md").read_text()


def test_quick_report_names_the_speed_setting():
    from experiments.metattack import _speed_note
    c = _tiny_config("meta_self")
    note = _speed_note(c)
    assert "speed setting" in note and "25 flips per meta-gradient" in note and "--variant paper" in note
    c.flips_per_step = 1
    assert _speed_note(c) == ""


@pytest.mark.slow  # one tiny Cora run with two lrs x two steps values (~1-3 min on 2 cores)
@pytest.mark.requires_data("cora")
def test_meta_pgd_lr_auto_in_the_study(tmp_path):
    """pgd.lr=auto end to end: the chosen lr / steps come from the attacker-side scores over the whole grid,
    and are recorded in results.json (meta_pgd.tuning and the ours row) and the report; a rerun resumes."""
    c = _tiny_config("meta_pgd")
    c.flips_per_step, c.inner_steps = 5, 5
    c.pgd.lr, c.pgd.lr_grid, c.pgd.steps_grid = "auto", (1.0, 4.0), (2, 3)
    c.pgd.samples, c.pgd.select_seeds = 2, 1
    r = _run_or_skip(c, tmp_path)
    m = r["meta_pgd"]
    scores = m["tuning"]["scores"]
    assert {(x["lr"], x["steps"]) for x in scores} == {(1.0, 2), (4.0, 2), (1.0, 3), (4.0, 3)}
    best = min(scores, key=lambda x: (x["score"], x["steps"], x["lr"]))
    assert (m["lr"], m["steps"]) == (best["lr"], best["steps"]) and r["meta_gradients"] == 2 + 2 * 3
    ours = [row for row in r["rows"] if row["graph"].startswith("ours")][0]
    assert (ours["pgd_lr"], ours["pgd_steps"], ours["pgd_lr_auto"]) == (m["lr"], m["steps"], True)
    assert "Meta-PGD step size and steps (no test labels)" in (tmp_path / "report.md").read_text()
    r2 = _run_or_skip(c, tmp_path)
    assert r2["meta_pgd"]["pgd_resumed_from_step"] == 3 and r2["test_acc_poisoned"] == r["test_acc_poisoned"]
