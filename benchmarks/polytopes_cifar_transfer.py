"""Poison Frogs vs Convex Polytope vs Bullseye Polytope, white-box linear transfer on CIFAR-10 20k.

The setting of "Just How Toxic is Data Poisoning?" (Schwarzschild et al. 2021, transfer learning, white-box):
a feature extractor pre-trained on clean data, a linear head retrained on a 2,500-image fine-tuning set
(250 per class) that holds 25 poisons (1 %) at L-inf 8/255, a target from the test set. Here the
extractor is the ConvNet trained on the 10,000 training images of ``cifar10_jpeg_20k`` (the papers use a
ResNet-18 at ~93 %), the fine-tuning set a stratified subset of those images, the head evaluated on a
stratified 2,000 of the test set. Every method shares targets, adversarial classes, poison bases, eps and
steps (:func:`poisonjax.vision.classics.compare.feature_space_comparison`).

    POISONJAX_DATA=../shared/data python benchmarks/polytopes_cifar_transfer.py --trials 100 --steps 300 --eps 16

With 20 targets a lead of 2 is noise; 100 targets with the per-target sign test below tell a real lead (about
11 minutes per radius on a 2-core CPU).

Prints the CPU model, the extractor's test accuracy and, per method, the target success rate and the
adversarial-class probability, then each polytope against Poison Frogs on the same targets: wins and losses
with exact sign-test p-values on success, and a Wilcoxon signed-rank test on the per-target adversarial-class
probability; ``--out FILE`` writes them as JSON.
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

import _machine  # noqa: E402  (benchmarks/ is on sys.path when a script there runs: CPU model and load)


def paired_test(a, b):
    r"""Exact sign (McNemar) test of method ``a`` against ``b`` on the same trials.

    With :math:`s^a_t, s^b_t \in [0, 1]` the share of trial :math:`t`'s victims each method fools, a trial
    is a win for ``a`` when :math:`s^a_t > s^b_t` and a loss when :math:`s^a_t < s^b_t` (ties drop out).
    Under the null that neither method is better, wins :math:`\sim \mathrm{Binomial}(w + l, 1/2)`;
    ``p_one_sided`` is :math:`P(W \ge w)`, ``p_two_sided`` the usual two-sided exact p-value.
    """
    from scipy.stats import binomtest
    a, b = np.asarray(a, float), np.asarray(b, float)
    w, l = int(np.sum(a > b)), int(np.sum(a < b))
    n = w + l
    p1 = binomtest(w, n, 0.5, alternative="greater").pvalue if n else 1.0
    p2 = binomtest(w, n, 0.5).pvalue if n else 1.0
    return {"wins": w, "losses": l, "ties": int(len(a) - n), "p_one_sided": float(p1), "p_two_sided": float(p2)}


def paired_prob_test(a, b):
    r"""Wilcoxon signed-rank test of method ``a`` against ``b`` on the per-trial adversarial-class probability
    :math:`q_t` of the target (same trials): :math:`d_t = q^a_t - q^b_t`, zero differences dropped (Wilcoxon's
    rule), ``p_one_sided`` for the alternative that :math:`d` is shifted above 0. More sensitive than the sign
    test on success, which only sees trials where one method crosses the decision boundary and the other does
    not. Also the mean and median of :math:`d` and how many :math:`d_t > 0` / :math:`< 0`."""
    from scipy.stats import wilcoxon
    d = np.asarray(a, float) - np.asarray(b, float)
    nz = d[d != 0]
    if nz.size == 0:
        return {"mean_diff": 0.0, "median_diff": 0.0, "higher": 0, "lower": 0, "p_one_sided": 1.0,
                "p_two_sided": 1.0}
    return {"mean_diff": float(d.mean()), "median_diff": float(np.median(d)), "higher": int(np.sum(d > 0)),
            "lower": int(np.sum(d < 0)), "p_one_sided": float(wilcoxon(nz, alternative="greater").pvalue),
            "p_two_sided": float(wilcoxon(nz).pvalue)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20, help="(target, adversarial class) pairs (default 20)")
    ap.add_argument("--steps", type=int, default=300, help="crafting steps per method (default 300)")
    ap.add_argument("--eps", type=float, default=8.0, help="L-inf radius in grey levels /255 (default 8)")
    ap.add_argument("--poisons", type=int, default=25, help="poisons per target (default 25 = 1%% of 2,500)")
    ap.add_argument("--lr", type=float, default=0.02, help="projected-Adam step on the poisons (default 0.02)")
    ap.add_argument("--pretrain-epochs", type=int, default=30, help="extractor training epochs (default 30)")
    ap.add_argument("--finetune-size", type=int, default=2500, help="fine-tuning set size (default 2500)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="", help="write the results as JSON here")
    a = ap.parse_args(argv)

    from poisonjax.data.images import ImageDataset, load_image_dataset, stratified_subset
    from poisonjax.vision.classics import compare
    machine = _machine.start()
    d = load_image_dataset("cifar10_20k")
    t0 = time.time()
    net, params = compare.train_surrogate(d, jax.random.PRNGKey(a.seed + 11), model="convnet",
                                          epochs=a.pretrain_epochs, lr=1e-3)
    xs, ys = stratified_subset(d.x_train, d.y_train, a.finetune_size, a.seed)
    xt, yt = stratified_subset(d.x_test, d.y_test, 2000, a.seed + 1)    # the test rows are class-major: stratify
    acc = float(np.mean(np.argmax(np.asarray(jax.jit(net.apply)(params, xt)), -1) == yt))
    print(f"extractor: ConvNet, {a.pretrain_epochs} epochs on 10,000 images, accuracy {acc:.3f} on a stratified "
          f"2,000 of the test set ({time.time() - t0:.0f} s)", flush=True)
    sub = ImageDataset(xs, ys, xt, yt, 10, "cifar10_20k_transfer")
    t0 = time.time()
    r = compare.feature_space_comparison(sub, jax.random.PRNGKey(a.seed + 5), trials=a.trials, n_poisons=a.poisons,
                                         eps=a.eps / 255, steps=a.steps, lr=a.lr, n_victims=1,
                                         surrogate=(net, params), n_surrogates=1, blackbox=False)
    print(f"crafting and evaluation: {time.time() - t0:.0f} s")
    out = {"extractor_accuracy": acc, "trials": a.trials, "n_poisons": a.poisons, "eps": a.eps / 255,
           "steps": a.steps}
    for m in ("none", "random_noise", "poison_frogs", "convex_polytope", "bullseye_polytope"):
        out[m] = r[m]
        print(f"{m:18s} success {r[m]['success_rate']:.3f}  adversarial-class prob {r[m]['target_prob']:.3f}  "
              f"head clean accuracy {r[m]['clean_accuracy']:.3f}  feature residual centroid "
              f"{r[m]['centroid_residual']:.3f} / nearest {r[m]['nearest_residual']:.3f}")
    out["paired_vs_poison_frogs"] = {m: paired_test(r[m]["trial_success"], r["poison_frogs"]["trial_success"])
                                     for m in ("convex_polytope", "bullseye_polytope")}
    for m, t in out["paired_vs_poison_frogs"].items():
        print(f"{m:18s} vs poison_frogs on the same targets: wins {t['wins']}, losses {t['losses']}, "
              f"one-sided exact sign test p = {t['p_one_sided']:.4f} (two-sided {t['p_two_sided']:.4f})")
    out["paired_prob_vs_poison_frogs"] = {m: paired_prob_test(r[m]["trial_target_prob"],
                                                              r["poison_frogs"]["trial_target_prob"])
                                          for m in ("convex_polytope", "bullseye_polytope")}
    for m, t in out["paired_prob_vs_poison_frogs"].items():
        print(f"{m:18s} vs poison_frogs, adversarial-class probability on the same targets: mean difference "
              f"{t['mean_diff']:+.4f} (median {t['median_diff']:+.4f}), higher on {t['higher']}, lower on "
              f"{t['lower']}, one-sided Wilcoxon signed-rank p = {t['p_one_sided']:.4g}")
    out["machine"] = machine.finish()
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
