"""A study's ``claims`` over several seeds: mean, standard deviation, standard error and range of every
number, and on how many seeds every condition holds.

Studies that write ``claims`` in ``results.json`` (a list of dicts, one per dataset: the issue's "what must hold",
measured; today ``opus_vfl``) are run once per seed, then aggregated:

    for s in 0 1 2; do poisonjax run opus_vfl --config.seed=$s --workdir runs/opus/seed$s; done
    python benchmarks/claims_over_seeds.py runs/opus/seed* --out opus_seeds.json

For a number :math:`x_s` over :math:`n` seeds: mean :math:`\\bar x`, sample standard deviation :math:`s` (ddof 1),
standard error :math:`s/\\sqrt n`, and for a difference (a key containing ``minus`` or ``gap`` or ``drop``) the
one-sample t statistic :math:`\\bar x / (s/\\sqrt n)` with its two-sided p-value (``scipy.stats.ttest_1samp``), so a
"tie" can be told from a small but consistent gap. A boolean (``*_holds``) is counted: holds on k of n seeds.
Every workdir must come from the same study, variant and datasets (checked; only ``seed`` may differ).
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from _seeds import describe, load_workdir  # noqa: E402  (benchmarks/ is on sys.path when a script there runs)


def summarise(key, vals):
    """Numbers: mean, sd, se, min, max, n (and t-test against 0 for differences). Booleans: holds k of n."""
    if all(isinstance(v, bool) for v in vals):
        return {"holds": int(sum(vals)), "n": len(vals)}
    nums = [v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(nums) != len(vals):
        return {"values": vals}
    out = describe(nums)
    if out is None:
        return out
    if out["n"] > 1 and any(w in key for w in ("minus", "gap", "drop")) and out["std"] > 0:
        from scipy.stats import ttest_1samp
        t = ttest_1samp(np.asarray(nums, float), 0.0)
        out["t"], out["p_two_sided"] = float(t.statistic), float(t.pvalue)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workdirs", nargs="+", help="finished study workdirs, one per seed")
    ap.add_argument("--out", default="", help="write the aggregate as JSON here")
    a = ap.parse_args(argv)
    runs = [load_workdir(p, need="claims") for p in a.workdirs]
    strip = lambda c: {k: v for k, v in c.items() if k != "seed"}
    if any(strip(cfg) != strip(runs[0][1]) for _, cfg in runs[1:]):
        raise SystemExit("the workdirs differ in more than the seed; aggregate runs of one configuration only")
    seeds = [cfg.get("seed") for _, cfg in runs]
    out = {"workdirs": a.workdirs, "seeds": seeds, "datasets": {}}
    for i, cl in enumerate(runs[0][0]["claims"]):
        ds = cl.get("dataset", str(i))
        per = [r["claims"][i] for r, _ in runs]
        agg = {k: summarise(k, [p.get(k) for p in per]) for k in cl if k != "dataset"}
        out["datasets"][ds] = agg
        print(f"{ds}: {len(runs)} seeds {seeds}")
        for k, s in agg.items():
            if "holds" in s:
                print(f"  {k:50s} holds on {s['holds']} of {s['n']}")
            elif "mean" in s:
                t = f"  t = {s['t']:.2f}, p = {s['p_two_sided']:.3f}" if "t" in s else ""
                print(f"  {k:50s} {s['mean']:.4f} +- {s['std']:.4f} (se {s['se']:.4f}; {s['min']:.4f} .. "
                      f"{s['max']:.4f}){t}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
