"""SoUL on a backdoored federation: why clean fine-tuning revives the backdoor, and per-layer vs global ranking.

One backdoor cell of the ``soul`` study (BadNets clients, IID), trained once; then, from the same trained model,
SoUL's pruning + blend at each ``(ranking, p, alpha)`` of ``--grid``, followed by ``R`` FedAvg fine-tuning rounds
with the remaining clients in three ways:

* ``after`` -- as in :func:`poisonjax.federated.unlearning.soul_unlearn` (R rounds in one run, same seed);
* ``asr_by_round`` -- the R rounds run one at a time, the ASR after each;
* ``after_frozen`` / ``asr_by_round_frozen`` -- one at a time, and after every round the pruned units' kernel
  columns and biases are put back to their blended values (a revival cannot run through the pruned units).

Also fine-tuning only, and retraining from scratch (``--retrain``) as the reference. Each row reports retained
accuracy (remaining clients' data), forget accuracy (forgotten clients' data, their labels), clean test accuracy
and the backdoor ASR, before and after fine-tuning, plus the pruned units per layer.

    POISONJAX_DATA=../shared/data python benchmarks/soul_backdoor_revival.py                      # digits MLP
    POISONJAX_DATA=../shared/data python benchmarks/soul_backdoor_revival.py --variant paper --retrain \\
        --grid "layer:0.1:0.3,global:0.1:0.3,global:0.1:0,global:0.2:0,layer:0.2:0,global:0.3:0"  # MNIST CNN

The trained model is cached in ``--cache`` (a pickle), so a second grid on the same cell skips the training.
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


def parse_grid(text: str):
    """``"ranking:p:alpha,..."`` -> ``[(ranking, p, alpha)]``."""
    out = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) != 3 or parts[0] not in ("global", "layer"):
            raise SystemExit(f"--grid entry {item!r}: expected 'global|layer:<p>:<alpha>'")
        out.append((parts[0], float(parts[1]), float(parts[2])))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="quick", choices=("quick", "paper"),
                    help="the soul study's config variant: quick = digits MLP, paper = MNIST CNN (default quick)")
    ap.add_argument("--partition", default="iid", help="iid or dirichlet:<alpha> (default iid)")
    ap.add_argument("--grid", default="layer:0.1:0.3,layer:0.1:0,layer:0.3:0",
                    help="comma-separated ranking:p:alpha points (default: the old in-grid default and two α=0 points)")
    ap.add_argument("--rounds", type=int, default=5, help="fine-tuning rounds R (default 5)")
    ap.add_argument("--retrain", action="store_true", help="also retrain from scratch without the clients")
    ap.add_argument("--cache", default="", help="pickle of the trained federation (default: /tmp/soul_revival_<cell>.pkl)")
    ap.add_argument("--out", default="", help="write the rows as JSON here")
    a = ap.parse_args(argv)
    grid = parse_grid(a.grid)

    import jax
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from configs.soul import get_config
    from experiments import soul as E
    from poisonjax.core.pruning import apply_unit_mask, unit_param_mask
    from poisonjax.federated import unlearning as U
    from poisonjax.federated.unlearning import soul as SO

    machine = _machine.start()
    c = get_config(a.variant)
    arrays = E.load_dataset(c.dataset, c.seed)
    model = U.make_model(c.model, arrays[4], arrays[2][:1], hidden=c.hidden, channels=tuple(c.channels))
    sc, sim, tf_r = E.build_cell(c, arrays, "backdoor", a.partition, model)     # the study's own cell
    cell = f"{c.dataset}_{c.model}_{a.partition.replace(':', '')}_{c.rounds}"
    cache = a.cache or f"/tmp/soul_revival_{cell}.pkl"
    t0 = time.time()
    if os.path.exists(cache):
        with open(cache, "rb") as f:
            params, history = pickle.load(f)
    else:
        orig = U.train_original(sim, sc.data, c.rounds, delta_t=2, seed=c.seed, train_fn=tf_r)
        params, history = jax.device_get(orig.params), jax.device_get(orig.history)
        with open(cache, "wb") as f:
            pickle.dump((params, history), f)
    print(f"{c.dataset} {c.model}, {c.num_clients} clients, {c.rounds} rounds ({time.time() - t0:.0f} s)", flush=True)
    rem = U.subset_clients(sc.data, sc.retain_ids)
    keys = ("retain_accuracy", "forget_accuracy", "accuracy", "asr")
    ev = lambda p: {k: round(float(v), 4) for k, v in U.evaluate(model.fns.apply, p, sc).items() if k in keys}  # noqa

    def finetune(start):
        """R rounds in one run, as :func:`~poisonjax.federated.unlearning.soul_unlearn` does (same seed)."""
        return U.continue_from(sim, rem, start, a.rounds, seed=c.seed, train_fn=tf_r)[0]

    def finetune_by_round(start, masks=None):
        """R rounds one at a time (ASR after each); ``masks`` given: the pruned units are put back to ``start``
        after each round."""
        p, by_round = start, []
        for r in range(a.rounds):
            p, _ = U.continue_from(sim, rem, p, 1, seed=c.seed + 100 + r, train_fn=tf_r)
            if masks is not None:          # pruned units (kernel columns, biases) back to their blended values
                pm = unit_param_mask(start["params"], masks)
                p = {**p, "params": jax.tree.map(lambda x, s0, m: m * x + (1 - m) * s0, p["params"],
                                                 start["params"], pm)}
            by_round.append(ev(p)["asr"])
        return p, by_round

    rows = [dict(method="original", **ev(params))]
    print("original", rows[-1], flush=True)
    fs, _ = SO.client_unit_stats(model, params, sc.data, sc.forget_ids)
    rs, _ = SO.client_unit_stats(model, params, sc.data, sc.retain_ids)
    scores = SO.importance_scores(fs, rs, 1e-8, c.soul.eps_relative)
    for layer, v in scores.items():
        top = np.sort(np.asarray(v))[::-1][:5]
        print(f"  {layer}: highest ratios {[round(float(x), 2) for x in top]}", flush=True)
    for ranking, p, alpha in grid:
        masks = SO.soul_masks(params, scores, p, ranking)
        start = SO.blend(params, {**params, "params": apply_unit_mask(params["params"], masks)}, alpha)
        plain = finetune(start)
        _, plain_by_round = finetune_by_round(start)
        frozen, frozen_by_round = finetune_by_round(start, masks)
        row = dict(method="soul", ranking=ranking, prune_fraction=p, blend_alpha=alpha,
                   pruned={k: int((1 - np.asarray(m)).sum()) for k, m in masks.items()},
                   before=ev(start), after=ev(plain), asr_by_round=plain_by_round,
                   after_frozen=ev(frozen), asr_by_round_frozen=frozen_by_round)
        rows.append(row)
        print(f"{ranking:6s} p={p:g} alpha={alpha:g} pruned {row['pruned']}\n  before fine-tuning {row['before']}\n"
              f"  after {row['after']} (ASR by round {plain_by_round})\n  pruned units frozen: {row['after_frozen']} "
              f"(ASR by round {frozen_by_round})", flush=True)
    ft = finetune(params)
    _, ft_by_round = finetune_by_round(params)
    rows.append(dict(method="finetune_only", after=ev(ft), asr_by_round=ft_by_round))
    print("fine-tuning only", rows[-1]["after"], ft_by_round, flush=True)
    if a.retrain:
        t0 = time.time()
        rt = U.retrain(model, sim, sc, history, c.rounds, seed=c.seed, train_fn=tf_r)
        rows.append(dict(method="retrain", **ev(rt.params)))
        print(f"retrain {rows[-1]} ({time.time() - t0:.0f} s)", flush=True)
    out = {"variant": a.variant, "dataset": c.dataset, "model": c.model, "partition": a.partition,
           "finetune_rounds": a.rounds, "rows": rows, "machine": machine.finish()}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
