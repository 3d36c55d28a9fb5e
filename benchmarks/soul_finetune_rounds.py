"""SoUL's fine-tuning rounds R against the issue's conditions: how many rounds close the retained-accuracy gap.

The ``soul`` study fine-tunes for R = ``soul.finetune_rounds`` = 5 rounds (10% of retraining's 50). The issue
allows up to 50% of retraining's rounds and bytes. This script trains one cell's federation once (cached), retrains
it without the forgotten clients (the reference), prunes and blends as SoUL does (the config's ``p``, ``alpha``,
ranking; :func:`poisonjax.federated.unlearning.soul_unlearn` with R = 0), and then fine-tunes with the remaining clients one round at a time up to ``--max-rounds``, evaluating
after every round: retained accuracy (remaining clients' data), forget accuracy, clean test accuracy, ASR
(backdoor scenario) and the loss-threshold MIA AUC on the forget set, each against retraining's.

The rounds run one at a time (round r with seed ``seed + 100 + r``), so the value at R differs from the study's
R-round run (one seed) by the usual seed noise. SoUL's rounds are R + 1 (the round that gathers the unit
statistics) and its bytes are counted as the study counts them.

    POISONJAX_DATA=../shared/data python benchmarks/soul_finetune_rounds.py --variant paper \\
        --partition dirichlet:0.1 --max-rounds 24 --out soul_rounds.json
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time

import numpy as np

import _machine  # noqa: E402  (benchmarks/ is on sys.path when a script there runs: CPU model and load)

KEYS = ("retain_accuracy", "forget_accuracy", "accuracy", "asr", "mia_auc", "mia_auc_se")


def conditions(row, ref):
    """The issue's closeness conditions of one row against retraining's (``None`` where not applicable)."""
    out = {"retain_within_2pts": row["retain_accuracy"] >= ref["retain_accuracy"] - 0.02,
           "mia_within_0.05": abs(row["mia_auc"] - ref["mia_auc"]) <= 0.05}
    if row.get("asr") is not None:
        out["asr_within_5pts"] = row["asr"] <= ref["asr"] + 0.05
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="quick", choices=("quick", "paper"),
                    help="the soul study's config variant: quick = digits MLP, paper = MNIST CNN (default quick)")
    ap.add_argument("--partition", default="dirichlet:0.1", help="iid or dirichlet:<alpha> (default dirichlet:0.1)")
    ap.add_argument("--scenarios", default="backdoor,forget_client",
                    help="comma-separated scenarios (backdoor, forget_client; default both)")
    ap.add_argument("--max-rounds", type=int, default=24,
                    help="fine-tuning rounds to run (default 24: with the statistics round, 50%% of 50)")
    ap.add_argument("--cache", default="/tmp", help="folder for the trained and retrained federations (pickles)")
    ap.add_argument("--out", default="", help="write the rows as JSON here")
    a = ap.parse_args(argv)
    if a.max_rounds < 1:
        raise SystemExit(f"--max-rounds must be >= 1, got {a.max_rounds}")

    import jax
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from configs.soul import get_config
    from experiments import soul as E
    from poisonjax.federated import unlearning as U

    machine = _machine.start()
    c = get_config(a.variant)
    arrays = E.load_dataset(c.dataset, c.seed)
    model = U.make_model(c.model, arrays[4], arrays[2][:1], hidden=c.hidden, channels=tuple(c.channels))
    out = {"variant": a.variant, "dataset": c.dataset, "model": c.model, "partition": a.partition,
           "prune_fraction": c.soul.prune_fraction, "blend_alpha": c.soul.blend_alpha, "ranking": c.soul.ranking,
           "rounds_retrain": c.rounds, "cells": []}
    for scen in [s for s in a.scenarios.split(",") if s]:
        sc, sim, tf = E.build_cell(c, arrays, scen, a.partition, model)     # the study's own cell
        ev = lambda p: {k: (None if v is None else round(float(v), 4))   # noqa: E731
                        for k, v in U.evaluate(model.fns.apply, p, sc).items() if k in KEYS}
        tag = f"{c.dataset}_{c.model}_{scen}_{a.partition.replace(':', '')}_{c.rounds}_s{c.seed}"
        t0 = time.time()
        path = os.path.join(a.cache, f"soul_rounds_{tag}.pkl")
        if os.path.exists(path):
            with open(path, "rb") as f:
                params, history, rt_params = pickle.load(f)
        else:
            orig = U.train_original(sim, sc.data, c.rounds, delta_t=c.federaser.delta_t, seed=c.seed, train_fn=tf)
            params, history = jax.device_get(orig.params), jax.device_get(orig.history)
            rt_params = jax.device_get(U.retrain(model, sim, sc, history, c.rounds, seed=c.seed, train_fn=tf).params)
            with open(path, "wb") as f:
                pickle.dump((params, history, rt_params), f)
        t_train = time.time() - t0
        ref, orig_m = ev(rt_params), ev(params)
        print(f"{scen} {a.partition}: original {orig_m}\n  retrain {ref}  ({t_train:.0f} s)", flush=True)
        # SoUL itself with R = 0: statistics, importance, pruning and blend, no fine-tuning
        p = U.soul_unlearn(model, sim, sc, params, E.soul_config(c, finetune_rounds=0), seed=c.seed,
                           train_fn=tf).pruned_params
        rem = U.subset_clients(sc.data, sc.retain_ids)
        curve = [{"R": 0, **ev(p)}]
        t1 = time.time()
        for r in range(a.max_rounds):
            p, _ = U.continue_from(sim, rem, p, 1, seed=c.seed + 100 + r, train_fn=tf)
            row = {"R": r + 1, "rounds_vs_retrain": (r + 2) / c.rounds, **ev(p)}
            row.update(conditions(row, ref))
            curve.append(row)
            print(f"  R={r + 1:2d} " + " ".join(f"{k}={row[k]}" for k in KEYS if row[k] is not None)
                  + "  " + " ".join(f"{k}:{'ok' if v else 'no'}" for k, v in conditions(row, ref).items()), flush=True)
        first = next((r["R"] for r in curve[1:] if all(conditions(r, ref).values())), None)
        out["cells"].append({"scenario": scen, "partition": a.partition, "original": orig_m, "retrain": ref,
                             "curve": curve, "first_R_meeting_all": first,
                             "seconds_train_and_retrain": t_train, "seconds_finetune": time.time() - t1})
        print(f"  first R meeting every condition: {first}", flush=True)
    out["machine"] = machine.finish()
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
