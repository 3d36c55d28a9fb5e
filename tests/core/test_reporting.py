"""core.reporting's pivot and heat map, used by the backdoor, T-Core and FL-robustness studies' plots."""
import numpy as np
import pytest

from poisonjax.core import reporting


def test_grid_from_rows_pivots_in_first_appearance_order_with_nan_for_missing_cells():
    rows = [{"attack": "badnets", "defense": "none", "asr": 0.9},
            {"attack": "badnets", "defense": "clp", "asr": 0.1},
            {"attack": "blended", "defense": "none", "asr": 0.8},
            {"attack": "blended", "defense": "strip", "asr": None}]
    g, ys, xs = reporting.grid_from_rows(rows, "attack", "defense", "asr")
    assert ys == ["badnets", "blended"] and xs == ["none", "clp", "strip"]
    np.testing.assert_array_equal(g, [[0.9, 0.1, np.nan], [0.8, np.nan, np.nan]])
    g2, ys2, _ = reporting.grid_from_rows(rows, lambda r: r["attack"][:3] + "/" + r["defense"], "defense", "asr")
    assert ys2 == ["bad/none", "bad/clp", "ble/none", "ble/strip"] and g2.shape == (4, 3)
    assert g2[1, 1] == 0.1 and np.isnan(g2[1, 0])


def test_save_heatmap_writes_a_png_and_refuses_a_grid_that_does_not_fit_its_labels(tmp_path):
    p = reporting.save_heatmap(tmp_path / "h.png", [[0.1, np.nan], [0.9, 0.5]], ["a", "b"], ["x", "y"], title="t",
                               cmap="magma")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match=r"grid: expected shape \(2, 3\)"):
        reporting.save_heatmap(tmp_path / "bad.png", np.zeros((2, 2)), ["a", "b"], ["x", "y", "z"], title="t")
    assert not (tmp_path / "bad.png").exists()
