"""The standard names of poisonjax: config keys and ``results.json`` row keys, with their meaning.

Every study config (``configs/<study>.py``) and every row of a study's ``results.json`` uses these
names for these ideas, so a table from one study reads like a table from another and sweeps can be
aggregated across studies. A study may add keys of its own for ideas not listed here.

Old spellings of renamed config keys keep working for one release (:data:`DEPRECATED_CONFIG_KEYS`):
:func:`upgrade_config` (called by :func:`poisonjax.core.study.prepare_workdir`) moves an old key's
value to its new key, and :func:`translate_override` maps ``--config.<old>=`` on the command line;
both emit a :class:`DeprecationWarning` and print one line saying what to write instead.
"""
from __future__ import annotations

import sys
import warnings
from typing import Any, Callable, Dict, Optional

__all__ = ["CONFIG_KEYS", "RESULT_KEYS", "DEPRECATED_CONFIG_KEYS", "DEPRECATED_RESULT_KEYS", "upgrade_config",
           "translate_override", "names_table"]

#: Config keys: name -> one-line meaning.
CONFIG_KEYS: Dict[str, str] = {
    "seed": "base PRNG seed of the run (int >= 0)",
    "seeds": "a list of seeds: independent repetitions (partitions, inits), reported as mean and std",
    "n_victims": "number of victim models trained from independent seeds per cell (vmapped)",
    "budget": "attack budget as a fraction in [0, 1] of the training set (or of the edges, for graphs)",
    "poison_rate": "fraction in [0, 1] of the training set (or of a client's data) that is poisoned",
    "eps": "perturbation radius in [0, 1] pixel units (L-inf unless stated)",
    "target_class": "class the attack wants inputs classified as (or whose recall it attacks)",
    "source_class": "class whose inputs a targeted attack relabels or redirects",
    "dataset": "dataset name (see `poisonjax data list`)",
    "attack": "attack name (one); `attacks` is a grid of them",
    "defense": "defense name (one); `defenses` is a grid of them",
    "method": "method name where a study compares methods that are neither attack nor defense",
    "n_clients": "number of federated clients",
    "dirichlet_alpha": "Dirichlet concentration of the non-IID client partition (small = more skewed)",
    "rounds": "federated rounds (one server aggregation each)",
}

#: ``results.json`` row keys: name -> one-line meaning.
RESULT_KEYS: Dict[str, str] = {
    "accuracy": "test accuracy of the model under study (the global model in FL), in [0, 1]",
    "clean_accuracy": "accuracy of a (defended or undefended) model on clean test data, in [0, 1]",
    "asr": "attack success rate: fraction of attacked test inputs that get the attacker's label/outcome",
    "detection_tpr": "true-positive rate (recall) of a detector against the truly poisoned/malicious items",
    "detection_fpr": "false-positive rate of a detector on benign items",
    "detection_precision": "precision of a detector: flagged items that are truly poisoned/malicious",
    "auc": "area under the ROC curve",
    "seconds": "wall-clock seconds of the cell (compilation included; the machine may be shared)",
    "seed": "seed of the row (when rows are per seed)",
    "n_victims": "victims the row's mean/std is over",
    "dataset": "dataset of the row", "attack": "attack of the row", "defense": "defense of the row",
    "method": "method of the row", "budget": "budget of the row", "poison_rate": "poison rate of the row",
    "n_clients": "clients of the row", "dirichlet_alpha": "Dirichlet concentration of the row",
    "rounds": "rounds of the row",
}

#: Renamed config keys: old -> new. The old spelling works (with a deprecation message) until the next
#: release. A rename applies to a config node only where the node has the new key (so PADHASH's
#: ``alpha``, a loss weight, is not a Dirichlet concentration).
DEPRECATED_CONFIG_KEYS: Dict[str, str] = {
    "num_victims": "n_victims",
    "n_seeds": "n_victims",
    "victims": "n_victims",
    "alpha": "dirichlet_alpha",
    "alphas": "dirichlet_alphas",
    "num_clients": "n_clients",
}

#: Renamed result keys (documentation for readers of old ``results.json`` files): old -> new.
DEPRECATED_RESULT_KEYS: Dict[str, str] = {
    "main_accuracy": "accuracy",
    "test_acc_clean": "clean_accuracy",
    "backdoor_asr": "asr",
    "attack_success_rate": "asr",
    "num_victims": "n_victims",
    "n_seeds": "n_victims",
    "num_clients": "n_clients",
    "alpha": "dirichlet_alpha",
}


def _say(msg: str, log: Optional[Callable[[str], Any]]) -> None:
    warnings.warn(msg, DeprecationWarning, stacklevel=3)
    (log or (lambda m: print(m, file=sys.stderr)))(msg)


def translate_override(config, dotted_key: str, log: Optional[Callable[[str], Any]] = None) -> str:
    """The key to set for ``--config.<dotted_key>``: the new name when the last part is a deprecated
    spelling and its node has the new key (and not the old one); else ``dotted_key`` unchanged.
    A translation emits a :class:`DeprecationWarning` and prints (or ``log``s) one line."""
    parts = dotted_key.split(".")
    node = config
    for p in parts[:-1]:
        if not hasattr(node, "keys") or p not in node.keys():
            return dotted_key
        node = node[p]
    old = parts[-1]
    new = DEPRECATED_CONFIG_KEYS.get(old)
    if new is None or not hasattr(node, "keys") or old in node.keys() or new not in node.keys():
        return dotted_key
    full = ".".join(parts[:-1] + [new])
    _say(f"poisonjax: config.{dotted_key} is deprecated and will be removed in the next release; "
         f"use config.{full} (set to the value you gave)", log)
    return full


def upgrade_config(config, log: Optional[Callable[[str], Any]] = None, _prefix: str = ""):
    """Move values set under deprecated key names to their new names, in place (every nested node).

    A config built by ``get_config`` and then given an old key (``c.num_victims = 4``) runs as if the
    new key had been set; each move emits a :class:`DeprecationWarning` and prints one line. Returns
    ``config``. Where both spellings are set, the old one (set explicitly by the caller) wins.
    """
    if not hasattr(config, "keys"):
        return config
    for k in list(config.keys()):
        v = config[k]
        if hasattr(v, "keys"):
            upgrade_config(v, log, f"{_prefix}{k}.")
    for old, new in DEPRECATED_CONFIG_KEYS.items():
        if old in config.keys() and new in config.keys():
            ov = config[old]
            if ov is None:           # a placeholder left unset
                continue
            _say(f"poisonjax: config.{_prefix}{old} is deprecated and will be removed in the next release; "
                 f"use config.{_prefix}{new} (its value {ov!r} is used)", log)
            unlocked = config.unlocked() if hasattr(config, "unlocked") else None
            if unlocked is not None:
                with unlocked:
                    config[new] = ov
                    del config[old]
            else:
                config[new] = ov
                del config[old]
    return config


def names_table() -> str:
    """The standard names as a markdown table (``kind | name | meaning``), for the README."""
    rows = ["| kind | name | meaning |", "|---|---|---|"]
    rows += [f"| config | `{k}` | {v} |" for k, v in CONFIG_KEYS.items()]
    rows += [f"| result | `{k}` | {v} |" for k, v in RESULT_KEYS.items()
             if k in ("accuracy", "clean_accuracy", "asr", "detection_tpr", "detection_fpr", "detection_precision",
                      "auc", "seconds")]
    rows += ["", "Renamed (old spelling accepted with a deprecation message for one release):", "",
             "| old | new |", "|---|---|"]
    rows += [f"| `{o}` | `{n}` |" for o, n in DEPRECATED_CONFIG_KEYS.items()]
    rows += [f"| `{o}` (result) | `{n}` |" for o, n in DEPRECATED_RESULT_KEYS.items()
             if o not in DEPRECATED_CONFIG_KEYS]
    return "\n".join(rows) + "\n"
