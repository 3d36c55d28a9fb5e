r"""Each classic attack family against its baseline on the same data (used by tests and the study).

* :func:`feature_space_comparison` -- Poison Frogs vs Convex Polytope vs Bullseye Polytope (and
  random noise) in the frozen-feature transfer setting: same targets, same poison bases, same eps
  and step count; the victims are linear heads retrained on the frozen features
  (:func:`poisonjax.vision.witches_brew.transfer_success`).

Every function returns a dict ``{method: {"success_rate", "target_prob", "clean_accuracy"}}`` plus the
setting's sizes, so the caller can assert "attack beats baseline" on one number.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from poisonjax.core import gradient_matching as gm
from poisonjax.core.runner import run as run_attack
from poisonjax.core.training import init_and_train, softmax_cross_entropy_loss
from poisonjax.core.study import CellCache, prepare_workdir
from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.vision import witches_brew as wb
from poisonjax.vision.classics.feature_space import bullseye_polytope_attack, convex_polytope_attack
from poisonjax.vision.models import make_classifier


def _sub(workdir, name):
    """``workdir/name`` (a part's runner workdir), or ``None`` without a workdir."""
    return None if workdir is None else Path(workdir) / name


def _delta_path(workdir, attack: str, eps: float):
    return None if workdir is None else Path(workdir) / "deltas" / f"{attack}_{round(float(eps) * 255, 3):g}.npy"


def _crafting_settings(attack: str, eps: float, **settings) -> dict:
    """What a stored perturbation was crafted with (its ``config.json``, see ``availability_comparison``)."""
    return {"attack": attack, "eps": float(eps), **settings}


def _save_atomic(path: Path, arr: np.ndarray) -> None:
    """``np.save`` through a temporary file (a kill mid-write never leaves a truncated array)."""
    from poisonjax.core.parallel import is_main_process
    if not is_main_process():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, arr)
    os.replace(tmp, path)


def train_surrogate(data, key, *, model: str = "convnet", epochs: int = 10, batch_size: int = 128, lr: float = 1e-2):
    """One clean classifier ``(module, params)`` trained with Adam on ``data.x_train`` (an
    :class:`~poisonjax.data.images.ImageDataset`)."""
    net = make_classifier(model, num_classes=data.num_classes)
    x0 = jnp.asarray(data.x_train[:1])
    init = lambda k: net.init(k, x0)
    loss = softmax_cross_entropy_loss(net.apply)
    params = init_and_train(init, loss, optax.adam(lr), {"x": jnp.asarray(data.x_train), "y": jnp.asarray(data.y_train)},
                            key, epochs=epochs, batch_size=batch_size).params
    return net, params


def feature_space_comparison(data, key, *, trials: int = 4, budget: float = 0.02, eps: float = 32 / 255,
                             steps: int = 100, lr: float = 0.02, n_victims: int = 2, head_steps: int = 150,
                             surrogate=None, n_poisons: int = None, n_surrogates: int = 1, blackbox: bool = False,
                             surrogate_epochs: int = 10,
                             methods: Sequence[str] = ("random_noise", "poison_frogs", "convex_polytope",
                                                       "bullseye_polytope"), workdir=None) -> Dict:
    r"""Poison Frogs vs Convex Polytope vs Bullseye Polytope in the transfer setting.

    Crafting extractors: ``n_surrogates`` clean surrogates trained from different seeds
    (``surrogate=(module, params)`` replaces the first); the attacks see all of them (Poison Frogs on
    their concatenated features, the polytopes per extractor, as in Zhu et al.'s ensemble).
    Victim extractor: the first surrogate (``blackbox=False``, white-box as in Poison Frogs) or one more
    model trained from another seed that the attacker never sees (``blackbox=True``, the transfer
    setting in which Convex Polytope and Bullseye Polytope report their gains). ``trials`` (target,
    adversarial class) pairs are drawn, each with the same ``n_poisons`` (default
    ``round(budget * N)``) random bases of its adversarial class for every method; each attack runs
    ``steps`` projected-Adam steps (``lr``) at L-inf radius ``eps``; ``n_victims`` linear heads per
    trial are retrained on the victim's frozen features of the poisoned set. Success: the head puts
    the target in the adversarial class. Returns ``{method: {success_rate, target_prob,
    clean_accuracy, max_linf, trial_success}}`` (means over trials x victims; ``trial_success``: per trial,
    the share of its victims fooled, in trial order -- every method shares the trials, so methods can be
    compared pairwise; ``trial_target_prob``: per trial, the victims' mean adversarial-class probability on its
    target, in the same order; ``centroid_residual`` and ``nearest_residual``: in the victim's features, relative to
    :math:`\|\phi(x_t)\|`: :math:`\|\bar\phi(\text{poisons}) - \phi(x_t)\|` and :math:`\min_j \|\phi(p_j) -
    \phi(x_t)\|`, means over trials -- how close each attack brought the target into, or onto, its poisons)
    and the sizes.

    ``workdir``: each attack's crafting runs through :func:`poisonjax.core.runner.run` with checkpoints
    under ``workdir/<method>/`` (every chunk of at most 50 steps), so a killed caller resumes it from its
    last checkpoint and gets the same poisons as an uninterrupted run.
    """
    k_sur, k_tr, k_p, k_att, k_v = jax.random.split(key, 5)
    n_surrogates = int(n_surrogates)
    if n_surrogates < 1:
        raise ValueError(f"n_surrogates must be >= 1, got {n_surrogates}")
    if n_poisons is not None:
        budget = int(n_poisons) / len(data.y_train)
    models = [surrogate] if surrogate is not None else []
    ks = jax.random.split(k_sur, n_surrogates + 1)
    while len(models) < n_surrogates + int(blackbox):
        models.append(train_surrogate(data, ks[len(models)], epochs=surrogate_epochs))
    feats = [(lambda x, n=n, p=p: n.apply(p, x, return_features=True)) for n, p in models]
    craft_feats, feat = feats[:n_surrogates], feats[-1] if blackbox else feats[0]
    ti, adv = wb.choose_trials(k_tr, data.y_test, data.num_classes, trials)
    problem, pidx = wb.witches_brew_problem(jax.tree.map(lambda a: a[None], models[0][1]), data.x_train, data.y_train,
                                            data.x_test, None, data.num_classes, target_indices=ti,
                                            adv_classes=adv, budget=budget, eps=eps, key=k_p)
    cat = lambda x: jnp.concatenate([f(x) for f in craft_feats], axis=-1)
    attacks = {"poison_frogs": wb.feature_collision_attack(cat, lr=lr),
               "convex_polytope": convex_polytope_attack(craft_feats, lr=lr),
               "bullseye_polytope": bullseye_polytope_attack(craft_feats, lr=lr)}
    deltas = {"none": jnp.zeros_like(problem.base_images),
              "random_noise": jax.vmap(wb.random_noise_deltas, in_axes=(0, 0, None))(
                  jax.random.split(k_att, trials), problem.base_images, eps)}
    for m in methods:
        if m in attacks:
            res = run_attack(gm.batch_over_trials(attacks[m]), problem, steps, _sub(workdir, m), key=k_att,
                             progress=False, chunk_size=max(1, min(50, steps)))
            deltas[m] = res.state.delta
    ftr, fte = feat(jnp.asarray(data.x_train)), feat(jnp.asarray(data.x_test))
    ftarget = feat(jnp.asarray(data.x_test[ti]))
    rep = lambda a: np.repeat(np.asarray(a), n_victims, axis=0)
    keys = jax.random.split(k_v, trials * n_victims)
    ts = jax.jit(lambda pf: wb.transfer_success(ftr, jnp.asarray(data.y_train), keys, poison_index=rep(pidx),
                                                poison_features=pf, target_features=rep(ftarget), adv_label=rep(adv),
                                                num_classes=data.num_classes, steps=head_steps, features_test=fte,
                                                y_test=jnp.asarray(data.y_test)))
    out = {"n_poisons": int(pidx.shape[1]), "trials": int(trials), "n_victims": int(n_victims), "eps": float(eps),
           "budget": float(budget), "n_surrogates": n_surrogates, "blackbox": bool(blackbox)}
    for m in ("none",) + tuple(methods):
        pf = jax.vmap(feat)(problem.base_images + deltas[m])
        o = jax.device_get(ts(rep(pf)))
        ft_norm = jnp.linalg.norm(ftarget, axis=-1)
        centroid = jnp.linalg.norm(pf.mean(1) - ftarget, axis=-1) / ft_norm
        nearest = jnp.min(jnp.linalg.norm(pf - ftarget[:, None], axis=-1), axis=1) / ft_norm
        out[m] = {"success_rate": float(np.mean(o["success"])), "target_prob": float(np.mean(o["target_prob"])),
                  "clean_accuracy": float(np.mean(o["clean_accuracy"])),
                  "max_linf": float(jnp.max(jnp.abs(deltas[m]))),
                  "trial_success": np.asarray(o["success"], float).reshape(trials, n_victims).mean(1).tolist(),
                  "trial_target_prob": np.asarray(o["target_prob"], float).reshape(trials, n_victims).mean(1).tolist(),
                  "centroid_residual": float(jnp.mean(centroid)), "nearest_residual": float(jnp.mean(nearest))}
    return out


def availability_comparison(data, key, *, eps_values: Sequence[float] = (8 / 255, 16 / 255),
                            attacks: Sequence[str] = ("error_min_sample", "error_min_class", "error_max", "tensorclog"),
                            model: str = "mlp", n_victims: int = 2, victim_epochs: int = 15,
                            craft_epochs: int = 10, rounds: int = 8, train_steps: int = 10, pgd_steps: int = 10,
                            max_steps: int = 20, batch_size: int = 128, lr: float = 1e-2, stop_acc: float = 0.99,
                            em_step_fraction: float = 0.1, sample_pgd_steps: int = None,
                            sample_step_fraction: float = None, max_step_fraction: float = 0.25,
                            random_class: bool = False, workdir=None) -> Dict:
    r"""Availability attacks vs uniform noise of the same eps.

    Protocol (Huang et al. 2021; Fowl et al. 2021): every perturbation is applied to the *whole*
    training set (budget 1); the crafting model and the victims share the architecture ``model``;
    victims (``n_victims`` per poisoned set, all sets in one :func:`poisonjax.core.victims.train_victims`
    vmap) are trained from scratch with Adam(``lr``) for ``victim_epochs`` epochs, without
    augmentation, and tested on the *clean* test set. Error-minimizing noise: at most ``rounds``
    rounds of ``train_steps`` model steps then noise steps, stopping at ``stop_acc`` training accuracy
    (sample-wise ``sample_pgd_steps`` steps per image and round, step ``sample_step_fraction`` x eps --
    both default to ``pgd_steps`` and ``em_step_fraction``; class-wise ``pgd_steps`` steps per mini-batch,
    step ``em_step_fraction`` x eps); error-maximizing (class-targeted) and TensorClog: ``max_steps`` PGD steps
    of ``max_step_fraction`` x eps (default eps/4) at a surrogate trained ``craft_epochs`` epochs on clean
    data. ``random_class``: also a random class-wise sign pattern :math:`\pm\epsilon` (a diagnostic: a
    shortcut with no optimisation).

    Returns ``{eps: {"random_noise": acc, attack: acc, ..., "drop_vs_random": {attack: random - attack}}}``
    (mean clean-test accuracy over victims) plus ``"clean"`` (victims on the unpoisoned set).

    ``workdir``: every crafted perturbation is stored as ``workdir/deltas/<attack>_<eps*255>.npy`` when it
    is done and read back (bit for bit) by a rerun, so a killed caller resumes after the last finished
    crafting. Its crafting settings are stored first, as ``deltas/<attack>_<eps*255>/config.json``
    (:func:`poisonjax.core.study.prepare_workdir`); a rerun that asks for other settings (steps, step size,
    rounds, key, model, ...) gets its one-line ``CheckpointMismatchError`` instead of the stored noise. (One
    crafting is one compiled program -- error-minimizing noise is a ``lax.while_loop`` over its rounds --
    and is redone whole if the kill falls inside it; so is the final victim training.)
    """
    from poisonjax.core.victims import evaluate_victims, flax_victim, stack_datasets, train_victims
    from poisonjax.vision.classics import availability as av
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    net = make_classifier(model, num_classes=data.num_classes)
    init = lambda k: net.init(k, x[:1])
    loss = softmax_cross_entropy_loss(net.apply)
    k_craft, k_clean, k_noise, k_vic = jax.random.split(key, 4)
    need_clean = any(a in ("error_max", "tensorclog") for a in attacks)
    clean_params = (init_and_train(init, loss, optax.adam(lr), {"x": x, "y": y}, k_clean, epochs=craft_epochs,
                                   batch_size=batch_size).params if need_clean else None)
    sets, names = [x], [("clean", 0.0)]
    for e in eps_values:
        e = av.check_eps(e)
        sets.append(x + av.uniform_noise(jax.random.fold_in(k_noise, int(round(e * 255))), x, e))
        names.append(("random_noise", e))
        if random_class:
            pat = e * jnp.sign(jax.random.normal(jax.random.fold_in(k_noise, 1000 + int(round(e * 255))),
                                                 (data.num_classes,) + x.shape[1:]))
            sets.append(jnp.clip(x + pat[y], 0.0, 1.0))
            names.append(("random_class_noise", e))
        for a in attacks:
            sw = a == "error_min_sample"
            steps_a = pgd_steps if not sw or sample_pgd_steps is None else int(sample_pgd_steps)
            frac_a = em_step_fraction if not sw or sample_step_fraction is None else float(sample_step_fraction)
            common = dict(model=model, n_train=int(x.shape[0]), key=np.asarray(jax.random.key_data(key)).tolist(),
                          batch_size=batch_size, lr=lr)
            if a.startswith("error_min"):
                settings = _crafting_settings(a, e, rounds=rounds, train_steps=train_steps, pgd_steps=steps_a,
                                              step_fraction=frac_a, stop_acc=stop_acc, **common)
            else:
                settings = _crafting_settings(a, e, max_steps=max_steps, step_fraction=max_step_fraction,
                                              craft_epochs=craft_epochs, **common)
            stored = _delta_path(workdir, a, e)
            if stored is not None:   # its settings, written first; a rerun asking for others is refused
                prepare_workdir(stored.with_suffix(""), settings)
            if stored is not None and stored.exists():
                sets.append(x + jnp.asarray(np.load(stored)))
                names.append((a, e))
                continue
            if a == "error_min_sample" or a == "error_min_class":
                d = av.error_minimizing_noise(init, loss, x, y, k_craft, eps=e, num_classes=data.num_classes,
                                              mode=a.rsplit("_", 1)[1], rounds=rounds, train_steps=train_steps,
                                              pgd_steps=steps_a, batch_size=batch_size, lr=lr, stop_acc=stop_acc,
                                              step_size=frac_a * e, apply_fn=net.apply)
            elif a == "error_max":
                d = av.error_maximizing_noise(clean_params, loss, x, y, eps=e, num_classes=data.num_classes,
                                              steps=max_steps, step_size=max_step_fraction * e)
            elif a == "tensorclog":
                d = av.tensorclog_noise(clean_params, loss, x, y, eps=e, steps=max_steps,
                                        step_size=max_step_fraction * e)
            else:
                raise ValueError(f"unknown availability attack {a!r}; expected one of {av.AVAILABILITY_ATTACKS}")
            if stored is not None:
                _save_atomic(stored, np.asarray(d))
            sets.append(x + d)
            names.append((a, e))
    stacked, mask = stack_datasets([{"x": s, "y": y} for s in sets])
    v = flax_victim(net, x[:1])
    K = n_victims
    rep = lambda a: jnp.repeat(a, K, axis=0)
    res = train_victims(v, optax.adam(lr), jax.tree.map(rep, stacked), jax.random.split(k_vic, len(sets) * K),
                        epochs=victim_epochs, batch_size=batch_size, data_axis=0, mask=rep(mask))
    acc = np.asarray(evaluate_victims(v.apply, res.variables, jnp.asarray(data.x_test), jnp.asarray(data.y_test)))
    acc = acc.reshape(len(sets), K).mean(1)
    out = {"clean": float(acc[0]), "n_victims": int(K), "model": model}
    for (a, e), ac in zip(names[1:], acc[1:]):
        out.setdefault(float(e), {})[a] = float(ac)
    for e in eps_values:
        r = out[float(e)]
        r["drop_vs_random"] = {a: r["random_noise"] - r[a] for a in attacks}
    return out


def metapoison_comparison(data, key, *, trials: int = 4, budget: float = 0.05, eps: float = 64 / 255,
                          steps: int = 40, unroll: int = 2, checkpoints: Sequence[int] = (2, 4, 6, 8),
                          model: str = "convnet", epochs: int = 8, batch_size: int = 128, lr: float = 1e-2,
                          n_victims: int = 2, witches_brew: bool = True, wb_steps: int = 60, clean_batch: int = 128,
                          train_steps: int = 1, reset_every: int = 25, clean_pool: int = 2048,
                          inner_lr="auto", workdir=None) -> Dict:
    r"""MetaPoison vs random noise (and Witches' Brew) on the same targets, poison bases and eps.

    Surrogates: one model trained from scratch, saved at the staggered epochs ``checkpoints``
    (M = len(checkpoints) ensemble members, :func:`poisonjax.vision.witches_brew.checkpoint_surrogates`).
    Victims: ``n_victims`` per trial retrained from scratch (``epochs`` of Adam) on the poisoned set
    (:func:`poisonjax.core.gradient_matching.victim_success`). Returns ``{method: {success_rate,
    target_prob, clean_accuracy}}`` for ``none``, ``random_noise``, ``metapoison``, ``witches_brew``.

    MetaPoison's unrolled steps mix the poisons with ``clean_batch`` images drawn from a pool of up to
    ``clean_pool`` clean training images (not poison bases), and its members train ``train_steps`` steps
    per crafting step, reset every ``reset_every`` (:func:`~poisonjax.vision.classics.metapoison.metapoison_attack`;
    ``clean_batch=0``: the poisons only, members fixed). ``inner_lr``: the unrolled SGD step; ``"auto"``
    (default) picks it on training data with :func:`~poisonjax.vision.classics.metapoison.select_inner_lr`
    (the largest of 0.1, 0.03, 0.01, 0.003, 0.001 whose K steps lower every member's batch loss); the
    chosen value is returned as ``inner_lr``.

    ``workdir``: MetaPoison's and Witches' Brew's crafting run through :func:`poisonjax.core.runner.run`
    with checkpoints under ``workdir/metapoison/`` and ``workdir/witches_brew/``, so a killed caller resumes
    them from their last checkpoint (same poisons as an uninterrupted run). Each method's victim results are
    stored in ``workdir/victims/<method>.json`` with the victim settings and a digest of the data and of the
    method's perturbations; a rerun reads them instead of retraining when all of these match (a progress bar
    counts the methods).
    """
    from poisonjax.vision.classics.metapoison import metapoison_attack, select_inner_lr
    if inner_lr != "auto" and (not isinstance(inner_lr, (int, float)) or isinstance(inner_lr, bool)
                               or not inner_lr > 0):
        raise PoisonJaxInputError(f"inner_lr: expected 'auto' or a positive step size, got {inner_lr!r}")
    k_sur, k_tr, k_p, k_att, k_v = jax.random.split(key, 5)
    net = make_classifier(model, num_classes=data.num_classes)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    init = lambda k: net.init(k, x[:1])
    loss = softmax_cross_entropy_loss(net.apply)
    opt = optax.adam(lr)
    sur = wb.checkpoint_surrogates(init, loss, opt, {"x": x, "y": y}, k_sur, checkpoints=checkpoints,
                                   batch_size=batch_size)
    ti, adv = wb.choose_trials(k_tr, data.y_test, data.num_classes, trials)
    problem, pidx = wb.witches_brew_problem(sur, data.x_train, data.y_train, data.x_test, None, data.num_classes,
                                            target_indices=ti, adv_classes=adv, budget=budget, eps=eps, key=k_p)
    deltas = {"none": jnp.zeros_like(problem.base_images),
              "random_noise": jax.vmap(wb.random_noise_deltas, in_axes=(0, 0, None))(
                  jax.random.split(k_att, trials), problem.base_images, eps)}
    pool = {}
    if clean_batch:
        not_base = np.setdiff1d(np.arange(x.shape[0]), np.asarray(pidx).ravel())
        keep = np.random.default_rng(0).permutation(not_base)[:clean_pool]
        pool = dict(clean_images=x[keep], clean_labels=y[keep], clean_batch=clean_batch, train_steps=train_steps,
                    reset_every=reset_every)
    if inner_lr == "auto":
        inner_lr = select_inner_lr(loss, sur, x, y, unroll=unroll, key=jax.random.fold_in(k_sur, 1))
    mp = gm.batch_over_trials(metapoison_attack(loss, unroll=unroll, inner_lr=float(inner_lr), lr=0.1 * eps, **pool))
    deltas["metapoison"] = run_attack(mp, problem, steps, _sub(workdir, "metapoison"), key=k_att, progress=False,
                                      chunk_size=max(1, min(20, steps))).state.delta
    if witches_brew:
        deltas["witches_brew"] = jnp.asarray(gm.craft(loss, problem, steps=wb_steps, key=k_att, trials=True,
                                                      progress=False, workdir=_sub(workdir, "witches_brew")).delta)
    K = n_victims
    rep = lambda a: np.repeat(np.asarray(a), K, axis=0)
    keys = jax.random.split(k_v, trials * K)
    # the data are arguments, not closed-over constants: XLA would otherwise constant-fold the 10,000-image CIFAR-10
    # training set into the program (slow_operation_alarm during the victims' compile)
    victims = jax.jit(lambda d, xx, yy, txx, tyy, pi, tgx, al: gm.victim_success(
        init, net.apply, opt, xx, yy, keys, epochs=epochs, batch_size=batch_size, poison_index=pi,
        poison_delta=jnp.repeat(d, K, axis=0), target_x=tgx, adv_label=al, test_x=txx, test_y=tyy,
        per_example_loss=loss))
    fixed = (x, y, jnp.asarray(data.x_test), jnp.asarray(data.y_test), jnp.asarray(rep(pidx)),
             jnp.asarray(rep(data.x_test[ti])), jnp.asarray(rep(adv)))
    vs = lambda d: victims(d, *fixed)
    out = {"n_poisons": int(pidx.shape[1]), "trials": int(trials), "n_victims": int(K), "eps": float(eps),
           "budget": float(budget), "surrogates": len(tuple(checkpoints)), "inner_lr": float(inner_lr)}
    from tqdm.auto import tqdm
    settings = dict(out, epochs=int(epochs), batch_size=int(batch_size), lr=float(lr), model=str(model),
                    victim_key=_digest(k_v), data=_digest(x, y, data.x_test, data.y_test, ti, adv, pidx))
    order = [m for m in ("random_noise", "metapoison", "witches_brew", "none") if m in deltas]  # the comparison first
    for m, d in tqdm([(m, deltas[m]) for m in order], desc="victims", unit="method", leave=False,
                     disable=workdir is None):
        cached = _load_victims(workdir, m, dict(settings, delta=_digest(d)))
        if cached is None:
            o = jax.device_get(vs(d))
            cached = {"success_rate": float(np.mean(o["success"])), "target_prob": float(np.mean(o["target_prob"])),
                      "clean_accuracy": float(np.mean(o["clean_accuracy"]))}
            _save_victims(workdir, m, dict(settings, delta=_digest(d)), cached)
        out[m] = cached
    return out


def _digest(*arrays) -> str:
    """SHA-1 of the arrays' bytes (PRNG keys by their key data): identifies the inputs a stored result came from."""
    import hashlib
    h = hashlib.sha1()
    for a in arrays:
        a = jax.random.key_data(a) if jnp.issubdtype(jnp.asarray(a).dtype, jax.dtypes.prng_key) else a
        a = np.ascontiguousarray(np.asarray(a))
        h.update(str((a.dtype, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _load_victims(workdir, method, settings):
    """A method's stored victim results (a :class:`~poisonjax.core.study.CellCache` entry under
    ``workdir/victims/``), or ``None`` when absent or stored with other settings (so a killed comparison
    retrains only the methods it had not finished)."""
    if workdir is None:
        return None
    rec = CellCache(workdir, folder="victims").get(method)
    return rec["result"] if rec is not None and rec.get("settings") == json.loads(json.dumps(settings)) else None


def _save_victims(workdir, method, settings, result):
    if workdir is not None:
        CellCache(workdir, folder="victims").put(method, {"settings": settings, "result": result},
                                                 keep_checkpoints=True)
