"""RAVEN over several seeds: mean, standard deviation and range of the study's figures across seed workdirs.

The issue asks for RAVEN's conditions over 5 seeds. Run the study once per seed (each seed draws its own implant
targets, panel training and sampling), then aggregate:

    for s in 0 1 2 3 4; do poisonjax run raven --config.seed=$s --config.n_targets=5 --workdir runs/raven/seed$s; done
    python benchmarks/raven_seeds.py runs/raven/seed* --out raven_seeds.json

Per implant size: detection AUC of the default score ("and") and of entropy only, the entropy gap only and
divergence only, the TPR at the 5%-FPR threshold, over all implants and over those meeting the issue's
precondition (``by_size_precondition_met``); the control cells flagged; the threshold-transfer gap across
panel sizes; the implants meeting the precondition; the retrieval route. Then the issue's conditions, seed by seed,
and the combined score against each signal alone, paired on the same cells with DeLong's covariance, pooled over
seeds (a difference of one AUC over 5 implanted cells per seed is otherwise indistinguishable from noise).
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from _seeds import describe, load_workdir  # noqa: E402  (benchmarks/ is on sys.path when a script there runs)


def summarise(vals):
    """:func:`_seeds.describe` of the values that are not ``None`` (a seed where a figure does not apply)."""
    return describe([x for x in vals if x is not None])


def seed_checks(r):
    """The issue's conditions on one seed's results."""
    bs = r["by_size"]
    both_needed = {s: bool(d["auc"] > d["auc_entropy_only"] and d["auc"] > d["auc_divergence_only"])
                   for s, d in bs.items()}
    met = r.get("by_size_precondition_met", {}).get("100", {})
    return {"auc_at_100>=0.95": bool(bs["100"]["auc"] >= 0.95),
            "auc_at_100>=0.95_precondition_met": bool(met.get("auc", 0) >= 0.95) if met.get("n_implants") else None,
            "both_beat_each_alone_at_100_precondition_met": (
                bool(met["auc"] > met["auc_entropy_only"] and met["auc"] > met["auc_divergence_only"])
                if met.get("n_implants") else None),
            "control_never_flagged": int(r["control_flagged_total"]) == 0,
            "both_signals_beat_each_alone_at_100": both_needed["100"],
            "both_signals_beat_each_alone_sizes": [s for s, ok in both_needed.items() if ok],
            "transfer_within_5_points": bool(r["transfer"]["within_5_points"])}


SIGNALS = (("entropy_only", lambda x: -x["semantic_entropy"]), ("divergence_only", lambda x: x["divergence"]),
           ("entropy_gap_only", lambda x: x["entropy_gap"]))


def paired_delong(r, size: str):
    r"""The combined score against each signal alone on one seed's cells of one implant size, paired on the same
    cells: :math:`\Delta = \mathrm{AUC}_{both} - \mathrm{AUC}_{signal}` with DeLong's standard error
    :math:`\sqrt{C_{bb} + C_{ss} - 2C_{bs}}` (:func:`poisonjax.core.metrics.roc_auc_delong`), from the per-cell
    ``rows`` of ``results.json`` (the study's own selection: that size's implant panels)."""
    from poisonjax.core.metrics import auc_difference_se, roc_auc_delong
    rows = [x for x in r["rows"] if x["budget"] == int(size) and x["scenario"] == "implant"]
    y = np.array([bool(x["implanted"]) for x in rows])
    if y.sum() < 2 or (~y).sum() < 2:
        return None
    S = np.stack([[x["score"] for x in rows]] + [[f(x) for x in rows] for _, f in SIGNALS])
    aucs, cov = roc_auc_delong(S[:, y], S[:, ~y])
    out = {"auc": float(aucs[0]), "auc_se": float(np.sqrt(cov[0, 0])), "n_implanted": int(y.sum())}
    for k, (name, _) in enumerate(SIGNALS, start=1):
        out[f"minus_{name}"] = float(aucs[0] - aucs[k])
        out[f"minus_{name}_se"] = auc_difference_se(cov, 0, k)
    return out


def pooled_z(per_seed, name):
    r"""Seeds are independent: the mean difference :math:`\bar\Delta = \frac1S\sum_s \Delta_s` has standard
    error :math:`\frac1S\sqrt{\sum_s se_s^2}`; returns ``(mean, se, z, two-sided normal p)``."""
    from scipy.stats import norm
    d = np.array([p[f"minus_{name}"] for p in per_seed])
    se = float(np.sqrt(np.sum([p[f"minus_{name}_se"] ** 2 for p in per_seed])) / len(per_seed))
    z = float(d.mean() / se) if se > 0 else float("nan")
    return {"mean": float(d.mean()), "se": se, "z": z, "p_two_sided": float(2 * norm.sf(abs(z)))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workdirs", nargs="+", help="finished raven study workdirs, one per seed")
    ap.add_argument("--out", default="", help="write the aggregate as JSON here")
    a = ap.parse_args(argv)
    runs = [load_workdir(p) for p in a.workdirs]
    seeds = [c.get("seed") for _, c in runs]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"workdirs: expected one run per seed, got seeds {seeds}")
    sizes = sorted(runs[0][0]["by_size"], key=int)
    keys = ("auc", "auc_entropy_only", "auc_entropy_gap_only", "auc_divergence_only", "tpr_at_5fpr", "fpr",
            "control_flagged")
    agg = {"seeds": seeds, "n_targets": [c.get("n_targets") for _, c in runs], "by_size": {}, "by_size_lexicon": {}}
    for s in sizes:
        agg["by_size"][s] = {k: summarise([r["by_size"][s].get(k) for r, _ in runs]) for k in keys}
        agg["by_size_lexicon"][s] = {k: summarise([r["by_size_other_judge"]["by_size"][s].get(k) for r, _ in runs])
                                     for k in keys}
        met = [r.get("by_size_precondition_met", {}).get(s, {}) for r, _ in runs]
        agg.setdefault("by_size_precondition_met", {})[s] = {
            "n_implants": [m.get("n_implants") for m in met],
            **{k: summarise([m.get(k) for m in met]) for k in keys}}
    agg["auc_overall"] = summarise([r["auc"] for r, _ in runs])
    agg["control_flagged_total"] = [int(r["control_flagged_total"]) for r, _ in runs]
    agg["transfer_max_fpr_gap"] = summarise([r["transfer"]["max_fpr_gap_by_size"] for r, _ in runs])
    agg["fpr_main"] = summarise([r["transfer"]["fpr_main"] for r, _ in runs])
    agg["preconditions_met"] = [f"{sum(p['ok'] for p in r['preconditions'])}/{len(r['preconditions'])}"
                                for r, _ in runs]
    rt = [r.get("retrieval") or {} for r, _ in runs]
    agg["retrieval_auc_model_specific"] = summarise([x.get("auc_model_specific") for x in rt])
    agg["retrieval_shared_cells_flagged"] = [x.get("shared_poisoned_cells_flagged") for x in rt]
    agg["seconds"] = [r.get("seconds") for r, _ in runs]
    agg["checks_by_seed"] = {str(sd): seed_checks(r) for sd, (r, _) in zip(seeds, runs)}
    agg["paired_delong"] = {}
    for s in sizes:
        per = [paired_delong(r, s) for r, _ in runs]
        if all(p is not None for p in per):
            agg["paired_delong"][s] = {"per_seed": per, **{n: pooled_z(per, n) for n, _ in SIGNALS}}

    fmt = lambda d: "-" if d is None else f"{d['mean']:.3f} ± {d['std']:.3f} [{d['min']:.3f}, {d['max']:.3f}]"  # noqa
    print(f"RAVEN over seeds {seeds} (targets per size {agg['n_targets']})")
    print(f"{'size':>5} | {'AUC and':>30} | {'entropy only':>30} | {'entropy gap only':>30} | "
          f"{'divergence only':>30} | {'TPR@5%FPR':>30}")
    for s in sizes:
        d = agg["by_size"][s]
        print(f"{s:>5} | {fmt(d['auc']):>30} | {fmt(d['auc_entropy_only']):>30} | "
              f"{fmt(d['auc_entropy_gap_only']):>30} | {fmt(d['auc_divergence_only']):>30} | "
              f"{fmt(d['tpr_at_5fpr']):>30}")
    print("implants meeting the precondition only (others' implanted cells dropped):")
    for s in sizes:
        d = agg["by_size_precondition_met"][s]
        print(f"{s:>5} | n {d['n_implants']} | AUC and {fmt(d['auc'])} | entropy only {fmt(d['auc_entropy_only'])} | "
              f"divergence only {fmt(d['auc_divergence_only'])} | TPR {fmt(d['tpr_at_5fpr'])}")
    print("lexicon judge, AUC and:", {s: fmt(agg["by_size_lexicon"][s]["auc"]) for s in sizes})
    print("control cells flagged per seed:", agg["control_flagged_total"])
    print("threshold transfer, max FPR gap across panel sizes:", fmt(agg["transfer_max_fpr_gap"]))
    print("implants meeting the precondition:", agg["preconditions_met"])
    print("retrieval route AUC:", fmt(agg["retrieval_auc_model_specific"]),
          "| shared-poison cells flagged:", agg["retrieval_shared_cells_flagged"])
    for sd, ch in agg["checks_by_seed"].items():
        print(f"seed {sd}: {ch}")
    print("both signals against each alone, paired DeLong on the same cells, pooled over seeds "
          "(mean AUC difference ± se, z, p):")
    for s, d in agg["paired_delong"].items():
        print(f"{s:>5} | " + " | ".join(f"vs {n}: {d[n]['mean']:+.3f} ± {d[n]['se']:.3f}, z {d[n]['z']:.2f}, "
                                         f"p {d[n]['p_two_sided']:.3f}" for n, _ in SIGNALS))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(agg, f, indent=1)
    return agg


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
