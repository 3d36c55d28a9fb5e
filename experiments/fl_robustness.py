"""Federated robustness grid: every (attack, aggregator) pair on one dataset and partition.

For each pair a fresh federation is trained for ``config.rounds`` rounds with the vectorised
simulation (:mod:`poisonjax.federated.simulation`; local training compiled once for the whole grid).
Per pair we record ``accuracy`` (mean test accuracy of the last ``eval_last`` rounds),
``mean_accuracy`` (over all rounds), ``asr`` (backdoor attacks), and ``detection_precision`` /
``detection_tpr`` / ``detection_fpr`` of the aggregator's flags against the true malicious clients
(micro-averaged over rounds; ``None`` = undefined, e.g. no attacker in the ``none`` cells). Finished
cells are cached in ``workdir/cells/``; the rounds of an unfinished cell are checkpointed every
``checkpoint_every`` rounds (:mod:`poisonjax.core.runner`), so a killed grid resumes mid-cell. Writes
``results.json`` (``rows``: one flat row per cell), ``heatmap_accuracy.png`` (and ``heatmap_asr.png``
with backdoor attacks) and ``report.md``.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from poisonjax.core import reporting, study
from poisonjax.core.validation import check_choice
from poisonjax.federated import aggregators as A
from poisonjax.federated import simulation as S

# study attack name -> (data attack, model attack)
ATTACKS = {
    "none": ("none", None), "label_flip": ("label_flip", None),
    "targeted_label_flip": ("targeted_label_flip", None), "badnets": ("badnets", None),
    "scaling": ("badnets", "scaling"), "sign_flip": ("none", "sign_flip"), "gaussian": ("none", "gaussian"),
    "lie": ("none", "lie"), "min_max": ("none", "min_max"), "min_sum": ("none", "min_sum"), "ipm": ("none", "ipm"),
    "fang_krum": ("none", "fang_krum"), "fang_trimmed_mean": ("none", "fang_trimmed_mean"),
    "adaptive": ("none", "adaptive"),
}
BACKDOOR = ("badnets", "scaling")


def _validate(c):
    check_choice("config.dataset", c.dataset, ("digits", "mnist", "cifar10", "nslkdd", "nslkdd5"))
    check_choice("config.model", c.model, ("mlp", "cnn"))
    S.check_study_config(c, ATTACKS, A.AGGREGATORS)


def _aggregator(name, c, num_malicious, clients_per_round):
    kw = {}
    if name in A.USES_NUM_MALICIOUS:
        kw["num_malicious"] = num_malicious
    if name == "trimmed_mean":
        kw["beta"] = float(c.trimmed_beta)
    return A.get_aggregator(name, **kw)


def run(config, workdir) -> dict:
    """Run the grid; returns (and writes) the results dict."""
    study.upgrade_config(config)
    _validate(config)
    wd = study.prepare_workdir(workdir, config)
    cache = study.CellCache(wd)
    xtr, ytr, xte, yte, ncls = S.load_centralised(config.dataset, seed=config.seed)
    common = dict(num_classes=ncls, num_clients=config.n_clients, partition=config.partition,
                  alpha=config.dirichlet_alpha, aux_size=config.aux_size, seed=config.seed,
                  backdoor_target=config.backdoor_target, backdoor_fraction=config.backdoor_fraction,
                  trigger_size=config.trigger_size, flip_source=config.flip_source, flip_target=config.flip_target)
    clean = S.federate_arrays(xtr, ytr, xte, yte, malicious_fraction=config.malicious_fraction, **common)
    model_kw = {"hidden": (config.hidden,)} if config.model == "mlp" else {"hidden": config.hidden}
    model = S.default_model(clean, config.model, num_classes=ncls, **model_kw)
    sim_kw = dict(client_fraction=config.client_fraction, local_epochs=config.local_epochs,
                  batch_size=config.batch_size, local_lr=config.local_lr, server_optimizer=config.server_optimizer,
                  server_lr=config.server_lr, client_chunk_size=config.client_chunk_size or None, num_classes=ncls)
    base = S.build_simulation(model, "fedavg", **sim_kw)
    m = base.clients_per_round(config.n_clients)
    f = int(round(config.malicious_fraction * m))
    train_fn = S.make_train_fn(base)  # local training compiled once for the whole grid

    grid, rows = {}, []
    from tqdm.auto import tqdm
    cells = [(a, g) for a in config.attacks for g in config.aggregators]
    data_cache = {}

    def data_for(attack):
        if attack not in data_cache:
            data_attack, _ = ATTACKS[attack]
            if attack == "none":  # nobody is malicious
                d = S.federate_arrays(xtr, ytr, xte, yte, malicious_fraction=0.0, **common)
            elif data_attack == "none":
                d = clean
            else:
                d = S.federate_arrays(xtr, ytr, xte, yte, malicious_fraction=config.malicious_fraction,
                                      data_attack=data_attack, **common)
            data_cache.clear()
            data_cache[attack] = d
        return data_cache[attack]

    def compute(attack, agg_name, run_dir):
        t0 = time.time()
        _, model_attack = ATTACKS[attack]
        kw = dict(config.attack_kwargs.get(attack, {}) or {}) if model_attack else {}
        sim = S.build_simulation(model, _aggregator(agg_name, config, f, m), model_attack=model_attack,
                                 attack_kwargs=kw, **sim_kw)
        res = S.run_simulation(sim, data_for(attack), config.rounds, run_dir, seed=config.seed, train_fn=train_fn,
                               rounds_per_chunk=config.checkpoint_every, save_final=False, config={"cell": [attack, agg_name]},
                               progress=False, desc=f"{attack}/{agg_name}")
        ms = res.metrics
        summ = S.summarize(ms, last=config.eval_last)
        cell = {"attack": attack, "aggregator": agg_name, **summ,
                "mean_accuracy": float(np.mean([r["test_accuracy"] for r in ms])),
                "accuracy_curve": [r["test_accuracy"] for r in ms], "seconds": time.time() - t0,
                "resumed_from_round": res.resumed_from}
        if attack not in BACKDOOR:
            cell.pop("asr", None)
        return cell

    for attack, agg_name in tqdm(cells, desc="fl_robustness", unit="cell", disable=not study.is_main_process()):
        cell = cache.cached(f"{attack}__{agg_name}", lambda rd: compute(attack, agg_name, rd))
        grid.setdefault(attack, {})[agg_name] = cell
        rows.append({"dataset": config.dataset, "attack": attack, "defense": agg_name,
                     "dirichlet_alpha": float(config.dirichlet_alpha), "n_clients": config.n_clients,
                     "rounds": config.rounds, "accuracy": cell["accuracy"], "mean_accuracy": cell["mean_accuracy"],
                     "asr": cell.get("asr"), "detection_precision": cell["detection_precision"],
                     "detection_tpr": cell["detection_tpr"], "detection_fpr": cell["detection_fpr"],
                     "seconds": cell["seconds"]})

    results = study.write_results(
        wd, rows, dataset=config.dataset, n_clients=config.n_clients, malicious_fraction=config.malicious_fraction,
        dirichlet_alpha=config.dirichlet_alpha, rounds=config.rounds, clients_per_round=m,
        num_malicious_per_round=f, results=grid)

    plots = [_heatmap(wd, grid, config, "accuracy", "heatmap_accuracy.png", "accuracy")]
    if any(a in BACKDOOR for a in config.attacks):
        plots.append(_heatmap(wd, grid, config, "asr", "heatmap_asr.png", "backdoor ASR",
                              attacks=[a for a in config.attacks if a in BACKDOOR]))
    cols = ["attack", "defense", "accuracy", "asr", "detection_precision", "detection_tpr"]
    setting = (f"dataset={config.dataset}, model={config.model}, {config.n_clients} clients "
               f"({m} per round, {f} malicious expected), Dirichlet alpha={config.dirichlet_alpha}, "
               f"{config.rounds} rounds, {config.local_epochs} local epoch(s), batch {config.batch_size}, "
               f"lr {config.local_lr}, server {config.server_optimizer}.")
    reporting.write_report(wd, "Federated robustness: attacks x aggregators",
                           [("Setting", setting), ("Results", reporting.markdown_table(rows, cols)),
                            ("Notes", "accuracy = mean test accuracy of the last rounds; detection_precision / "
                                      "detection_tpr = precision / recall of the aggregator's flags against the "
                                      "true malicious clients, summed over rounds ('n/a' = undefined: nothing "
                                      "flagged, or no attacker at all as in the `none` rows, where every flag is "
                                      "a false positive: see detection_fpr in results.json).")],
                           plots=plots)
    study.main_print(reporting.text_table(rows, cols, floatfmt=".3f"))
    return results


def _heatmap(wd, grid, config, key, fname, title, attacks=None):
    attacks = list(attacks or config.attacks)
    aggs = list(config.aggregators)
    mat = np.array([[grid[a][g].get(key) if grid[a][g].get(key) is not None else np.nan for g in aggs]
                    for a in attacks], float)
    reporting.save_heatmap(Path(wd) / fname, mat, attacks, aggs, cmap="viridis" if key == "accuracy" else "magma",
                           cell_width=0.75, fontsize=8,
                           title=f"{title} ({config.dataset}, alpha={config.dirichlet_alpha}, "
                                 f"{config.malicious_fraction:.0%} malicious)")
    return fname
