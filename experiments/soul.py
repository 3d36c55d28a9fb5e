"""Federated unlearning study: SoUL (selective pruning) against retraining, FedEraser, projected gradient
ascent and fine-tuning only (:mod:`poisonjax.federated.unlearning`).

For every (scenario, partition) cell a federation is trained (FedAvg, every client every round, with
FedEraser's history), then each method unlearns the target clients. Rows (``results.json`` ``rows``),
one per (scenario, partition, method): ``retain_accuracy``, ``forget_accuracy``, ``accuracy`` (clean
test), ``asr`` (backdoor scenario), ``mia_auc`` (loss-threshold membership inference on the forget set
vs held-out data), ``rounds``, ``bytes``, ``client_flops``, ``server_flops``, ``storage_bytes``, and the
ratios of rounds/bytes/client FLOPs to retraining's. Methods: ``original`` (no unlearning),
``retrain``, ``federaser``, ``pga`` (with post-training), ``pga_before_finetune``, ``finetune``,
``soul``, ``soul_before_finetune``. ``sweep_rows``: SoUL over ``prune_fraction`` x ``blend_alpha``.
``checks``: the issue's conditions per cell. A backdoor cell whose trained model has
``asr < min_asr`` is marked ``void`` (its checks say nothing). Finished cells are cached in
``workdir/cells/``. Inside a cell every iterative part runs through :func:`poisonjax.core.runner.run`
with checkpoints under ``workdir/runs/<cell>/<part>/`` (the original federation, retraining, FedEraser's
calibration, the fine-tuning rounds of PGA, fine-tuning only and SoUL, and each sweep point's fine-tuning):
a killed study restores every finished part from its final checkpoint and the unfinished one from its last
checkpointed round (every 10 rounds), ending with the same results as an uninterrupted run; the folder is
removed once the cell is stored.

The clients stand for SoUL's drones; there is no drone data.
"""
from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np

from poisonjax.core import reporting
from poisonjax.core.validation import PoisonJaxInputError, check_choice, check_fraction, check_positive_int
from poisonjax.federated import simulation as S
from poisonjax.federated import unlearning as U

DATASETS = ("digits", "mnist", "cifar10", "cifar10_20k")
METHOD_ORDER = ("original", "retrain", "federaser", "pga_before_finetune", "pga", "finetune", "soul_before_finetune",
                "soul")
QUALITY = ("retain_accuracy", "forget_accuracy", "accuracy", "asr", "mia_auc")


def load_dataset(name: str, seed: int = 0):
    """``(x_train, y_train, x_test, y_test, num_classes)``; ``cifar10_20k`` reads the shared
    ``cifar10_jpeg_20k`` folder (1,000/class train, the full 10,000 test)."""
    check_choice("config.dataset", name, DATASETS)
    if name != "cifar10_20k":
        return S.load_centralised(name, seed=seed)
    from poisonjax.data.images import load_cifar10_20k
    d = load_cifar10_20k()
    return d.x_train, d.y_train, d.x_test, d.y_test, d.num_classes


def _parse_partition(p: str):
    if p == "iid":
        return "iid", 0.0
    if p.startswith("dirichlet:"):
        a = float(p.split(":", 1)[1])
        if not a > 0:
            raise PoisonJaxInputError(f"config.partitions entry {p!r}: dirichlet_alpha must be > 0")
        return "dirichlet", a
    raise PoisonJaxInputError(f"config.partitions entry {p!r}: expected 'iid' or 'dirichlet:<dirichlet_alpha>'")


def _validate(c):
    check_choice("config.dataset", c.dataset, DATASETS)
    check_choice("config.model", c.model, ("mlp", "cnn"))
    check_positive_int("config.num_clients", c.num_clients, minimum=2)
    check_positive_int("config.rounds", c.rounds)
    for s in c.scenarios:
        check_choice("config.scenarios entry", s, U.SCENARIOS)
    for p in c.partitions:
        _parse_partition(p)
    check_fraction("config.min_asr", c.min_asr, low_inclusive=True)
    check_fraction("config.soul.select_retain_tolerance", c.soul.select_retain_tolerance, low_inclusive=True,
                   high_inclusive=True)
    U.soul.check_soul_config(soul_config(c))
    for p in c.sweep_prune_fractions:
        check_fraction("config.sweep_prune_fractions entry", p, low_inclusive=True)
    for a in c.sweep_blend_alphas:
        check_fraction("config.sweep_blend_alphas entry", a, low_inclusive=True)
    if not 0 <= c.forget_client < c.num_clients:
        raise PoisonJaxInputError(f"config.forget_client: unknown client id {c.forget_client}; the federation has "
                                  f"clients 0..{c.num_clients - 1}")


def soul_config(c, **over):
    """The study config's ``soul`` block as a :class:`~poisonjax.federated.unlearning.SoULConfig` (``over``
    replaces fields, e.g. ``finetune_rounds=0`` for the pruned and blended model alone)."""
    kw = dict(prune_fraction=c.soul.prune_fraction, blend_alpha=c.soul.blend_alpha,
              finetune_rounds=c.soul.finetune_rounds, importance_reference=c.soul.importance_reference,
              eps_relative=c.soul.eps_relative, ranking=c.soul.ranking)
    kw.update(over)
    return U.SoULConfig(**kw)


def _row(base, method, ev, cost=None, **extra):
    r = dict(base, method=method, **ev)
    if cost is not None:
        r.update(cost.as_dict())
    r.update(extra)
    return r


def build_cell(config, data_arrays, scenario, partition_spec, model):
    """One cell's federation as the study builds it: ``(scenario, simulation, compiled local-training fn)``
    for ``scenario`` (``"backdoor"`` / ``"forget_client"``) under ``partition_spec`` (``"iid"`` /
    ``"dirichlet:<alpha>"``); ``data_arrays`` from :func:`load_dataset`. The benchmarks use it too."""
    xtr, ytr, xte, yte, ncls = data_arrays
    part, dalpha = _parse_partition(partition_spec)
    sc = U.make_scenario(xtr, ytr, xte, yte, num_classes=ncls, scenario=scenario, num_clients=config.num_clients,
                         partition=part, dirichlet_alpha=dalpha or 0.5, malicious_fraction=config.malicious_fraction,
                         forget_client=config.forget_client, backdoor_target=config.backdoor_target,
                         backdoor_fraction=config.backdoor_fraction, trigger_size=config.trigger_size,
                         aux_size=config.aux_size, max_client_size=config.max_client_size or None, seed=config.seed)
    sim = S.build_simulation(model.fns, "fedavg", local_epochs=config.local_epochs, batch_size=config.batch_size,
                             local_lr=config.local_lr, client_chunk_size=config.client_chunk_size or None,
                             num_classes=ncls)
    return sc, sim, S.make_train_fn(sim)


def _cell(config, wd, data_arrays, scenario, partition_spec, model, do_sweep):
    part, dalpha = _parse_partition(partition_spec)
    sc, sim, tf = build_cell(config, data_arrays, scenario, partition_spec, model)
    name = f"{scenario}__{partition_spec.replace(':', '')}"
    runs = wd / "runs" / name
    apply = model.fns.apply
    seed = config.seed
    dt = config.federaser.delta_t
    t0 = time.time()
    train_keys = ("dataset", "model", "hidden", "channels", "num_clients", "rounds", "local_epochs", "batch_size",
                  "local_lr", "aux_size", "max_client_size", "malicious_fraction", "backdoor_target",
                  "backdoor_fraction", "trigger_size", "forget_client", "seed")
    tcfg = {k: config.to_dict()[k] for k in train_keys} | {"scenario": scenario, "partition": partition_spec,
                                                          "delta_t": dt}
    orig = U.train_original(sim, sc.data, config.rounds, delta_t=dt, seed=seed, workdir=runs / "original",
                            config=tcfg, train_fn=tf)
    base = {"dataset": config.dataset, "scenario": scenario, "partition": part,
            "dirichlet_alpha": dalpha if part == "dirichlet" else None, "n_clients": config.num_clients,
            "forget_clients": sc.forget_ids.tolist(), "seed": seed}
    ev0 = U.evaluate(apply, orig.params, sc)
    void = scenario == "backdoor" and ev0["asr"] < config.min_asr
    rows = [_row(base, "original", ev0, U.Cost(config.rounds, 0.0, 0.0, 0.0, 0.0), seconds=time.time() - t0)]
    tf_r = S.make_train_fn(sim)  # remaining clients: another shape, compiled once for every method
    R = int(config.soul.finetune_rounds)

    def timed(fn):
        t = time.time()
        out = fn()
        return out, time.time() - t

    rt, s = timed(lambda: U.retrain(model, sim, sc, orig.history, config.rounds, seed=seed,
                                     workdir=runs / "retrain", train_fn=tf_r))
    rows.append(_row(base, "retrain", U.evaluate(apply, rt.params, sc), rt.cost, seconds=s))
    fe, s = timed(lambda: U.federaser(model, sim, sc, orig.history, delta_t=dt,
                                       calibration_ratio=config.federaser.calibration_ratio, seed=seed,
                                       workdir=runs / "federaser"))
    rows.append(_row(base, "federaser", U.evaluate(apply, fe.params, sc), fe.cost, seconds=s))
    pcfg = U.PGAConfig(lr=config.pga.lr, epochs=config.pga.epochs, batch_size=config.pga.batch_size,
                       radius_fraction=config.pga.radius_fraction, tau=config.pga.tau, finetune_rounds=R)
    pg, s = timed(lambda: U.projected_gradient_ascent(model, sim, sc, orig.history, orig.params, pcfg, seed=seed,
                                                      workdir=runs / "pga", train_fn=tf_r))
    rows.append(_row(base, "pga_before_finetune", U.evaluate(apply, pg.info["unlearned_params"], sc),
                     pg.info["ascent_cost"],
                     pga_steps=pg.info["steps"], pga_stopped_early=pg.info["stopped_early"]))
    rows.append(_row(base, "pga", U.evaluate(apply, pg.params, sc), pg.cost, seconds=s, pga_steps=pg.info["steps"],
                     pga_stopped_early=pg.info["stopped_early"]))
    ft, s = timed(lambda: U.finetune_only(model, sim, sc, orig.params, R, seed=seed, workdir=runs / "finetune",
                                          train_fn=tf_r))
    rows.append(_row(base, "finetune", U.evaluate(apply, ft.params, sc), ft.cost, seconds=s))
    so, s = timed(lambda: U.soul_unlearn(model, sim, sc, orig.params, soul_config(config), seed=seed,
                                          workdir=runs / "soul", train_fn=tf_r,
                                          client_chunk=config.client_chunk_size or None))
    sk = dict(prune_fraction=config.soul.prune_fraction, blend_alpha=config.soul.blend_alpha,
              importance_reference=config.soul.importance_reference, ranking=config.soul.ranking)
    rows.append(_row(base, "soul_before_finetune", U.evaluate(apply, so.pruned_params, sc), **sk))
    rows.append(_row(base, "soul", U.evaluate(apply, so.params, sc), so.cost, seconds=s, **sk))
    ref = next(r for r in rows if r["method"] == "retrain")
    for r in rows:
        for k in ("rounds", "bytes", "client_flops"):
            if r.get(k) is not None and ref.get(k):
                r[f"{k}_vs_retrain"] = r[k] / ref[k]
        r["void"] = bool(void)
    sweep = []
    if do_sweep:
        for p in config.sweep_prune_fractions:
            for a in config.sweep_blend_alphas:
                res = U.soul_unlearn(model, sim, sc, orig.params, soul_config(config, prune_fraction=p, blend_alpha=a),
                                     seed=seed, workdir=runs / f"sweep_p{p:g}_a{a:g}", train_fn=tf_r,
                                     client_chunk=config.client_chunk_size or None)
                r = _row(base, "soul", U.evaluate(apply, res.params, sc), res.cost, prune_fraction=p, blend_alpha=a,
                         asr_before_finetune=U.evaluate(apply, res.pruned_params, sc)["asr"], void=bool(void))
                r["rounds_vs_retrain"] = r["rounds"] / ref["rounds"]
                r["bytes_vs_retrain"] = r["bytes"] / ref["bytes"]
                sweep.append(r)
    checks = _checks(rows, scenario, void)
    # the MIA gaps paired on the same forget/held-out examples (DeLong's covariance of the two AUCs): the
    # unpaired mia_auc_gap_se above treats the two models' AUCs as independent, which they are not
    # (one scoring of the forget and held-out sets per model: SoUL, FedEraser, retraining)
    xf, yf = U.pooled(sc.data, sc.forget_ids)
    checks["federaser_mia_auc_gap_vs_retrain"] = next(r["mia_auc"] for r in rows if r["method"] == "federaser") - \
        ref["mia_auc"]
    if min(len(yf), len(sc.holdout_y)) >= 2:
        _, cov = U.mia_auc_paired(apply, [so.params, fe.params, rt.params], xf, yf, sc.holdout_x, sc.holdout_y)
        checks["mia_auc_gap_se_paired"] = U.auc_difference_se(cov, 0, 2)
        checks["federaser_mia_auc_gap_se_paired"] = U.auc_difference_se(cov, 1, 2)
    return {"rows": rows, "sweep_rows": sweep, "checks": checks, "void": bool(void),
            "selection": select_soul_config(sweep, config.soul.select_retain_tolerance) if sweep else None}


def select_soul_config(sweep_rows, retain_tolerance: float = 0.01):
    r"""Choose SoUL's ``(prune_fraction, blend_alpha)`` from a sweep WITHOUT test data: among the sweep points
    whose retained accuracy is within ``retain_tolerance`` of the sweep's best,
    :math:`\mathrm{retain} \ge \max \mathrm{retain} - \tau`, maximise
    :math:`J = \mathrm{retain\_accuracy} - \mathrm{forget\_accuracy}`. Both are measured on clients' own
    training data (the remaining clients report their local accuracy; the forgotten clients' data are the ones
    SoUL's statistics already read): keep the utility, then fit the data to forget the least. Ties go to the
    smaller ``p`` then the larger ``alpha`` (the milder edit). Test accuracy, ASR and MIA are not read.
    Returns ``{"prune_fraction", "blend_alpha", "criterion", "table": [{p, alpha, J, feasible}]}``."""
    tol = check_fraction("retain_tolerance", retain_tolerance, low_inclusive=True, high_inclusive=True)
    best_retain = max(r["retain_accuracy"] for r in sweep_rows)
    table = [{"prune_fraction": r["prune_fraction"], "blend_alpha": r["blend_alpha"],
              "J": r["retain_accuracy"] - r["forget_accuracy"],
              "feasible": bool(r["retain_accuracy"] >= best_retain - tol - 1e-12)} for r in sweep_rows]
    best = max((t for t in table if t["feasible"]),
               key=lambda t: (round(t["J"], 6), -t["prune_fraction"], t["blend_alpha"]))
    return {"prune_fraction": best["prune_fraction"], "blend_alpha": best["blend_alpha"],
            "criterion": f"max retain_accuracy - forget_accuracy subject to retain_accuracy >= best - {tol:g} "
                         "(clients' training data; no test data)",
            "table": table}


def _checks(rows, scenario, void):
    """The issue's "what must hold" for one cell (``None`` where the metric does not apply)."""
    by = {r["method"]: r for r in rows}
    so, rt, ft, pg, fe = by["soul"], by["retrain"], by["finetune"], by["pga"], by["federaser"]
    bd = scenario == "backdoor"
    out = {
        "void": bool(void),
        "retain_accuracy_within_2pts_of_retrain": abs(so["retain_accuracy"] - rt["retain_accuracy"]) <= 0.02,
        "asr_within_5pts_of_retrain": (abs(so["asr"] - rt["asr"]) <= 0.05) if bd else None,
        "mia_auc_within_0.05_of_retrain": abs(so["mia_auc"] - rt["mia_auc"]) <= 0.05,
        "rounds_at_most_half_of_retrain": so["rounds"] <= 0.5 * rt["rounds"],
        "bytes_at_most_half_of_retrain": so["bytes"] <= 0.5 * rt["bytes"],
        "asr_below_finetune": (so["asr"] < ft["asr"]) if bd else None,
        "retain_accuracy_above_pga": so["retain_accuracy"] > pg["retain_accuracy"],
        # the unlearning steps alone (neither followed by the R fine-tuning rounds)
        "retain_accuracy_above_pga_without_post_training": (by["soul_before_finetune"]["retain_accuracy"]
                                                            > by["pga_before_finetune"]["retain_accuracy"]),
    }
    # how precisely the MIA condition is measured: the forget set may be a handful of examples (15 in the
    # MNIST Dirichlet-0.1 forget cell), so each AUC carries DeLong's standard error; the gap's is taken as
    # sqrt(se_soul^2 + se_retrain^2), which overstates it (both models score the same examples)
    out["mia_auc_gap_vs_retrain"] = so["mia_auc"] - rt["mia_auc"]
    if so.get("mia_auc_se") is not None and rt.get("mia_auc_se") is not None:
        out["mia_auc_gap_se"] = float(np.hypot(so["mia_auc_se"], rt["mia_auc_se"]))
    # "at least as good as FedEraser on the three quality metrics at lower cost": closeness to retraining
    gap = lambda r, k: abs(r[k] - rt[k])  # noqa: E731
    ge = [so["retain_accuracy"] >= fe["retain_accuracy"], gap(so, "mia_auc") <= gap(fe, "mia_auc")]
    if bd:
        ge.append(so["asr"] <= fe["asr"])
    out["as_good_as_federaser_on_quality"] = all(ge)
    out["cheaper_than_federaser"] = so["bytes"] < fe["bytes"] and so["client_flops"] < fe["client_flops"]
    return out


def run(config, workdir) -> dict:
    """Run every (scenario, partition) cell; write results.json, plots and report.md; return the results."""
    _validate(config)
    wd = reporting.prepare_workdir(workdir, config)
    (wd / "cells").mkdir(parents=True, exist_ok=True)
    arrays = load_dataset(config.dataset, config.seed)
    model = U.make_model(config.model, arrays[4], arrays[2][:1], hidden=config.hidden, channels=tuple(config.channels))
    from tqdm.auto import tqdm
    cells = [(s, p) for s in config.scenarios for p in config.partitions]
    rows, sweep, checks, selections = [], [], {}, {}
    for scenario, part in tqdm(cells, desc="soul", unit="cell"):
        key = f"{scenario}/{part.split(':')[0]}"
        do_sweep = "all" in config.sweep_cells or key in config.sweep_cells or f"{scenario}/{part}" in config.sweep_cells
        path = wd / "cells" / f"{scenario}__{part.replace(':', '')}.json"
        if path.exists():
            cell = json.loads(path.read_text())
        else:
            cell = _cell(config, wd, arrays, scenario, part, model, do_sweep)
            tmp = path.with_suffix(".json.tmp")       # atomic: a write cut short by a kill never looks finished
            reporting.write_json(tmp, cell)
            os.replace(tmp, path)
            # the cell is stored: its training runs' checkpoints (kept until now so that a killed cell resumes
            # every finished run at once and the unfinished one from its last checkpointed round) go
            shutil.rmtree(wd / "runs" / path.stem, ignore_errors=True)
        rows += cell["rows"]
        sweep += cell["sweep_rows"]
        checks[f"{scenario}/{part}"] = cell["checks"]
        if cell.get("selection"):
            selections[f"{scenario}/{part}"] = cell["selection"]
    results = {"dataset": config.dataset, "model": config.model, "n_clients": config.num_clients,
               "rounds": config.rounds, "rows": rows, "sweep_rows": sweep, "checks": checks,
               "soul_selection": selections,
               "soul_defaults": {"prune_fraction": config.soul.prune_fraction, "blend_alpha": config.soul.blend_alpha},
               "note": "clients stand for SoUL's drones; there is no drone data"}
    reporting.write_json(wd / "results.json", results)
    plots = [_plot_methods(wd, rows)]
    if sweep:
        plots.append(_plot_sweep(wd, sweep))
    cols = ["scenario", "partition", "dirichlet_alpha", "method", "retain_accuracy", "forget_accuracy", "accuracy",
            "asr", "mia_auc", "rounds", "bytes", "rounds_vs_retrain", "bytes_vs_retrain", "client_flops_vs_retrain"]
    scols = ["scenario", "partition", "dirichlet_alpha", "prune_fraction", "blend_alpha", "retain_accuracy", "asr",
             "asr_before_finetune", "mia_auc", "bytes_vs_retrain"]
    show = lambda v: ("-" if v is None else ("yes" if v else "NO") if isinstance(v, (bool, np.bool_))  # noqa: E731
                      else f"{v:+.3f}")
    chk_rows = [{"cell": k, **{kk: show(v) for kk, v in c.items()}} for k, c in checks.items()]
    setting = (f"dataset={config.dataset}, model={config.model}, {config.num_clients} clients (all every round), "
               f"{config.rounds} FedAvg rounds, {config.local_epochs} local epochs, batch {config.batch_size}, "
               f"lr {config.local_lr}. Backdoor: {config.malicious_fraction:.0%} BadNets clients "
               f"(trigger {config.trigger_size}, {config.backdoor_fraction:.0%} of their data), precondition "
               f"ASR >= {config.min_asr}. SoUL p={config.soul.prune_fraction}, alpha={config.soul.blend_alpha}, "
               f"R={config.soul.finetune_rounds}, reference={config.soul.importance_reference}. FedEraser "
               f"delta_t={config.federaser.delta_t}, calibration ratio {config.federaser.calibration_ratio}. "
               "The clients stand for SoUL's drones; there is no drone data.")
    reporting.write_report(wd, "Federated unlearning: SoUL vs retraining, FedEraser, gradient ascent, fine-tuning",
                           [("Setting", setting), ("Results", reporting.markdown_table(rows, cols)),
                            ("What must hold (per cell)", reporting.markdown_table(chk_rows)),
                            ("SoUL sweep", reporting.markdown_table(sweep, scols) if sweep else "(none)"),
                            ("SoUL (p, alpha) selected without test data",
                             "\n".join(f"- {k}: p={v['prune_fraction']}, alpha={v['blend_alpha']} ({v['criterion']}); "
                                       f"config defaults p={config.soul.prune_fraction}, "
                                       f"alpha={config.soul.blend_alpha}" for k, v in selections.items())
                             or "(no sweep)"),
                            ("Notes", "retain_accuracy: on the remaining clients' training data; forget_accuracy: on "
                                      "the forgotten clients' data with their labels; accuracy: clean test; mia_auc: "
                                      "loss-threshold membership inference, forget set vs label-matched held-out test "
                                      "data (poisoned like the forget set in the backdoor scenario); rounds/bytes/FLOPs "
                                      "counted analytically (the original model's training is not counted for any "
                                      "method; FedEraser's storage is in storage_bytes). 'void': the backdoor did not "
                                      "reach the precondition ASR, so the cell's checks say nothing.")],
                           plots=plots)
    print(reporting.text_table([{k: r.get(k) for k in cols} for r in rows], cols, floatfmt=".3f"))
    return results


def _plot_methods(wd, rows):
    cells = sorted({(r["scenario"], r["partition"], r["dirichlet_alpha"] or 0) for r in rows}, key=str)
    methods = [m for m in METHOD_ORDER if m != "original"] + ["original"]
    metrics = ["retain_accuracy", "asr", "mia_auc"]
    fig, axes = reporting.new_figure(nrows=len(metrics), ncols=1, figsize=(max(6, 1.6 * len(cells)), 7))
    for ax, met in zip(np.atleast_1d(axes), metrics):
        w = 0.8 / len(methods)
        for j, m in enumerate(methods):
            vals = []
            for c in cells:
                r = next((r for r in rows if (r["scenario"], r["partition"], r["dirichlet_alpha"] or 0) == c
                          and r["method"] == m), None)
                vals.append(np.nan if r is None or r.get(met) is None else r[met])
            ax.bar(np.arange(len(cells)) + j * w, vals, w, label=m)
        ax.set_ylabel(met, fontsize=8)
        ax.set_xticks(np.arange(len(cells)) + 0.4 - w / 2,
                      [f"{s}\n{p}{'' if p == 'iid' else f' {a}'}" for s, p, a in cells], fontsize=7)
    np.atleast_1d(axes)[0].legend(fontsize=6, ncol=4)
    reporting.save_figure(fig, wd / "methods.png")
    return "methods.png"


def _plot_sweep(wd, sweep):
    fig, ax = reporting.new_figure(figsize=(5, 3.5))
    for a in sorted({r["blend_alpha"] for r in sweep}):
        rs = sorted([r for r in sweep if r["blend_alpha"] == a and r["scenario"] == sweep[0]["scenario"]
                     and r["partition"] == sweep[0]["partition"]], key=lambda r: r["prune_fraction"])
        y = [r["asr"] if r["asr"] is not None else r["mia_auc"] for r in rs]
        ax.plot([r["prune_fraction"] for r in rs], y, marker="o", label=f"alpha={a}")
    ax.set_xlabel("prune_fraction p")
    ax.set_ylabel("asr after unlearning" if sweep[0]["asr"] is not None else "mia_auc")
    ax.set_title(f"SoUL sweep ({sweep[0]['scenario']}, {sweep[0]['partition']})", fontsize=9)
    ax.legend(fontsize=7)
    reporting.save_figure(fig, wd / "sweep.png")
    return "sweep.png"
