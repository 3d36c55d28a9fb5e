"""Backdoor poison detectors, poisonjax vs IBM ART (issue 17, "Speed against the peer").

One BadNets-poisoned CIFAR-10 training set (the 2,000-image JPEG subset by default, 10% poisoned,
target class 0, 3x3 patch) and ONE victim trained on it with poisonjax (``BNConvNet``, BatchNorm).
Both sides get the same inputs:

* Activation Clustering and Spectral Signatures: the victim's penultimate features of the poisoned
  set ``[N, D]`` and the poisoned labels. ART reads them through an identity ``PyTorchClassifier``
  (its detectors take the activations of the classifier's last layer), so no network runs on
  either side and only the detection algorithm is timed. AC: 10 dims, FastICA, 2-means, the
  "smaller" cluster analysis (relative size < 0.35) on both sides. SS: 1.5 x the poison budget.
* STRIP: the same victim's weights, ported to torch for ART (logits checked against JAX), the same
  clean images for the entropy calibration, the same number of overlays and false-rejection rate.

Prints the machine (CPU model, load before/after: this 2-core machine is shared, the timings are on
a busy machine), ``ours_s=... art_s=... ratio=...`` per defense (ours: median of repeated calls after
the first, which includes compilation; the first call is printed too) and each side's detection
TPR/FPR of its flags, plus ours' TPR at 5% FPR of the scores.

Setup (once): ART in its own venv (see shared/PEERS.md)::

    python3 -m venv benchmarks/.venvs/art
    benchmarks/.venvs/art/bin/pip install torch==2.13.0
    benchmarks/.venvs/art/bin/pip install adversarial-robustness-toolbox scikit-learn packaging

Run: ``python benchmarks/backdoor_defenses_vs_art.py [--epochs 15] [--n-train 2000]`` (wrap it in
``/work/bin/heavy`` on the shared machine).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _machine  # noqa: E402  (CPU model and load average in every output)

MACHINE = _machine.start()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from poisonjax.core.ensemble import index  # noqa: E402
from poisonjax.vision.backdoor import attacks as A  # noqa: E402
from poisonjax.vision.backdoor import detectors as D  # noqa: E402
from poisonjax.vision.backdoor.resnet import BNConvNet  # noqa: E402
from poisonjax.vision.backdoor.victim import make_optimizer, predict, train_victims  # noqa: E402

ART_PY = ROOT / "benchmarks" / ".venvs" / "art" / "bin" / "python"


def _timed(fn, repeats):
    """(first-call seconds, median seconds of ``repeats`` further calls, last result)."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t0)
    return first, float(np.median(ts)), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--poison-rate", type=float, default=0.1)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-overlay", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from poisonjax.data.images import load_cifar10_jpeg
    d = load_cifar10_jpeg(n_train=args.n_train, seed=args.seed)
    xtr, ytr = jnp.asarray(d.x_train), jnp.asarray(d.y_train)
    xc = jnp.asarray(d.x_test[:200])                      # the defender's clean images (STRIP calibration)
    xe, ye = jnp.asarray(d.x_test[200:]), jnp.asarray(d.y_test[200:])
    C = 10
    bd = A.badnets(jax.random.PRNGKey(args.seed + 10), xtr, ytr, num_classes=C, poison_rate=args.poison_rate)
    pm = np.asarray(bd.poison_mask)
    model = BNConvNet(C, channels=(args.width, 2 * args.width))
    bs = 64
    opt = make_optimizer(0.05, total_steps=args.epochs * -(-len(ytr) // bs))
    t0 = time.perf_counter()
    vs = train_victims(model, jax.random.split(jax.random.PRNGKey(args.seed + 1), 1), bd.x, bd.y,
                       epochs=args.epochs, batch_size=bs, optimizer=opt)
    v = jax.block_until_ready(index(vs, 0))
    acc = float((predict(model, v, xe).argmax(-1) == ye).mean())
    asr = float(A.asr(predict(model, v, bd.trigger(xe)).argmax(-1), ye, bd))
    print(f"victim: BNConvNet({args.width},{2 * args.width}) on CIFAR-10 {len(ytr)} images, BadNets "
          f"{args.poison_rate:.0%} -> target 0: clean acc {acc:.3f}, ASR {asr:.3f} "
          f"(trained in {time.perf_counter() - t0:.0f}s)", flush=True)
    feats = predict(model, v, bd.x, return_features=True)
    budget = args.poison_rate
    ours = {}
    key = jax.random.PRNGKey(5)
    ours["activation_clustering"] = _timed(lambda: D.activation_clustering(feats, bd.y, C, key=key), args.repeats)
    ours["spectral_signatures"] = _timed(lambda: D.spectral_signatures(feats, bd.y, C, poison_budget=budget),
                                         args.repeats)
    lf = jax.jit(lambda x: predict(model, v, x))
    ours["strip"] = _timed(lambda: D.strip(lf, bd.x, xc, key, n_overlay=args.n_overlay, frr=0.01), 1)
    for name, (first, med, rep) in ours.items():
        print(f"ours {name}: {med:.3f}s (first call incl. compile {first:.2f}s), TPR/FPR "
              f"{D.detection_rates(rep.flags, pm)}, TPR@5%FPR {D.tpr_at_fpr(rep.scores, pm, 0.05):.3f}", flush=True)

    if not ART_PY.exists():
        sys.exit(f"ART venv missing at {ART_PY}; see this file's docstring for the setup")
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = str(Path(tmp) / "in.npz"), str(Path(tmp) / "out.npz")
        flat = {}
        for coll in ("params", "batch_stats"):
            for path, leaf in jax.tree_util.tree_flatten_with_path(v[coll])[0]:
                flat["w:" + coll + "/" + "/".join(p.key for p in path)] = np.asarray(leaf)
        np.savez(inp, features=np.asarray(feats), y=np.asarray(bd.y), x=np.asarray(bd.x), x_clean=np.asarray(xc), **flat)
        Path(inp + ".json").write_text(json.dumps(dict(num_classes=C, budget=budget, repeats=args.repeats, nb_dims=10,
                                                       c0=args.width, c1=2 * args.width, n_overlay=args.n_overlay,
                                                       frr=0.01, seed=args.seed, threads=2)))
        subprocess.run([str(ART_PY), str(ROOT / "benchmarks" / "_art_backdoor_worker.py"), inp, out], check=True)
        art = dict(np.load(out))
    lg = np.asarray(predict(model, v, bd.x[:8]))
    print(f"ART {art['versions'][0]} (torch {art['versions'][1]}); STRIP port max |logit diff| "
          f"{np.abs(lg - art['logits_check']).max():.2e}")
    art_key = {"activation_clustering": "ac", "spectral_signatures": "ss", "strip": "strip"}
    summary = {"machine": None, "n_train": int(len(ytr)), "poison_rate": budget, "victim_accuracy": acc,
               "victim_asr": asr, "defenses": {}}
    for name, (first, med, rep) in ours.items():
        a = art_key[name]
        art_s = float(np.median(art[f"{a}_seconds"]))
        t_o, f_o = D.detection_rates(rep.flags, pm)
        t_a, f_a = D.detection_rates(art[f"{a}_flags"], pm)
        t5 = D.tpr_at_fpr(rep.scores, pm, 0.05)
        print(f"{name}: ours_s={med:.3f} art_s={art_s:.3f} ratio={MACHINE.ratio(art_s, med)}  (ours first call incl. "
              f"compile {first:.2f}s) | detection ours TPR={t_o:.3f} FPR={f_o:.3f} (TPR@5%FPR {t5:.3f}) | "
              f"ART TPR={t_a:.3f} FPR={f_a:.3f}", flush=True)
        summary["defenses"][name] = dict(ours_s=med, ours_first_s=first, art_s=art_s, ratio=art_s / med,
                                         ours_tpr=t_o, ours_fpr=f_o, ours_tpr_at_5fpr=t5, art_tpr=t_a, art_fpr=f_a)
    summary["machine"] = MACHINE.finish()
    summary["ratios_valid"] = not summary["machine"]["busy"]      # the idle rule of benchmarks/_machine.py
    summary["versions"] = {"art": str(art["versions"][0]), "torch": str(art["versions"][1]), "jax": jax.__version__}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
