"""Shared by the seed aggregators (raven_seeds.py, claims_over_seeds.py): read one finished study workdir."""
from __future__ import annotations

import json
import os

import numpy as np


def load_workdir(path, need=None):
    """``(results, config)`` of a finished study workdir (``results.json`` and ``config.json``); exits with a
    one-line message when the study has not finished there, or when ``results.json`` lacks the key ``need``."""
    f = os.path.join(path, "results.json")
    if not os.path.exists(f):
        raise SystemExit(f"{path}: no results.json (the study has not finished there)")
    with open(f) as fh:
        r = json.load(fh)
    if need is not None and need not in r:
        raise SystemExit(f"{path}: results.json has no {need!r} (this study does not write it)")
    with open(os.path.join(path, "config.json")) as fh:
        cfg = json.load(fh)
    return r, cfg


def describe(vals):
    r"""Mean, sample standard deviation (ddof 1), standard error :math:`s / \sqrt{n}`, min, max and ``n`` of a
    list of numbers; ``None`` for an empty list. One seed gives ``std = se = 0``."""
    v = np.asarray(vals, float)
    if v.size == 0:
        return None
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return {"mean": float(v.mean()), "std": sd, "se": sd / float(np.sqrt(v.size)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}
