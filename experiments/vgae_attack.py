"""VGAE link-prediction poisoning study: meta-gradient attacks vs one-shot, random, DICE and PGD.

``run(config, workdir)`` writes ``config.json``, ``results.json`` (``auc_clean``, ``ap_clean``,
``auc_poisoned`` / ``ap_poisoned`` mapping attack -> mean test value at ``config.rate``, their stds,
``by_rate``, timings), ``perturbed_adj.npz`` (the ``primary_attack`` graph at ``config.rate``,
``scipy.sparse.save_npz``), ``perturbed/<attack>_<rate>.npz``, ``auc_vs_rate.png`` and ``report.md``.

Every (attack, rate) is a cell cached in ``workdir/cells/<attack>_<rate>.json`` (and the clean victims in
``cells/clean.json``), so a rerun never recomputes a finished one; the meta-gradient attacks run through
:func:`poisonjax.core.runner.run` with a checkpoint after every meta-gradient step under
``workdir/cells/<attack>_<rate>/``, so a killed run resumes inside the attack and ends with the same flips
as an uninterrupted one. (The one-shot, random, DICE and PGD attacks are single compiled programs of at
most ``pgd_steps`` steps; a kill inside one of them reruns that attack.)
"""
from __future__ import annotations

import time
import zlib

import jax
import numpy as np
import scipy.sparse as sp

from poisonjax.core import reporting, study
from poisonjax.core.validation import PoisonJaxInputError, check_choice
from poisonjax.data import graphs
from poisonjax.graph import attacks as A
from poisonjax.graph import vgae_attacks as V
from poisonjax.graph.models import VGAEConfig
from poisonjax.graph.splits import budget_from_rate, link_split


def _load(name, seed):
    if name == "sbm":
        from poisonjax.data.synthetic import sbm_graph
        adj, y = sbm_graph(300, 3, 0.08, 0.004, seed=seed)
        return graphs.GraphData(adj=adj, features=None, labels=y, name="sbm")
    check_choice("dataset", name, ("cora", "citeseer", "sbm"))
    return graphs.load_planetoid(name)


def run(config, workdir) -> dict:
    from configs.vgae_attack import ATTACKS
    for a in config.attacks:
        check_choice("attack", a, ATTACKS)
    uses_test_labels = (any(a.endswith("_test") for a in config.attacks)
                        or (config.oneshot_objective == "test" and "vgae_oneshot" in config.attacks))
    if uses_test_labels and not config.allow_test_labels:
        raise PoisonJaxInputError(
            "config.attacks / config.oneshot_objective use the test pairs' labels (a white-box shortcut); set "
            "--config.allow_test_labels=True to run them, or use the *_self / *_train attacks")
    wd = study.prepare_workdir(workdir, config, mutable=("progress",))   # refuses another config's workdir
    if study.is_main_process():
        (wd / "perturbed").mkdir(parents=True, exist_ok=True)
    g = _load(config.dataset, config.seed)
    x = g.dense_features()
    split = link_split(g.adj, 0.05, 0.10, seed=config.seed)
    n = g.num_nodes
    n_train = len(split.train_pos)
    victim = VGAEConfig(**config.victim.to_dict())
    rates = sorted(set([float(config.rate)] + [float(r) for r in config.extra_rates]))
    budgets = {r: budget_from_rate(r, n_train, n * (n - 1) // 2 - len(split.held_out_pairs())) for r in rates}
    pad = int(g.adj.nnz + 2 * max(budgets.values()) + n)
    key = jax.random.PRNGKey(config.seed)
    k_sur, k_att, k_eval = jax.random.split(key, 3)
    keys = jax.random.split(k_eval, config.n_victims)

    cache = study.CellCache(wd)       # finished (attack, rate) cells are never recomputed; see the module docstring
    c0 = cache.cached("clean", lambda _rd: dict(zip(("auc", "ap"), (np.asarray(v).tolist() for v in
                                                                    V.evaluate_vgae(split.adj_train, x, split, keys,
                                                                                    victim, pad_nnz=pad)))))
    auc0, ap0 = np.asarray(c0["auc"], np.float32), np.asarray(c0["ap"], np.float32)   # the victims' dtype
    sur_params, z = V.surrogate_vgae(split.adj_train, x, k_sur, victim)
    pseudo = V.pseudo_links(z, split, seed=config.seed)
    probs = {}

    def problem(obj):
        if obj not in probs:
            pairs, labels = V.objective_pairs(split, obj, pseudo, allow_test_labels=config.allow_test_labels)
            probs[obj] = V.make_vgae_problem(split, x, pairs, labels)
        return probs[obj]

    by_rate = {}
    for r in rates:
        b = budgets[r]
        by_rate[r] = {}
        for name in config.attacks:
            cell_name = f"{name}_{r:g}"
            done = cache.get(cell_name)
            if done is not None:
                by_rate[r][name] = done
                study.main_print(f"rate {r:g} {name:13s} auc {done['auc']:.4f} ap {done['ap']:.4f} (cached)", flush=True)
                continue
            t0 = time.time()
            # a stable per-attack key (Python's str hash is salted per process, which made every run differ)
            ka = jax.random.fold_in(k_att, zlib.crc32(name.encode()) % (2 ** 31))
            if name.startswith(("meta_", "a_meta_")):
                obj = name.rsplit("_", 1)[1]   # self | train | test (white-box: needs allow_test_labels)
                fo = name.startswith("a_")
                cfg = V.VGAEAttackConfig(budget=b, inner_steps=config.inner_steps, first_order=fo,
                                         flips_per_step=max(1, -(-b // config.steps_per_budget)), victim=victim,
                                         fast=fo and bool(config.get("fast_first_order", True)),
                                         loss=config.get("meta_loss", "bce"))
                flips = V.run_vgae_meta_attack(problem(obj), cfg, ka, progress=config.progress,
                                               workdir=cache.run_dir(cell_name),
                                               config={"attack": name, "rate": r, "cfg": str(cfg)})
            elif name == "vgae_oneshot":
                flips = V.vgae_oneshot(problem(config.oneshot_objective), b, ka, victim)
            elif name == "random":
                flips = A.random_attack(split.adj_train, b, seed=config.seed, forbidden_pairs=split.held_out_pairs())
            elif name == "dice":
                flips = A.dice_attack(split.adj_train, g.labels, b, seed=config.seed,
                                      forbidden_pairs=split.held_out_pairs())
            else:
                flips = V.vgae_pgd(problem("train"), b, ka, sur_params, victim, steps=config.pgd_steps)
            secs = time.time() - t0
            pert = A.flips_to_adj(split.adj_train, flips)
            info = A.check_perturbation(split.adj_train, pert, b)
            if study.is_main_process():   # only process 0 writes files
                sp.save_npz(wd / "perturbed" / f"{name}_{r:g}.npz", sp.csr_matrix(pert, dtype=np.float32))
                if name == config.primary_attack and r == float(config.rate):
                    sp.save_npz(wd / "perturbed_adj.npz", sp.csr_matrix(pert, dtype=np.float32))
            auc, ap = V.evaluate_vgae(pert, x, split, keys, victim, pad_nnz=pad)
            by_rate[r][name] = cache.put(cell_name, {
                "auc": float(np.mean(auc)), "auc_std": float(np.std(auc)), "ap": float(np.mean(ap)),
                "ap_std": float(np.std(ap)), "seconds": secs, **info})
            study.main_print(f"rate {r:g} {name:13s} auc {np.mean(auc):.4f} ap {np.mean(ap):.4f} ({secs:.1f} s, "
                  f"{info['n_flips']} flips)", flush=True)

    main = by_rate[float(config.rate)]
    results = {
        "dataset": config.dataset, "rate": config.rate, "n_train_edges": n_train, "budget": budgets[float(config.rate)],
        "auc_clean": float(np.mean(auc0)), "ap_clean": float(np.mean(ap0)),
        "auc_clean_std": float(np.std(auc0)), "ap_clean_std": float(np.std(ap0)),
        "auc_poisoned": {k: v["auc"] for k, v in main.items()},
        "ap_poisoned": {k: v["ap"] for k, v in main.items()},
        "auc_poisoned_std": {k: v["auc_std"] for k, v in main.items()},
        "seconds": {k: v["seconds"] for k, v in main.items()},
        "by_rate": {f"{r:g}": v for r, v in by_rate.items()},
        "oneshot_objective": config.oneshot_objective,
        "white_box_test_labels_used": bool(uses_test_labels),
    }
    results = study.write_results(
        wd, [{"dataset": config.dataset, "attack": "clean", "budget": 0.0, "n_victims": config.n_victims,
              "auc": results["auc_clean"], "auc_std": results["auc_clean_std"], "ap": results["ap_clean"]}]
        + [{"dataset": config.dataset, "attack": a, "budget": float(r), "n_victims": config.n_victims, "auc": v["auc"],
            "auc_std": v["auc_std"], "ap": v["ap"], "seconds": v["seconds"]}
           for r, d in by_rate.items() for a, v in d.items()], **results)
    fig, ax = reporting.new_figure(figsize=(5.5, 3.6))
    for name in config.attacks:
        ax.plot([0.0] + rates, [results["auc_clean"]] + [by_rate[r][name]["auc"] for r in rates], marker="o", label=name)
    ax.set_xlabel("perturbation rate (fraction of training edges)")
    ax.set_ylabel("VGAE test AUC")
    ax.legend(fontsize=7)
    reporting.save_figure(fig, wd / "auc_vs_rate.png")
    rows = [{"attack": "clean", "auc": results["auc_clean"], "ap": results["ap_clean"], "seconds": 0.0}]
    rows += [{"attack": k, "auc": v["auc"], "ap": v["ap"], "seconds": v["seconds"]} for k, v in main.items()]
    reporting.write_report(wd, f"VGAE poisoning on {config.dataset} at {config.rate:g}", [
        ("Setup", f"85/5/10 edge split ({n_train} training edges), budget {budgets[float(config.rate)]} flips; "
                  f"VGAE {victim.hidden}-{victim.latent}, lr {victim.lr}, {victim.epochs} epochs, {config.n_victims} "
                  f"seeds; meta attacks unroll {config.inner_steps} steps with {config.steps_per_budget} "
                  f"meta-gradients per budget, attack loss `{config.get('meta_loss', 'bce')}`; one-shot "
                  f"objective `{config.oneshot_objective}`."),
        ("Test AUC / AP", reporting.markdown_table(rows)),
    ], plots=["auc_vs_rate.png"])
    study.main_print(reporting.text_table(rows))
    return results
