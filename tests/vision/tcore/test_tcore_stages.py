"""T-Core's stages, each on tiny data: sifting, channel filtering, bootstrapping schedule, resume, bad input."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.vision.backdoor.resnet import BNConvNet, PreActResNet
from poisonjax.vision.tcore import (TCoreConfig, check_inputs, expand_seeds, filter_channels, grow, growth_plan,
                                    run_tcore, sift_seeds, tcore_process, train_head, unlearn_norm)
from poisonjax.vision.tcore.common import as_classifier, features, with_head
from poisonjax.vision.tcore.sifting import concat_depths

C = 4


def _synthetic_features(seed=0, n_per=60, rate=0.1, target=0):
    """Three depths of class-clustered features; poisons = rows of other classes relabelled ``target``,
    whose features keep their true class's cluster plus a trigger direction (stronger at depth)."""
    rs = np.random.RandomState(seed)
    y_true = np.repeat(np.arange(C), n_per)
    n = len(y_true)
    poison = np.zeros(n, bool)
    poison[rs.choice(np.flatnonzero(y_true != target), int(rate * n), replace=False)] = True
    y = np.where(poison, target, y_true).astype(np.int32)
    trig = rs.randn(16)
    feats = []
    for depth in range(3):
        means = rs.randn(C, 16) * 3.0
        f = means[y_true] + rs.randn(n, 16)
        f[poison] += trig * (1.0 + depth)
        feats.append(f.astype(np.float32))
    return feats, y, poison


def test_stage1_seeds_cleaner_than_base_rate():
    feats, y, poison = _synthetic_features()
    seeds, info = sift_seeds(feats, y, C, seed_fraction=0.05)
    assert seeds.sum() == sum(info["per_class_seeds"]) == C * 3
    assert poison[seeds].mean() <= 0.01 < poison.mean()            # easy case: no poison among the seeds
    grown = expand_seeds(concat_depths(feats), y, seeds, jax.random.PRNGKey(0), C, rounds=2, growth=0.05,
                         confusion_weight=5.0, steps=100)
    assert grown.sum() == seeds.sum() + 2 * round(0.05 * len(y)) and np.all(grown[seeds])
    assert poison[grown].mean() < poison.mean()


def _tiny_encoder():
    return PreActResNet(C, widths=(4, 8, 8), blocks=(1, 1, 1))


def _tiny_images(n=96, seed=0, classes=C):
    rs = np.random.RandomState(seed)
    y = np.arange(n) % classes
    base = rs.rand(classes, 8, 8, 3)
    x = np.clip(0.6 * base[y] + 0.4 * rs.rand(n, 8, 8, 3), 0, 1).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(y, jnp.int32)


# One small BadNets case shared by the stage-2, "beats no defense" and resume tests (one compilation):
# scikit-learn digits at 12x12x3 (300 training rows, 5% poisoned towards class 0), a randomly initialised
# PreAct ResNet 8/16/16 as the "pre-trained" encoder, linear-probe adaptation.
FAST = TCoreConfig(head_epochs=30, confusion_steps=100, mask_steps=20, max_unlearn_steps=100, per_class_rounds=1,
                   global_rounds=1, loss_growth=0.1, seed_fraction=0.02, max_seed_batch=64)


@pytest.fixture(scope="module")
def digits_case(tmp_path_factory):
    from poisonjax.data.images import load_digits
    from poisonjax.vision.backdoor import attacks as A
    d = load_digits(seed=0)
    up = lambda a: np.repeat(np.clip(np.asarray(jax.image.resize(a, (a.shape[0], 12, 12, 1), "linear")), 0, 1), 3, -1)
    x, y = up(d.x_train)[:300], d.y_train[:300].astype(np.int32)
    xe, ye = jnp.asarray(up(d.x_test)[:300]), jnp.asarray(d.y_test[:300].astype(np.int32))
    enc = PreActResNet(10, widths=(8, 16, 16), blocks=(1, 1, 1))
    v = enc.init(jax.random.PRNGKey(0), x[:2])
    bd = A.badnets(jax.random.PRNGKey(1), jnp.asarray(x), jnp.asarray(y), num_classes=10, target_class=0,
                   poison_rate=0.05, trigger_size=3)
    wd = tmp_path_factory.mktemp("tcore")
    res = run_tcore(enc, v, bd.x, bd.y, 10, jax.random.PRNGKey(2), cfg=FAST, workdir=str(wd / "full"))
    return dict(enc=enc, v=v, bd=bd, xe=xe, ye=ye, res=res, wd=wd, A=A)


def test_stage2_unlearning_stops_at_threshold_and_flags_channels(digits_case):
    enc, v, bd = digits_case["enc"], digits_case["v"], digits_case["bd"]
    x, y = bd.x[:40], bd.y[:40]          # 40 rows: the shape of the process's seed batch (no recompilation)
    clf = as_classifier(enc, 10)
    head = train_head(features(enc, v, bd.x), bd.y, jnp.ones(300), jax.random.PRNGKey(1), 10, epochs=30)
    model = with_head(v, head)
    unl, info = unlearn_norm(clf, model, x, y, target_accuracy=0.2, learning_rate=0.002, max_steps=100)
    assert float(info["initial_accuracy"]) > 0.4
    steps = int(info["steps"])
    assert np.float32(info["accuracy"]) <= np.float32(0.2) and 0 < steps < 100      # float32 compare, as the loop
    if steps > 1:                                                      # it stopped at the first step below
        _, before = unlearn_norm(clf, model, x, y, target_accuracy=0.2, learning_rate=0.002, max_steps=steps - 1)
        assert np.float32(before["accuracy"]) > np.float32(0.2)
    filt, keep, finfo = filter_channels(clf, model, x, y, unlearn_lr=0.002, max_unlearn_steps=100, mask_steps=20,
                                        fraction=0.1)
    for path, k in keep.items():
        c = k.shape[0]
        assert int((k == 0).sum()) == max(1, round(0.1 * c)), path
        layer = filt["params"]
        for p in path.split("/"):
            layer = layer[p]
        assert np.all(np.asarray(layer["scale"])[np.asarray(k) == 0] == 0)
        assert np.all(np.asarray(layer["bias"])[np.asarray(k) == 0] == 0)
    assert 0 < finfo["flagged_channel_fraction"] < 0.5


def test_tcore_beats_no_defense_on_small_badnets(digits_case):
    from poisonjax.vision.tcore.common import logits
    enc, v, bd, xe, ye, A = (digits_case[k] for k in ("enc", "v", "bd", "xe", "ye", "A"))
    clf = as_classifier(enc, 10)
    f = features(enc, v, bd.x)
    none = with_head(v, train_head(f, bd.y, jnp.ones(300), jax.random.PRNGKey(3), 10, epochs=30))
    asr = lambda vv: float(A.asr(logits(clf, vv, bd.trigger(xe)).argmax(-1), ye, bd))
    acc = lambda vv: float((logits(clf, vv, xe).argmax(-1) == ye).mean())
    res = digits_case["res"]
    pm = np.asarray(bd.poison_mask)
    assert pm[res.seed_mask].mean() <= 0.01 and pm[res.expanded_mask].mean() < pm.mean()
    assert pm[res.trusted].mean() < pm.mean()
    assert res.trusted.sum() == round(0.9 * 300)
    # measured: undefended ASR 0.43 / acc 0.60, T-Core ASR 0.13 / acc 0.55
    assert asr(res.variables) < asr(none) - 0.15
    assert acc(res.variables) > acc(none) - 0.15


def test_stage3_growth_schedule_and_stop_at_90_percent():
    rs = np.random.RandomState(0)
    y = np.repeat(np.arange(C), 50)
    n = len(y)
    t = np.zeros(n, bool)
    t[rs.choice(n, 20, replace=False)] = True
    plan = growth_plan(np.bincount(y), int(t.sum()), per_class_rounds=2, global_rounds=2)
    assert plan[:4] == ["class", "class", "global", "global"] and set(plan[4:]) == {"reduction"}
    prev = rs.rand(n)
    for kind in plan:
        loss = rs.rand(n)
        before = t.sum()
        t2 = grow(t, kind, loss, prev, y, C)
        assert np.all(t2[t])
        added = t2.sum() - before
        want = {"class": C * round(0.02 * 50), "global": round(0.02 * n), "reduction": round(0.05 * n)}[kind]
        assert added == min(want, round(0.9 * n) - before), kind
        if kind == "class":
            assert np.all(np.bincount(y[t2 & ~t], minlength=C) == round(0.02 * 50))
        t, prev = t2, loss
    assert t.sum() == round(0.9 * n)
    assert grow(t, "reduction", rs.rand(n), prev, y, C).sum() == round(0.9 * n)     # stops at 90%


def test_resumed_process_equals_uninterrupted(digits_case):
    from poisonjax.core.runner import run
    enc, v, bd, full, wd = (digits_case[k] for k in ("enc", "v", "bd", "res", "wd"))
    key = jax.random.PRNGKey(2)
    opt, n_steps = tcore_process(enc, v, 10, bd.y, FAST)
    cfg_id = {"tcore": dataclasses.asdict(FAST), "mode": "linear", "run": None}
    run(opt, {"x": bd.x, "y": bd.y}, n_steps - 2, str(wd / "cut"), key=key, chunk_size=1, host_loop=True,
        progress=False, desc="tcore", config=cfg_id)                       # "killed" two steps early
    resumed = run_tcore(enc, v, bd.x, bd.y, 10, key, cfg=FAST, workdir=str(wd / "cut"))
    assert resumed.run.resumed_from == n_steps - 2
    assert np.array_equal(full.trusted, resumed.trusted) and np.array_equal(full.seed_mask, resumed.seed_mask)
    for a, b in zip(jax.tree.leaves(full.variables), jax.tree.leaves(resumed.variables)):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_bad_input_one_line_errors():
    enc = _tiny_encoder()
    x, y = _tiny_images(32)
    v = enc.init(jax.random.PRNGKey(0), x[:2])
    cases = [
        (dict(module=BNConvNet(C)), "encoder"),
        (dict(module=PreActResNet(C, widths=(4, 8, 16), blocks=(1, 1, 1))), "encoder"),
        (dict(y=y.at[0].set(C)), "outside the head's classes"),
        (dict(y=jnp.where(y == 2, 1, y)), "class 2 is empty"),
        (dict(cfg=TCoreConfig(seed_fraction=0.0)), "seed_fraction"),
        (dict(cfg=TCoreConfig(seed_fraction=1.5)), "seed_fraction"),
        (dict(cfg=TCoreConfig(per_class=1.2)), "growth schedule per_class"),
        (dict(cfg=TCoreConfig(until=0.0)), "growth schedule until"),
        (dict(cfg=TCoreConfig(loss_growth=-0.1)), "growth schedule loss_growth"),
    ]
    for over, needle in cases:
        kw = dict(module=enc, variables=v, x=x, y=y, num_classes=C, cfg=TCoreConfig(), mode="linear")
        kw.update(over)
        with pytest.raises(PoisonJaxInputError, match=needle) as e:
            check_inputs(**kw)
        assert "\n" not in str(e.value)
    with pytest.raises(PoisonJaxInputError, match="seed_fraction"):      # run_tcore checks before training
        run_tcore(enc, v, x, y, C, jax.random.PRNGKey(0), cfg=TCoreConfig(seed_fraction=2.0))


def test_fine_tune_clips_the_gradient_and_stays_finite():
    """Full fine-tuning with a step size that diverges unclipped (NaN, as T-Core's filtered SimCLR encoder did on
    the GPU at head lr 0.1) stays finite with the default global-norm clipping."""
    from poisonjax.vision.tcore.common import fine_tune
    enc = _tiny_encoder()
    x, y = _tiny_images(64)
    clf = as_classifier(enc, C)
    v = clf.init(jax.random.PRNGKey(0), x[:2], train=False)
    v = {"params": jax.tree.map(lambda a: a * 8.0, v["params"]), "batch_stats": v["batch_stats"]}
    w = jnp.ones(len(y))
    finite = lambda t: all(bool(jnp.isfinite(a).all()) for a in jax.tree.leaves(t))
    kw = dict(epochs=3, batch_size=16, learning_rate=50.0)
    assert not finite(fine_tune(clf, v, x, y, w, jax.random.PRNGKey(1), max_grad_norm=None, **kw))
    assert finite(fine_tune(clf, v, x, y, w, jax.random.PRNGKey(1), **kw))
    with pytest.raises(PoisonJaxInputError, match="max_grad_norm"):
        fine_tune(clf, v, x, y, w, jax.random.PRNGKey(1), max_grad_norm=0.0, **kw)
