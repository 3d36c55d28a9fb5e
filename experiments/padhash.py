"""PADHASH study: clean-label poisoning of deep hashing, PADHASH vs Witches' Brew vs no attack.

``run(config, workdir)``:

1. loads the data and builds the victim (``backbone`` + tanh ``bits``-bit layer, ``method`` = CSQ or
   DPN loss). As in deep hashing practice (ImageNet-pretrained ResNet-50 in the paper), victims
   and surrogates fine-tune a pretrained backbone: here a classifier trained on the public
   ``pretrain.fraction`` of the training data (``pretrain.enabled``); the hash layer is fresh;
2. gray-box surrogate: the victim's architecture trained on ``surrogate_fraction`` of the training
   data (clean), kept at several points of its training (``surrogate_checkpoints``, in epochs of a
   full-data run; the surrogate makes as many optimiser steps as a full-data run would); draws ``triggers`` (trigger test image, target class) pairs and, per trigger,
   ``budget * N`` target-class training images as poison bases;
3. crafts Witches' Brew (alpha = 0) and PADHASH (alpha = ``alpha``) poisons on the same bases (all
   triggers vmapped), retrains ``victims`` hashing models per trigger from scratch (vmapped) for
   no attack / WB / PADHASH and reports ASR (top-``topk``, > ``threshold`` target class), t-mAP and
   mAP of ordinary queries (clean vs poisoned database);
4. optionally: gray-box 10%/20% and black-box (ensemble of other backbones) surrogate settings,
   a transfer matrix (surrogate setting x victim backbone/bits, PADHASH ASR), and ASR against the
   poison budget (``asr_vs_budget.png``);
5. writes ``config.json``, ``results.json`` (``asr``, ``t_map`` keyed by method; ``map_clean``,
   ``map_poisoned``, ``transfer``), plots and ``report.md``. ``results.json`` is first written after
   the main setting and rewritten after each later stage, with ``"complete": false`` until the end.
"""
from __future__ import annotations

import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from poisonjax.core import gradient_matching as gm
from poisonjax.core import reporting, study
from poisonjax.core.ensemble import mean_std
from poisonjax.core.training import init_and_train, softmax_cross_entropy_loss
from poisonjax.data.images import load_image_dataset, stratified_subset
from poisonjax.vision import padhash as ph
from poisonjax.vision.hashing import hash_centers, hashing_loss
from poisonjax.vision.models import HashNet, make_classifier

METHODS = ("none", "witches_brew", "padhash")


class _Arch:
    """A hashing architecture: model, init, per-example loss (params, {"x", "y"}, key) and a jitted victim evaluator."""

    def __init__(self, backbone, bits, config, data, sample, pretrained=None):
        self.name = f"{backbone}:{bits}"
        self.model = HashNet(backbone, bits)
        if pretrained is None:
            self.init = lambda k: self.model.init(k, sample)
        else:
            self.init = ph.pretrained_hash_init(self.model, sample, pretrained)
        centers = hash_centers(data.num_classes, bits, jax.random.PRNGKey(1234), config.centers)
        self.loss = hashing_loss(config.method, self.model.apply, centers)
        opt = optax.adam(config.train.lr)
        self.opt = opt
        # the database and queries enter the jitted program as arguments, not as closed-over constants (a
        # closed-over CIFAR-10 training set is a 123 MB HLO constant that XLA spends minutes constant-folding)
        # queries: a seeded class-balanced draw from the test set (the CIFAR-10 test rows are class-major, so
        # a prefix slice held only the first 2-5 classes)
        qx, qy = stratified_subset(data.x_test, data.y_test, config.queries, config.seed + 7)
        arrays = (jnp.asarray(data.x_train), jnp.asarray(data.y_train), jnp.asarray(qx), jnp.asarray(qy))
        ev = jax.jit(lambda keys, pi, pd, tx, tl, xtr, ytr, qx, qy: ph.hash_victims(
            self.init, self.model.apply, self.loss, opt, xtr, ytr, keys, epochs=config.train.epochs,
            batch_size=config.train.batch_size, poison_index=pi, poison_delta=pd, trigger_x=tx, target_label=tl,
            query_x=qx, query_y=qy, topk=config.topk, threshold=config.threshold,
            chunk=config.get("victim_chunk", 0) or None))
        self.evaluate = lambda keys, pi, pd, tx, tl: ev(keys, pi, pd, tx, tl, *arrays)

    def train_surrogates(self, x, y, members, checkpoints, batch_size, key):
        from poisonjax.vision.witches_brew import checkpoint_surrogates
        f = jax.jit(lambda k, xs, ys: checkpoint_surrogates(self.init, self.loss, self.opt, {"x": xs, "y": ys}, k,
                                                            checkpoints=checkpoints, batch_size=batch_size,
                                                            members=members))
        return f(key, x, y)


def _summary(out, T, K):
    s = {k: np.asarray(v, np.float64).reshape(T, K) for k, v in out.items()}
    return {"asr": mean_std(s["success"].mean(0)), "t_map": mean_std(s["t_ap"].mean(0)),
            "map": mean_std(s["map"].mean(0)), "precision_top_k": float(s["precision"].mean()),
            "asr_per_trigger": s["success"].mean(1).tolist(), "t_map_per_trigger": s["t_ap"].mean(1).tolist()}


def run(config, workdir) -> dict:
    study.upgrade_config(config)
    wd = study.prepare_workdir(workdir, config)   # refuses a workdir of another config
    key = jax.random.PRNGKey(config.seed)
    k_split, k_sur, k_trig, k_pois, k_craft, k_vic = jax.random.split(key, 6)
    kw = {} if config.dataset == "digits" else {"n_train": config.n_train or None, "n_test": config.n_test or None,
                                                "seed": config.seed}
    data = load_image_dataset(config.dataset, **kw)
    sample = jnp.zeros((1,) + data.x_train.shape[1:])
    n = len(data.y_train)
    perm = np.asarray(jax.random.permutation(k_split, n))
    archs, pretrained = {}, {}
    pub = perm[:max(1, int(round(config.pretrain.fraction * n)))]

    def backbone_weights(backbone):
        """A classifier pretrained on the public share of the data (stands in for ImageNet weights)."""
        if not config.pretrain.enabled:
            return None
        if backbone not in pretrained:
            clf = make_classifier(backbone, data.num_classes)
            f = jax.jit(lambda k, x, y: init_and_train(lambda kk: clf.init(kk, sample),
                                                       softmax_cross_entropy_loss(clf.apply), optax.adam(config.train.lr),
                                                       {"x": x, "y": y}, k, epochs=config.pretrain.epochs,
                                                       batch_size=config.train.batch_size).params)
            pretrained[backbone] = f(jax.random.fold_in(k_split, zlib.crc32(backbone.encode()) % (2 ** 31)),
                                     jnp.asarray(data.x_train[pub]), jnp.asarray(data.y_train[pub]))
        return pretrained[backbone]

    def arch(backbone, bits):
        k = f"{backbone}:{bits}"
        if k not in archs:
            archs[k] = _Arch(backbone, bits, config, data, sample, backbone_weights(backbone))
        return archs[k]

    victim = arch(config.backbone, config.bits)
    T, K = config.triggers, config.n_victims
    ti, tc = ph.choose_triggers(k_trig, data.y_test, data.num_classes, T)
    rep = lambda a: np.repeat(np.asarray(a), K, axis=0)
    vkeys = jax.random.split(k_vic, T * K)
    trig_x = data.x_test[ti]

    def surrogate(backbones, frac, bits=config.bits):
        m = max(1, int(round(frac * n)))
        sub = perm[:m]
        x, y = jnp.asarray(data.x_train[sub]), jnp.asarray(data.y_train[sub])
        # keep the number of optimiser steps of a full-data run (the surrogate sees fewer images)
        cps = sorted({max(1, int(round(c / frac))) for c in (list(config.surrogate_checkpoints) or [config.train.epochs])})
        groups = [arch(b, bits) for b in backbones]
        params = tuple(g.train_surrogates(x, y, config.surrogate_members, cps, config.train.batch_size,
                                          jax.random.fold_in(k_sur, zlib.crc32(f"{b}:{m}:{bits}".encode()) % (2 ** 31))) for g, b in zip(groups, backbones))
        return tuple(g.loss for g in groups), params

    def craft(losses, params, budget, alpha, tag):
        problem, pidx = ph.padhash_problem(params, data.x_train, data.y_train, data.x_test, None,
                                           data.num_classes, trigger_indices=ti, target_classes=tc, budget=budget,
                                           eps=config.epsilon, key=k_pois)
        res = gm.craft(losses, problem, steps=config.craft_steps, key=k_craft, restarts=config.restarts,
                       alpha=alpha, step_size=config.step_size, flip=config.flip, crop=config.crop, trials=True,
                       normalize_strict=config.normalize_strict, trial_chunk=config.get("trial_chunk", 0) or None,
                       workdir=wd / "craft" / tag, config={"cfg": config.to_dict(), "tag": tag}, desc=tag)
        return res, pidx

    def evaluate(a, pidx, delta):
        return _summary(jax.device_get(a.evaluate(vkeys, rep(pidx), rep(delta), rep(trig_x), rep(tc))), T, K)

    # ---- main setting: gray-box surrogate on `surrogate_fraction` of the data
    t0 = time.perf_counter()
    main_losses, main_params = surrogate([config.backbone], config.surrogate_fraction)
    surrogate_seconds = time.perf_counter() - t0
    crafted, summaries, craft_seconds = {}, {}, {}
    for name, alpha in (("witches_brew", 0.0), ("padhash", config.alpha)):
        res, pidx = craft(main_losses, main_params, config.budget, alpha, f"main_{name}")
        crafted[name] = res.delta
        craft_seconds[name] = res.seconds
    crafted["none"] = np.zeros_like(crafted["padhash"])
    for name in METHODS:
        summaries[name] = evaluate(victim, pidx, crafted[name])
    max_linf = float(max(np.abs(crafted[m]).max() for m in METHODS))

    results = {
        "dataset": data.name, "method": config.method, "backbone": config.backbone, "bits": int(config.bits),
        "n_train": n, "n_poisons": int(pidx.shape[1]), "budget": float(config.budget), "epsilon": float(config.epsilon),
        "alpha": float(config.alpha), "surrogate": f"gray-box, {config.surrogate_fraction:g} of the data",
        "asr": {m: summaries[m]["asr"]["mean"] for m in METHODS},
        "t_map": {m: summaries[m]["t_map"]["mean"] for m in METHODS},
        "map_clean": summaries["none"]["map"]["mean"],
        "map_poisoned": summaries["padhash"]["map"]["mean"],
        "map_poisoned_witches_brew": summaries["witches_brew"]["map"]["mean"],
        "details": summaries, "craft_seconds": craft_seconds, "surrogate_seconds": surrogate_seconds,
        "max_linf": max_linf,
        "triggers": [{"test_index": int(a), "true_class": int(data.y_test[a]), "target_class": int(b)} for a, b in zip(ti, tc)],
    }

    results["complete"] = False  # results.json is rewritten after each stage of a long run
    reporting.write_json(wd / "results.json", results)

    rows = [{"setting": f"gray_box_{config.surrogate_fraction:g} (main)", "method": m, "asr": summaries[m]["asr"], "t_map": summaries[m]["t_map"],
             "map": summaries[m]["map"]} for m in METHODS]

    # ---- surrogate settings: gray-box fractions and black-box ensemble
    setting_params = {f"gray_box_{config.surrogate_fraction:g}": (main_losses, main_params)}
    if config.run_settings:
        settings = results["settings"] = {}  # filled (and results.json rewritten) one setting at a time
        for frac in config.gray_box_fractions:
            tag = f"gray_box_{frac:g}"
            if tag not in setting_params:
                setting_params[tag] = surrogate([config.backbone], frac)
        setting_params["black_box"] = surrogate(list(config.blackbox_backbones), config.surrogate_fraction)
        for tag, (losses, params) in setting_params.items():
            settings[tag] = {}
            for name, alpha in (("witches_brew", 0.0), ("padhash", config.alpha)):
                if tag == f"gray_box_{config.surrogate_fraction:g}":
                    s = summaries[name]
                else:
                    res, _ = craft(losses, params, config.budget, alpha, f"{tag}_{name}")
                    s = evaluate(victim, pidx, res.delta)
                    rows.append({"setting": tag, "method": name, "asr": s["asr"], "t_map": s["t_map"], "map": s["map"]})
                settings[tag][name] = {"asr": s["asr"]["mean"], "t_map": s["t_map"]["mean"], "map": s["map"]["mean"]}
            reporting.write_json(wd / "results.json", results)

    # ---- transfer matrix: rows = surrogate settings, columns = victims (backbone:bits); PADHASH ASR
    if config.run_transfer:
        cols = [victim.name] + [v for v in config.transfer_victims if v != victim.name]
        row_tags = list(setting_params)
        matrix, none_row = [], []
        for c in cols:
            b, bits = c.split(":")
            a = arch(b, int(bits))
            none_row.append(summaries["none"]["asr"]["mean"] if c == victim.name else
                            evaluate(a, pidx, np.zeros_like(crafted["padhash"]))["asr"]["mean"])
        for tag in row_tags:
            losses, params = setting_params[tag]
            delta = crafted["padhash"] if tag == f"gray_box_{config.surrogate_fraction:g}" else None
            row = []
            for c in cols:
                if c == victim.name and results.get("settings", {}).get(tag):
                    row.append(results["settings"][tag]["padhash"]["asr"])
                    continue
                if delta is None:
                    delta = craft(losses, params, config.budget, config.alpha, f"{tag}_padhash")[0].delta
                b, bits = c.split(":")
                row.append(evaluate(arch(b, int(bits)), pidx, delta)["asr"]["mean"])
            matrix.append(row)
        results["transfer"] = {"rows": row_tags, "columns": cols, "asr": matrix, "asr_no_attack": none_row,
                               "note": "rows: surrogate used to craft PADHASH poisons; columns: victim backbone:bits"}
    else:
        results["transfer"] = {"rows": [f"gray_box_{config.surrogate_fraction:g}"], "columns": [victim.name],
                               "asr": [[results["asr"]["padhash"]]], "asr_no_attack": [results["asr"]["none"]]}

    # ---- ASR against the budget
    if config.run_budget_sweep:
        sweep = {"budget": [], "witches_brew": [], "padhash": [], "none": []}
        for b in config.budget_sweep:
            sweep["budget"].append(float(b))
            for name, alpha in (("witches_brew", 0.0), ("padhash", config.alpha)):
                if abs(b - config.budget) < 1e-12:
                    sweep[name].append(results["asr"][name])
                    continue
                res, pi = craft(main_losses, main_params, b, alpha, f"budget_{b:g}_{name}")
                sweep[name].append(evaluate(victim, pi, res.delta)["asr"]["mean"])
            sweep["none"].append(results["asr"]["none"])
        results["asr_vs_budget"] = sweep
        fig, ax = reporting.new_figure(figsize=(4.5, 3.2))
        for name, mk in (("none", "x"), ("witches_brew", "s"), ("padhash", "o")):
            ax.plot(np.asarray(sweep["budget"]) * 100, sweep[name], marker=mk, label=name)
        ax.set_xlabel("poison budget (% of training set)")
        ax.set_ylabel(f"ASR (top-{config.topk}, >{config.threshold:.0%} target)")
        ax.set_title(f"PADHASH on {data.name} ({config.method.upper()}, {config.bits} bits)")
        ax.legend()
        reporting.save_figure(fig, wd / "asr_vs_budget.png")

    results["complete"] = True
    results = study.write_results(wd, [{"dataset": data.name, "budget": float(config.budget),
                                        "eps": float(config.epsilon), "n_victims": K, **r} for r in rows], **results)
    study.main_print(reporting.text_table(rows, floatfmt=".3f"))
    study.main_print(f"mAP clean {results['map_clean']:.3f} -> poisoned {results['map_poisoned']:.3f}; "
          f"craft {craft_seconds['padhash']:.1f}s")
    sections = [
        ("Setting", f"{data.name}, {config.method.upper()} {config.backbone} {config.bits} bits, "
                    f"{pidx.shape[1]} poisons ({config.budget:g} of {n}), eps {config.epsilon * 255:.1f}/255, "
                    f"alpha {config.alpha}, {T} triggers x {K} victims"),
        ("Results", reporting.markdown_table(rows, floatfmt=".3f")),
    ]
    if "transfer" in results:
        tr = results["transfer"]
        trows = [dict({"surrogate": r}, **{c: v for c, v in zip(tr["columns"], vals)}) for r, vals in zip(tr["rows"], tr["asr"])]
        sections.append(("Transfer (PADHASH ASR)", reporting.markdown_table(trows, floatfmt=".3f")))
    reporting.write_report(wd, "PADHASH", sections, plots=["asr_vs_budget.png"] if config.run_budget_sweep else [])
    return results
