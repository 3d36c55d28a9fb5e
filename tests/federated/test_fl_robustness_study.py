"""The fl_robustness study, quick variant (digits, 20 clients, 20% malicious, alpha 0.5), on the
attacks/aggregators its claims need."""
import json

import pytest

from configs.fl_robustness import get_config
from experiments.fl_robustness import run


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    c = get_config("quick")
    c.attacks = ("none", "sign_flip", "lie", "min_max")
    c.aggregators = ("fedavg", "median", "krum")
    wd = tmp_path_factory.mktemp("fl_robustness")
    return run(c, wd), wd


@pytest.mark.slow
@pytest.mark.extended  # CI runs it after the main suite while time allows (.ci/run)
def test_outputs_written(study):
    res, wd = study
    on_disk = json.loads((wd / "results.json").read_text())
    cell = on_disk["results"]["sign_flip"]["krum"]
    for k in ("accuracy", "detection_precision", "detection_tpr", "detection_fpr"):
        assert k in cell
    assert (wd / "heatmap_accuracy.png").stat().st_size > 1000
    assert "| sign_flip | median |" in (wd / "report.md").read_text()
    assert res["num_malicious_per_round"] == 4


@pytest.mark.slow
@pytest.mark.extended  # CI runs it after the main suite while time allows (.ci/run)
def test_fedavg_collapses_robust_rules_hold(study):
    r = study[0]["results"]
    acc = lambda a, g: r[a][g]["accuracy"]  # noqa: E731
    # FedAvg collapses (near chance, 10 classes) under sign flipping or Min-Max
    assert min(acc("sign_flip", "fedavg"), acc("min_max", "fedavg")) < 0.3
    # Median and Krum hold under sign flipping: far above collapsed FedAvg
    for g in ("median", "krum"):
        assert acc("sign_flip", g) > 0.45 and acc("sign_flip", g) > acc("sign_flip", "fedavg") + 0.25
    # Krum flags every attacker it sees (it keeps only one client)
    assert r["sign_flip"]["krum"]["detection_tpr"] == 1.0
    # LIE hurts FedAvg more than no attack does: lower along the whole curve and at the end
    mean = lambda a, g: r[a][g]["mean_accuracy"]  # noqa: E731
    assert mean("lie", "fedavg") < mean("none", "fedavg") - 0.02
    assert acc("lie", "fedavg") < acc("none", "fedavg")
