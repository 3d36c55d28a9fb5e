"""MetaPoison: the K-step unrolled meta-gradient over a staggered ensemble lowers the adversarial
loss of models that take K steps on the poisons, more than random noise of the same eps does."""
import jax
import jax.numpy as jnp
import optax
import pytest

from poisonjax.core.gradient_matching import GradientMatchingProblem
from poisonjax.core.runner import run as run_attack
from poisonjax.core.training import softmax_cross_entropy_loss
from poisonjax.vision.classics.metapoison import metapoison_attack
from poisonjax.vision.models import make_classifier
from poisonjax.vision.witches_brew import checkpoint_surrogates, random_noise_deltas


def test_metapoison_lowers_adversarial_loss_after_k_steps_more_than_random_noise():
    from poisonjax.data.images import load_digits
    d = load_digits()
    x, y = jnp.asarray(d.x_train[:300]), jnp.asarray(d.y_train[:300])
    net = make_classifier("mlp", 10, hidden=32)
    init = lambda k: net.init(k, x[:1])
    loss = softmax_cross_entropy_loss(net.apply)
    sur = checkpoint_surrogates(init, loss, optax.adam(1e-2), {"x": x, "y": y}, jax.random.PRNGKey(0),
                                checkpoints=(1, 2, 3, 4), batch_size=64)          # M = 4 staggered surrogates
    adv = 3
    pidx = jnp.flatnonzero(y == adv, size=8)
    target = jnp.asarray(d.x_test[jnp.flatnonzero(jnp.asarray(d.y_test) == 8, size=1)])
    eps = 32 / 255
    prob = GradientMatchingProblem(sur, x[pidx], y[pidx], target, jnp.full((1,), adv, jnp.int32), jnp.float32(eps))
    atk = metapoison_attack(loss, unroll=2, inner_lr=0.1, lr=0.1 * eps)
    st = run_attack(atk, prob, 15, None, progress=False, chunk_size=15).state
    assert float(jnp.abs(st.delta).max()) <= eps + 1e-6
    rnd = random_noise_deltas(jax.random.PRNGKey(1), prob.base_images, eps)
    s0 = atk.init(jax.random.PRNGKey(0), prob)
    step = jax.jit(atk.step)
    meta = lambda dl: float(step(s0._replace(delta=dl), prob).loss)   # adversarial loss after K steps at delta
    assert meta(st.delta) < meta(rnd) - 0.01
    assert meta(st.delta) < meta(jnp.zeros_like(rnd))


@pytest.mark.slow
def test_metapoison_vs_random_noise_and_witches_brew_on_digits():
    from poisonjax.data.images import load_digits
    from poisonjax.vision.classics.compare import metapoison_comparison
    r = metapoison_comparison(load_digits(), jax.random.PRNGKey(0), trials=4, steps=30, wb_steps=40)
    assert r["metapoison"]["target_prob"] > r["random_noise"]["target_prob"], r
    assert "witches_brew" in r


def test_metapoison_members_train_on_mixed_batches_and_reset_to_their_checkpoints():
    """With a clean pool the K unrolled steps see poisons + a clean mini-batch, each member trains during
    crafting and returns to its checkpoint every ``reset_every`` steps; the crafted poisons still lower the
    meta-objective more than random noise does."""
    from poisonjax.core.validation import PoisonJaxInputError
    from poisonjax.data.images import load_digits
    d = load_digits()
    x, y = jnp.asarray(d.x_train[:300]), jnp.asarray(d.y_train[:300])
    net = make_classifier("mlp", 10, hidden=32)
    loss = softmax_cross_entropy_loss(net.apply)
    sur = checkpoint_surrogates(lambda k: net.init(k, x[:1]), loss, optax.adam(1e-2), {"x": x, "y": y},
                                jax.random.PRNGKey(0), checkpoints=(1, 2), batch_size=64)
    adv, eps = 3, 32 / 255
    pidx = jnp.flatnonzero(y == adv, size=8)
    target = jnp.asarray(d.x_test[jnp.flatnonzero(jnp.asarray(d.y_test) == 8, size=1)])
    prob = GradientMatchingProblem(sur, x[pidx], y[pidx], target, jnp.full((1,), adv, jnp.int32), jnp.float32(eps))
    atk = metapoison_attack(loss, unroll=2, inner_lr=0.1, lr=0.1 * eps, clean_images=x[100:], clean_labels=y[100:],
                            clean_batch=32, train_steps=1, reset_every=4)
    step = jax.jit(atk.step)
    s = atk.init(jax.random.PRNGKey(0), prob)
    moved = lambda st: max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(st.params),
                                                                       jax.tree.leaves(sur)))
    for i in range(3):
        s = step(s, prob)
    assert moved(s) > 1e-4 and list(s.age) == [3, 3]          # members trained on the poisoned batches
    s = step(s, prob)
    assert moved(s) == 0.0 and list(s.age) == [0, 0]          # and are back at their checkpoints
    st = run_attack(atk, prob, 15, None, progress=False, chunk_size=15).state
    assert float(jnp.abs(st.delta).max()) <= eps + 1e-6
    s0 = atk.init(jax.random.PRNGKey(0), prob)
    meta = lambda dl: float(step(s0._replace(delta=dl), prob).loss)
    assert meta(st.delta) < meta(random_noise_deltas(jax.random.PRNGKey(1), prob.base_images, eps)) - 0.01
    with pytest.raises(PoisonJaxInputError, match="clean_images and clean_labels"):
        metapoison_attack(loss, clean_images=x)
    with pytest.raises(PoisonJaxInputError, match="train_steps"):
        metapoison_attack(loss, clean_images=x, clean_labels=y, train_steps=-1)


def test_select_inner_lr_takes_the_largest_step_that_lowers_every_members_training_loss():
    """The unrolled step size is chosen on training data: at the chosen size K SGD steps lower every
    surrogate's batch loss, and every larger grid value raises at least one member's loss."""
    from poisonjax.core.training import train_full_batch
    from poisonjax.core.validation import PoisonJaxInputError
    from poisonjax.data.images import load_digits
    from poisonjax.vision.classics.compare import metapoison_comparison
    from poisonjax.vision.classics.metapoison import INNER_LR_GRID, select_inner_lr
    d = load_digits()
    x, y = jnp.asarray(d.x_train[:400]), jnp.asarray(d.y_train[:400])
    net = make_classifier("mlp", 10, hidden=32)
    loss = softmax_cross_entropy_loss(net.apply)
    sur = checkpoint_surrogates(lambda k: net.init(k, x[:1]), loss, optax.adam(1e-2), {"x": x, "y": y},
                                jax.random.PRNGKey(0), checkpoints=(2, 4), batch_size=64)
    grid = (30.0,) + INNER_LR_GRID                      # 30: a step no network survives
    key = jax.random.PRNGKey(3)
    eta = select_inner_lr(loss, sur, x, y, unroll=2, grid=grid, batch=128, key=key)
    assert eta < 30.0 and eta in grid
    idx = jax.random.choice(key, x.shape[0], (128,), replace=False)
    lb = lambda p: float(jnp.mean(loss(p, {"x": x[idx], "y": y[idx]}, jax.random.PRNGKey(0))))

    def lowers_all(e):
        return all(lb(train_full_batch(lambda pp, _: jnp.mean(loss(pp, {"x": x[idx], "y": y[idx]},
                                                                   jax.random.PRNGKey(0))),
                                       jax.tree.map(lambda a: a[m], sur), optax.sgd(e), 2).params)
                   < lb(jax.tree.map(lambda a: a[m], sur)) for m in range(2))
    assert lowers_all(eta)
    assert not any(lowers_all(e) for e in grid if e > eta)
    with pytest.raises(PoisonJaxInputError, match="grid"):
        select_inner_lr(loss, sur, x, y, grid=(0.1, 0.0))
    with pytest.raises(PoisonJaxInputError, match="inner_lr"):
        metapoison_comparison(load_digits(), jax.random.PRNGKey(0), trials=1, steps=1, inner_lr="fast",
                              witches_brew=False, epochs=1, n_victims=1)


@pytest.mark.slow
@pytest.mark.extended  # CI runs it after the main suite while time allows (.ci/run)
def test_comparison_in_a_workdir_keeps_each_methods_victims_and_retrains_only_on_other_settings(tmp_path,
                                                                                                 monkeypatch):
    """A killed comparison resumes: each method's victim results are stored under ``workdir/victims/``; a rerun
    with the same settings reads them (never calls the victim training) and returns the same table, a rerun
    with another victim setting trains again."""
    from poisonjax.core import gradient_matching as gm
    from poisonjax.data.images import load_digits
    from poisonjax.vision.classics.compare import metapoison_comparison
    d = load_digits()
    kw = dict(trials=1, steps=2, witches_brew=False, epochs=1, n_victims=1, checkpoints=(1,), inner_lr=0.01,
              model="mlp")
    r1 = metapoison_comparison(d, jax.random.PRNGKey(0), workdir=tmp_path, **kw)
    assert sorted(p.name for p in (tmp_path / "victims").glob("*.json")) == [
        "metapoison.json", "none.json", "random_noise.json"]
    calls = []
    real = gm.victim_success
    monkeypatch.setattr(gm, "victim_success", lambda *a, **k: calls.append(1) or real(*a, **k))
    r2 = metapoison_comparison(d, jax.random.PRNGKey(0), workdir=tmp_path, **kw)
    assert r2 == r1 and not calls
    metapoison_comparison(d, jax.random.PRNGKey(0), workdir=tmp_path, **dict(kw, epochs=2))
    assert calls
