"""NSL-KDD network-intrusion data (Tavallaee et al., CISDA 2009) as a tabular dataset.

Reads the two standard NSL-KDD files (CSV, no header, 43 columns: 41 features, the ``attack`` label
string, the difficulty ``level``) from ``<data root>/nsl_kdd`` (see :func:`poisonjax.data.data_root`):

- ``KDDTrain+_20Percent.txt`` (25,192 rows) as the training split,
- ``KDDTest+.txt`` (22,544 rows) as the test split.

Features (``x [N, D]`` float32): the three categorical columns ``protocol_type``, ``service`` and
``flag`` are one-hot encoded over the union of the values seen in both files (the value sets are a
property of the schema, not of the labels); the 38 numeric columns are standardized with the
*training* mean and standard deviation, ``x = (v - mu_train) / sd_train`` (columns with ``sd = 0``
are centred only). With ``log_transform=True`` (default) the heavy-tailed byte and duration counts
(``duration, src_bytes, dst_bytes``) go through ``log1p`` first -- without it a few test rows sit
thousands of standard deviations out. D = 38 + 3 + 70 + 11 = 122 with the default union vocabulary.

Labels (``y [N]`` int32), two framings:

- ``"binary"``: 0 = normal, 1 = attack.
- ``"5class"``: 0 = normal, 1 = DoS, 2 = Probe, 3 = R2L, 4 = U2R, with the standard mapping of
  attack names to categories used since KDD'99 (extended with the attack types that only appear in
  ``KDDTest+``), see :data:`ATTACK_CATEGORY`.

Counts (checked in tests against PROVENANCE.md): train normal 13,449 / attack 11,743; test normal
9,711 / attack 12,833. 5-class train: 13,449 / 9,234 / 2,289 / 209 / 11; test: 9,711 / 7,460 / 2,421 /
2,885 / 67.
"""
from __future__ import annotations

import csv
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from poisonjax.core.validation import PoisonJaxInputError, check_choice
from poisonjax.data._base import require

TRAIN_FILE = "nsl_kdd/KDDTrain+_20Percent.txt"
TEST_FILE = "nsl_kdd/KDDTest+.txt"

COLUMNS: Tuple[str, ...] = (
    "duration", "protocol_type", "service", "flag", "src_bytes", "dst_bytes", "land", "wrong_fragment",
    "urgent", "hot", "num_failed_logins", "logged_in", "num_compromised", "root_shell", "su_attempted",
    "num_root", "num_file_creations", "num_shells", "num_access_files", "num_outbound_cmds",
    "is_host_login", "is_guest_login", "count", "srv_count", "serror_rate", "srv_serror_rate",
    "rerror_rate", "srv_rerror_rate", "same_srv_rate", "diff_srv_rate", "srv_diff_host_rate",
    "dst_host_count", "dst_host_srv_count", "dst_host_same_srv_rate", "dst_host_diff_srv_rate",
    "dst_host_same_src_port_rate", "dst_host_srv_diff_host_rate", "dst_host_serror_rate",
    "dst_host_srv_serror_rate", "dst_host_rerror_rate", "dst_host_srv_rerror_rate", "attack", "level")
CATEGORICAL = ("protocol_type", "service", "flag")
LOG_COLUMNS = ("duration", "src_bytes", "dst_bytes")

CATEGORIES_5 = ("normal", "DoS", "Probe", "R2L", "U2R")
CATEGORIES_2 = ("normal", "attack")

_GROUPS = {
    "DoS": ("apache2", "back", "land", "mailbomb", "neptune", "pod", "processtable", "smurf", "teardrop",
            "udpstorm", "worm"),
    "Probe": ("ipsweep", "mscan", "nmap", "portsweep", "saint", "satan"),
    "R2L": ("ftp_write", "guess_passwd", "httptunnel", "imap", "multihop", "named", "phf", "sendmail",
            "snmpgetattack", "snmpguess", "spy", "warezclient", "warezmaster", "xlock", "xsnoop"),
    "U2R": ("buffer_overflow", "loadmodule", "perl", "ps", "rootkit", "sqlattack", "xterm"),
}
#: attack name -> category (the standard KDD'99 / NSL-KDD grouping; ``normal`` -> ``normal``).
ATTACK_CATEGORY: Dict[str, str] = {"normal": "normal", **{a: g for g, names in _GROUPS.items() for a in names}}


class TabularDataset(NamedTuple):
    """``x_train [N, D]`` float32, ``y_train [N]`` int32, same for test; ``class_names``;
    ``feature_names [D]``; ``attack_train``/``attack_test`` the raw attack-name strings ``[N]``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: Tuple[str, ...]
    feature_names: Tuple[str, ...]
    attack_train: np.ndarray
    attack_test: np.ndarray
    name: str


def read_nslkdd_file(path) -> List[List[str]]:
    """Rows of one NSL-KDD file as lists of 43 strings; raises on a wrong column count."""
    rows = []
    with open(path, newline="") as f:
        for i, row in enumerate(csv.reader(f)):
            if not row:
                continue
            if len(row) != len(COLUMNS):
                raise PoisonJaxInputError(f"{path}: line {i + 1} has {len(row)} columns, expected {len(COLUMNS)} "
                                          "(NSL-KDD without a header row)")
            rows.append(row)
    return rows


def attack_category(names: Sequence[str]) -> np.ndarray:
    """Map attack-name strings to their category names (``normal``/DoS/Probe/R2L/U2R)."""
    out = []
    for n in names:
        n = n.strip().rstrip(".")
        if n not in ATTACK_CATEGORY:
            raise PoisonJaxInputError(f"unknown NSL-KDD attack name {n!r}; known: {sorted(ATTACK_CATEGORY)}")
        out.append(ATTACK_CATEGORY[n])
    return np.asarray(out)


def encode_labels(names: Sequence[str], framing: str) -> np.ndarray:
    """Integer labels ``[N]`` for ``framing`` in {"binary", "5class"} (see module docstring)."""
    check_choice("framing", framing, ("binary", "5class"))
    cats = attack_category(names)
    if framing == "binary":
        return (cats != "normal").astype(np.int32)
    index = {c: i for i, c in enumerate(CATEGORIES_5)}
    return np.asarray([index[c] for c in cats], np.int32)


def load_nslkdd(framing: str = "binary", data_dir=None, *, log_transform: bool = True,
                max_train: Optional[int] = None, max_test: Optional[int] = None, seed: int = 0) -> TabularDataset:
    """Load NSL-KDD (train = ``KDDTrain+_20Percent``, test = ``KDDTest+``) as a :class:`TabularDataset`.

    Args:
      framing: ``"binary"`` (normal vs attack) or ``"5class"`` (normal, DoS, Probe, R2L, U2R).
      data_dir: data root (default: :func:`poisonjax.data.data_root`); files are read from ``<root>/nsl_kdd/``.
      log_transform: ``log1p`` the duration/byte counts before standardizing (see module docstring).
      max_train, max_test: optional seeded, class-stratified subsample sizes (for quick runs); every
        class present in the full split keeps at least one row.
      seed: seed of that subsample.
    """
    check_choice("framing", framing, ("binary", "5class"))
    tr_path = require(TRAIN_FILE, data_dir, what="NSL-KDD training file KDDTrain+_20Percent.txt")
    te_path = require(TEST_FILE, data_dir, what="NSL-KDD test file KDDTest+.txt")
    tr = np.asarray(read_nslkdd_file(tr_path), dtype=object)
    te = np.asarray(read_nslkdd_file(te_path), dtype=object)
    col = {c: i for i, c in enumerate(COLUMNS)}
    num_cols = [c for c in COLUMNS[:41] if c not in CATEGORICAL]

    def numeric(rows):
        v = rows[:, [col[c] for c in num_cols]].astype(np.float64)
        if log_transform:
            for c in LOG_COLUMNS:
                j = num_cols.index(c)
                v[:, j] = np.log1p(v[:, j])
        return v

    ntr, nte = numeric(tr), numeric(te)
    mu, sd = ntr.mean(0), ntr.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    ntr, nte = (ntr - mu) / sd, (nte - mu) / sd

    onehots_tr, onehots_te, names = [ntr], [nte], list(num_cols)
    for c in CATEGORICAL:
        vocab = sorted(set(tr[:, col[c]]) | set(te[:, col[c]]))
        idx = {v: i for i, v in enumerate(vocab)}
        for rows, out in ((tr, onehots_tr), (te, onehots_te)):
            oh = np.zeros((len(rows), len(vocab)))
            oh[np.arange(len(rows)), [idx[v] for v in rows[:, col[c]]]] = 1.0
            out.append(oh)
        names += [f"{c}={v}" for v in vocab]
    x_tr = np.concatenate(onehots_tr, 1).astype(np.float32)
    x_te = np.concatenate(onehots_te, 1).astype(np.float32)
    a_tr = np.asarray([s.strip() for s in tr[:, col["attack"]]])
    a_te = np.asarray([s.strip() for s in te[:, col["attack"]]])
    y_tr, y_te = encode_labels(a_tr, framing), encode_labels(a_te, framing)

    rng = np.random.default_rng(seed)
    if max_train is not None:
        keep = stratified_subsample(y_tr, max_train, rng)
        x_tr, y_tr, a_tr = x_tr[keep], y_tr[keep], a_tr[keep]
    if max_test is not None:
        keep = stratified_subsample(y_te, max_test, rng)
        x_te, y_te, a_te = x_te[keep], y_te[keep], a_te[keep]
    classes = CATEGORIES_2 if framing == "binary" else CATEGORIES_5
    return TabularDataset(x_tr, y_tr, x_te, y_te, len(classes), classes, tuple(names), a_tr, a_te,
                          f"nslkdd_{framing}")


def stratified_subsample(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a class-proportional subsample of size about ``n`` (at least one per class)."""
    if n <= 0:
        raise PoisonJaxInputError(f"subsample size must be positive, got {n}")
    if n >= len(y):
        return np.arange(len(y))
    out = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = max(1, int(round(n * len(idx) / len(y))))
        out.append(rng.choice(idx, size=min(k, len(idx)), replace=False))
    return np.sort(np.concatenate(out))
