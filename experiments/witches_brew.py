"""Witches' Brew study: craft gradient-matching poisons, retrain victims, compare with baselines.

``run(config, workdir)``:

1. loads the dataset (digits / MNIST subset / CIFAR-10 JPEG subset) and trains ``ensemble`` clean
   surrogate classifiers (one vmap), keeping their parameters at the epochs in
   ``surrogate_checkpoints`` (M = ensemble x len(checkpoints) surrogates along the training
   trajectory; :func:`poisonjax.vision.witches_brew.checkpoint_surrogates`);
2. draws ``trials`` (target test image, adversarial class) pairs and, for each, ``budget * N``
   training images of the adversarial class as poison bases: those with the largest gradient norm
   at the fully trained surrogates (``poison_selection = "max_gradient"``, as in Witches' Brew) or
   a random draw (``"random"``);
3. crafts all trials' poisons at once (``restarts`` x ``ensemble`` vmapped, trials vmapped) through
   :func:`poisonjax.core.gradient_matching.craft` (checkpointed under ``workdir/craft``);
4. retrains ``victims`` models from scratch per trial on the clean set, on random-noise poisons and on
   Witches' Brew poisons (one vmap each; surrogates and victims train with the same flips/crops as
   crafting; victims are split over all devices of all processes, see
   :func:`poisonjax.core.parallel.victim_mesh`) and reports the success rate (target classified as the adversarial class), the
   adversarial-class probability and clean accuracy; it also re-measures the gradient cosine of
   each poison set at ``alignment_models`` fresh clean models (does the alignment transfer?);
5. transfer setting (frozen surrogate features, retrained linear head): Poison Frogs feature
   collision vs random noise vs Witches' Brew poisons;
6. writes ``config.json``, ``results.json``, ``poisons.npz`` (trial 0, keys as documented in
   :func:`write_poisons_npz`), ``poisons_all_trials.npz``, ``success.png`` and ``report.md``.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from poisonjax.core import gradient_matching as gm
from poisonjax.core import parallel, reporting, study
from poisonjax.core.ensemble import mean_std
from poisonjax.core.training import accuracy, init_and_train
from poisonjax.core.validation import check_choice
from poisonjax.data.images import load_image_dataset
from poisonjax.vision import witches_brew as wb
from poisonjax.vision.models import make_classifier


def _load(config):
    kw = {}
    if config.dataset != "digits":
        kw = {"n_train": config.n_train or None, "n_test": config.n_test or None, "seed": config.seed}
    return load_image_dataset(config.dataset, **kw)


def _train_loss(apply_fn, config):
    """Per-example training loss of surrogates and victims: cross-entropy on images augmented with
    the same random flips/crops as used while crafting (``config.flip``/``config.crop``), so that
    victims are trained with the data pipeline the poisons were crafted for."""
    def loss(params, batch, key):
        x = batch["x"]
        if config.flip or config.crop:
            x = gm.augment(key, x, flip=config.flip, crop=config.crop)
        return optax.softmax_cross_entropy_with_integer_labels(apply_fn(params, x), batch["y"])
    return loss


def per_victim_rate(success, trials: int, victims: int) -> dict:
    """Success indicators ``[trials * victims]`` (trial-major) -> mean/std over the ``victims`` seeds
    of each seed's success rate across trials, plus the per-trial rates."""
    s = np.asarray(success, np.float64).reshape(trials, victims)
    out = mean_std(s.mean(0))
    out["per_trial"] = [float(x) for x in s.mean(1)]
    return out


def write_poisons_npz(path, train_x, train_y, poison_index, delta, target_image, target_label, adv_class):
    """``poisons.npz`` with exactly: ``train_images`` (the poisoned training set as the victims saw
    it, float32 NHWC in [0, 1]), ``train_labels``, ``poison_indices``, ``clean_images`` (the
    poisons' originals), ``target_image`` ``[H, W, C]``, ``target_label`` and ``adv_class``."""
    x = np.array(train_x, np.float32, copy=True)
    x[poison_index] = np.clip(x[poison_index] + delta, 0.0, 1.0)
    np.savez_compressed(path, train_images=x, train_labels=np.asarray(train_y, np.int64),
                        poison_indices=np.asarray(poison_index, np.int64),
                        clean_images=np.asarray(train_x, np.float32)[poison_index],
                        target_image=np.asarray(target_image, np.float32),
                        target_label=np.int64(target_label), adv_class=np.int64(adv_class))


def run(config, workdir) -> dict:
    study.upgrade_config(config)
    check_choice("poison_selection", config.poison_selection, ("max_gradient", "random"))
    wd = study.prepare_workdir(workdir, config)   # refuses a workdir of another config
    key = jax.random.PRNGKey(config.seed)
    k_sur, k_trial, k_pois, k_craft, k_rand, k_vic, k_tr = jax.random.split(key, 7)

    data = _load(config)
    model = make_classifier(config.model, data.num_classes)
    sample = jnp.zeros((1,) + data.x_train.shape[1:])
    init_fn = lambda k: model.init(k, sample)
    opt = optax.adam(config.train.lr)
    xtr, ytr = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    xte, yte = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
    ep, bs = config.train.epochs, config.train.batch_size

    # 1. surrogates
    t0 = time.perf_counter()
    cps = list(config.surrogate_checkpoints) or [ep]
    train_loss = _train_loss(model.apply, config)
    # datasets enter every jitted program as arguments, never as closed-over constants (a closed-over CIFAR-10
    # training set becomes a 123 MB HLO constant that XLA spends minutes constant-folding)
    train = jax.jit(lambda k, x, y: wb.checkpoint_surrogates(init_fn, train_loss, opt,
                                                             {"x": x, "y": y}, k, checkpoints=cps, batch_size=bs,
                                                             members=config.ensemble))
    sur = train(k_sur, xtr, ytr)
    sur_acc = np.asarray(jax.vmap(lambda p: accuracy(model.apply(p, xte), yte))(sur))
    surrogate_seconds = time.perf_counter() - t0

    # 2. trials and problem; poisons = the adversarial-class images with the largest gradient norm
    #    at the fully trained surrogates (Witches' Brew), or a random draw
    loss_fn = wb.cross_entropy(model.apply)
    norms = None
    if config.poison_selection == "max_gradient":
        last = jax.tree.map(lambda a: a.reshape((config.ensemble, len(cps)) + a.shape[1:])[:, -1], sur)
        norms = np.asarray(jax.jit(lambda p, x, y: wb.gradient_norms(loss_fn, p, x, y))(last, xtr, ytr))
    ti, adv = wb.choose_trials(k_trial, data.y_test, data.num_classes, config.trials)
    # the attack sees no test labels (choose_trials, the experimenter, made adv != the true class)
    problem, pidx = wb.witches_brew_problem(sur, data.x_train, data.y_train, data.x_test, None,
                                            data.num_classes, target_indices=ti, adv_classes=adv,
                                            budget=config.budget, eps=config.epsilon, key=k_pois, norms=norms)

    # 3. craft
    res = gm.craft(loss_fn, problem, steps=config.craft_steps, key=k_craft, restarts=config.restarts,
                   step_size=config.step_size, flip=config.flip, crop=config.crop, trials=True,
                   trial_chunk=config.get("trial_chunk", 0) or None,
                   workdir=wd / "craft", config=config.to_dict(), desc="witches' brew")
    delta = res.delta
    rnd = np.asarray(wb.random_noise_deltas(k_rand, problem.base_images, config.epsilon))
    max_linf = float(np.abs(delta).max())
    in_box = bool((res.poisons.min() >= 0.0) and (res.poisons.max() <= 1.0))

    # 4. victims: clean / random noise / Witches' Brew, same seeds
    T, K = config.trials, config.n_victims
    rep = lambda a: np.repeat(np.asarray(a), K, axis=0)
    vkeys = jax.random.split(k_vic, T * K)
    # the T*K victims are split over every device of every process (one mesh; None on one device):
    # each process trains its own rows and the metrics are all-gathered back to every process
    mesh = parallel.victim_mesh()
    vs = jax.jit(lambda keys, pi, pd, tx, al, x, y, tsx, tsy: gm.victim_success(
        init_fn, model.apply, opt, x, y, keys, epochs=ep, batch_size=bs, poison_index=pi,
        poison_delta=pd, target_x=tx, adv_label=al, test_x=tsx, test_y=tsy, per_example_loss=train_loss,
        chunk=config.get("victim_chunk", 0) or None, mesh=mesh))
    outs = {}
    t1 = time.perf_counter()
    for name, d in (("none", np.zeros_like(delta)), ("random_noise", rnd), ("witches_brew", delta)):
        args, nv = parallel.shard_leading((vkeys, rep(pidx), rep(d), rep(data.x_test[ti]), rep(adv)), mesh)
        # host (NumPy) datasets: replicated inputs, valid in single- and multi-process runs alike
        outs[name] = parallel.gather_to_host(vs(*args, data.x_train, data.y_train, data.x_test, data.y_test), rows=nv)
    victim_seconds = time.perf_counter() - t1

    # alignment at fresh clean models (independent seeds): does crafting transfer to new victims?
    fresh = jax.jit(jax.vmap(lambda k, x, y: init_and_train(init_fn, train_loss, opt, {"x": x, "y": y}, k,
                                                            epochs=ep, batch_size=bs).params, in_axes=(0, None, None)))(
        jax.random.split(jax.random.fold_in(k_vic, 7), config.alignment_models), xtr, ytr)
    align = jax.jit(lambda d: wb.alignment_at(loss_fn, fresh, problem, d))
    alignment = {name: float(np.mean(align(jnp.asarray(d)))) for name, d in
                 (("none", np.zeros_like(delta)), ("random_noise", rnd), ("witches_brew", delta))}

    methods = {}
    for name, o in outs.items():
        methods[name] = {"success_rate": per_victim_rate(o["success"], T, K),
                         "target_prob": float(np.mean(o["target_prob"])),
                         "target_prob_per_trial": np.asarray(o["target_prob"]).reshape(T, K).mean(1).tolist(),
                         "alignment_at_fresh_models": alignment[name],
                         "clean_accuracy": mean_std(np.asarray(o["clean_accuracy"]).reshape(T, K).mean(0))}

    if study.is_main_process():   # a partial table before the transfer stage (a long run may be stopped there)
        reporting.write_json(wd / "results.json", {
            "complete": False, "dataset": data.name, "n_train": int(len(data.y_train)), "n_poisons": int(pidx.shape[1]),
            "methods": methods, "craft_seconds": float(res.seconds), "victim_seconds": victim_seconds,
            "surrogate_accuracy": [float(a) for a in sur_acc]})

    # 5. transfer setting: frozen features of surrogate 0, retrained linear heads
    transfer = None
    if config.transfer.enabled:
        from poisonjax.core.ensemble import index
        from poisonjax.core.runner import run as run_attack
        p0 = index(sur, len(cps) - 1)  # the fully trained surrogate
        feat = lambda x: model.apply(p0, x, return_features=True)
        fc = wb.feature_collision_attack(feat, beta=config.transfer.fc_beta, lr=config.transfer.fc_lr)
        t2 = time.perf_counter()
        fc_res = run_attack(gm.batch_over_trials(fc), problem, config.transfer.fc_steps, wd / "feature_collision",
                            key=k_tr, config=config.to_dict(), desc="poison frogs", chunk_size=50)
        fc_delta = np.asarray(fc_res.state.delta)
        fc_seconds = time.perf_counter() - t2
        ftr, fte = feat(xtr), feat(xte)
        KT = config.transfer.n_victims
        rep2 = lambda a: np.repeat(np.asarray(a), KT, axis=0)
        tkeys = jax.random.split(jax.random.fold_in(k_tr, 1), T * KT)
        ts = jax.jit(lambda keys, pi, pf, tf, al, f_tr, y_tr, f_te, y_te: wb.transfer_success(
            f_tr, y_tr, keys, poison_index=pi, poison_features=pf, target_features=tf, adv_label=al,
            num_classes=data.num_classes, steps=config.transfer.head_steps, features_test=f_te, y_test=y_te))
        ftarget = feat(jnp.asarray(data.x_test[ti]))
        transfer = {"feature_collision_seconds": fc_seconds}
        for name, d in (("none", np.zeros_like(delta)), ("random_noise", rnd), ("feature_collision", fc_delta),
                        ("witches_brew", delta)):
            pf = jax.vmap(feat)(problem.base_images + d)
            o = jax.device_get(ts(tkeys, rep2(pidx), rep2(pf), rep2(ftarget), rep2(adv), ftr, ytr, fte, yte))
            transfer[name] = {"success_rate": per_victim_rate(o["success"], T, KT),
                              "clean_accuracy": float(np.mean(o["clean_accuracy"]))}

    results = {
        "dataset": data.name, "model": config.model, "n_train": int(len(data.y_train)),
        "n_poisons": int(pidx.shape[1]), "budget": float(config.budget), "epsilon": float(config.epsilon),
        "craft_steps": int(config.craft_steps), "restarts": int(config.restarts), "ensemble": int(config.ensemble),
        "success_rate": methods["witches_brew"]["success_rate"],
        "clean_accuracy": methods["witches_brew"]["clean_accuracy"],
        "clean_accuracy_unpoisoned": methods["none"]["clean_accuracy"],
        "craft_seconds": float(res.seconds),
        "baselines": {"none": methods["none"], "random_noise": methods["random_noise"]},
        "methods": methods,
        "transfer": transfer,
        "surrogate_accuracy": [float(a) for a in sur_acc],
        "poison_selection": config.poison_selection,
        "surrogate_seconds": surrogate_seconds, "victim_seconds": victim_seconds,
        "max_linf": max_linf, "in_box": in_box,
        "best_restart": np.asarray(res.best_restart).tolist(),
        "final_alignment_loss": np.asarray(res.restart_losses).min(-1).tolist(),
        "trials": [{"target_index": int(a), "true_class": int(data.y_test[a]), "adv_class": int(b)} for a, b in zip(ti, adv)],
    }
    rows = [{"setting": "from scratch", "method": n, "success": methods[n]["success_rate"],
             "clean_accuracy": methods[n]["clean_accuracy"]} for n in methods]
    if transfer:
        rows += [{"setting": "transfer (frozen features)", "method": n, "success": transfer[n]["success_rate"],
                  "clean_accuracy": transfer[n]["clean_accuracy"]}
                 for n in ("none", "random_noise", "feature_collision", "witches_brew")]
    results = study.write_results(wd, [{"dataset": data.name, "budget": float(config.budget),
                                        "eps": float(config.epsilon), "n_victims": K, **r} for r in rows],
                                  **results)
    if not study.is_main_process():   # only process 0 writes files
        return results
    write_poisons_npz(wd / "poisons.npz", data.x_train, data.y_train, pidx[0], delta[0], data.x_test[ti[0]],
                      data.y_test[ti[0]], adv[0])
    np.savez_compressed(wd / "poisons_all_trials.npz", poison_indices=pidx, deltas=delta, target_indices=ti,
                        adv_classes=adv, random_noise_deltas=rnd)

    print(reporting.text_table(rows, floatfmt=".3f"))
    print(f"craft {res.seconds:.1f}s  max|delta| {max_linf:.4f} (eps {config.epsilon:.4f})")
    print("gradient cosine with the adversarial target gradient at fresh clean models: "
          + ", ".join(f"{n} {v:.3f}" for n, v in alignment.items()))

    fig, ax = reporting.new_figure(figsize=(6, 3.2))
    labels = [f"{r['method']}\n({'scratch' if r['setting'] == 'from scratch' else 'transfer'})" for r in rows]
    ax.bar(range(len(rows)), [r["success"]["mean"] for r in rows], yerr=[r["success"]["std"] for r in rows])
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, fontsize=6)
    ax.set_ylabel("success rate")
    ax.set_title(f"Witches' Brew on {data.name}: budget {config.budget:g}, eps {config.epsilon * 255:.0f}/255")
    reporting.save_figure(fig, wd / "success.png")
    reporting.write_report(wd, "Witches' Brew", [
        ("Setting", f"{data.name}, {config.model}, {pidx.shape[1]} poisons ({config.budget:g} of "
                    f"{len(data.y_train)}), eps {config.epsilon * 255:.1f}/255, {config.craft_steps} steps, "
                    f"R={config.restarts}, M={config.ensemble}, {T} trials x {K} victims"),
        ("Results", reporting.markdown_table(rows, floatfmt=".3f")),
        ("Alignment transfer", "cosine between the poisons' and the adversarial target gradient at "
                               f"{config.alignment_models} independently trained clean models: "
                               + ", ".join(f"{n} {v:.3f}" for n, v in alignment.items())),
        ("Timing", f"crafting {res.seconds:.1f} s (incl. compilation), victims {victim_seconds:.1f} s"),
    ], plots=["success.png"])
    return results
