r"""T-Core study (``poisonjax run tcore``): threats x attacks x defenses x adaptation modes.

**Setting.** A user adapts a pre-trained encoder (a BatchNorm CIFAR ResNet pre-trained by SimCLR on the
10,000 ``cifar10_jpeg_20k`` training images, :func:`poisonjax.vision.ssl.simclr.get_or_pretrain`, cached
under ``encoder.cache_dir``) to CIFAR-10 using the CIFAR-10 *test* set, split 8,000 / 2,000 (stratified,
seeded; :func:`poisonjax.vision.ssl.probe.cifar_probe_split`) into adaptation / evaluation data, disjoint
from pre-training; the quick variant uses ``n_adapt`` / ``n_eval`` rows of those. Two modes: ``linear``
(a linear probe on the frozen encoder) and ``finetune`` (encoder + head fine-tuned, BN statistics frozen).

**Threats** (``config.threats``):

* ``dataset`` -- clean encoder; the adaptation set is poisoned by a dataset attack of the backdoor suite
  (:mod:`poisonjax.vision.backdoor.attacks`, rate = fraction of the adaptation set, target
  ``target_class``). ASR: that attack's trigger on the non-target evaluation images.
* ``encoder`` -- the encoder is backdoored (BadEncoder or DRUPE, :mod:`poisonjax.vision.ssl.encoder_attacks`,
  target ``encoder_target_class``, an ``encoder_trigger_size`` (default 4) white corner patch); the adaptation set is clean. ASR: the
  encoder's trigger, non-target evaluation images classified as its target.
* ``both_same`` -- poisoned encoder and poisoned dataset, the same target class (``target_class``).
* ``both_different`` -- poisoned encoder (target ``encoder_target_class``) and poisoned dataset (target
  ``target_class``). For the combined threats a row's ``asr`` is the larger of the two triggers' ASRs
  (both reported as ``asr_dataset`` / ``asr_encoder``).

Difference from the paper's four scenarios: the paper's encoder attacks include SSLBackdoor, CTRL and
CorruptEncoder and its encoders are pre-trained by the attacker on large data; here BadEncoder / DRUPE
poison our own small SimCLR encoder, and in the combined threats both attackers use independent triggers
(the paper also studies them jointly tuned). Encoder threats run only when ``config.encoder_attacks`` is
non-empty.

**Defenses**: ``none``; ``tcore`` (:func:`poisonjax.vision.tcore.run_tcore`, resumable in the cell's
folder); the dataset-level detectors of the suite -- ``activation_clustering``, ``spectral_signatures``
(on the undefended model's penultimate features of the adaptation set) and ``strip`` (on its predictions,
with ``strip.clean_fraction`` of the evaluation rows as the clean pool) -- after which the K victims are
re-trained without the flagged rows; ``clp`` (data-free channel-Lipschitz pruning of the undefended
classifier). K victims differ in the training key (``vmap`` for the undefended / detector / CLP
victims; T-Core runs its process once per victim: stage 1's DBSCAN is a host computation).

``results.json`` rows: ``threat, attack, defense, mode, clean_accuracy, asr`` (means over victims, with
``_std``), ``asr_dataset`` / ``asr_encoder``, and for T-Core ``seed_poison_fraction`` (poisoned rows
among the stage-1 seeds), ``expanded_poison_fraction``, ``trusted_poison_fraction`` (final trusted set),
``flagged_channel_fraction``; for detectors ``detection_tpr`` / ``detection_fpr``. Plus ``asr_heatmap.png``
and ``report.md``. Finished cells are cached in ``workdir/cells/``.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core import reporting
from poisonjax.core.study import CellCache, prepare_workdir, write_results
from poisonjax.core.validation import PoisonJaxInputError, check_choice, check_fraction, check_positive_int
from poisonjax.vision.backdoor import attacks as A
from poisonjax.vision.backdoor import detectors as D
from poisonjax.vision.backdoor import repairs as R
from poisonjax.vision.tcore import TCoreConfig, check_inputs, run_tcore
from poisonjax.vision.tcore.common import as_classifier, features, fine_tune, logits, train_head, with_head

THREATS = ("dataset", "encoder", "both_same", "both_different")
DATASET_ATTACKS = ("badnets", "blended", "sig", "wanet", "tact", "adap_blend", "adap_patch")
ENCODER_ATTACKS = ("badencoder", "drupe")
DEFENSES = ("none", "tcore", "activation_clustering", "spectral_signatures", "strip", "clp")
MODES = ("linear", "finetune")


def _validate(config):
    for t in config.threats:
        check_choice("config.threats entry", t, THREATS)
    for a in config.attacks:
        check_choice("config.attacks entry", a, DATASET_ATTACKS)
    for a in config.encoder_attacks:
        check_choice("config.encoder_attacks entry", a, ENCODER_ATTACKS)
    for d in config.defenses:
        check_choice("config.defenses entry", d, DEFENSES)
    for m in config.modes:
        check_choice("config.modes entry", m, MODES)
    if "none" not in config.defenses:
        raise PoisonJaxInputError("config.defenses must include 'none' (the undefended row of every cell)")
    if any(t != "dataset" for t in config.threats) and not config.encoder_attacks:
        raise PoisonJaxInputError("config.encoder_attacks must be non-empty for the encoder / both_* threats")
    if any(t != "encoder" for t in config.threats) and not config.attacks:
        raise PoisonJaxInputError("config.attacks must be non-empty for the dataset / both_* threats")
    if any(t != "dataset" for t in config.threats) and config.encoder.source == "random":
        raise PoisonJaxInputError("config.encoder.source must be 'simclr' or 'auto' for the encoder / both_* threats "
                                  "(BadEncoder / DRUPE poison a pre-trained SimCLR encoder)")
    check_positive_int("config.n_victims", config.n_victims)
    check_positive_int("config.n_adapt", config.n_adapt, minimum=10)
    check_positive_int("config.n_eval", config.n_eval, minimum=10)
    check_choice("config.encoder.source", config.encoder.source, ("simclr", "auto", "random"))
    for k in ("target_class", "encoder_target_class"):
        if not 0 <= config[k] < 10:
            raise PoisonJaxInputError(f"config.{k} must be a CIFAR-10 label in [0, 10), got {config[k]}")
    check_positive_int("config.encoder_trigger_size", config.get("encoder_trigger_size", 4))
    if config.get("encoder_trigger_size", 4) > 32:
        raise PoisonJaxInputError(f"config.encoder_trigger_size must fit the 32x32 image, got {config.encoder_trigger_size}")
    check_fraction("config.defense_params.strip.clean_fraction", config.defense_params.strip.clean_fraction)
    TCoreConfig.from_dict(config.tcore)


def _cache_dir(config) -> Path:
    if config.encoder.cache_dir:
        return Path(config.encoder.cache_dir)
    return Path(os.environ.get("POISONJAX_CACHE", Path.home() / ".cache" / "poisonjax")) / "encoders"


def _simclr_cached(config) -> bool:
    e = config.encoder
    ep = e.epochs or {"quick": 15, "paper": 30}[e.variant]
    name = f"simclr_{e.arch}_w{e.width}_e{ep}" if e.arch == "narrow" else f"simclr_{e.arch}_e{ep}"
    return (_cache_dir(config) / name / "meta.json").exists()


def _clean_encoder(config, image_shape):
    """``(module, variables, meta, bundle)``: ``simclr`` = the cached SimCLR encoder (pre-trained first if
    absent); ``auto`` = the cached SimCLR encoder if present, else a randomly initialised narrow ResNet
    (``meta["trained_by"] == "random"``, said in the report); ``random`` = the latter."""
    e = config.encoder
    if e.source == "random" or (e.source == "auto" and not _simclr_cached(config)):
        from poisonjax.vision.backdoor.resnet import narrow_resnet
        m = narrow_resnet(10, width=e.width)
        v = m.init(jax.random.PRNGKey(config.seed), jnp.zeros((1,) + tuple(image_shape)))
        return m, {"params": v["params"], "batch_stats": v["batch_stats"]}, {"trained_by": "random"}, None
    from poisonjax.vision.ssl.simclr import get_or_pretrain
    b = get_or_pretrain(_cache_dir(config), variant=e.variant, arch=e.arch, width=e.width, epochs=e.epochs or None)
    return b.module, b.variables, dict(b.meta), b


def _poisoned_encoder(config, name, bundle, target):
    from poisonjax.vision.ssl.encoder_attacks import default_trigger, get_or_poison
    size = int(config.get("encoder_trigger_size", 4))
    trig = default_trigger((32, 32, 3), size=size)
    pb = get_or_poison(_cache_dir(config), bundle, name, target_class=int(target), trigger=trig,
                       tag="" if size == 4 else f"_p{size}")
    return pb.module, pb.variables, trig


def _load(config):
    from poisonjax.vision.ssl.probe import cifar_probe_split
    xa, ya, xe, ye = cifar_probe_split(n_adapt=8000, seed=config.seed)
    rs = np.random.RandomState(config.seed)
    ia = np.sort(rs.permutation(len(ya))[: config.n_adapt])
    ie = np.sort(rs.permutation(len(ye))[: config.n_eval])
    return (np.asarray(xa[ia], np.float32), np.asarray(ya[ia], np.int32), np.asarray(xe[ie], np.float32),
            np.asarray(ye[ie], np.int32))


def _build_attack(config, name, key, x, y, target):
    kw = dict(config.attack_params[name]) if name in config.attack_params else {}
    if "source_classes" in kw:
        kw["source_classes"] = tuple(kw["source_classes"])
    try:
        return A.poison(name, key, jnp.asarray(x), jnp.asarray(y), num_classes=10, target_class=int(target), **kw)
    except TypeError as e:
        raise PoisonJaxInputError(f"config.attack_params.{name}: {e}") from None


def _cells(config):
    out = []
    for t in config.threats:
        if t == "dataset":
            out += [(t, a, None) for a in config.attacks]
        elif t == "encoder":
            out += [(t, e, e) for e in config.encoder_attacks]
        else:
            out += [(t, f"{a}+{e}", e) for a in config.attacks for e in config.encoder_attacks]
    return out


# ------------------------------------------------------------------------------ the study ------

def run(config, workdir) -> dict:
    """Run the study; returns (and writes) ``results.json``."""
    _validate(config)
    xa, ya, xe, ye = _load(config)
    for t, a, _ in _cells(config):                         # every dataset attack built once before writing
        if t != "encoder":
            _build_attack(config, a.split("+")[0], jax.random.PRNGKey(0), xa, ya, config.target_class)
    wd = prepare_workdir(workdir, config)
    cache = CellCache(wd)
    t_start = time.time()
    enc = _clean_encoder(config, xa.shape[1:])
    if enc[3] is None and any(t != "dataset" for t in config.threats):
        raise PoisonJaxInputError("config.encoder.source='auto' found no cached SimCLR encoder under "
                                  f"{_cache_dir(config)}; the encoder / both_* threats need one (use source='simclr')")
    rows, cells = [], _cells(config)
    from tqdm.auto import tqdm
    for ci, (threat, attack, enc_attack) in enumerate(tqdm(cells, desc="tcore study", unit="cell")):
        name = f"{threat}-{attack.replace('+', '_')}"
        cell = cache.get(name)
        if cell is None:
            cell = cache.put(name, _run_cell(config, threat, attack, enc_attack, ci, enc, xa, ya, xe, ye,
                                             cache.run_dir(name)))
        rows.extend(cell["rows"])
    res = write_results(wd, rows, encoder=enc[2], n_adapt=int(len(ya)), n_eval=int(len(ye)),
                        n_victims=config.n_victims, seconds=time.time() - t_start,
                        checks=_checks(rows))
    _plot_and_report(wd, config, res)
    print(reporting.text_table(res["rows"], ["threat", "attack", "defense", "mode", "clean_accuracy", "asr",
                                             "seed_poison_fraction", "flagged_channel_fraction", "seconds"]))
    return res


def _run_cell(config, threat, attack, enc_attack, ci, enc, xa, ya, xe, ye, run_dir):
    t0 = time.time()
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed + 1), ci)
    module, variables = enc[0], enc[1]
    x, y = jnp.asarray(xa), jnp.asarray(ya)
    pm = np.zeros(len(ya), bool)
    triggers = []                                          # (kind, triggered eval images, asr function)
    xe_j, ye_j = jnp.asarray(xe), jnp.asarray(ye)
    if threat != "encoder":
        bd = _build_attack(config, attack.split("+")[0], key, xa, ya, config.target_class)
        x, y, pm = bd.x, bd.y, np.asarray(bd.poison_mask)
        triggers.append(("dataset", bd.trigger(xe_j), lambda p, bd=bd: A.asr(p, ye_j, bd)))
    if threat != "dataset":
        et = config.target_class if threat == "both_same" else config.encoder_target_class
        module, variables, trig = _poisoned_encoder(config, enc_attack, enc[3], et)
        from poisonjax.core.poisoning import apply_trigger
        valid = (ye_j != et).astype(jnp.float32)
        triggers.append(("encoder", apply_trigger(xe_j, trig),
                         lambda p, et=et, valid=valid: jnp.sum((p == et) * valid, -1) / jnp.maximum(valid.sum(), 1)))
    tcfg = TCoreConfig.from_dict(config.tcore)
    check_inputs(module, variables, x, y, 10, tcfg, config.modes[0])
    clf = as_classifier(module, 10)
    K = config.n_victims
    keys = jax.random.split(jax.random.fold_in(key, 5), K)
    tr = config.train

    def evaluate(vs_list):
        accs, asrs = [], {k: [] for k, _, _ in triggers}
        for v in vs_list:
            accs.append(float((logits(clf, v, xe_j).argmax(-1) == ye_j).mean()))
            for kind, xt, f in triggers:
                asrs[kind].append(float(f(logits(clf, v, xt).argmax(-1))))
        out = {"clean_accuracy": float(np.mean(accs)), "clean_accuracy_std": float(np.std(accs))}
        for kind in asrs:
            out[f"asr_{kind}"] = float(np.mean(asrs[kind]))
        allv = np.max(np.stack([asrs[k] for k in asrs]), 0)
        out.update(asr=float(np.mean(allv)), asr_std=float(np.std(allv)))
        return out

    def train(mode, weights):
        """K victims on the rows with weight 1 (vmapped over the keys)."""
        w = jnp.asarray(weights, jnp.float32)
        f = features(module, variables, x)
        heads = jax.vmap(lambda k: train_head(f, y, w, k, 10, epochs=tr.head_epochs, learning_rate=tr.head_lr))(keys)
        vs = [with_head(variables, jax.tree.map(lambda a: a[i], heads)) for i in range(K)]
        if mode == "finetune":
            vs = [fine_tune(clf, v, x, y, w, jax.random.fold_in(k, 1), epochs=tr.ft_epochs, batch_size=tr.ft_batch_size,
                            learning_rate=tr.ft_lr, augment=bool(tr.augment)) for v, k in zip(vs, keys)]
        return vs

    base = {"threat": threat, "attack": attack, "poison_rate": float(pm.mean()), "n_victims": K}
    rows = []
    dp = config.defense_params
    for mode in config.modes:
        t1 = time.time()
        und = train(mode, np.ones(len(ya)))
        rows.append(dict(base, defense="none", mode=mode, **evaluate(und), seconds=time.time() - t1))
        for d in config.defenses:
            if d == "none":
                continue
            t1 = time.time()
            row = dict(base, defense=d, mode=mode)
            if d == "tcore":
                outs = [run_tcore(module, variables, x, y, 10, jax.random.fold_in(k, 7), cfg=tcfg, mode=mode,
                                  workdir=str(run_dir / f"tcore_{mode}_{i}"), progress=False)
                        for i, k in enumerate(keys)]
                row.update(evaluate([o.variables for o in outs]))
                pf = lambda m: float(pm[m].mean()) if m.any() else 0.0
                row.update(seed_poison_fraction=float(np.mean([pf(o.seed_mask) for o in outs])),
                           expanded_poison_fraction=float(np.mean([pf(o.expanded_mask) for o in outs])),
                           trusted_poison_fraction=float(np.mean([pf(o.trusted) for o in outs])),
                           trusted_fraction=float(np.mean([o.trusted.mean() for o in outs])),
                           flagged_channel_fraction=float(np.mean([o.info["flagged_channel_fraction"] for o in outs])),
                           unlearn_steps=float(np.mean([o.info["unlearn_steps"] for o in outs])))
            elif d == "clp":
                row.update(evaluate([R.clp(clf, v, u=dp.clp.u)[0] for v in und]))
            else:
                v0 = und[0]
                budget = max(float(pm.mean()), 0.01)
                if d == "activation_clustering":
                    rep = D.activation_clustering(features(module, v0, x) if mode == "linear" else
                                                  _penultimate(clf, v0, x), y, 10,
                                                  n_components=dp.activation_clustering.n_components,
                                                  size_threshold=dp.activation_clustering.size_threshold,
                                                  key=jax.random.fold_in(key, 11))
                elif d == "spectral_signatures":
                    rep = D.spectral_signatures(features(module, v0, x) if mode == "linear" else
                                                _penultimate(clf, v0, x), y, 10, poison_budget=budget,
                                                multiplier=dp.spectral_signatures.multiplier)
                else:
                    n_pool = max(10, int(round(dp.strip.clean_fraction * len(ye))))
                    rep = D.strip(lambda xx: logits(clf, v0, xx), x, xe_j[:n_pool], jax.random.fold_in(key, 12),
                                  n_overlay=dp.strip.n_overlay, frr=dp.strip.frr)
                tpr, fpr = D.detection_rates(rep.flags, pm)
                row.update(detection_tpr=float(tpr) if pm.any() else None, detection_fpr=float(fpr))
                row.update(evaluate(train(mode, ~np.asarray(rep.flags))))
            row["seconds"] = time.time() - t1
            rows.append(row)
    return {"rows": rows, "seconds": time.time() - t0}


def _penultimate(clf, v, x):
    from poisonjax.vision.tcore.common import predict_batched
    return jax.jit(lambda xx: predict_batched(lambda xb: clf.apply(v, xb, train=False, return_features=True), xx))(x)


# ------------------------------------------------------------------------------ report ---------

def _checks(rows):
    """The issue's "what must hold" statements, evaluated on these rows."""
    out = {}
    by = {(r["threat"], r["attack"], r["mode"], r["defense"]): r for r in rows}
    tc = [r for r in rows if r["defense"] == "tcore"]
    if tc:
        out["seed_poison_fraction<=0.01_every_dataset_attack"] = all(
            r["seed_poison_fraction"] <= 0.01 for r in tc if r["threat"] != "encoder")
        ok = []
        for r in tc:
            u = by.get((r["threat"], r["attack"], r["mode"], "none"))
            if u is not None and u["asr"] >= 0.8:
                ok.append(bool(r["asr"] <= 0.10 and r["clean_accuracy"] >= u["clean_accuracy"] - 0.03))
        out["tcore_asr<=0.10_acc_within_3pts_where_undefended_asr>=0.8"] = (all(ok) if ok else "no cell with undefended ASR >= 0.8")
        means = {}
        for r in rows:
            means.setdefault(r["defense"], []).append(r["asr"])
        rank = sorted(means, key=lambda d: np.mean(means[d]))
        out["mean_asr_by_defense"] = {d: float(np.mean(means[d])) for d in rank}
        out["tcore_mean_asr_rank(1=lowest)"] = rank.index("tcore") + 1
    return out


def _plot_and_report(wd, config, res):
    rows = res["rows"]
    grid, ylab, defenses = reporting.grid_from_rows(rows, lambda r: f"{r['threat']}/{r['attack']}/{r['mode']}",
                                                    "defense", "asr")
    reporting.save_heatmap(wd / "asr_heatmap.png", grid, ylab, defenses, colorbar_label="ASR", cell_width=0.9,
                           label_width=1.5, title=f"T-Core study: ASR (n_adapt={res['n_adapt']}, K={config.n_victims})")
    cols = ["threat", "attack", "defense", "mode", "clean_accuracy", "asr", "asr_dataset", "asr_encoder",
            "seed_poison_fraction", "expanded_poison_fraction", "trusted_poison_fraction",
            "flagged_channel_fraction", "detection_tpr", "detection_fpr", "seconds"]
    checks = "\n".join(f"- `{k}`: {v}" for k, v in res["checks"].items())
    reporting.write_report(wd, "T-Core: threats x attacks x defenses", [
        ("Setup", f"CIFAR-10 test set split 8,000/2,000; {res['n_adapt']} adaptation and {res['n_eval']} evaluation "
                  f"images used; encoder {res['encoder']}; K={config.n_victims}; total {res['seconds']:.0f} s."),
        ("Results (means over victims)", reporting.markdown_table(rows, cols)),
        ("Issue checks", checks or "(none applicable)")], ["asr_heatmap.png"])
