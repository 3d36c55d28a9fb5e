"""BadNets and label-flipping poisoning of a small CNN on scikit-learn ``digits``.

For each attack (``none``, ``label_flip``, ``badnets``) and poison rate, K victims are trained from
scratch *at once* (``jax.vmap`` over seeds, :class:`poisonjax.core.victims.VictimTraining`) on the
poisoned training set; we report clean test accuracy and, for BadNets, the attack success rate (ASR:
non-target test images with the trigger classified as the target), each as mean ± std over victims.

Finished (attack, rate) cells are cached in ``workdir/cells/``; inside an unfinished cell the victims'
training runs through :func:`poisonjax.core.runner.run` (one step = one epoch of all K victims) and is
checkpointed every ``config.checkpoint_every`` epochs under ``workdir/cells/<cell>/``, so a killed run
resumes mid-cell from its last checkpointed epoch and ends bit-identical to an uninterrupted run (the
cell records ``resumed_from_epoch``).
``results.json`` holds the table as ``rows`` (``attack``, ``poison_rate``, ``clean_accuracy``, ``asr``,
each ``*_std`` over the ``n_victims`` victims, ``seconds``).
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import optax

from poisonjax.core import reporting, runner, study
from poisonjax.core.ensemble import ensemble_apply, mean_std
from poisonjax.core.training import softmax_cross_entropy_loss
from poisonjax.core.victims import Victim, VictimTraining
from poisonjax.core.validation import check_choice, check_fraction, check_positive_int
from poisonjax.data.images import load_digits
from poisonjax.vision.models import FastSmallCNN
from poisonjax.vision.triggers import (apply_trigger, attack_success_rate, badnets_poison, flip_labels,
                                       patch_trigger)

ATTACKS = ("none", "label_flip", "badnets")


def _validate(config):
    check_choice("config.dataset", config.dataset, ("digits",))
    for a in config.attacks:
        check_choice("config.attacks entry", a, ATTACKS)
    check_fraction("config.rate", config.rate)
    for r in config.rates:
        check_fraction("config.rates entry", r)
    check_positive_int("config.n_victims", config.n_victims)
    check_positive_int("config.checkpoint_every", config.get("checkpoint_every", 5))
    if not 0 <= config.target_class < 10:
        raise ValueError(f"config.target_class must be in [0, 9] for digits, got {config.target_class}")


def run(config, workdir) -> dict:
    """Run the study; returns (and writes) ``results.json``."""
    study.upgrade_config(config)
    _validate(config)
    wd = study.prepare_workdir(workdir, config)   # refuses a workdir of another config
    cache = study.CellCache(wd)
    ds = load_digits(seed=config.seed)
    xtr, ytr = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    xte, yte = jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)
    model = FastSmallCNN(num_classes=ds.num_classes, channels=tuple(config.train.channels), hidden=config.train.hidden)
    victim = Victim(lambda k: model.init(k, xtr[:1]), softmax_cross_entropy_loss(model.apply), model.apply)
    training = VictimTraining(victim, optax.adam(config.train.learning_rate), epochs=config.train.epochs,
                              batch_size=config.train.batch_size)
    trigger = patch_trigger(xtr.shape[1:], size=config.trigger_size)
    keys = jax.random.split(jax.random.PRNGKey(config.seed), config.n_victims)
    every = int(config.get("checkpoint_every", 5))

    @jax.jit
    def evaluate(params):
        logits = ensemble_apply(model.apply, params, xte)                      # [K, N, C]
        acc = (jnp.argmax(logits, -1) == yte).mean(-1)
        pred_trig = jnp.argmax(ensemble_apply(model.apply, params, apply_trigger(xte, trigger)), -1)
        asr = attack_success_rate(pred_trig, yte, config.target_class)
        return acc, asr

    rates = sorted(set(config.rates) | {config.rate})
    cells = [("none", 0.0)] if "none" in config.attacks else []
    cells += [(a, r) for a in config.attacks if a != "none" for r in rates]
    pkey = jax.random.PRNGKey(config.seed + 1)
    out_rows, results = [], {"attacks": {}}
    from tqdm.auto import tqdm
    def compute(attack, rate, run_dir):
        t0 = time.time()
        if attack == "none":
            x, y = xtr, ytr
        elif attack == "label_flip":
            y, _ = flip_labels(pkey, ytr, rate, ds.num_classes)
            x = xtr
        else:
            x, y, _ = badnets_poison(pkey, xtr, ytr, rate, config.target_class, trigger)
        res = runner.run(training.as_attack_optimizer(), training.problem({"x": x, "y": y}, keys),
                         config.train.epochs, run_dir, chunk_size=every, checkpoint_every=every,
                         save_final=False, config={"cell": [attack, rate]}, progress=study.is_main_process(),
                         desc=f"{attack}@{rate:g} epochs")
        acc, asr = jax.device_get(evaluate(training.variables(res.state)))
        return {"attack": attack, "poison_rate": rate, "clean_accuracy": mean_std(acc), "asr": mean_std(asr),
                "seconds": time.time() - t0, "resumed_from_epoch": res.resumed_from}

    for attack, rate in tqdm(cells, desc="badnets study", unit="cell", disable=not study.is_main_process()):
        cell = cache.cached(f"{attack}_{rate:.4f}", lambda rd: compute(attack, rate, rd))
        results["attacks"].setdefault(attack, {})[f"{rate:.4f}"] = cell
        out_rows.append({"dataset": config.dataset, "attack": attack, "poison_rate": rate,
                         "target_class": config.target_class, "n_victims": config.n_victims,
                         "clean_accuracy": cell["clean_accuracy"], "asr": cell["asr"], "seconds": cell["seconds"]})

    base = results["attacks"].get("none", {}).get("0.0000")
    results.update({
        "dataset": config.dataset, "n_victims": config.n_victims, "target_class": config.target_class,
        "headline_rate": config.rate,
        "clean_accuracy_unpoisoned": base["clean_accuracy"] if base else None,
    })
    if "badnets" in config.attacks:
        results["badnets"] = results["attacks"]["badnets"][f"{config.rate:.4f}"]
    results = study.write_results(wd, out_rows, **results)

    # plot: ASR and clean accuracy vs rate (a line per attack over the rate grid; with one rate, bars, so the
    # main job's plot does not show lines of a single point)
    fig, ax = reporting.new_figure(figsize=(5, 3.5))
    atts = [a for a in config.attacks if a != "none"]
    cell = lambda a, r, k: results["attacks"][a][f"{r:.4f}"][k]
    if len(rates) > 1:
        for attack in atts:
            ax.errorbar(rates, [cell(attack, r, "clean_accuracy")["mean"] for r in rates],
                        yerr=[cell(attack, r, "clean_accuracy")["std"] for r in rates],
                        marker="o", label=f"{attack}: clean acc")
            if attack == "badnets":
                ax.errorbar(rates, [cell(attack, r, "asr")["mean"] for r in rates],
                            yerr=[cell(attack, r, "asr")["std"] for r in rates],
                            marker="s", ls="--", label="badnets: ASR")
        ax.set_xlabel("poison rate")
    else:
        r = rates[0]
        names, vals, errs, colors = [], [], [], []
        for attack in atts:
            for k, c in (("clean_accuracy", "tab:blue"), ("asr", "tab:red")):
                names.append(f"{attack}\n{'clean acc' if k == 'clean_accuracy' else 'ASR'}")
                vals.append(cell(attack, r, k)["mean"]); errs.append(cell(attack, r, k)["std"]); colors.append(c)
        ax.bar(range(len(vals)), vals, yerr=errs, color=colors)
        ax.set_xticks(range(len(vals)), names, fontsize=7)
        ax.set_xlabel(f"poison rate {r:g} (set config.rates for a curve)")
    if base:
        ax.axhline(base["clean_accuracy"]["mean"], color="gray", ls=":", label="no attack: clean acc")
    ax.set_ylabel("fraction"); ax.set_ylim(0, 1.02); ax.legend(fontsize=7)
    ax.set_title(f"digits, SmallCNN, K={config.n_victims} victims")
    reporting.save_figure(fig, wd / "accuracy_vs_rate.png")
    cols = ["attack", "poison_rate", "clean_accuracy", "asr"]
    table = reporting.markdown_table(out_rows, cols)
    reporting.write_report(wd, "BadNets and label flipping on digits",
                           [("Setup", f"K={config.n_victims} victims trained with vmap; target class "
                                      f"{config.target_class}; {config.trigger_size}x{config.trigger_size} trigger."),
                            ("Results (mean ± std over victims)", table)], ["accuracy_vs_rate.png"])
    study.main_print(reporting.text_table(out_rows, cols))
    return results
