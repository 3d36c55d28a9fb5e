"""core.study (workdir, finished-cell cache, results) and core.names (standard names, deprecated keys)."""
import json
import warnings

import ml_collections
import numpy as np
import pytest

from poisonjax.core import names, study
from poisonjax.core.runner import CheckpointMismatchError
from poisonjax.core.validation import PoisonJaxInputError


def _cfg(**kw):
    c = ml_collections.ConfigDict({"seed": 0, "n_victims": 4, "dirichlet_alpha": 0.5, "progress": True,
                                   "sub": {"n_victims": 2}})
    c.update(kw)
    return c


def test_prepare_workdir_refuses_another_config_but_allows_mutable_keys(tmp_path):
    wd = study.prepare_workdir(tmp_path / "w", _cfg())
    assert json.loads((wd / "config.json").read_text())["n_victims"] == 4
    study.prepare_workdir(wd, _cfg())                                   # same config: fine
    with pytest.raises(CheckpointMismatchError, match="differs in n_victims"):
        study.prepare_workdir(wd, _cfg(n_victims=5))
    study.prepare_workdir(wd, _cfg(progress=False), mutable=("progress",))
    assert json.loads((wd / "config.json").read_text())["progress"] is False
    (tmp_path / "file").write_text("x")
    with pytest.raises(PoisonJaxInputError, match="not a folder"):
        study.prepare_workdir(tmp_path / "file", _cfg())


def test_cell_cache_computes_once_and_writes_atomically(tmp_path):
    cache = study.CellCache(tmp_path)
    calls = []

    def compute(run_dir):
        calls.append(run_dir)
        (run_dir / "checkpoints").mkdir(parents=True)
        return {"accuracy": np.float32(0.5), "curve": np.arange(3)}

    a = cache.cached("krum__lie", compute)
    b = cache.cached("krum__lie", compute)
    assert a == b == {"accuracy": 0.5, "curve": [0, 1, 2]} and len(calls) == 1
    assert "krum__lie" in cache and not (tmp_path / "cells" / "krum__lie" / "checkpoints").exists()
    assert not list((tmp_path / "cells").glob("*.tmp"))
    with pytest.raises(PoisonJaxInputError, match="cell name"):
        cache.path("a/b")


def test_write_results_rows_are_flat(tmp_path):
    res = study.write_results(tmp_path, [{"attack": "lie", "accuracy": {"mean": 0.9, "std": 0.01},
                                          "asr": np.float64(np.nan), "det": {"tpr": 1.0}}], dataset="digits")
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == res
    assert res["rows"] == [{"attack": "lie", "accuracy": 0.9, "accuracy_std": 0.01, "asr": None, "det_tpr": 1.0}]
    assert res["dataset"] == "digits"
    with pytest.raises(PoisonJaxInputError, match="flat"):
        study.write_results(tmp_path, [{"curve": [1, 2]}])


def test_old_config_keys_work_with_a_deprecation_message(tmp_path, capsys):
    c = _cfg()
    c.num_victims = 7                                  # the old spelling, set on a config
    c.sub.victims = 3
    with pytest.warns(DeprecationWarning, match="num_victims is deprecated"):
        study.prepare_workdir(tmp_path, c)
    assert c.n_victims == 7 and c.sub.n_victims == 3 and "num_victims" not in c and "victims" not in c.sub
    assert "use config.n_victims" in capsys.readouterr().err
    # a command-line override of an old key is translated where the node has the new key
    with pytest.warns(DeprecationWarning):
        assert names.translate_override(_cfg(), "alpha") == "dirichlet_alpha"
        assert names.translate_override(_cfg(), "sub.n_seeds") == "sub.n_victims"
    padhash_like = ml_collections.ConfigDict({"alpha": 0.3})  # a loss weight, not a concentration
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert names.translate_override(padhash_like, "alpha") == "alpha"
        names.upgrade_config(padhash_like)
    assert padhash_like.alpha == 0.3


def test_every_study_config_uses_standard_names():
    """No study config still spells a renamed key the old way (where it means the renamed idea)."""
    import importlib
    old = set(names.DEPRECATED_CONFIG_KEYS) - {"alpha"}  # PADHASH's alpha is a loss weight
    for s in ("badnets", "ddsp", "fl_robustness", "geminiguard", "metattack", "padhash", "vgae_attack",
              "weidetect", "witches_brew"):
        c = importlib.import_module(f"configs.{s}").get_config("quick")

        def walk(node, prefix=""):
            for k in node.keys():
                assert k not in old, f"configs/{s}.py: config.{prefix}{k} -> {names.DEPRECATED_CONFIG_KEYS[k]}"
                if hasattr(node[k], "keys"):
                    walk(node[k], f"{prefix}{k}.")
        walk(c)
    assert "| `n_victims` |" in names.names_table()
