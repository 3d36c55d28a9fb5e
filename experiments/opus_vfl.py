"""OPUS-VFL study (issue 19): vanilla VFL, fixed DP and OPUS-VFL under label inference (passive model
completion and the active malicious-optimizer variant), feature inference (GRN) and a gradient-replacement
backdoor, on vertical image strips.

Per dataset, training runs (each resumable through :func:`poisonjax.core.runner.run` under
``workdir/runs/<dataset>__<defense>__<run>``):

* ``clean`` for each defense: gives ``accuracy``, the passive label inference (``lia_passive``: model
  completion by every passive party, averaged), feature inference (``fia``) and the rewards;
* ``lia_active``: the attacker party amplifies its own updates during training, then runs model completion;
* ``backdoor``: the malicious passive party's gradient replacement, then the ASR.

Resuming: the training runs checkpoint every 50 rounds (and keep their final checkpoint), each finished
evaluation attack (a model completion, the GRN) is kept in ``cells/<cell>.partial.json`` until the cell is
written, and a finished cell is never recomputed; so a killed study resumes mid-training or mid-evaluation and
ends with the same results as an uninterrupted run. (One attack optimisation -- a MixMatch or GRN scan of
``lia_steps`` / ``fia_steps`` steps -- is redone whole if the kill falls inside it.)

OPUS runs first; fixed DP uses OPUS's average eps (over passive parties and rounds). Vanilla and fixed DP pay
the equal split; OPUS pays its rewards. An extra OPUS run with one party's strip replaced by pure noise checks
who gets the least. ``results.json`` holds ``rows`` (one per dataset, defense, attack), ``trajectories`` (eps and
rewards per round), ``claims`` (the issue's "what must hold", measured) and ``seconds``.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import jax
import numpy as np

from poisonjax.core import reporting
from poisonjax.core.validation import PoisonJaxInputError, check_choice
from poisonjax.federated.vertical import attacks as A
from poisonjax.federated.vertical import engine as E
from poisonjax.federated.vertical import federation as F

DATASETS = ("mnist", "cifar10_20k", "cifar10", "digits")
DEFENSES = ("opus", "fixed_dp", "vanilla")


def _load(name, c):
    """(x_train, y_train, x_test, y_test) for a study dataset name."""
    from poisonjax.data import images as I
    if name == "digits":
        d = I.load_digits(seed=c.seed)
    elif name == "mnist":
        d = I.load_mnist(n_test=c.n_test, seed=c.seed)
    elif name == "cifar10":
        d = I.load_cifar10_jpeg(n_test=c.n_test, seed=c.seed)
    else:  # the 20k CIFAR-10 set (1,000/class train, full test; n_test: a stratified subset, seed + 1)
        d = I.load_cifar10_20k(n_test=c.n_test, seed=c.seed)
    return d.x_train, d.y_train, d.x_test, d.y_test


def _federation(c, x, y, xte, yte, noise_party=-1):
    p = int(c.num_parties)
    sw = None
    if c.strip_width:
        from poisonjax.federated.vertical.data import strip_widths_for
        sw = strip_widths_for(x.shape[2], p, int(c.strip_width))
    return F.build_federation(
        x, y, xte, yte, num_parties=p, strip_widths=sw, hidden=c.hidden,
        hidden_widths=tuple(c.hidden_widths) or None, embed_dim=c.embed_dim, top_hidden=c.top_hidden,
        val_size=c.val_size, noise_party=noise_party, cost_scale=c.cost_scale, seed=c.seed,
        batch_size=c.batch_size, val_batch=c.val_batch, lr=c.lr, momentum=c.momentum, mechanism=c.mechanism,
        delta=c.delta, clip_norm=c.clip_norm, eps_min=c.eps_min, eps_max=c.eps_max, eps_lr=c.eps_lr, fd_h=c.fd_h,
        eps_warmup=c.eps_warmup, grad_clip=c.grad_clip,
        alpha=c.alpha, beta=c.beta, tau=c.tau, drop_mode=c.drop_mode)


def _validate(c):
    for d in c.datasets:
        check_choice("config.datasets", d, DATASETS)
    if c.rounds < 1:
        raise PoisonJaxInputError(f"config.rounds must be >= 1, got {c.rounds}")
    if not 0 < c.lia_active_party < c.num_parties or not 0 < c.fia_party < c.num_parties \
            or not 0 < c.bd_party < c.num_parties:
        raise PoisonJaxInputError("config.lia_active_party, fia_party and bd_party must be passive parties "
                                  f"in [1, {c.num_parties - 1}]")


def _summary(metrics, p):
    """Per-round trajectories and per-party means from the runner's metrics."""
    traj = {"eps": {f"p{k}": [m[f"eps_p{k}"] for m in metrics] for k in range(1, p)},
            "reward": {f"p{k}": [m[f"reward_p{k}"] for m in metrics] for k in range(1, p)},
            "contrib": {f"p{k}": [m[f"contrib_p{k}"] for m in metrics] for k in range(p)}}
    budget_err = max(abs(m["budget_sum"] - 1.0) for m in metrics) if metrics else 0.0
    means = {}
    for k in range(1, p):
        means[f"reward_p{k}"] = float(np.mean(traj["reward"][f"p{k}"]))
        means[f"utility_p{k}"] = float(np.mean([m[f"utility_p{k}"] for m in metrics]))
        means[f"eps_p{k}"] = float(np.mean(traj["eps"][f"p{k}"]))
    for k in range(p):
        means[f"contrib_p{k}"] = float(np.mean(traj["contrib"][f"p{k}"]))
    return traj, means, budget_err, float(metrics[-1]["bytes"]) if metrics else 0.0


def _train_eval(c, fed, wd, ds, defense, run, eps, progress):
    """Train one run (resumable) and evaluate what it is for; cached in ``wd/cells``."""
    cell_path = wd / "cells" / f"{ds}__{defense}__{run}.json"
    if cell_path.exists():
        return json.loads(cell_path.read_text())
    t0 = time.time()
    p = fed.spec.num_parties
    kw = {}
    if run == "lia_active":
        gs = np.ones((p,), np.float32)
        gs[c.lia_active_party] = c.lia_active_scale
        kw["grad_scale"] = gs
    if run == "backdoor":
        known = np.flatnonzero(fed.y == c.target_class)[:c.n_known]
        kw.update(backdoor=True, bd_party=c.bd_party, known_ids=known, bd_gamma=c.bd_gamma,
                  trigger_size=c.trigger_size, n_known=c.n_known)
    pb = F.make_problem(fed, defense, eps=eps, n_known=c.n_known, grad_dp=bool(c.grad_dp),
                        **{k: v for k, v in kw.items() if k != "n_known"})
    res = F.train(fed, pb, c.rounds, wd / "runs" / f"{ds}__{defense}__{run}", seed=c.seed,
                  config={"cfg": c.to_dict(), "ds": ds, "defense": defense, "run": run, "eps": eps},
                  progress=progress, desc=f"{ds}/{defense}/{run}")
    st = res.state
    key = jax.random.PRNGKey(c.seed + 17)
    dpm = np.asarray(F.dp_mask(pb))
    traj, means, budget_err, nbytes = _summary(res.metrics, p)
    noised = bool(c.eval_noise)
    cell = {"dataset": ds, "defense": defense, "run": run,
            "accuracy": F.test_accuracy(fed, st, pb, key, noised=noised),
            "accuracy_noised_inference": F.test_accuracy(fed, st, pb, key, noised=True),
            "final_eps": np.asarray(st.eps).tolist(), "budget_max_error": budget_err, "bytes_per_round": nbytes,
            "trajectories": traj, **means}
    aux = A.aux_indices(fed.y, c.lia_aux_per_class, fed.spec.num_classes, c.seed)
    unl = slice(0, min(c.lia_unlabelled, len(fed.y)))
    # each finished attack optimisation of the evaluation is kept in a partial file until the cell is written,
    # so a study killed during the evaluation redoes only the attack it was in (the training is restored
    # from its final checkpoint)
    partial_path = cell_path.with_suffix(".partial.json")
    partial = json.loads(partial_path.read_text()) if partial_path.exists() else {}

    def memo(name, fn):
        if name not in partial:
            partial[name] = fn()
            tmp = partial_path.with_suffix(".tmp")
            reporting.write_json(tmp, partial)
            os.replace(tmp, partial_path)
        return partial[name]

    def completion(k, bottom_params, finetune=c.lia_finetune_bottom, tag="trained"):
        return memo(f"lia_{tag}_p{k}_{'finetune' if finetune else 'frozen'}", lambda: A.model_completion(
            fed.spec, jax.random.fold_in(key, 100 + k), A.party_params(bottom_params, k), fed.hmask[k],
            fed.x[k, aux], fed.y[aux], fed.x[k, unl], fed.xte[k], fed.yte, steps=c.lia_steps,
            finetune_bottom=finetune))

    if run == "clean":
        parties = list(c.lia_parties) or list(range(1, p))
        lia = {f"lia_accuracy_p{k}": completion(k, st.params["bottom"]) for k in parties}
        cell.update(lia)
        cell["lia_accuracy"] = float(np.mean(list(lia.values())))
        # the attack with the bottom model frozen (head only): what the federation's training taught the bottom
        fro = {f"lia_frozen_accuracy_p{k}": completion(k, st.params["bottom"], False) for k in parties}
        cell.update(fro)
        cell["lia_frozen_accuracy"] = float(np.mean(list(fro.values())))
        if c.lia_floor and defense == "vanilla":
            # the floor no defense of the exchanged tensors can go below: the same attack from a never-trained bottom
            fresh = E.init_params(fed.spec, jax.random.PRNGKey(c.seed + 991))["bottom"]
            cell["lia_floor_accuracy"] = float(np.mean([completion(k, fresh, tag="fresh") for k in parties]))
            cell["lia_frozen_floor_accuracy"] = float(np.mean([completion(k, fresh, False, tag="fresh")
                                                               for k in parties]))
        fr = slice(0, min(c.fia_rows, len(fed.y)))
        fia_aux = A.aux_indices(fed.y[fr], max(c.fia_aux // fed.spec.num_classes, 1), fed.spec.num_classes,
                                c.seed) if c.fia_aux else None

        def fia_run():
            fia = A.grn_feature_inference(fed.spec, jax.random.fold_in(key, 7), st.params, fed.hmask, dpm, st.eps,
                                          fed.x[:, fr], fed.vd.widths, c.fia_party, steps=c.fia_steps,
                                          w_embed=c.fia_w_embed, w_out=c.fia_w_out, w_prior=c.fia_w_prior,
                                          aux_idx=fia_aux, w_sup=c.fia_w_sup)
            np.save(wd / "cells" / f"{ds}__{defense}__fia_recon.npy", fia["reconstruction"][:16])
            return [fia["fia_mse"], fia["fia_mse_mean_image"]]
        cell["fia_mse"], cell["fia_mse_mean_image"] = memo("fia", fia_run)
    elif run == "lia_active":
        cell["lia_accuracy"] = completion(c.lia_active_party, st.params["bottom"])
    elif run == "backdoor":
        cell["asr"] = A.backdoor_asr(fed.spec, jax.random.fold_in(key, 9), st.params, fed.hmask,
                                     dpm if noised else np.zeros_like(dpm), st.eps,
                                     fed.xte, fed.yte, bd_party=c.bd_party, strip_shape=fed.vd.strip_shapes[c.bd_party],
                                     target_class=c.target_class, trigger_size=c.trigger_size)
    cell["seconds"] = time.time() - t0
    tmp = cell_path.with_suffix(".tmp")                 # atomic: a killed write never looks finished
    reporting.write_json(tmp, cell)
    os.replace(tmp, cell_path)
    partial_path.unlink(missing_ok=True)
    return cell


def _rows(cells, p):
    rows = []
    for cell in cells:
        base = {"dataset": cell["dataset"], "defense": cell["defense"]}
        rew = {f"reward_p{k}": cell[f"reward_p{k}"] for k in range(1, p)}
        if cell["run"] == "clean":
            rows.append({**base, "attack": "none", "accuracy": cell["accuracy"],
                         "accuracy_noised_inference": cell["accuracy_noised_inference"], **rew})
            rows.append({**base, "attack": "lia_passive", "accuracy": cell["accuracy"],
                         "lia_accuracy": cell["lia_accuracy"], **rew})
            rows.append({**base, "attack": "lia_passive_frozen", "accuracy": cell["accuracy"],
                         "lia_accuracy": cell["lia_frozen_accuracy"], **rew})
            rows.append({**base, "attack": "fia", "accuracy": cell["accuracy"], "fia_mse": cell["fia_mse"],
                         "fia_mse_mean_image": cell["fia_mse_mean_image"], **rew})
        elif cell["run"] == "lia_active":
            rows.append({**base, "attack": "lia_active", "accuracy": cell["accuracy"],
                         "lia_accuracy": cell["lia_accuracy"], **rew})
        else:
            rows.append({**base, "attack": "backdoor", "accuracy": cell["accuracy"], "asr": cell["asr"], **rew})
    return rows


def _claims(ds, by, noise_cell, p, tau):
    """The issue's "what must hold", measured on one dataset."""
    v, o, f = by[("vanilla", "clean")], by[("opus", "clean")], by[("fixed_dp", "clean")]
    cl = {"dataset": ds}
    for name, key, col in (("lia_passive", "clean", "lia_accuracy"), ("lia_active", "lia_active", "lia_accuracy"),
                           ("lia_passive_frozen", "clean", "lia_frozen_accuracy")):
        lv, lo = by[("vanilla", key)][col], by[("opus", key)][col]
        cl[f"{name}_vanilla"], cl[f"{name}_opus"], cl[f"{name}_fixed_dp"] = lv, lo, by[("fixed_dp", key)][col]
        cl[f"{name}_drop_abs"] = lv - lo
        cl[f"{name}_drop_rel"] = (lv - lo) / lv if lv else None
        cl[f"{name}_holds"] = bool(lv - lo >= 0.10)
    for name, col in (("lia_passive", "lia_floor_accuracy"), ("lia_passive_frozen", "lia_frozen_floor_accuracy")):
        if col in v:  # the largest drop any defense of the exchanged tensors could give
            cl[f"{name}_floor"] = v[col]
            cl[f"{name}_max_possible_drop"] = v[name == "lia_passive" and "lia_accuracy" or "lia_frozen_accuracy"] - v[col]
    cl["fia_mse_increase_rel"] = (o["fia_mse"] - v["fia_mse"]) / v["fia_mse"]
    cl["fia_holds"] = bool(cl["fia_mse_increase_rel"] >= 0.30)
    cl["fia_vanilla_beats_mean_image"] = bool(v["fia_mse"] < v["fia_mse_mean_image"])
    cl["accuracy_vanilla"], cl["accuracy_fixed_dp"], cl["accuracy_opus"] = v["accuracy"], f["accuracy"], o["accuracy"]
    cl["accuracy_gap_opus_vs_vanilla"] = v["accuracy"] - o["accuracy"]
    cl["accuracy_gap_opus_vs_vanilla_noised_inference"] = (v["accuracy_noised_inference"]
                                                           - o["accuracy_noised_inference"])
    cl["accuracy_within_3pts_holds"] = bool(v["accuracy"] - o["accuracy"] <= 0.03)
    cl["opus_avg_eps"] = float(np.mean([o[f"eps_p{k}"] for k in range(1, p)]))
    cl["fixed_dp_eps"] = float(f["final_eps"][1])
    cl["opus_accuracy_minus_fixed_dp"] = o["accuracy"] - f["accuracy"]
    cl["opus_utility_at_least_fixed_dp_holds"] = bool(o["accuracy"] >= f["accuracy"])
    top = max(range(1, p), key=lambda k: o[f"contrib_p{k}"])
    eq = tau / (p - 1)
    cl["top_contributor"] = f"p{top}"
    cl["top_contributor_reward_vs_equal_split"] = o[f"reward_p{top}"] / eq
    cl["contributor_25pct_more_holds"] = bool(o[f"reward_p{top}"] >= 1.25 * eq)
    if noise_cell is not None:
        rewards = {k: noise_cell[f"reward_p{k}"] for k in range(1, p)}
        cl["noise_party"] = f"p{p - 1}"
        cl["noise_party_rewards"] = {f"p{k}": r for k, r in rewards.items()}
        cl["noise_party_least_holds"] = bool(min(rewards, key=rewards.get) == p - 1)
    errs = [cell["budget_max_error"] for cell in by.values()] + ([noise_cell["budget_max_error"]] if noise_cell else [])
    cl["budget_balance_max_error"] = max(errs)
    cl["budget_balance_holds"] = bool(max(errs) <= 1e-6 * max(tau, 1.0))
    return cl


def run(config, workdir) -> dict:
    """Run the study; returns (and writes) the results dict."""
    c = config
    _validate(c)
    wd = reporting.prepare_workdir(workdir, c)
    (wd / "cells").mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    cells, claims, trajectories = [], [], {}
    p = int(c.num_parties)
    for ds in c.datasets:
        x, y, xte, yte = _load(ds, c)
        fed = _federation(c, x, y, xte, yte)
        by = {}
        for defense in DEFENSES:
            for run_name in ("clean", "lia_active", "backdoor"):
                eps = c.eps
                if defense == "fixed_dp":
                    eps = float(np.mean([by[("opus", "clean")][f"eps_p{k}"] for k in range(1, p)]))
                cell = _train_eval(c, fed, wd, ds, defense, run_name, None if defense == "vanilla" else eps, True)
                by[(defense, run_name)] = cell
                cells.append(cell)
        noise_cell = None
        if c.noise_party_check:
            fed_n = _federation(c, x, y, xte, yte, noise_party=p - 1)
            noise_cell = _train_eval(c, fed_n, wd, ds, "opus", "noise_party", c.eps, True)
        claims.append(_claims(ds, by, noise_cell, p, c.tau))
        trajectories[ds] = {d: by[(d, "clean")]["trajectories"] for d in DEFENSES}
        if noise_cell is not None:
            trajectories[ds]["opus_noise_party"] = noise_cell["trajectories"]
    rows = _rows(cells, p)
    results = {"rows": rows, "claims": claims, "trajectories": trajectories,
               "cells": [{k: v for k, v in cell.items() if k != "trajectories"} for cell in cells],
               "seconds": time.time() - t0,
               "notes": "CIFAR-100 (in the paper) is not available here; not run."}
    reporting.write_json(wd / "results.json", results)
    plots = _plots(wd, trajectories, p)
    _report(wd, c, rows, claims, plots, p)
    cols = ["dataset", "defense", "attack", "accuracy", "lia_accuracy", "fia_mse", "asr"] + \
        [f"reward_p{k}" for k in range(1, p)]
    print(reporting.text_table(rows, cols, floatfmt=".3f"))
    return results


def _plots(wd, trajectories, p):
    out = []
    for ds, tr in trajectories.items():
        fig, axes = reporting.new_figure(ncols=2, figsize=(10, 3.6))
        for d, style in (("opus", "-"), ("fixed_dp", "--"), ("opus_noise_party", ":")):
            if d not in tr:
                continue
            for k in range(1, p):
                axes[0].plot(tr[d]["eps"][f"p{k}"], style, color=f"C{k}", label=f"{d} p{k}")
                axes[1].plot(_smooth(tr[d]["reward"][f"p{k}"]), style, color=f"C{k}", label=f"{d} p{k}")
        axes[0].set(title=f"eps per party ({ds})", xlabel="round", ylabel="eps")
        axes[1].axhline(1.0 / (p - 1), color="gray", lw=0.8, label="equal split")
        axes[1].set(title=f"reward per party, smoothed ({ds})", xlabel="round", ylabel="R_k")
        axes[0].legend(fontsize=6)
        axes[1].legend(fontsize=6)
        name = f"eps_rewards_{ds}.png"
        reporting.save_figure(fig, Path(wd) / name)
        out.append(name)
    return out


def _smooth(v, w=20):
    v = np.asarray(v, float)
    if len(v) < w:
        return v
    return np.convolve(v, np.ones(w) / w, mode="valid")


def _report(wd, c, rows, claims, plots, p):
    cols = ["dataset", "defense", "attack", "accuracy", "accuracy_noised_inference", "lia_accuracy", "fia_mse",
            "fia_mse_mean_image", "asr"] + \
        [f"reward_p{k}" for k in range(1, p)]
    setting = (f"datasets={list(c.datasets)}, {p} parties (vertical strips), bottom MLP {c.hidden} -> {c.embed_dim}, "
               f"{c.rounds} rounds of batch {c.batch_size}; DP: {c.mechanism} Gaussian, delta={c.delta}, "
               f"Delta={c.clip_norm}, OPUS eps in [{c.eps_min}, {c.eps_max}] from {c.eps}; gradient perturbation on "
               f"the returned gradients: {bool(c.grad_dp)} (per-sample clip {c.grad_clip}); test-time noise: "
               f"{bool(c.eval_noise)} (accuracy_noised_inference: with it); fixed DP at OPUS's "
               f"average eps; LIA: model completion with {10 * c.lia_aux_per_class} labels + MixMatch "
               f"(fine-tune bottom: {c.lia_finetune_bottom}); FIA: GRN on party {c.fia_party}; backdoor: party "
               f"{c.bd_party}, {c.n_known} known target IDs, gamma={c.bd_gamma}. CIFAR-100 is not available here.")
    claim_lines = []
    for cl in claims:
        claim_lines.append(f"**{cl['dataset']}**\n")
        claim_lines.append(reporting.markdown_table([{"claim": k, "value": v} for k, v in cl.items()
                                                     if k != "dataset"], ["claim", "value"]))
    reporting.write_report(wd, "OPUS-VFL: vertical FL under inference and backdoor attacks",
                           [("Setting", setting), ("Results", reporting.markdown_table(rows, cols)),
                            ("What must hold (issue 19), measured", "\n".join(claim_lines))], plots=plots)
