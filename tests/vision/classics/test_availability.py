"""Availability poisons (error-minimizing, error-maximizing, TensorClog) do what their objectives say,
on a tiny digits subset; bad eps/budget give one-line errors. The ">= 30 points below random noise"
criterion of issue 22 is measured by the study; the slow CIFAR-10 test asserts the victims' drop vs random
noise in the papers' setting (on 8x8 digits the drop is within ~1-5 points and seed-dependent, so no quick
victim-accuracy test is kept)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from poisonjax.core.training import init_and_train, softmax_cross_entropy_loss
from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.vision.classics import availability as av
from poisonjax.vision.models import make_classifier


@pytest.fixture(scope="module")
def tiny():
    from poisonjax.data.images import load_digits
    d = load_digits()
    x, y = jnp.asarray(d.x_train[:256]), jnp.asarray(d.y_train[:256])
    net = make_classifier("mlp", 10, hidden=32)
    init = lambda k: net.init(k, x[:1])
    loss = softmax_cross_entropy_loss(net.apply)
    params = init_and_train(init, loss, optax.adam(1e-2), {"x": x, "y": y}, jax.random.PRNGKey(0), epochs=5,
                            batch_size=64).params
    return x, y, init, loss, params


def _mean_loss(loss, p, x, y):
    return float(jnp.mean(loss(p, {"x": x, "y": y}, jax.random.PRNGKey(0))))


def test_error_max_and_min_and_tensorclog_move_their_objectives(tiny):
    x, y, init, loss, params = tiny
    eps = 16 / 255
    rnd = av.uniform_noise(jax.random.PRNGKey(1), x, eps)
    dmax = av.error_maximizing_noise(params, loss, x, y, eps=eps, num_classes=10, targeted=False, steps=5)
    dmin = av.error_minimizing_noise(init, loss, x, y, jax.random.PRNGKey(2), eps=eps, num_classes=10, rounds=2,
                                     pgd_steps=5, batch_size=64)
    dcls = av.error_minimizing_noise(init, loss, x, y, jax.random.PRNGKey(2), eps=eps, num_classes=10, mode="class",
                                     rounds=2, pgd_steps=5, batch_size=64)
    dclog = av.tensorclog_noise(params, loss, x, y, eps=eps, steps=5, batch_size=64)
    for d in (rnd, dmax, dmin, dcls, dclog):
        assert float(jnp.abs(d).max()) <= eps + 1e-6 and float((x + d).min()) >= -1e-6 and float((x + d).max()) <= 1 + 1e-6
    # class-wise noise is one pattern per class
    for c in range(3):
        rows = np.asarray(dcls)[np.asarray(y) == c]
        inside = (np.asarray(x)[np.asarray(y) == c] + rows > 1e-6) & (np.asarray(x)[np.asarray(y) == c] + rows < 1 - 1e-6)
        ref = rows[0]
        assert np.allclose(np.where(inside & inside[:1], rows, ref[None]), ref[None], atol=1e-6)
    assert _mean_loss(loss, params, x + dmax, y) > _mean_loss(loss, params, x + rnd, y) + 0.1
    gn = lambda d: float(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(
        jax.grad(lambda p: jnp.mean(loss(p, {"x": x + d, "y": y}, jax.random.PRNGKey(0))))(params))))
    assert gn(dclog) < gn(rnd)
    # error-minimizing noise is easier to fit: a fresh model's loss after 1 epoch is lower on it
    fit = lambda d: _mean_loss(loss, init_and_train(init, loss, optax.adam(1e-2), {"x": x + d, "y": y},
                                                   jax.random.PRNGKey(5), epochs=1, batch_size=64).params, x + d, y)
    assert fit(dmin) < fit(rnd)


def test_bad_eps_and_budget_are_one_line_errors(tiny):
    x, y, init, loss, params = tiny
    for bad in (0.0, -0.1, 1.5, float("nan"), "x"):
        with pytest.raises(PoisonJaxInputError, match="eps must be in \\(0, 1\\]") as e:
            av.uniform_noise(jax.random.PRNGKey(0), x, bad)
        assert "\n" not in str(e.value)
    with pytest.raises(PoisonJaxInputError, match="eps"):
        av.error_maximizing_noise(params, loss, x, y, eps=8, num_classes=10)
    with pytest.raises(PoisonJaxInputError, match="budget"):
        av.check_budget(1.2)
    with pytest.raises(PoisonJaxInputError, match="mode"):
        av.error_minimizing_noise(init, loss, x, y, jax.random.PRNGKey(0), eps=0.1, num_classes=10, mode="pixel")


@pytest.mark.slow
@pytest.mark.parametrize("name,epochs,min_drop", [
    pytest.param("cifar10", 12, 0.08, marks=pytest.mark.requires_data("cifar10_jpeg_subset")),
    pytest.param("cifar10_20k", 30, 0.30, marks=pytest.mark.requires_data("cifar10_20k"))])
def test_availability_on_cifar10_convnet_vs_random_noise(name, epochs, min_drop):
    """The papers' setting (CIFAR-10, a ConvNet victim, 100 % of the training set perturbed, eps 8/255):
    class-wise error-minimizing and class-targeted error-maximizing noise vs uniform noise.

    * ``cifar10`` (2,000 training images, 12 epochs). Measured (busy Xeon): random noise 0.409, class-wise
      0.265, error-max 0.234; the issue's 30 points are out of reach there (clean ~0.41, chance 0.10), so
      this asserts 8 points.
    * ``cifar10_20k`` (10,000 training images, 30 epochs; the paper variant): issue 22's criterion, 30 points.
      Measured: 34.6 / 33.9 points (study, `poisonjax run classics --variant paper`) and 31.7 / 35.0 with other
      crafting and victim seeds. About 15 min on 2 idle cores.
    """
    from poisonjax.data.images import load_image_dataset
    from poisonjax.vision.classics.compare import availability_comparison
    data = load_image_dataset(name)
    e = 8 / 255
    r = availability_comparison(data, jax.random.PRNGKey(0), eps_values=(e,), attacks=("error_min_class", "error_max"),
                                model="convnet", n_victims=1, victim_epochs=epochs, rounds=10, pgd_steps=1, lr=1e-3,
                                em_step_fraction=0.25, max_steps=10)
    assert r[e]["drop_vs_random"]["error_min_class"] >= min_drop, r
    assert r[e]["drop_vs_random"]["error_max"] >= min_drop, r


@pytest.mark.slow
def test_availability_vs_random_noise_on_digits_reports_both():
    """Measures (does not assert) the issue's criterion; asserts only that every number is produced."""
    from poisonjax.data.images import load_digits
    from poisonjax.vision.classics.compare import availability_comparison
    r = availability_comparison(load_digits(), jax.random.PRNGKey(0), rounds=4, victim_epochs=10, max_steps=5)
    for e in (8 / 255, 16 / 255):
        assert set(r[e]) >= {"random_noise", "error_min_sample", "error_min_class", "error_max", "tensorclog"}
        assert all(0 <= v <= 1 for k, v in r[e].items() if k != "drop_vs_random")


@pytest.mark.slow
@pytest.mark.extended  # CI runs it after the main suite while time allows (.ci/run)
def test_sample_wise_noise_steps_are_their_own_setting(tmp_path):
    """``sample_pgd_steps`` / ``sample_step_fraction`` reach the sample-wise crafting only: the class-wise
    noise is bit-equal whatever they are, the sample-wise noise changes."""
    from poisonjax.data.images import ImageDataset, load_image_dataset
    from poisonjax.vision.classics.compare import availability_comparison
    d = load_image_dataset("digits")
    sub = ImageDataset(d.x_train[:192], d.y_train[:192], d.x_test[:64], d.y_test[:64], 10, "digits_tiny")
    kw = dict(eps_values=(16 / 255,), attacks=("error_min_sample", "error_min_class"), n_victims=1, victim_epochs=1,
              rounds=1, train_steps=2, pgd_steps=2, batch_size=64, stop_acc=1.1)
    availability_comparison(sub, jax.random.PRNGKey(0), workdir=tmp_path / "a", **kw)
    availability_comparison(sub, jax.random.PRNGKey(0), workdir=tmp_path / "b", sample_pgd_steps=0,
                            sample_step_fraction=0.3, **kw)
    load = lambda w, a: np.load(tmp_path / w / "deltas" / f"{a}_16.npy")
    np.testing.assert_array_equal(load("a", "error_min_class"), load("b", "error_min_class"))
    assert not np.array_equal(load("a", "error_min_sample"), load("b", "error_min_sample"))


@pytest.mark.slow
@pytest.mark.extended  # CI runs it after the main suite while time allows (.ci/run)
def test_stored_perturbations_are_reused_only_with_their_own_settings(tmp_path):
    """A workdir's stored TensorClog noise is reused by a rerun with the same settings (bit-equal), a rerun
    that changes a crafting setting (here the step count) gets prepare_workdir's one-line error naming the
    workdir and the setting, never the old noise; ``max_step_fraction`` reaches the crafting."""
    from poisonjax.data.images import ImageDataset, load_image_dataset
    from poisonjax.vision.classics.compare import availability_comparison
    d = load_image_dataset("digits")
    sub = ImageDataset(d.x_train[:128], d.y_train[:128], d.x_test[:64], d.y_test[:64], 10, "digits_tiny")
    kw = dict(eps_values=(16 / 255,), attacks=("tensorclog",), model="mlp", n_victims=1, victim_epochs=1,
              craft_epochs=1, batch_size=64)
    r1 = availability_comparison(sub, jax.random.PRNGKey(0), workdir=tmp_path / "a", max_steps=2, **kw)
    stored = tmp_path / "a" / "deltas" / "tensorclog_16.npy"
    first = np.load(stored)
    r2 = availability_comparison(sub, jax.random.PRNGKey(0), workdir=tmp_path / "a", max_steps=2, **kw)
    assert r2 == r1 and np.array_equal(np.load(stored), first)
    from poisonjax.core.runner import CheckpointMismatchError
    with pytest.raises(CheckpointMismatchError, match=r"workdir .*tensorclog_16.*differs in max_steps"):
        availability_comparison(sub, jax.random.PRNGKey(0), workdir=tmp_path / "a", max_steps=3, **kw)
    availability_comparison(sub, jax.random.PRNGKey(0), workdir=tmp_path / "b", max_steps=2, max_step_fraction=0.1,
                            **kw)
    assert not np.array_equal(np.load(tmp_path / "b" / "deltas" / "tensorclog_16.npy"), first)
