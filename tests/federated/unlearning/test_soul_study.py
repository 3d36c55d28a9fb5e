"""The soul study: config checks (fast) and a tiny end-to-end run (slow)."""
import json

import numpy as np
import pytest

from configs.soul import get_config
from experiments import soul as E
from poisonjax.core.validation import PoisonJaxInputError


@pytest.mark.parametrize("key,value,word", [
    ("partitions", ("iid", "dirichlet:-1"), "dirichlet_alpha"),
    ("partitions", ("zipf",), "config.partitions"),
    ("scenarios", ("poison_everyone",), "config.scenarios"),
    ("forget_client", 99, "config.forget_client"),
    ("sweep_prune_fractions", (0.1, 1.5), "config.sweep_prune_fractions"),
    ("sweep_blend_alphas", (-0.1,), "config.sweep_blend_alphas"),
])
def test_study_config_errors(key, value, word):
    c = get_config("quick")
    setattr(c, key, value)
    with pytest.raises(PoisonJaxInputError, match=word):
        E._validate(c)


@pytest.mark.parametrize("key,value,word", [("prune_fraction", 1.2, "prune_fraction"),
                                            ("blend_alpha", -0.2, "blend_alpha")])
def test_study_soul_config_errors(key, value, word):
    c = get_config("quick")
    setattr(c.soul, key, value)
    with pytest.raises(PoisonJaxInputError, match=word):
        E._validate(c)


def test_checks_report_the_mia_gap_with_its_standard_error():
    """The MIA condition comes with the gap to retraining and sqrt(se_soul^2 + se_retrain^2); cached rows
    without ``mia_auc_se`` (older workdirs) still give every boolean check."""
    base = dict(retain_accuracy=0.9, forget_accuracy=0.2, accuracy=0.9, asr=None, rounds=5, bytes=10.0,
                client_flops=1.0)
    rows = [dict(base, method=m, mia_auc=a, mia_auc_se=se) for m, a, se in
            (("retrain", 0.52, 0.114), ("soul", 0.42, 0.109), ("finetune", 0.6, 0.1), ("pga", 0.45, 0.1),
             ("federaser", 0.47, 0.1), ("soul_before_finetune", 0.5, 0.1), ("pga_before_finetune", 0.5, 0.1))]
    rows[0].update(rounds=50, bytes=100.0)
    ch = E._checks(rows, "forget_client", False)
    assert ch["mia_auc_gap_vs_retrain"] == pytest.approx(-0.10)
    assert ch["mia_auc_gap_se"] == pytest.approx((0.114 ** 2 + 0.109 ** 2) ** 0.5)
    assert ch["mia_auc_within_0.05_of_retrain"] is False and ch["asr_within_5pts_of_retrain"] is None
    old = E._checks([{k: v for k, v in r.items() if k != "mia_auc_se"} for r in rows], "forget_client", False)
    assert "mia_auc_gap_se" not in old and old["rounds_at_most_half_of_retrain"] is True


@pytest.mark.slow
def test_tiny_study_end_to_end(tmp_path):
    c = get_config("quick")
    c.rounds = 8
    c.num_clients = 6
    c.malicious_fraction = 0.34
    c.scenarios = ("backdoor",)
    c.partitions = ("iid",)
    c.sweep_prune_fractions = (0.1,)
    c.sweep_blend_alphas = (0.0, 0.5)
    c.soul.finetune_rounds = 2
    res = E.run(c, tmp_path)
    methods = {r["method"] for r in res["rows"]}
    assert methods == set(E.METHOD_ORDER)
    for r in res["rows"]:
        for k in ("scenario", "partition", "method", "retain_accuracy", "forget_accuracy", "asr", "mia_auc"):
            assert k in r
    assert len(res["sweep_rows"]) == 2
    ch = res["checks"]["backdoor/iid"]
    # the paired SE of the MIA gap (same examples for both models; test_soul.py checks it against a bootstrap)
    assert np.isfinite(ch["mia_auc_gap_se_paired"]) and ch["mia_auc_gap_se_paired"] >= 0.0
    assert "federaser_mia_auc_gap_se_paired" in ch and "federaser_mia_auc_gap_vs_retrain" in ch
    assert (tmp_path / "report.md").exists() and (tmp_path / "methods.png").exists()
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["rows"] == json.loads(json.dumps(res["rows"]))
    # rerunning the same workdir reuses the cached cell
    again = E.run(c, tmp_path)
    assert again["rows"] == on_disk["rows"]


def test_selection_reads_no_test_metric():
    """select_soul_config picks max(retain_accuracy - forget_accuracy) and never looks at test-set columns."""
    rows = [dict(prune_fraction=0.05, blend_alpha=0.3, retain_accuracy=0.97, forget_accuracy=0.60, asr=0.0,
                 accuracy=0.99, mia_auc=0.5),
            dict(prune_fraction=0.10, blend_alpha=0.3, retain_accuracy=0.96, forget_accuracy=0.50, asr=0.9,
                 accuracy=0.10, mia_auc=0.9),
            dict(prune_fraction=0.10, blend_alpha=0.7, retain_accuracy=0.97, forget_accuracy=0.70, asr=0.0,
                 accuracy=0.99, mia_auc=0.5)]
    sel = E.select_soul_config(rows)
    assert (sel["prune_fraction"], sel["blend_alpha"]) == (0.10, 0.3)
    assert abs(sel["table"][1]["J"] - 0.46) < 1e-9
    # same J: the milder edit (smaller p) wins
    tie = [dict(rows[0], forget_accuracy=0.61), dict(rows[1], retain_accuracy=0.97, forget_accuracy=0.61)]
    assert E.select_soul_config(tie)["prune_fraction"] == 0.05
    # a point that loses more than the tolerance of retained accuracy is not eligible, whatever its J
    drastic = rows + [dict(prune_fraction=0.3, blend_alpha=0.0, retain_accuracy=0.94, forget_accuracy=0.10, asr=0.0,
                           accuracy=0.99, mia_auc=0.5)]
    sel = E.select_soul_config(drastic, retain_tolerance=0.01)
    assert (sel["prune_fraction"], sel["blend_alpha"]) == (0.10, 0.3)
    assert [t["feasible"] for t in sel["table"]] == [True, True, True, False]
    assert E.select_soul_config(drastic, retain_tolerance=0.05)["prune_fraction"] == 0.3
