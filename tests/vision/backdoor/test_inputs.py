"""Backdoor suite: bad input gets one clear error naming the argument; attacks poison what they say."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.vision.backdoor import attacks as A
from poisonjax.vision.backdoor import detectors as D


@pytest.fixture(scope="module")
def data():
    r = np.random.RandomState(0)
    x = r.rand(200, 16, 16, 3).astype(np.float32)
    y = np.repeat(np.arange(10), 20).astype(np.int32)
    return x, y


KEY = jax.random.PRNGKey(0)


@pytest.mark.parametrize("name", ["badnets", "blended", "wanet", "adap_blend", "adap_patch", "tact"])
def test_poison_rate_outside_unit_interval(data, name):
    x, y = data
    for bad in (-0.1, 1.5):
        with pytest.raises(PoisonJaxInputError, match="poison_rate"):
            A.poison(name, KEY, x, y, num_classes=10, poison_rate=bad)


def test_target_class_outside_label_set(data):
    x, y = data
    for bad in (10, -1):
        with pytest.raises(PoisonJaxInputError, match="target_class"):
            A.badnets(KEY, x, y, num_classes=10, target_class=bad)


def test_trigger_larger_than_image(data):
    x, y = data
    with pytest.raises(PoisonJaxInputError, match="size"):
        A.badnets(KEY, x, y, num_classes=10, trigger_size=17)
    with pytest.raises(PoisonJaxInputError, match="patch_size"):
        A.adap_patch(KEY, x, y, num_classes=10, patch_size=9)
    with pytest.raises(PoisonJaxInputError, match="k must"):
        A.wanet(KEY, x, y, num_classes=10, k=17)


def test_images_not_nhwc_in_unit_range(data):
    x, y = data
    with pytest.raises(PoisonJaxInputError, match="x must be NHWC"):
        A.badnets(KEY, x[:, :, :, 0], y, num_classes=10)
    with pytest.raises(PoisonJaxInputError, match="x must be NHWC"):
        A.badnets(KEY, np.transpose(x, (0, 3, 1, 2)), y, num_classes=10)      # NCHW
    with pytest.raises(PoisonJaxInputError, match=r"x must lie in \[0, 1\]"):
        A.blended(KEY, x * 255.0, y, num_classes=10)


def test_detector_more_flags_than_samples(data):
    r = np.random.RandomState(1)
    f = r.randn(100, 8).astype(np.float32)
    y = np.repeat(np.arange(10), 10)
    with pytest.raises(PoisonJaxInputError, match="poison_budget"):
        D.spectral_signatures(f, y, 10, poison_budget=0.9, multiplier=1.5)     # 135 flags > 100 rows
    with pytest.raises(PoisonJaxInputError, match="k asks for 101 flags"):
        D.flag_top_k(jnp.zeros(100), 101)


def test_errors_are_one_line(data):
    x, y = data
    try:
        A.badnets(KEY, x, y, num_classes=10, poison_rate=2.0)
    except PoisonJaxInputError as e:
        assert "\n" not in str(e)


def test_attacks_poison_the_documented_rows(data):
    x, y = data
    n = len(y)
    bd = A.badnets(KEY, x, y, num_classes=10, poison_rate=0.1)
    idx = np.where(np.asarray(bd.poison_mask))[0]
    assert len(idx) == 20 and np.all(np.asarray(y)[idx] != 0) and np.all(np.asarray(bd.y)[idx] == 0)
    assert np.array_equal(np.asarray(bd.x)[~np.asarray(bd.poison_mask)], x[~np.asarray(bd.poison_mask)])
    s = A.sig(KEY, x, y, num_classes=10, poison_rate=0.05, target_class=3)
    idx = np.where(np.asarray(s.poison_mask))[0]
    assert len(idx) == 10 and np.all(y[idx] == 3) and np.array_equal(np.asarray(s.y), y)   # clean label
    assert np.abs(np.asarray(s.x) - x).max() <= 20 / 255 + 1e-6
    b = A.blended(KEY, x, y, num_classes=10, poison_rate=0.1, alpha=0.2)
    i = int(np.where(np.asarray(b.poison_mask))[0][0])
    pat = np.asarray(A.random_pattern(jax.random.PRNGKey(1234), x.shape[1:]))
    np.testing.assert_allclose(np.asarray(b.x)[i], 0.8 * x[i] + 0.2 * pat, atol=1e-6)
    t = A.tact(KEY, x, y, num_classes=10, poison_rate=0.05, cover_rate=0.05, source_classes=(1,))
    assert np.all(y[np.asarray(t.poison_mask)] == 1) and np.all(np.asarray(t.y)[np.asarray(t.poison_mask)] == 0)
    cov = np.asarray(t.cover_mask)
    assert cov.sum() == 10 and np.all(~np.isin(y[cov], [0, 1])) and np.array_equal(np.asarray(t.y)[cov], y[cov])
    w = A.wanet(KEY, x, y, num_classes=10, poison_rate=0.05, cross_ratio=2.0)
    assert int(w.poison_mask.sum()) == 10 and int(w.cover_mask.sum()) == 20
    assert not np.any(np.asarray(w.poison_mask) & np.asarray(w.cover_mask))
    ab = A.adap_blend(KEY, x, y, num_classes=10, poison_rate=0.05, cover_rate=0.05)
    assert int(ab.poison_mask.sum()) == 10 and int(ab.cover_mask.sum()) == 10
    # every poisoned image stays in [0, 1]
    for r in (bd, s, b, t, w, ab):
        assert float(r.x.min()) >= 0 and float(r.x.max()) <= 1
    assert n == 200


def test_metrics_match_sklearn():
    from sklearn.metrics import confusion_matrix
    r = np.random.RandomState(2)
    flags = r.rand(300) < 0.3
    pm = r.rand(300) < 0.2
    tpr, fpr = D.detection_rates(flags, pm)
    tn, fp, fn, tp = confusion_matrix(pm, flags).ravel()
    assert tpr == pytest.approx(tp / (tp + fn)) and fpr == pytest.approx(fp / (fp + tn))
    scores = r.randn(300) + 3 * pm
    thr = np.quantile(scores[~pm], 0.95)
    assert D.tpr_at_fpr(scores, pm, 0.05) == pytest.approx((scores[pm] > thr).mean())


@pytest.mark.parametrize("override,match", [
    (("attack_params", "badnets", "poison_rate", 1.5), "poison_rate"),
    (("target_class", None, None, 12), "target_class"),
    (("attack_params", "badnets", "trigger_size", 40), "size"),
    (("defense_params", "confusion_training", "lam", 0.5), "lam"),
    (("checkpoint_every", None, None, 0), "checkpoint_every"),
])
def test_study_checks_inputs_before_writing(tmp_path, override, match):
    import configs.backdoor as cb
    import experiments.backdoor as eb
    c = cb.get_config("quick")
    c.attacks = ("badnets",)
    a, b, k, v = override
    if b is None:
        c[a] = v
    else:
        c[a][b][k] = v
    wd = tmp_path / "wd"
    with pytest.raises(PoisonJaxInputError, match=match):
        eb.run(c, str(wd))
    assert not wd.exists()


def test_spectre_and_confusion_training_bad_input(data):
    from poisonjax.vision.backdoor.confusion import confusion_training
    from poisonjax.vision.backdoor.spectre import spectre
    r = np.random.RandomState(3)
    f = r.randn(100, 8).astype(np.float32)
    y = np.repeat(np.arange(10), 10)
    with pytest.raises(PoisonJaxInputError, match="asks for 135 flags"):
        spectre(f, y, 10, poison_budget=0.9)                                   # 1.5 x 0.9 x 100 > 100 rows
    with pytest.raises(PoisonJaxInputError, match="poison_budget"):
        spectre(f, y, 10, poison_budget=1.5)
    with pytest.raises(PoisonJaxInputError, match="labels must lie"):
        spectre(f, y + 1, 10, poison_budget=0.05)
    x, yy = data
    bad = dict(num_classes=10, key=KEY)
    with pytest.raises(PoisonJaxInputError, match="x must lie in"):
        confusion_training(None, None, x * 2, yy, x[:20], yy[:20], **bad)
    with pytest.raises(PoisonJaxInputError, match="x_clean must be NHWC"):
        confusion_training(None, None, x, yy, x[:20, :, :, 0], yy[:20], **bad)
    with pytest.raises(PoisonJaxInputError, match="y_clean must hold labels"):
        confusion_training(None, None, x, yy, x[:20], yy[:20] + 10, **bad)
    with pytest.raises(PoisonJaxInputError, match="distillation_ratios must decrease"):
        confusion_training(None, None, x, yy, x[:20], yy[:20], distillation_ratios=(0.1, 0.5), **bad)
    with pytest.raises(PoisonJaxInputError, match="lam"):
        confusion_training(None, None, x, yy, x[:20], yy[:20], lam=1.0, **bad)


def test_spectre_finds_a_planted_cluster_with_few_poisons():
    """SPECTRE's QUE scores rank a small planted cluster (5% of one class, the regime of the paper)
    above SS-level chance: TPR at 5% FPR well above 0.05."""
    from poisonjax.vision.backdoor.spectre import spectre
    r = np.random.RandomState(0)
    n, dim = 2000, 8
    f = r.randn(n, dim).astype(np.float32) * np.linspace(3, 0.5, dim).astype(np.float32)
    y = np.repeat(np.arange(4), n // 4)
    pm = np.zeros(n, bool)
    pm[:25] = True                                    # 25 of class 0's 500 rows
    f[:25] += 2.0 * r.randn(dim).astype(np.float32) + 1.5
    rep = spectre(f, y, 4, poison_budget=25 / n, k=8)
    assert rep.flags.sum() == round(1.5 * 25)
    assert D.tpr_at_fpr(rep.scores, pm, 0.05) > 0.6


def test_clean_eval_split_is_stratified_on_class_major_test_sets():
    """The CIFAR-10 test folders are read class-major: the defender's clean images (the study splits them off
    with ``stratified_split``) must still cover every class (taking the first rows gave only the target class on
    cifar10_20k), disjoint from the eval rows."""
    from poisonjax.data.images import stratified_split as clean_eval_split
    y = np.repeat(np.arange(10), 100)                  # class-major, as read_image_folder returns it
    ic, ie = clean_eval_split(y, 50, seed=0)
    assert len(ic) == 50 and len(ie) == 950 and not set(ic) & set(ie)
    assert np.array_equal(np.bincount(y[ic], minlength=10), np.full(10, 5))
    assert np.array_equal(clean_eval_split(y, 50, seed=0)[0], ic)       # seeded
    ic2, _ = clean_eval_split(y, 5, seed=1)                              # fewer rows than classes: plain random
    assert len(ic2) == 5
