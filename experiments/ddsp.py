"""DDSP study: promote target items in a sequential recommender with injected fake users.

Pipeline (``run(config, workdir)``):

1. Load Beauty or Video (:func:`poisonjax.data.sequences.load_sequences`), leave-one-out split.
2. The attacker trains its own surrogate SASRec on the clean training data (its own seed) and
   reads off user representations and preferred items (:func:`poisonjax.recsys.attacks.build_surrogate`).
3. Targets at evenly spaced popularity ranks, down to the coldest item.
4. For every (ratio, target, method): generate the fake sequences, retrain K victims on clean +
   fake data with one vmapped, jitted trainer (the same compiled program for all methods, since
   the shapes agree), evaluate full-ranking target promotion and overall accuracy.
5. Write ``config.json``, ``results.json`` (per method: target/overall HR/NDCG, repetition,
   diversity, detector AUC; ``clean``), ``report.md`` with a table and the plot target HR@10 vs
   overall NDCG@10.

Stealth is measured as *paired* drops: dataset 0 of every training call is the clean data padded
with weight-0 fake rows, so clean victim ``k`` and poisoned victim ``k`` share the same init key,
shapes and shuffling key (real rows keep their relative order; batch boundaries shift by the
interleaved fake rows, so the pairing removes init noise, not all trajectory noise);
``paired_ndcg@10_drop`` averages ``clean_k - poisoned_k`` over targets
and seeds (``_std``: std over seeds of the target-averaged drop; ``_all``: the ``[K, targets]``
drops, for paired comparisons between methods). ``paired_ndcg@10_excl_target_drop`` is the same
with each target removed from the candidates, i.e. the damage to real preferences beyond the
target merely taking a top-k slot.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from poisonjax.core import reporting, study
from poisonjax.core.validation import PoisonJaxInputError, check_fraction, check_positive_int
from poisonjax.data.sequences import item_popularity, leave_one_out, load_sequences, training_pairs
from poisonjax.data.sequences import SequenceDataset, check_sequences, k_core
from poisonjax.data.synthetic import interaction_logs
from poisonjax.recsys import attacks as A
from poisonjax.recsys import metrics as M
from poisonjax.recsys.models import make_model
from poisonjax.recsys.training import early_stopping_trainer, make_trainer, train_early_stopping

KS = (5, 10, 20)


def early_stopping_maker(config, model, num_items):
    """:func:`poisonjax.recsys.training.early_stopping_trainer` from ``config.train``."""
    tc = config.train
    return early_stopping_trainer(model, num_items, max_epochs=tc.epochs, batch_size=tc.batch_size,
                                  lr=tc.learning_rate, loss=tc.loss, num_negatives=tc.num_negatives,
                                  eval_every=tc.eval_every, patience=tc.patience,
                                  victim_chunk=tc.victim_chunk or None, val_chunk=config.eval_chunk)


def val_subset(split, n_users: int, seed: int, which: str = "valid"):
    """``(seqs, items, exclude)`` of the validation items of ``n_users`` users drawn reproducibly
    (0 = all): early stopping ranks every item for these users every ``eval_every`` epochs."""
    U = split.valid_y.shape[0]
    idx = np.arange(U) if not n_users or n_users >= U else np.sort(
        np.random.default_rng(seed).choice(U, int(n_users), replace=False))
    return split.valid_x[idx], split.valid_y[idx], split.valid_x[idx]


def prepare(config, workdir=None):
    """Data, split, model, trainer, ranker, surrogate, targets (everything but the attacks)."""
    data_dir = config.data_dir or None
    if config.dataset == "synthetic":
        sc = config.synthetic
        seqs = interaction_logs(sc.num_users, sc.num_items, sc.mean_length, sc.zipf_a, min_length=4, seed=config.seed)
        seqs, item_ids, users = k_core(seqs, max(config.min_count, 1))
        ds = SequenceDataset(seqs, len(item_ids) - 1, item_ids, users, "synthetic")
    else:
        ds = load_sequences(config.dataset, data_dir, min_count=config.min_count,
                            num_users=config.num_users or None, seed=config.seed)
    mc = config.model
    split = leave_one_out(ds.sequences, mc.max_len)
    model = make_model(mc.name, ds.num_items, mc.max_len, mc.hidden, mc.dropout, mc.num_blocks, mc.num_heads)
    tc = config.train
    trainer = make_trainer(model, ds.num_items, epochs=tc.epochs, batch_size=tc.batch_size, lr=tc.learning_rate,
                           loss=tc.loss, num_negatives=tc.num_negatives)
    train_seqs = [s[:-2] for s in ds.sequences]           # what the attacker (and the victim) train on
    pop = item_popularity(train_seqs, ds.num_items)
    if config.attack.get("targets", ()):
        # explicit targets, as item ids of the data file: outside the catalog or removed by k-core -> clear error
        targets = np.array([ds.map_item(int(t)) if config.dataset != "synthetic" else A.check_target(t, ds.num_items)
                            for t in config.attack.targets])
    else:
        targets = A.select_targets(pop, config.attack.num_targets, config.attack.exclude_top)
    sur_name = config.get("surrogate_model", "") or mc.name
    if sur_name == mc.name:
        sur_model, sur_trainer = model, trainer
    else:  # gray-box: the attacker's surrogate architecture differs from the victim's
        sur_model = make_model(sur_name, ds.num_items, mc.max_len, mc.hidden, mc.dropout, mc.num_blocks, mc.num_heads)
        sur_trainer = make_trainer(sur_model, ds.num_items, epochs=tc.epochs, batch_size=tc.batch_size,
                                   lr=tc.learning_rate, loss=tc.loss, num_negatives=tc.num_negatives)
    if tc.get("early_stopping", False):
        # the attacker's own early stopping: its validation item is each user's LAST TRAINING item
        # (s[-3]); it trains on s[:-3] and never reads the victims' validation (s[-2]) or test (s[-1]) items
        att = leave_one_out([s[:-1] for s in ds.sequences if len(s) >= 4], mc.max_len)
        mk = early_stopping_maker(config, sur_model, ds.num_items)
        sur_p, sur_info = train_early_stopping(
            mk, jnp.asarray(att.train_x)[None], jnp.asarray(att.train_y)[None],
            jnp.ones((1, att.train_x.shape[0]), jnp.float32), jax.random.PRNGKey(config.surrogate_seed)[None],
            val_subset(att, tc.val_users, config.seed + 3, "valid"),
            workdir=None if workdir is None else Path(workdir) / "checkpoints" / "surrogate",
            checkpoint_every=tc.checkpoint_every, config=dict(role="surrogate"))
        sur_params = jax.tree.map(lambda a: a[0, 0], sur_p)
    else:
        sur_info = None
        sur_params = sur_trainer.train_single(jnp.asarray(split.train_x), jnp.asarray(split.train_y),
                                              jax.random.PRNGKey(config.surrogate_seed))
    sur = A.build_surrogate(sur_model, sur_params, *A.attacker_view(split), config.attack.num_preferred)
    ranker = M.make_ensemble_ranker(model, config.eval_chunk)
    return dict(ds=ds, split=split, model=model, trainer=trainer, pop=pop, sur=sur, targets=targets,
                ranker=ranker, train_seqs=train_seqs, sur_info=sur_info)


def evaluate(ctx, params, targets):
    """Overall and per-target full-ranking metrics of K stacked victims (per seed): one ranking pass
    scores each user's test item and every target."""
    sp = ctx["split"]
    U = sp.test_y.shape[0]
    items = np.concatenate([sp.test_y[:, None], np.tile(np.asarray(targets, np.int32)[None], (U, 1))], 1)
    r = np.asarray(ctx["ranker"](params, jnp.asarray(sp.test_x), jnp.asarray(items), jnp.asarray(sp.history)))
    out = {"overall": [M.hit_ndcg(rk[:, 0], KS) for rk in r], "targets": {}, "displacement": {}, "excl": {}}
    for j, t in enumerate(targets):
        mask = M.never_interacted(sp.history, sp.test_y, int(t))
        out["targets"][int(t)] = [M.hit_ndcg(rk[:, 1 + j], KS, weights=mask) for rk in r]
        out["displacement"][int(t)] = [M.target_displacement(rk[:, 0], rk[:, 1 + j], mask) for rk in r]
        # overall accuracy with the target removed from the candidates: rank - [target ranked above]
        out["excl"][int(t)] = [M.hit_ndcg(rk[:, 0] - (mask & (rk[:, 1 + j] < rk[:, 0])), (10,)) for rk in r]
    return out


def train_groups(trainer, xs, ys, ws, keys, group: int):
    """Train ``J x K`` victims with ``trainer.train_many`` in chunks of ``group`` datasets (0 = all at
    once; :func:`poisonjax.core.parallel.chunked_vmap` inside one compiled program)."""
    J = xs.shape[0]
    p = trainer.train_many(xs, ys, keys, ws, chunk=None if not group or group >= J else int(group))
    return [jax.tree.map(lambda l, i=i: l[i], p) for i in range(J)]


def train_groups_es(config, ctx, xs, ys, ws, keys, wd, tag):
    """Early-stopped ``J x K`` victims (:func:`poisonjax.recsys.training.train_early_stopping`), in
    groups of ``config.train_group`` datasets (one compiled program: the last group is padded with
    copies of dataset 0 and those are dropped), each group checkpointed under
    ``wd/checkpoints/<tag>_g<i>`` so a killed study resumes mid-cell from the group's last checkpoint.
    Returns ``(list of J stacked [K, ...] variables, info per group)``."""
    J = xs.shape[0]
    G = int(config.train_group) if config.train_group and config.train_group < J else J
    n_groups = -(-J // G)
    G = -(-J // n_groups)                                  # balanced groups, one shape
    mk = early_stopping_maker(config, ctx["model"], ctx["ds"].num_items)
    val = val_subset(ctx["split"], config.train.val_users, config.seed + 3)
    out, infos = [], []
    for g in range(n_groups):
        idx = np.arange(g * G, min(J, (g + 1) * G))
        pad = np.concatenate([idx, np.zeros(G - idx.size, int)])
        p, info = train_early_stopping(mk, xs[pad], ys[pad], ws[pad], keys, val,
                                       workdir=wd / "checkpoints" / f"{tag}_g{g}",
                                       checkpoint_every=config.train.checkpoint_every,
                                       config=dict(tag=tag, group=g, of=n_groups))
        out += [jax.tree.map(lambda l, i=i: l[i], p) for i in range(idx.size)]
        infos.append(dict(info, datasets=idx.tolist()))
        study.main_print(f"{tag} group {g + 1}/{n_groups}: stopped after {info['epochs']} epochs, best epochs "
                         f"{np.asarray(info['best_epoch'])[:idx.size].min()}..{np.asarray(info['best_epoch'])[:idx.size].max()}")
    return out, infos


def ablation_diagnostics(ctx, jobs, fakes, targets, ac):
    r"""Why the dual objective may or may not matter (issue 23: "find out why before changing anything").

    Per target: ``cos_dual_plain`` = cosine between the population directions
    :math:`\bar g = \mathrm{mean}_u -\nabla_{e_t}\mathcal L_u` of the dual and the plain objective on the
    surrogate (the only place the two enter DDSP's generator: if they point the same way, ``ddsp`` and
    ``ddsp_no_dual`` generate near-identical fakes); ``item_jaccard_ddsp_no_dual`` = Jaccard overlap of the
    item sets the two variants' fake users contain (target excluded); ``same_position_share`` = share of
    positions holding the same item in both."""
    out = {}
    sur = ctx["sur"]
    users = jnp.arange(min(1024, sur.H.shape[0]))
    idx = {(t, m): j for j, (t, m) in enumerate(jobs)}
    for t in targets:
        d = {}
        gd = np.asarray(A.target_directions(sur, t, users, "dual", ac.tau, ac.beta)).mean(0)
        gp = np.asarray(A.target_directions(sur, t, users, "plain", ac.tau, ac.beta)).mean(0)
        d["cos_dual_plain"] = float(gd @ gp / max(np.linalg.norm(gd) * np.linalg.norm(gp), 1e-12))
        if (t, "ddsp") in idx and (t, "ddsp_no_dual") in idx:
            a, b = np.asarray(fakes[idx[(t, "ddsp")]]), np.asarray(fakes[idx[(t, "ddsp_no_dual")]])
            sa, sb = set(a[(a > 0) & (a != t)].tolist()), set(b[(b > 0) & (b != t)].tolist())
            d["item_jaccard_ddsp_no_dual"] = len(sa & sb) / max(len(sa | sb), 1)
            valid = (a > 0) | (b > 0)
            d["same_position_share"] = float(((a == b) & valid).sum() / max(valid.sum(), 1))
        out[str(t)] = d
    return out


def fake_metrics(ctx, fake, target, use_length=False):
    ds = ctx["ds"]
    real = ds.sequences
    return dict(target_repetition=M.target_repetition(fake, target), distinct_ratio=M.distinct_ratio(fake),
                usage_entropy=M.usage_entropy(fake, ds.num_items),
                popularity_distance=M.popularity_distance(fake, real, ds.num_items),
                length_distance=M.length_distance((fake > 0).sum(1), [len(s) for s in real]),
                detector_auc=M.detector_auc(real, fake, ds.num_items, use_length=use_length))


def poisoned_data(ctx, fake):
    """Clean training pairs + the fake sequences' pairs (``fake`` may be ``None``: masked zeros)."""
    sp = ctx["split"]
    L = sp.train_x.shape[1]
    rows = [r[r > 0] for r in np.asarray(fake)]          # padding past each fake user's length dropped
    check_sequences("fake sequences", rows, ctx["ds"].num_items)
    fx, fy = training_pairs(rows, L)
    return (jnp.asarray(np.concatenate([sp.train_x, fx])), jnp.asarray(np.concatenate([sp.train_y, fy])),
            jnp.ones((sp.train_x.shape[0] + fx.shape[0],), jnp.float32))


def _avg(dicts):
    keys = dicts[0].keys()
    return {k: float(np.mean([d[k] for d in dicts])) for k in keys}


def run(config, workdir) -> dict:
    """Run the study (module doc) and return the results dict."""
    study.upgrade_config(config)
    check_positive_int("config.n_victims", config.n_victims)
    ac = config.attack
    for r in [ac.fake_ratio] + list(ac.extra_ratios):
        check_fraction("attack.fake_ratio", r)
    if ac.fake_length:
        A.check_fake_length(ac.fake_length)
    if ac.length_dist not in ("real", "fixed"):
        raise PoisonJaxInputError(f"attack.length_dist must be 'real' or 'fixed', got {ac.length_dist!r}")
    for m in ac.methods:
        if m not in A.METHODS:
            raise PoisonJaxInputError(f"unknown method {m!r} in attack.methods; expected some of {list(A.METHODS)}")
    wd = study.prepare_workdir(workdir, config)   # refuses a workdir of another config
    t0 = time.time()
    ctx = prepare(config, wd)
    ds, sp = ctx["ds"], ctx["split"]
    targets = [int(t) for t in ctx["targets"]]
    fake_len = A.check_fake_length(ac.fake_length or int(round(float(ds.lengths().mean()))))
    real_lengths = A.check_fake_length(ac.max_fake_length or config.model.max_len)
    keys = jax.random.split(jax.random.PRNGKey(config.seed), config.n_victims)
    gen_kw = dict(alpha=ac.alpha, beta_utility=ac.beta_utility, target_bonus=ac.target_bonus,
                  max_target_share=ac.max_target_share, max_target_per_seq=ac.max_target_per_seq,
                  within_penalty=ac.within_penalty,
                  global_penalty=ac.global_penalty, max_item_share=ac.max_item_share,
                  num_candidates=ac.num_candidates, temperature=ac.temperature, tau=ac.tau, beta=ac.beta)
    ratios = [ac.fake_ratio] + [r for r in ac.extra_ratios if r != ac.fake_ratio]
    by_ratio, clean = {}, None
    for ratio in ratios:
        F = A.num_fake_users(ds.num_users, ratio)
        if ac.length_dist == "real":   # the same sampled lengths for every method (paired comparison)
            lengths = A.sample_lengths(ds.lengths(), F, config.seed + 11, real_lengths)
            T = int(lengths.max())
        else:
            lengths, T = None, fake_len
        jobs = [(t, m) for t in targets for m in ac.methods]
        fakes, gen_s = [], []
        for j, (t, m) in enumerate(tqdm(jobs, desc=f"generate (ratio {ratio})")):
            key = jax.random.fold_in(jax.random.PRNGKey(config.seed + 7), j)
            tg = time.time()
            fakes.append(A.generate_fake(m, ctx["sur"], t, F, T, key, ctx["pop"], lengths=lengths, **gen_kw))
            gen_s.append(time.time() - tg)
        # dataset 0 = clean (fake rows are weight-0 padding): the same shapes for every victim
        data = [poisoned_data(ctx, np.ones((F, T), np.int32))]
        data[0] = (data[0][0], data[0][1], data[0][2].at[sp.train_x.shape[0]:].set(0.0))
        data += [poisoned_data(ctx, f) for f in fakes]
        xs, ys, ws = (jnp.stack([d[i] for d in data]) for i in range(3))
        study.main_print(f"training {len(data)} x {config.n_victims} victims (vmapped, groups of {config.train_group or len(data)})")
        tt = time.time()
        if config.train.get("early_stopping", False):
            params, es_info = train_groups_es(config, ctx, xs, ys, ws, keys, wd, f"ratio{ratio}")
        else:
            params, es_info = train_groups(ctx["trainer"], xs, ys, ws, keys, config.train_group), None
        train_s = time.time() - tt
        # clean victims of this ratio's data shape: the same init and batch order as the poisoned ones
        # (fake rows weight 0), so poisoned - clean is a paired difference per seed
        clean_r = evaluate(ctx, params[0], targets)
        clean = clean_r if clean is None else clean
        res = {}
        for j, (t, m) in enumerate(tqdm(jobs, desc="evaluate")):
            res.setdefault(m, {})[t] = dict(eval=evaluate(ctx, params[j + 1], [t]), fake=fake_metrics(ctx, fakes[j], t, ac.length_dist == "real"),
                                            gen_seconds=gen_s[j], example=fakes[j][0].tolist())
        by_ratio[ratio] = {m: summarize(res[m], clean_r, ctx["pop"]) for m in ac.methods}
        paired_vs_ddsp(by_ratio[ratio])
        by_ratio[ratio]["_train_seconds"] = train_s
        by_ratio[ratio]["_clean"] = summarize_clean(clean_r, targets, ctx["pop"])
        by_ratio[ratio]["_diagnostics"] = ablation_diagnostics(ctx, jobs, fakes, targets, ac)
        if es_info is not None:
            be = np.concatenate([np.asarray(i["best_epoch"])[:len(i["datasets"])] for i in es_info])   # [J, K]
            by_ratio[ratio]["_early_stopping"] = dict(
                clean_best_epoch=be[0].tolist(), best_epoch_mean=float(be.mean()), best_epoch_max=int(be.max()),
                epochs_run=[i["epochs"] for i in es_info], resumed_from=[i["resumed_from"] for i in es_info])
        if len(ratios) > 1 and ratio != ratios[-1]:      # partial results: every finished ratio
            _assemble_and_write(wd, config, by_ratio, ratios, ctx, t0,
                                lengths if ac.length_dist == "real" else None, fake_len)
    return _assemble_and_write(wd, config, by_ratio, ratios, ctx, t0, lengths if ac.length_dist == "real" else None,
                               fake_len)


BY_RATIO_KEYS = ("target_hr@10", "target_ndcg@10", "target_hr@10_std", "overall_hr@10", "overall_ndcg@10",
                 "paired_ndcg@10_drop", "paired_ndcg@10_drop_std", "paired_ndcg@10_drop_se", "paired_hr@10_drop",
                 "paired_hr@10_drop_se", "paired_ndcg@10_excl_target_drop", "paired_ndcg@10_excl_target_drop_std",
                 "paired_ndcg@10_excl_target_drop_se", "paired_ndcg@10_drop_all",
                 "paired_ndcg@10_excl_target_drop_all", "paired_ndcg@10_minus_ddsp", "paired_ndcg@10_minus_ddsp_se",
                 "detector_auc", "target_repetition", "distinct_ratio", "usage_entropy", "popularity_distance",
                 "per_bucket_hr@10", "per_bucket_ndcg@10", "target_displacement_ndcg@10")


def _assemble_and_write(wd, config, by_ratio, ratios, ctx, t0, lengths, fake_len):
    """``results`` (main ratio = the first finished; ``by_ratio`` = every finished ratio, with its
    clean victims, training seconds and early-stopping epochs), written to ``wd`` (results.json,
    report.md, plot). Called after every ratio, so a stopped run leaves its finished ratios."""
    ac, ds, targets = config.attack, ctx["ds"], [int(t) for t in ctx["targets"]]
    done = [r for r in ratios if r in by_ratio]
    main = done[0]
    results = {m: v for m, v in by_ratio[main].items() if not m.startswith("_")}
    results["clean"] = by_ratio[main]["_clean"]
    results["meta"] = dict(dataset=config.dataset, train_seconds=by_ratio[main]["_train_seconds"],
                           num_users=ds.num_users, num_items=ds.num_items,
                           num_interactions=ds.num_interactions, num_fake=A.num_fake_users(ds.num_users, main),
                           fake_ratio=main, fake_length=fake_len, length_dist=ac.length_dist,
                           fake_length_mean=float(np.mean(lengths)) if lengths is not None else fake_len,
                           targets=targets,
                           target_popularity={str(t): int(ctx["pop"][t]) for t in targets},
                           buckets={str(t): A.popularity_bucket(t, ctx["pop"]) for t in targets},
                           n_victims=config.n_victims, seconds=time.time() - t0, ratios_done=done,
                           ratios_planned=list(ratios), surrogate_early_stopping=ctx.get("sur_info"),
                           early_stopping=by_ratio[main].get("_early_stopping"))
    if len(ratios) > 1:
        results["by_ratio"] = {
            str(r): dict({m: {k: v[k] for k in BY_RATIO_KEYS if k in v} for m, v in by_ratio[r].items()
                          if m in ac.methods},
                         clean=by_ratio[r]["_clean"], train_seconds=by_ratio[r]["_train_seconds"],
                         num_fake=A.num_fake_users(ds.num_users, r),
                         early_stopping=by_ratio[r].get("_early_stopping"),
                         diagnostics=by_ratio[r].get("_diagnostics"))
            for r in done}
    results["diagnostics"] = by_ratio[main].get("_diagnostics")
    write_outputs(results, ac.methods, wd)
    return results


def paired_vs_ddsp(summaries):
    """Add ``paired_<metric>_minus_ddsp`` (mean over the same (seed, target) pairs of this method's
    paired drop minus DDSP's) and ``..._se`` (its standard error) to every method, if DDSP ran:
    the comparison of accuracy costs with the clean-victim noise cancelled."""
    if "ddsp" not in summaries:
        return
    for m, v in summaries.items():
        for name in ("ndcg@10", "ndcg@10_excl_target"):
            d = np.asarray(v[f"paired_{name}_drop_all"]) - np.asarray(summaries["ddsp"][f"paired_{name}_drop_all"])
            v[f"paired_{name}_minus_ddsp"] = float(d.mean())
            v[f"paired_{name}_minus_ddsp_se"] = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")


def summarize_clean(clean, targets, pop):
    ov = clean["overall"]
    out = {f"overall_{k}": float(np.mean([d[k] for d in ov])) for k in ov[0]}
    out.update({f"overall_{k}_std": float(np.std([d[k] for d in ov])) for k in ("hr@10", "ndcg@10")})
    per_t = {t: _avg(clean["targets"][t]) for t in targets}
    out.update({f"target_{k}": float(np.mean([p[k] for p in per_t.values()])) for k in next(iter(per_t.values()))})
    out["per_target"] = {str(t): per_t[t] for t in targets}
    out["overall_per_seed"] = [{k: d[k] for k in ("hr@10", "ndcg@10", "hr@20", "ndcg@20")} for d in ov]
    for key, col in (("per_bucket_hr@10", "hr@10"), ("per_bucket_ndcg@10", "ndcg@10")):
        b = {}
        for t in targets:
            b.setdefault(A.popularity_bucket(t, pop), []).append(per_t[t][col])
        out[key] = {k: float(np.mean(v)) for k, v in b.items()}
    return out


def summarize(per_target, clean, pop):
    """Average a method over targets (and seeds); std over seeds of the target-averaged metrics."""
    targets = list(per_target)
    K = len(clean["overall"])
    seed_target = np.array([[per_target[t]["eval"]["targets"][t][k]["hr@10"] for t in targets] for k in range(K)])
    seed_tndcg = np.array([[per_target[t]["eval"]["targets"][t][k]["ndcg@10"] for t in targets] for k in range(K)])
    seed_overall = np.array([[per_target[t]["eval"]["overall"][k]["ndcg@10"] for t in targets] for k in range(K)])
    seed_overall_hr = np.array([[per_target[t]["eval"]["overall"][k]["hr@10"] for t in targets] for k in range(K)])
    clean_nd = np.mean([d["ndcg@10"] for d in clean["overall"]])
    clean_hr = np.mean([d["hr@10"] for d in clean["overall"]])
    out = {}
    for k in KS:
        out[f"target_hr@{k}"] = float(np.mean([_avg(per_target[t]["eval"]["targets"][t])[f"hr@{k}"] for t in targets]))
        out[f"target_ndcg@{k}"] = float(np.mean([_avg(per_target[t]["eval"]["targets"][t])[f"ndcg@{k}"] for t in targets]))
    out["target_hr@10_std"] = float(seed_target.mean(1).std())
    out["target_ndcg@10_std"] = float(seed_tndcg.mean(1).std())
    out["overall_hr@10"] = float(seed_overall_hr.mean())
    out["overall_ndcg@10"] = float(seed_overall.mean())
    out["overall_ndcg@10_std"] = float(seed_overall.mean(1).std())
    out["overall_hr@10_drop"] = float(clean_hr - out["overall_hr@10"])
    out["overall_ndcg@10_drop"] = float(clean_nd - out["overall_ndcg@10"])
    # paired drops: victim k retrained on poisoned data vs clean victim k (same init / batch order), per
    # target; mean over (target, seed), std over seeds of the target-averaged drop
    c_nd = np.array([d["ndcg@10"] for d in clean["overall"]])[:, None]
    c_hr = np.array([d["hr@10"] for d in clean["overall"]])[:, None]
    d_nd, d_hr = c_nd - seed_overall, c_hr - seed_overall_hr                      # [K, T]
    ex = lambda ev, t, m: np.array([d[m] for d in ev["excl"][t]])
    d_ex = np.array([ex(clean, t, "ndcg@10") - ex(per_target[t]["eval"], t, "ndcg@10") for t in targets]).T
    for name, d in (("ndcg@10", d_nd), ("hr@10", d_hr), ("ndcg@10_excl_target", d_ex)):
        out[f"paired_{name}_drop"] = float(d.mean())
        out[f"paired_{name}_drop_std"] = float(d.mean(1).std())
        # standard error of the mean drop: over the K seeds of the target-averaged drop (targets share a
        # clean victim per seed, so seeds are the independent units)
        out[f"paired_{name}_drop_se"] = float(d.mean(1).std(ddof=1) / np.sqrt(K)) if K > 1 else float("nan")
        out[f"paired_{name}_drop_all"] = d.tolist()
    for f in ("target_repetition", "distinct_ratio", "usage_entropy", "popularity_distance", "length_distance",
              "detector_auc"):
        out[f] = float(np.nanmean([per_target[t]["fake"][f] for t in targets]))
    out["target_displacement_ndcg@10"] = float(np.mean([np.mean(per_target[t]["eval"]["displacement"][t])
                                                        for t in targets]))
    out["gen_seconds"] = float(np.mean([per_target[t]["gen_seconds"] for t in targets]))
    out["per_target"] = {str(t): dict(hr10=_avg(per_target[t]["eval"]["targets"][t])["hr@10"],
                                      ndcg10=_avg(per_target[t]["eval"]["targets"][t])["ndcg@10"],
                                      bucket=A.popularity_bucket(t, pop), example=per_target[t]["example"])
                         for t in targets}
    buckets, bnd = {}, {}
    for t in targets:
        buckets.setdefault(A.popularity_bucket(t, pop), []).append(out["per_target"][str(t)]["hr10"])
        bnd.setdefault(A.popularity_bucket(t, pop), []).append(out["per_target"][str(t)]["ndcg10"])
    out["per_bucket_hr@10"] = {b: float(np.mean(v)) for b, v in buckets.items()}
    out["per_bucket_ndcg@10"] = {b: float(np.mean(v)) for b, v in bnd.items()}
    return out


COLUMNS = ["method", "target_hr@10", "target_ndcg@10", "overall_hr@10", "overall_ndcg@10", "ndcg@10 drop (paired)",
           "ndcg@10 drop, target excluded", "drop minus DDSP's (paired)", "target_displacement_ndcg@10",
           "target_repetition", "distinct_ratio", "usage_entropy", "detector_auc"]


def _pm(res, name):
    return f"{res[f'paired_{name}_drop']:.5f} ± {res[f'paired_{name}_drop_std']:.5f}"


def _row(m, res):
    r = {c: res[c] for c in COLUMNS[1:] if c in res}
    r["ndcg@10 drop (paired)"] = _pm(res, "ndcg@10")
    r["ndcg@10 drop, target excluded"] = _pm(res, "ndcg@10_excl_target")
    if "paired_ndcg@10_minus_ddsp" in res:
        r["drop minus DDSP's (paired)"] = f"{res['paired_ndcg@10_minus_ddsp']:+.5f} ± {res['paired_ndcg@10_minus_ddsp_se']:.5f}"
    return dict(method=m, **r)


def write_outputs(results, methods, wd):
    rows = [dict(method="clean", **{c: results["clean"].get(c, "") for c in COLUMNS[1:5]})]
    rows += [_row(m, results[m]) for m in methods]
    meta = results["meta"]
    keep = ("target_hr@10", "target_ndcg@10", "overall_hr@10", "overall_ndcg@10", "paired_ndcg@10_drop",
            "paired_ndcg@10_drop_std", "paired_ndcg@10_excl_target_drop", "paired_ndcg@10_excl_target_drop_std",
            "paired_ndcg@10_minus_ddsp", "paired_ndcg@10_minus_ddsp_se", "target_displacement_ndcg@10",
            "target_repetition", "distinct_ratio", "usage_entropy", "detector_auc")
    flat = [{"dataset": meta["dataset"], "method": m, "budget": 0.0 if m == "clean" else meta["fake_ratio"],
             "n_victims": meta["n_victims"], **{k: results[m][k] for k in keep if k in results[m]}}
            for m in ["clean"] + list(methods)]
    results.pop("rows", None)
    results.update(study.write_results(wd, flat, **results))
    fig, ax = reporting.new_figure(figsize=(6.5, 4.5))
    ax.scatter([results["clean"]["overall_ndcg@10"]], [results["clean"]["target_hr@10"]], marker="x", c="k")
    ax.annotate("clean", (results["clean"]["overall_ndcg@10"], results["clean"]["target_hr@10"]), fontsize=8)
    for m in methods:
        ax.scatter([results[m]["overall_ndcg@10"]], [results[m]["target_hr@10"]], c="tab:red" if m == "ddsp" else "tab:blue")
        ax.annotate(m, (results[m]["overall_ndcg@10"], results[m]["target_hr@10"]), fontsize=8)
    ax.set_xlabel("overall NDCG@10 (real users' test items)")
    ax.set_ylabel("target HR@10 (avg over targets)")
    ax.set_title(f"DDSP study: promotion vs accuracy ({results['meta']['dataset']})")
    reporting.save_figure(fig, wd / "promotion_vs_accuracy.png")
    buckets = "\n".join(f"- {m}: " + ", ".join(f"{b} {v:.4f}" for b, v in results[m]["per_bucket_hr@10"].items())
                        for m in methods)
    sections = [("Setting", f"{meta['dataset']}: {meta['num_users']} users, {meta['num_items']} items; "
                            f"{meta['num_fake']} fake users ({meta['fake_ratio']:.1%}) of length {meta['fake_length']}; "
                            f"targets {meta['targets']} (popularity {meta['target_popularity']}); "
                            f"K={meta['n_victims']} victims; {meta['seconds']:.0f} s."),
                ("Results (mean over targets and seeds)", reporting.markdown_table(rows, COLUMNS)),
                ("Target HR@10 per target (item id: bucket)",
                 reporting.markdown_table([dict(method="clean", **{f"{t}: {meta['buckets'][str(t)]}":
                                                                    results["clean"]["per_target"][str(t)]["hr@10"]
                                                                    for t in meta["targets"]})] +
                                          [dict(method=m, **{f"{t}: {meta['buckets'][str(t)]}":
                                                             results[m]["per_target"][str(t)]["hr10"]
                                                             for t in meta["targets"]}) for m in methods])),
                ("Target HR@10 per popularity bucket", buckets),
                ("Notes", "Full ranking over all items (history removed). `ndcg@10 drop (paired)` = clean minus "
                          "poisoned overall NDCG@10, per victim seed against the clean victim with the same seed, "
                          "init and batch order (fake rows weight 0), averaged over targets; ± = std over the K "
                          "seeds of the target-averaged drop. `target excluded`: the same with the target removed "
                          "from every user's candidates, i.e. the damage to real preferences beyond the target "
                          "simply taking a slot (`target_displacement_ndcg@10`). `drop minus DDSP's`: this method's "
                          "paired drop minus DDSP's over the same (seed, target) pairs, ± its standard error (the "
                          "clean-victim noise cancels). `detector_auc`: logistic "
                          "regression on content features with leave-self-out popularity"
                          + (" and log length (fake lengths follow the real distribution)"
                             if meta.get("length_dist") == "real" else " (no length: fixed fake length)")
                          + ", 5-fold CV; 0.5 = undetectable.")]
    reporting.write_report(wd, "DDSP: diversity-aware dual-promotion poisoning", sections, ["promotion_vs_accuracy.png"])
    study.main_print(reporting.text_table(rows, COLUMNS))
