"""Witches' Brew crafting: poisonjax (JAX) vs ART's GradientMatchingAttack (PyTorch), side by side.

Same data (scikit-learn digits, 1,500 train; or ``--dataset cifar10_20k``: the 10,000-image CIFAR-10
set of ``shared/data/cifar10_jpeg_20k``), same architecture (the 2-conv SmallCNN, with the *same*
surrogate weights: trained once in JAX and copied into the PyTorch model), same budget, epsilon,
number of crafting iterations and restarts. Reports per-target crafting time, the success rate over
victims retrained from scratch (the same JAX victim trainer for both poison sets; digits), and the
ratios. Two ways of timing ours:

* ``vmap`` (the headline, issue 23): all T targets crafted in *one* vmapped program
  (:func:`poisonjax.core.gradient_matching.batch_over_trials`), timed from a fresh jit *including
  tracing and compilation*, divided by T;
* ``seq``: one target at a time (as ART), compiled once; the first call (with compilation) and the
  mean of the others are reported.

Also (digits): throughput of one vmapped M x R (ensemble x restarts) computation vs M*R sequential
runs. Every ratio is marked ``[BUSY: ...]`` when the machine was not idle (``benchmarks/_machine.py``).
``--check-patches`` also crafts with PatchConv's former im2col (``lax.conv_general_dilated_patches``)
and reports how far the poisons moved (issue 23: the pad-and-slice im2col only reorders float sums).

Setup (once): ART in its own venv (see shared/PEERS.md)::

    python3 -m venv benchmarks/.venvs/art
    benchmarks/.venvs/art/bin/pip install torch==2.13.0
    benchmarks/.venvs/art/bin/pip install adversarial-robustness-toolbox scikit-learn packaging

Run (idle machine: ``/work/bin/heavy2``)::

    python benchmarks/gradient_matching_vs_art.py --targets 8 --steps 100 --eps 16 --budget 0.05 --victims 0
    POISONJAX_DATA=... python benchmarks/gradient_matching_vs_art.py --dataset cifar10_20k --targets 8 \
        --steps 100 --eps 16 --budget 0.01 --victims 0 --ensemble-m 0
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _machine  # noqa: E402  (CPU model and load average in every output)

MACHINE = _machine.start()

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from poisonjax.core import gradient_matching as gm  # noqa: E402
from poisonjax.core.training import accuracy, softmax_cross_entropy_loss, train_ensemble  # noqa: E402
from poisonjax.vision import witches_brew as wb  # noqa: E402
from poisonjax.vision.models import FastSmallCNN  # noqa: E402

# ART's interpreter: its own venv here, or ART_PYTHON (a path or a command name, e.g. python3 on a GPU image)
ART_PY = Path(shutil.which(os.environ["ART_PYTHON"]) or os.environ["ART_PYTHON"]) if os.environ.get("ART_PYTHON") \
    else ROOT / "benchmarks" / ".venvs" / "art" / "bin" / "python"
ART_DEVICE = os.environ.get("ART_DEVICE", "cpu")     # "gpu": ART on CUDA (same-machine GPU side-by-side)


def digits_1500(seed=0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[..., None]
    xtr, xte, ytr, yte = train_test_split(x, d.target.astype(np.int32), train_size=1500, random_state=seed,
                                          stratify=d.target)
    return xtr, ytr, xte, yte


def cifar10_10k():
    from poisonjax.data.images import load_cifar10_20k_split
    xtr, ytr = load_cifar10_20k_split("train")
    xte, yte = load_cifar10_20k_split("test")
    return xtr, ytr.astype(np.int32), xte, yte.astype(np.int32)


def conv_patches(x, kernel_size, strides=(1, 1), order="chw"):
    """PatchConv's im2col before issue 23 (a grouped convolution with an identity kernel), in ``order``."""
    p = jax.lax.conv_general_dilated_patches(x, tuple(kernel_size), tuple(strides), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if order == "hwc":
        c, kk = x.shape[-1], kernel_size[0] * kernel_size[1]
        p = jnp.swapaxes(p.reshape(p.shape[:-1] + (c, kk)), -1, -2).reshape(p.shape)
    return p


def craft_vmapped(loss_fn, sur, pr_all, key, steps, restarts):
    """All T targets in one vmapped program (:func:`poisonjax.core.gradient_matching.craft_one_program`:
    init, steps and best-restart selection compiled together), from a fresh jit: tracing and
    compilation included. Returns ``(delta [T, P, ...], seconds, compile_seconds)``; the compile time
    is measured separately (a second, timed ``lower().compile()`` of the same program,
    :func:`poisonjax.core.gradient_matching.crafting_program`)."""
    pr = pr_all._replace(surrogate_params=sur)
    t0 = time.perf_counter()
    d = jax.block_until_ready(gm.craft_one_program(loss_fn, pr, steps=steps, key=key, restarts=restarts,
                                                   trials=True)[0])
    total = time.perf_counter() - t0
    c0 = time.perf_counter()
    jax.jit(gm.crafting_program(loss_fn, pr, steps=steps, restarts=restarts, trials=True)).lower(key, pr).compile()
    return np.asarray(d), total, time.perf_counter() - c0


def vmapped_phases(loss_fn, sur, pr_all, key, steps, restarts):
    """The program of :func:`craft_vmapped` timed by phase, from a fresh jit: tracing and lowering, XLA
    compilation, one run. Returns ``{"trace_lower": s, "compile": s, "run": s}``."""
    pr = pr_all._replace(surrogate_params=sur)
    run = gm.crafting_program(loss_fn, pr, steps=steps, restarts=restarts, trials=True)
    t0 = time.perf_counter()
    lowered = jax.jit(run).lower(key, pr)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    jax.block_until_ready(compiled(key, pr))
    return {"trace_lower": t1 - t0, "compile": t2 - t1, "run": time.perf_counter() - t2}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="digits", choices=["digits", "cifar10_20k"])
    ap.add_argument("--modes", default="vmap,seq", help="our timings: vmap (all targets in one program, "
                    "compilation included) and/or seq (one target at a time, compiled once)")
    ap.add_argument("--check-patches", action="store_true",
                    help="also craft with the former conv-based im2col and compare the poisons")
    ap.add_argument("--targets", type=int, default=4)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--eps", type=float, default=16.0, help="epsilon in /255 units")
    ap.add_argument("--budget", type=float, default=0.05)
    ap.add_argument("--restarts", type=int, default=1)
    ap.add_argument("--victims", type=int, default=4, help="victims retrained per target and method")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--ensemble-m", type=int, default=2)
    ap.add_argument("--ensemble-r", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-art", action="store_true")
    ap.add_argument("--phases", action="store_true", help="also time the vmapped program by phase: tracing and "
                    "lowering, XLA compilation, the crafting run (where the fixed cost goes)")
    args = ap.parse_args()
    eps = args.eps / 255
    key = jax.random.PRNGKey(args.seed)
    k_sur, k_tr, k_p, k_c, k_v = jax.random.split(key, 5)

    xtr, ytr, xte, yte = digits_1500(args.seed) if args.dataset == "digits" else cifar10_10k()
    modes = [m for m in args.modes.split(",") if m]
    model = FastSmallCNN(10)
    init_fn = lambda k: model.init(k, jnp.zeros((1,) + xtr.shape[1:]))
    opt = optax.adam(0.01)
    train = jax.jit(lambda ks: train_ensemble(init_fn, softmax_cross_entropy_loss(model.apply), opt,
                                              {"x": jnp.asarray(xtr), "y": jnp.asarray(ytr)}, ks,
                                              epochs=args.epochs, batch_size=128).params)
    sur_all = train(jax.random.split(k_sur, max(args.ensemble_m, 1)))
    sur = jax.tree.map(lambda a: a[:1], sur_all)
    print(f"surrogate test accuracy {float(accuracy(model.apply(jax.tree.map(lambda a: a[0], sur), xte), yte)):.3f}")
    ti, adv = wb.choose_trials(k_tr, yte, 10, args.targets)
    loss_fn = wb.cross_entropy(model.apply)

    # ---------------- ours, vmapped: all T targets in one program, compilation included
    pr_all, pidx_all = wb.witches_brew_problem(sur, xtr, ytr, xte, None, 10, target_indices=ti, adv_classes=adv,
                                               budget=args.budget, eps=eps, key=k_p)
    vm = None
    if "vmap" in modes:
        d_vm, t_vm_total, c_vm = craft_vmapped(loss_fn, sur, pr_all, k_c, args.steps, args.restarts)
        vm = {"seconds_total": t_vm_total, "compile_seconds": c_vm, "per_target": t_vm_total / args.targets}
        print(f"poisonjax vmapped: {args.targets} targets x {int(pidx_all.shape[1])} poisons in {t_vm_total:.2f}s "
              f"incl. compilation ({c_vm:.2f}s) -> {vm['per_target']:.3f}s per target", flush=True)
        if args.phases:
            vm["phases"] = vmapped_phases(loss_fn, sur, pr_all, k_c, args.steps, args.restarts)
            ph = vm["phases"]
            print(f"  phases: tracing + lowering {ph['trace_lower']:.2f}s, XLA compilation {ph['compile']:.2f}s, "
                  f"the {args.steps} crafting steps {ph['run']:.2f}s ({ph['run'] / args.targets:.3f}s per target)",
                  flush=True)
        if args.check_patches:
            import poisonjax.core.layers as L
            new_patches = L.same_patches
            L.same_patches = conv_patches
            try:
                d_old, t_old, c_old = craft_vmapped(loss_fn, sur, pr_all, k_c, args.steps, args.restarts)
            finally:
                L.same_patches = new_patches
            diff = np.abs(d_old - d_vm)
            vm["check_patches"] = {"old_seconds_total": t_old, "old_compile_seconds": c_old,
                                   "max_abs_diff_over_eps": float(diff.max() / eps),
                                   "mean_abs_diff_over_eps": float(diff.mean() / eps),
                                   "frac_pixels_diff_gt_1e-6": float(np.mean(diff > 1e-6)),
                                   "frac_pixels_diff_gt_eps_over_10": float(np.mean(diff > eps / 10))}
            print(f"former conv-based im2col: {t_old:.2f}s incl. compilation ({c_old:.2f}s), i.e. "
                  f"{t_old / t_vm_total:.1f}x the new time; poisons: max |diff| {diff.max() / eps:.3f} eps, "
                  f"mean {diff.mean() / eps:.2e} eps, {100 * np.mean(diff > 1e-6):.2f}% of pixels differ by > 1e-6",
                  flush=True)

    # ---------------- ours: one target at a time (as ART), compiled once
    problems = []
    for t in range(args.targets):
        pr, pidx = wb.witches_brew_problem(sur, xtr, ytr, xte, None, 10, target_indices=ti[t:t + 1], adv_classes=adv[t:t + 1],
                                           budget=args.budget, eps=eps, key=jax.random.fold_in(k_p, t))
        problems.append((jax.tree.map(lambda a: a[0] if a.ndim > 0 else a, pr._replace(surrogate_params=None)), pidx[0]))
    attack = gm.gradient_matching_attack(loss_fn, steps=args.steps, restarts=args.restarts)
    from poisonjax.core.runner import make_chunk_fn
    chunk = make_chunk_fn(attack, args.steps)
    init = jax.jit(attack.init)
    sel = jax.jit(lambda s, p: gm.select_best(loss_fn, s, p)[0])

    def craft_one(t):
        pr = problems[t][0]._replace(surrogate_params=sur)
        st = init(jax.random.fold_in(k_c, t), pr)
        st, _, _ = chunk(st, pr, jnp.int32(args.steps))
        return sel(st, pr)

    ours_s, ours_delta, first = [], [], float("nan")
    ours_idx = np.stack([p[1] for p in problems])
    if "seq" in modes or args.victims > 0:
        t0 = time.perf_counter()
        jax.block_until_ready(craft_one(0))
        first = time.perf_counter() - t0
        for t in range(args.targets):
            t0 = time.perf_counter()
            d = jax.block_until_ready(craft_one(t))
            ours_s.append(time.perf_counter() - t0)
            ours_delta.append(np.asarray(d))
        print(f"poisonjax one target at a time: first call (incl. compile) {first:.2f}s, per target "
              f"{np.mean(ours_s):.3f}s", flush=True)

    # ---------------- ART
    art = None
    if not args.skip_art:
        if not ART_PY.exists():
            sys.exit(f"ART venv missing at {ART_PY}; see this file's docstring for the setup")
        with tempfile.TemporaryDirectory() as tmp:
            inp, out = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
            w = {}
            for layer, leaves in jax.tree.map(lambda a: np.asarray(a[0]), sur)["params"].items():
                for name, val in leaves.items():
                    w[f"w:{layer}/{name}"] = val
            np.savez(inp, x_train=xtr, y_train=ytr, targets=xte[ti], adv=adv, **w)
            Path(inp + ".json").write_text(json.dumps({"steps": args.steps, "eps": eps, "budget": args.budget,
                                                       "restarts": args.restarts, "batch_size": 128,
                                                       "seed": args.seed, "threads": os.cpu_count(),
                                                       "device": ART_DEVICE}))
            t0 = time.perf_counter()
            subprocess.run([str(ART_PY), str(ROOT / "benchmarks" / "_art_worker.py"), inp, out], check=True)
            wall = time.perf_counter() - t0
            r = np.load(out)
            jl = np.asarray(model.apply(jax.tree.map(lambda a: a[0], sur), xte[ti]))
            art = {"seconds": r["seconds"], "poisoned_rows": r["poisoned_rows"], "idx": r["poison_indices"],
                   "versions": [str(v) for v in r["versions"]], "wall": wall,
                   "logit_max_abs_diff": float(np.abs(r["logits"] - jl).max())}
        print(f"ART {art['versions'][0]} (torch {art['versions'][1]}): per target {np.mean(art['seconds']):.2f}s "
              f"(logits match JAX to {art['logit_max_abs_diff']:.1e})")

    # ---------------- success over retrained victims (same JAX trainer for both poison sets)
    K, T = args.victims, args.targets
    rates = {}
    if K > 0:
        rep = lambda a: np.repeat(np.asarray(a), K, 0)
        vkeys = jax.random.split(k_v, T * K)
        vs = jax.jit(lambda keys, pi, pd, tx, al: gm.victim_success(
            init_fn, model.apply, opt, jnp.asarray(xtr), jnp.asarray(ytr), keys, epochs=args.epochs, batch_size=128,
            poison_index=pi, poison_delta=pd, target_x=tx, adv_label=al))
        sets = {"none": (ours_idx, np.zeros_like(np.stack(ours_delta))), "poisonjax": (ours_idx, np.stack(ours_delta))}
        if vm is not None:
            sets["poisonjax_vmapped"] = (pidx_all, d_vm)
        if art is not None:
            p = art["idx"].shape[1]
            ad = np.zeros((T, p) + xtr.shape[1:], np.float32)
            for t in range(T):
                ok = art["idx"][t] >= 0
                ad[t, ok] = art["poisoned_rows"][t][ok] - xtr[art["idx"][t][ok]]
            sets["art"] = (art["idx"], ad)
        for name, (pi, pd) in sets.items():
            o = vs(vkeys, rep(pi), rep(pd), rep(xte[ti]), rep(adv))
            rates[name] = (float(np.mean(o["success"])), float(np.mean(o["target_prob"])))
            print(f"success over {T}x{K} retrained victims, {name}: {rates[name][0]:.3f} "
                  f"(mean adv-class prob {rates[name][1]:.3f})")

    # ---------------- ensemble x restarts: vmapped vs sequential
    M, R = args.ensemble_m, args.ensemble_r
    t_vm = t_seq = None
    if M > 0 and R > 0:
        pr0 = problems[0][0]
        big = gm.gradient_matching_attack(loss_fn, steps=args.steps, restarts=R)
        one = gm.gradient_matching_attack(loss_fn, steps=args.steps, restarts=1)
        ch_big, ch_one = make_chunk_fn(big, args.steps), make_chunk_fn(one, args.steps)
        ib, io = jax.jit(big.init), jax.jit(one.init)
        prb = pr0._replace(surrogate_params=sur_all)
        run_big = lambda: ch_big(ib(k_c, prb), prb, jnp.int32(args.steps))[0].delta
        singles = [pr0._replace(surrogate_params=jax.tree.map(lambda a: a[m:m + 1], sur_all)) for m in range(M)]
        run_one = lambda m, r: ch_one(io(jax.random.fold_in(k_c, r), singles[m]), singles[m], jnp.int32(args.steps))[0].delta
        jax.block_until_ready(run_big())
        jax.block_until_ready(run_one(0, 0))
        t_vm = gm.sequential_equivalent_seconds(run_big)
        t0 = time.perf_counter()
        for m in range(M):
            for r in range(R):
                jax.block_until_ready(run_one(m, r))
        t_seq = time.perf_counter() - t0
        print(f"M={M} x R={R}: one vmapped computation {t_vm:.2f}s vs {M * R} sequential runs {t_seq:.2f}s "
              f"({MACHINE.ratio(t_seq, t_vm, '{:.2f}x')})")

    summary = {"dataset": args.dataset, "n_train": int(len(ytr)), "devices": str(jax.devices()), "jax": jax.__version__,
               "targets": T, "steps": args.steps, "eps": eps, "budget": args.budget,
               "n_poisons": int(pidx_all.shape[1]), "vmapped": vm,
               "poisonjax_seconds_per_target": float(np.mean(ours_s)) if ours_s else None,
               "poisonjax_first_call_seconds": first,
               "success": {k: v[0] for k, v in rates.items()},
               "ensemble_vmapped_seconds": t_vm, "ensemble_sequential_seconds": t_seq}
    summary["machine"] = MACHINE.finish()
    if art is not None:
        art_t = float(np.mean(art["seconds"]))
        summary.update({"art_versions": art["versions"], "art_seconds_per_target": art_t})
        if vm is not None:
            summary["speedup_vs_art_vmapped_incl_compile"] = art_t / vm["per_target"]
            print(f"crafting speed-up vs ART, {T} targets vmapped, compilation included: "
                  f"{MACHINE.ratio(art_t, vm['per_target'])} (ours {vm['per_target']:.3f}s, ART {art_t:.2f}s per target)")
        if ours_s:
            summary.update({"speedup_vs_art": art_t / float(np.mean(ours_s)),
                            "speedup_vs_art_incl_compile": float(np.sum(art["seconds"]) / (first + np.sum(ours_s[1:])))})
            print(f"crafting speed-up vs ART, one target at a time: {MACHINE.ratio(art_t, float(np.mean(ours_s)))} "
                  f"per target ({MACHINE.ratio(float(np.sum(art['seconds'])), first + np.sum(ours_s[1:]))} counting "
                  f"our compilation)")
        summary["machine"] = MACHINE.finish()
    summary["ratios_valid"] = not summary["machine"]["busy"]
    print(f"lscpu model: {summary['machine']['cpu_model']} ({summary['machine']['cpu_isa']}); machine "
          f"{MACHINE.verdict()}")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
