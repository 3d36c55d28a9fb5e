"""The backdoor suite: attacks x defenses over K victims (``poisonjax run backdoor``).

For every attack (:mod:`poisonjax.vision.backdoor.attacks`) the training set is poisoned once and K
victims are trained from scratch on it at once (``vmap`` over seeds, :mod:`poisonjax.core.victims`).
Clean victims are trained first: they give the clean-model accuracy, the clean-model ASR of every
trigger (the baseline an attack must beat) and the model the label-consistent attack's PGD runs
against. Then every defense runs on every attack's poisoned set and victims:

* detectors (Activation Clustering, Spectral Signatures and SPECTRE on the victim's penultimate
  features of the poisoned training set, STRIP on the victim's predictions, ABL's isolation on a
  fresh LGA-trained model, Confusion Training from the victim with the defender's clean data as the
  confusion base set) report per-victim detection TPR/FPR of their flags and TPR at 5% FPR of their
  scores; K victims are then retrained with the flagged rows removed (a mask, so one compiled
  program serves all) and evaluated;
* repairs (fine-pruning, CLP, Neural Cleanse, ABL = isolation + unlearning, I-BAU) act on each of
  the K victims (``vmap``) and the repaired victims are evaluated.

The defender's clean data are ``clean_fraction x N_train`` images split off the test set (a seeded, class-stratified split, :func:`poisonjax.data.images.stratified_split`); accuracy
and ASR are measured on the rest. ASR = triggered test images of non-target classes (TaCT: of its
source classes) classified as the target. ``results.json`` holds ``rows``, one per (attack, defense),
with ``clean_accuracy``, ``asr`` (means over victims, with ``_std``), ``clean_model_asr`` for
``defense="none"``, and ``detection_tpr`` / ``detection_fpr`` / ``tpr_at_5fpr`` for detectors; plus
a heat map of ASR (``asr_heatmap.png``) and ``report.md``.

Resume (issue 14, item 4): every victim training (the clean victims, each attack's victims and each
detector's retraining) is a :class:`poisonjax.core.victims.VictimTraining` run of
:func:`poisonjax.core.runner.run`, checkpointed every ``config.checkpoint_every`` epochs under
``workdir/cells/<attack>/<part>/``; every finished defense row is stored under
``workdir/cells/<attack>/rows/`` and every finished attack in ``workdir/cells/<attack>.json``
(:class:`poisonjax.core.study.CellCache`, which then deletes the cell's checkpoints). A killed study
rerun with the same workdir restores the last checkpoint (mid-cell) and ends with the same results as an
uninterrupted run (the same programs run: bit-equal). Every input is checked (and every attack built once
on the real data) before anything is written to the workdir.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core import reporting, runner, study
from poisonjax.core.ensemble import index, mean_std
from poisonjax.core.validation import PoisonJaxInputError, check_choice, check_fraction, check_positive_int
from poisonjax.data.images import stratified_split
from poisonjax.vision.backdoor import attacks as A
from poisonjax.vision.backdoor import detectors as D
from poisonjax.vision.backdoor import repairs as R
from poisonjax.vision.backdoor.confusion import confusion_training
from poisonjax.vision.backdoor.spectre import spectre
from poisonjax.vision.backdoor.victim import init_victim, make_optimizer, predict

DATASETS = ("digits8", "digits16", "mnist16", "cifar10", "cifar10_20k")
MODELS = ("bn_cnn", "narrow_resnet", "preact_resnet18", "small_cnn")
DETECTORS = ("activation_clustering", "spectral_signatures", "spectre", "strip", "abl_isolation", "confusion_training")
REPAIRS = ("fine_pruning", "clp", "neural_cleanse", "abl", "i_bau")
DEFENSES = ("none",) + DETECTORS + REPAIRS


# ------------------------------------------------------------------------------ data / model ---

def load_dataset(name: str, seed: int = 0, n_train: int = 0):
    """``(x_train, y_train, x_test, y_test, num_classes)`` NHWC float32 in [0, 1]."""
    from poisonjax.data.images import load_cifar10_jpeg, load_digits, load_mnist
    if name == "digits8":                                 # native 8x8 resolution (4x cheaper per step)
        d = load_digits(seed=seed)
        xtr, ytr, xte, yte = d.x_train, d.y_train, d.x_test, d.y_test
    elif name == "digits16":
        d = load_digits(seed=seed)
        up = lambda a: np.clip(np.asarray(jax.image.resize(a, (a.shape[0], 16, 16, 1), "linear")), 0, 1)
        xtr, ytr, xte, yte = up(d.x_train), d.y_train, up(d.x_test), d.y_test
    elif name == "mnist16":
        d = load_mnist(n_train=n_train or None, n_test=2000, seed=seed)
        dn = lambda a: np.asarray(jax.image.resize(a, (a.shape[0], 16, 16, 1), "linear")).clip(0, 1)
        xtr, ytr, xte, yte = dn(d.x_train), d.y_train, dn(d.x_test), d.y_test
    elif name == "cifar10":
        d = load_cifar10_jpeg(n_train=n_train or None, seed=seed)
        xtr, ytr, xte, yte = d.x_train, d.y_train, d.x_test, d.y_test
    else:
        from poisonjax.data.images import load_cifar10_20k_split
        xtr, ytr = load_cifar10_20k_split("train")
        xte, yte = load_cifar10_20k_split("test")
    if n_train and name in ("digits8", "digits16", "cifar10_20k") and n_train < len(ytr):
        rs = np.random.RandomState(seed)
        idx = np.sort(rs.choice(len(ytr), n_train, replace=False))
        xtr, ytr = xtr[idx], ytr[idx]
    return (np.asarray(xtr, np.float32), np.asarray(ytr, np.int32), np.asarray(xte, np.float32),
            np.asarray(yte, np.int32), 10)


def make_model(config, num_classes):
    from poisonjax.vision.backdoor.resnet import BNConvNet, PreActResNet18, narrow_resnet
    if config.model == "bn_cnn":
        return BNConvNet(num_classes, channels=(config.width, 2 * config.width))
    from poisonjax.vision.models import FastSmallCNN
    if config.model == "narrow_resnet":
        return narrow_resnet(num_classes, width=config.width)
    if config.model == "preact_resnet18":
        return PreActResNet18(num_classes)
    return FastSmallCNN(num_classes=num_classes, channels=(config.width, 2 * config.width), hidden=8 * config.width)


# ------------------------------------------------------------------------------ checks ---------

def _validate(config):
    check_choice("config.dataset", config.dataset, DATASETS)
    check_choice("config.model", config.model, MODELS)
    check_positive_int("config.n_victims", config.n_victims)
    check_positive_int("config.width", config.width)
    check_fraction("config.clean_fraction", config.clean_fraction)
    for a in config.attacks:
        check_choice("config.attacks entry", a, A.ATTACKS)
    for d in config.defenses:
        check_choice("config.defenses entry", d, DEFENSES)
    if "none" not in config.defenses:
        raise PoisonJaxInputError("config.defenses must include 'none' (the undefended row of every attack)")
    for k in ("epochs", "batch_size"):
        check_positive_int(f"config.train.{k}", config.train[k])
    check_positive_int("config.checkpoint_every", config.get("checkpoint_every", 5))
    dp = config.defense_params
    if "spectre" in config.defenses:
        check_positive_int("config.defense_params.spectre.k", dp.spectre.k)
    if "confusion_training" in config.defenses:
        p = dp.confusion_training
        ratios = [check_fraction("config.defense_params.confusion_training.distillation_ratios entry", r)
                  for r in p.distillation_ratios]
        if any(b >= a for a, b in zip(ratios, ratios[1:])):
            raise PoisonJaxInputError(f"config.defense_params.confusion_training.distillation_ratios must decrease, "
                                      f"got {list(p.distillation_ratios)}")
        if not p.lam > 1:
            raise PoisonJaxInputError(f"config.defense_params.confusion_training.lam must be > 1, got {p.lam}")
        check_fraction("config.defense_params.confusion_training.confidence", p.confidence)


def _build_attack(name, config, key, xtr, ytr, num_classes, logits_fn=None):
    kw = dict(config.attack_params[name]) if name in config.attack_params else {}
    if "source_classes" in kw:
        kw["source_classes"] = tuple(kw["source_classes"])
    if name == "label_consistent":
        kw["logits_fn"] = logits_fn
    try:
        return A.poison(name, key, xtr, ytr, num_classes=num_classes, target_class=config.target_class, **kw)
    except TypeError as e:
        raise PoisonJaxInputError(f"config.attack_params.{name}: {e}") from None


def _dry_run_attacks(config, xtr, ytr, num_classes):
    """Build every attack once on the real data (label-consistent with a zero model and 1 PGD step)."""
    zero = lambda x: jnp.zeros((x.shape[0], num_classes))
    for name in config.attacks:
        cfg = config
        if name == "label_consistent":
            cfg = config.copy_and_resolve_references()
            cfg.attack_params.label_consistent.steps = 1
        _build_attack(name, cfg, jax.random.PRNGKey(0), xtr, ytr, num_classes, zero)


def _total_rate(config, name):
    p = config.attack_params[name] if name in config.attack_params else {}
    return float(p.get("poison_rate", 0.0)) + float(p.get("cover_rate", 0.0))


# ------------------------------------------------------------------------------ the study ------

def run(config, workdir) -> dict:
    """Run the study; returns (and writes) ``results.json``."""
    _validate(config)
    xtr, ytr, xte, yte, C = load_dataset(config.dataset, config.seed, config.n_train)
    A.check_images("x_train", xtr)
    if not 0 <= config.target_class < C:
        raise PoisonJaxInputError(f"config.target_class must be a label in [0, {C}), got {config.target_class}")
    _dry_run_attacks(config, xtr, ytr, C)
    wd = study.prepare_workdir(workdir, config)
    cache = study.CellCache(wd)

    n_clean = max(10, int(round(config.clean_fraction * len(ytr))))
    # seeded and class-stratified: the CIFAR-10 test folders are read class-major, and taking the first rows gave
    # the defender only target-class images on cifar10_20k (fine-pruning then collapsed to that class on the GPU)
    ic, ie = stratified_split(yte, n_clean, config.seed)
    xc, yc = jnp.asarray(xte[ic]), jnp.asarray(yte[ic])
    xe, ye = jnp.asarray(xte[ie]), jnp.asarray(yte[ie])
    xtr, ytr = jnp.asarray(xtr), jnp.asarray(ytr)
    model = make_model(config, C)
    K = config.n_victims
    tc = config.train
    steps = tc.epochs * -(-len(ytr) // tc.batch_size)
    opt = make_optimizer(tc.learning_rate, weight_decay=tc.weight_decay, total_steps=steps)
    vkeys = jax.random.split(jax.random.PRNGKey(config.seed), K)
    fit = _Fitter(model, opt, xtr[:1], tc, int(config.get("checkpoint_every", 5)))

    @jax.jit
    def _evaluate(vs, x_trig, xe, ye):      # data as arguments: closed-over arrays become huge HLO constants
        acc = (predict(model, vs, xe, stacked=True).argmax(-1) == ye).mean(-1)
        pt = predict(model, vs, x_trig, stacked=True).argmax(-1)
        return acc, pt

    evaluate = lambda vs, x_trig: _evaluate(vs, x_trig, xe, ye)

    from tqdm.auto import tqdm
    t_start = time.time()
    clean = {}

    def clean_victims():
        """The K clean victims (resumable; their final checkpoint is kept until the study ends, so a
        resumed study does not retrain them for the attacks still to run)."""
        if "vs" not in clean:
            clean["vs"], _ = fit(cache.run_dir("clean"), xtr, ytr, vkeys)
        return clean["vs"]

    cc = cache.get("clean")
    if cc is None:
        acc, _ = evaluate(clean_victims(), xe)
        cc = cache.put("clean", {"accuracy": np.asarray(acc).tolist()}, keep_checkpoints=True)
    clean_ref = mean_std(cc["accuracy"])
    rows = []
    for ai, name in enumerate(tqdm(list(config.attacks), desc="backdoor study", unit="attack")):
        cell = cache.get(name)
        if cell is None:
            cell = cache.put(name, _run_attack(name, ai, config, model, xtr, ytr, xc, yc, xe, ye, C, K, vkeys,
                                               clean_victims, fit, evaluate, cache.run_dir(name)))
        rows.extend(cell["rows"])

    results = {"dataset": config.dataset, "model": config.model, "n_victims": K, "n_train": int(len(ytr)),
               "n_clean": n_clean, "n_eval": int(len(ye)), "target_class": config.target_class,
               "clean_model_accuracy": clean_ref, "seconds": time.time() - t_start, "rows": rows}
    results["checks"] = _checks(rows, clean_ref["mean"])
    reporting.write_json(wd / "results.json", results)
    if study.is_main_process():                       # every cell is stored: the clean victims are no longer needed
        shutil.rmtree(cache.run_dir("clean") / "checkpoints", ignore_errors=True)
    _plot_and_report(wd, config, rows, results)
    print(reporting.text_table(rows, ["attack", "defense", "clean_accuracy", "asr", "detection_tpr",
                                      "detection_fpr", "seconds"]))
    return results


class _Fitter:
    """K victims trained from scratch as a resumable :class:`poisonjax.core.victims.VictimTraining` run
    (:func:`poisonjax.core.runner.run`, one step = one epoch of all K victims, checkpointed every
    ``every`` epochs in ``run_dir``), the same steps as :func:`poisonjax.vision.backdoor.victim.train_victims`.
    ``keep [K, N]`` (optional) weights the rows per victim (0 = removed), one compiled program for every
    filtered set. The final state is checkpointed too, so a resumed cell does not retrain finished victims;
    :class:`poisonjax.core.study.CellCache` deletes the checkpoints once the cell is stored."""

    def __init__(self, model, opt, sample, tc, every):
        from poisonjax.core.victims import VictimTraining, flax_victim
        from poisonjax.vision.backdoor.victim import accepts_train, augment_batch
        vic = flax_victim(model, sample, train_kwarg="train" if accepts_train(model) else None)
        aug = augment_batch if tc.augment else None
        self.epochs, self.every = int(tc.epochs), int(every)
        self.shared = VictimTraining(vic, opt, epochs=self.epochs, batch_size=int(tc.batch_size), augment=aug)
        self.masked = VictimTraining(vic, opt, epochs=self.epochs, batch_size=int(tc.batch_size), data_axis=0,
                                     augment=aug)

    def __call__(self, run_dir, x, y, keys, keep=None):
        if keep is None:
            tr, prob = self.shared, self.shared.problem({"x": x, "y": y}, keys)
        else:
            k = keep.shape[0]
            tr = self.masked
            prob = tr.problem({"x": jnp.broadcast_to(x, (k,) + x.shape), "y": jnp.broadcast_to(y, (k,) + y.shape)},
                              keys, mask=keep)
        res = runner.run(tr.as_attack_optimizer(), prob, self.epochs, run_dir, chunk_size=self.every,
                         checkpoint_every=self.every, config={"part": Path(run_dir).name, "epochs": self.epochs},
                         progress=False, desc=Path(run_dir).name)
        return tr.variables(res.state), res.resumed_from


def _run_attack(name, ai, config, model, xtr, ytr, xc, yc, xe, ye, C, K, vkeys, clean_victims, fit, evaluate,
                run_dir):
    """One attack's cell: poisoned set, K victims, then every defense. Resumable mid-cell: every training
    run is a checkpointed runner process under ``run_dir/<part>/`` and every finished defense row is stored
    in ``run_dir/rows/`` (ABL's isolation flags too, so ABL's repair reuses them after a restart)."""
    t0 = time.time()
    run_dir = Path(run_dir)
    rows_dir = run_dir / "rows"
    resumed = {}
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed + 1), ai)
    clean_vs = clean_victims()
    v0 = index(clean_vs, 0)
    bd = _build_attack(name, config, key, xtr, ytr, C, logits_fn=lambda x: predict(model, v0, x))
    x_trig = bd.trigger(xe)
    _, pt_clean = evaluate(clean_vs, x_trig)
    clean_model_asr = np.asarray(A.asr(pt_clean, ye, bd))
    vs, resumed["victims"] = fit(run_dir / "victims", bd.x, bd.y, vkeys)
    acc, pt = evaluate(vs, x_trig)
    base = {"attack": name, "dataset": config.dataset, "poison_rate": _total_rate(config, name),
            "target_class": config.target_class, "n_victims": K}
    rows = [dict(base, defense="none", clean_accuracy=float(np.mean(acc)), clean_accuracy_std=float(np.std(acc)),
                 asr=float(np.mean(A.asr(pt, ye, bd))), asr_std=float(np.std(A.asr(pt, ye, bd))),
                 clean_model_asr=float(np.mean(clean_model_asr)), detection_tpr=None, detection_fpr=None,
                 seconds=time.time() - t0)]
    dp = config.defense_params
    pm = np.asarray(bd.poison_mask)
    dkey = jax.random.fold_in(key, 7)
    feats = None
    budget = _total_rate(config, name)
    abl_iso = None
    iso_path = rows_dir / "abl_isolation_flags.npy"
    if iso_path.exists():
        abl_iso = jnp.asarray(np.load(iso_path))
    for dname in config.defenses:
        if dname == "none":
            continue
        done = rows_dir / f"{dname}.json"
        if done.exists():                                   # finished before a restart
            rows.append(json.loads(done.read_text()))
            continue
        t1 = time.time()
        row = dict(base, defense=dname, detection_tpr=None, detection_fpr=None)
        if dname in DETECTORS:
            if feats is None and dname in ("activation_clustering", "spectral_signatures", "spectre"):
                feats = predict(model, vs, bd.x, return_features=True, stacked=True)      # [K, N, D]
            reps = []
            for k in range(K):
                kk = jax.random.fold_in(dkey, k)
                if dname == "activation_clustering":
                    p = dp.activation_clustering
                    r = D.activation_clustering(feats[k], bd.y, C, n_components=p.n_components,
                                                size_threshold=p.size_threshold, key=kk)
                elif dname == "spectral_signatures":
                    r = D.spectral_signatures(feats[k], bd.y, C, poison_budget=budget,
                                              multiplier=dp.spectral_signatures.multiplier)
                elif dname == "spectre":
                    p = dp.spectre
                    r = spectre(feats[k], bd.y, C, poison_budget=budget, multiplier=p.multiplier, k=p.k,
                                alpha=p.alpha)
                elif dname == "confusion_training":
                    p = dp.confusion_training
                    r = confusion_training(model, index(vs, k), bd.x, bd.y, xc, yc, kk, num_classes=C,
                                           distillation_ratios=tuple(p.distillation_ratios), lam=p.lam,
                                           pretrain_epochs=p.pretrain_epochs, confusion_epochs=p.confusion_epochs,
                                           confusion_copies=p.confusion_copies, learning_rate=p.learning_rate,
                                           batch_size=config.train.batch_size, confidence=p.confidence)
                    r = r._replace(info={})
                elif dname == "strip":
                    vk = index(vs, k)
                    r = D.strip(lambda x: predict(model, vk, x), bd.x, xc, kk, n_overlay=dp.strip.n_overlay,
                                frr=dp.strip.frr)
                else:
                    p = dp.abl_isolation
                    r = D.abl_isolation(model, init_victim(model, kk, xc[:2]), bd.x, bd.y, kk, epochs=p.epochs,
                                        isolation_ratio=p.isolation_ratio, gamma=p.gamma,
                                        learning_rate=p.learning_rate, batch_size=config.train.batch_size)
                    r = r._replace(info={})
                reps.append(r)
            rates = [D.detection_rates(r.flags, pm) for r in reps]
            row["detection_tpr"] = float(np.mean([t for t, _ in rates]))
            row["detection_fpr"] = float(np.mean([f for _, f in rates]))
            row["tpr_at_5fpr"] = float(np.mean([D.tpr_at_fpr(r.scores, pm, 0.05) for r in reps]))
            if dname == "abl_isolation":
                abl_iso = jnp.stack([r.flags for r in reps])
                if study.is_main_process():
                    rows_dir.mkdir(parents=True, exist_ok=True)
                    np.save(iso_path, np.asarray(abl_iso))
            keep = jnp.stack([~r.flags for r in reps]).astype(jnp.float32)
            new, resumed[dname] = fit(run_dir / dname, bd.x, bd.y, jax.random.split(jax.random.fold_in(dkey, 99), K),
                                      keep=keep)
        else:
            new = _repair(dname, config, model, vs, bd, xc, yc, C, K, dkey, abl_iso)
        a2, p2 = evaluate(new, x_trig)
        s2 = np.asarray(A.asr(p2, ye, bd))
        row.update(clean_accuracy=float(np.mean(a2)), clean_accuracy_std=float(np.std(a2)),
                   asr=float(np.mean(s2)), asr_std=float(np.std(s2)), seconds=time.time() - t1)
        row = json.loads(json.dumps(reporting.jsonable(row)))
        if study.is_main_process():
            rows_dir.mkdir(parents=True, exist_ok=True)
            tmp = done.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(row))
            os.replace(tmp, done)
        rows.append(row)
    return {"rows": rows, "seconds": time.time() - t0,
            "resumed_from": {k: v for k, v in resumed.items() if v is not None}}


def _repair(dname, config, model, vs, bd, xc, yc, C, K, dkey, abl_iso):
    dp = config.defense_params
    keys = jax.random.split(jax.random.fold_in(dkey, 11), K)
    # the clean data go in as arguments (vmapped with in_axes None), not as closed-over HLO constants
    if dname == "fine_pruning":
        p = dp.fine_pruning
        f = lambda v, k, xc, yc: R.fine_pruning(model, v, xc, yc, k, max_acc_drop=p.max_acc_drop,
                                                finetune_epochs=p.finetune_epochs, learning_rate=p.learning_rate)[0]
    elif dname == "clp":
        f = lambda v, k, xc, yc: R.clp(model, v, u=dp.clp.u)[0]
    elif dname == "neural_cleanse":
        p = dp.neural_cleanse
        f = lambda v, k, xc, yc: R.neural_cleanse(model, v, xc, yc, k, C, steps=p.steps, lam=p.lam,
                                                  threshold=p.threshold, finetune_epochs=p.finetune_epochs,
                                                  learning_rate=p.learning_rate)[0]
    elif dname == "i_bau":
        p = dp.i_bau
        f = lambda v, k, xc, yc: R.i_bau(model, v, xc, yc, k, rounds=p.rounds, inner_steps=p.inner_steps,
                                         radius=p.radius, cg_iters=p.cg_iters, learning_rate=p.learning_rate)[0]
    else:  # abl: isolation (reuse the detector's flags if it ran) + unlearning
        iso = abl_iso
        if iso is None:
            p = dp.abl_isolation
            iso = jnp.stack([D.abl_isolation(model, init_victim(model, k, xc[:2]), bd.x, bd.y, k, epochs=p.epochs,
                                             isolation_ratio=p.isolation_ratio, gamma=p.gamma,
                                             learning_rate=p.learning_rate).flags for k in keys])
        n_iso = int(round(dp.abl_isolation.isolation_ratio * bd.x.shape[0]))
        p = dp.abl
        return jax.jit(jax.vmap(lambda v, fl, k, x, y: R.abl_unlearn(model, v, x, y, fl, k, epochs=p.epochs,
                                                                     learning_rate=p.learning_rate,
                                                                     max_isolated=n_iso)[0],
                                in_axes=(0, 0, 0, None, None)))(vs, iso, keys, bd.x, bd.y)
    return jax.jit(jax.vmap(f, in_axes=(0, 0, None, None)))(vs, keys, xc, yc)


# ------------------------------------------------------------------------------ report ---------

def _checks(rows, clean_acc):
    """The issue's "what must hold" statements, evaluated on these rows."""
    out = {}
    by = {(r["attack"], r["defense"]): r for r in rows}
    for a in ("badnets", "blended", "wanet"):
        r = by.get((a, "none"))
        if r is None:
            continue
        out[f"{a}_undefended_asr>=0.85_and_acc_within_3pts"] = bool(r["asr"] >= 0.85 and r["clean_accuracy"] >= clean_acc - 0.03)
        good = [d for (aa, d), rr in by.items() if aa == a and d != "none" and rr["asr"] < 0.10
                and rr["clean_accuracy"] >= r["clean_accuracy"] - 0.05]
        out[f"{a}_defenses_with_asr<0.10_acc_within_5pts"] = good
    for det in ("activation_clustering", "spectral_signatures"):
        b = by.get(("badnets", det))
        for a in ("adap_blend", "adap_patch"):
            r = by.get((a, det))
            if b is not None and r is not None:
                out[f"{a}_evades_{det}_better_than_badnets(tpr_at_5fpr)"] = bool(r["tpr_at_5fpr"] < b["tpr_at_5fpr"])
    return out


def _plot_and_report(wd, config, rows, results):
    grid, attacks, defenses = reporting.grid_from_rows(rows, "attack", "defense", "asr")
    reporting.save_heatmap(wd / "asr_heatmap.png", grid, attacks, defenses, colorbar_label="ASR",
                           title=f"ASR, {config.dataset}, {config.model}, K={config.n_victims}")
    cols = ["attack", "defense", "poison_rate", "clean_accuracy", "asr", "clean_model_asr", "detection_tpr",
            "detection_fpr", "tpr_at_5fpr", "seconds"]
    checks = "\n".join(f"- `{k}`: {v}" for k, v in results["checks"].items())
    reporting.write_report(wd, "Backdoor attacks x defenses", [
        ("Setup", f"{config.dataset} ({results['n_train']} training images, {results['n_eval']} evaluation images, "
                  f"{results['n_clean']} clean images for the defender), {config.model}, K={config.n_victims} "
                  f"victims per cell, target class {config.target_class}. Clean model accuracy "
                  f"{results['clean_model_accuracy']['mean']:.4f}. Total {results['seconds']:.0f} s."),
        ("Results (means over victims)", reporting.markdown_table(rows, cols)),
        ("Issue checks", checks or "(none applicable)")], ["asr_heatmap.png"])
