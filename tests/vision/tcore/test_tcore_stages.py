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


def test_stage2_unlearning_stops_at_threshold_and_flags_channels():
    # 8 classes: a collapsed model (one class for every input) scores 1/8 < 0.2, as CIFAR-10's 1/10 does
    enc = _tiny_encoder()
    x, y = _tiny_images(classes=8)
    v = enc.init(jax.random.PRNGKey(0), x[:2])
    clf = as_classifier(enc, 8)
    head = train_head(features(enc, v, x), y, jnp.ones(len(y)), jax.random.PRNGKey(1), 8, epochs=40)
    model = with_head(v, head)
    unl, info = unlearn_norm(clf, model, x, y, target_accuracy=0.2, learning_rate=0.02, max_steps=200)
    assert float(info["initial_accuracy"]) > 0.5
    steps = int(info["steps"])
    assert float(info["accuracy"]) <= 0.2 and 0 < steps < 200
    _, before = unlearn_norm(clf, model, x, y, target_accuracy=0.2, learning_rate=0.02, max_steps=steps - 1) \
        if steps > 1 else (None, {"accuracy": info["initial_accuracy"]})
    assert float(before["accuracy"]) > 0.2                             # it stopped at the first step below
    filt, keep, finfo = filter_channels(clf, model, x, y, unlearn_lr=0.02, max_unlearn_steps=200, mask_steps=20,
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


_FAST = TCoreConfig(head_epochs=5, confusion_steps=20, mask_steps=5, max_unlearn_steps=20, per_class_rounds=1,
                    global_rounds=1, loss_growth=0.2, seed_fraction=0.05, max_seed_batch=32)


def test_resumed_process_equals_uninterrupted(tmp_path):
    from poisonjax.core.runner import run
    enc = _tiny_encoder()
    x, y = _tiny_images(64)
    v = enc.init(jax.random.PRNGKey(0), x[:2])
    key = jax.random.PRNGKey(3)
    full = run_tcore(enc, v, x, y, C, key, cfg=_FAST, workdir=str(tmp_path / "a"))
    opt, n_steps = tcore_process(enc, v, C, y, _FAST)
    cfg_id = {"tcore": dataclasses.asdict(_FAST), "mode": "linear", "run": None}
    run(opt, {"x": x, "y": y}, n_steps - 2, str(tmp_path / "b"), key=key, chunk_size=1, host_loop=True,
        progress=False, desc="tcore", config=cfg_id)                       # "killed" two steps early
    resumed = run_tcore(enc, v, x, y, C, key, cfg=_FAST, workdir=str(tmp_path / "b"))
    assert resumed.run.resumed_from == n_steps - 2
    assert np.array_equal(full.trusted, resumed.trusted) and np.array_equal(full.seed_mask, resumed.seed_mask)
    for a, b in zip(jax.tree.leaves(full.variables), jax.tree.leaves(resumed.variables)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert full.trusted.sum() == round(0.9 * len(y))


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
