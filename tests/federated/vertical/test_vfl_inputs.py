"""Vertical splits and bad input: one-line errors naming the argument; pure incentive math."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.federated.vertical import data as vdata
from poisonjax.federated.vertical import engine as E
from poisonjax.federated.vertical import federation as F
from poisonjax.federated.vertical import incentives as inc


def _tab(n=200, f=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, f)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32)


def _one_line(excinfo, word):
    msg = str(excinfo.value)
    assert "\n" not in msg and word in msg, msg


def test_image_strips_and_tabular_heterogeneous_split():
    img = np.arange(2 * 4 * 6 * 1, dtype=np.float32).reshape(2, 4, 6, 1)
    vd = vdata.make_vertical(img, strip_widths=(1, 2, 3))
    assert vd.x_parts.shape == (3, 2, 12) and list(vd.widths) == [4, 8, 12]
    np.testing.assert_array_equal(vd.x_parts[1, :, :8], img[:, :, 1:3, 0].reshape(2, -1))
    assert np.all(vd.x_parts[0, :, 4:] == 0)                       # zero padding
    x, _ = _tab()
    vd = vdata.make_vertical(x, groups=[[0, 1, 2, 3, 4, 5], [6], [7, 8, 9]])
    assert list(vd.widths) == [6, 1, 3]
    np.testing.assert_array_equal(vd.x_parts[2, :, :3], x[:, 7:])
    # the label holder becomes party 0
    vd = vdata.make_vertical(x, groups=[[0], [1, 2], [3, 4, 5]], label_holders=(2,))
    assert list(vd.widths) == [3, 1, 2]
    np.testing.assert_array_equal(vdata.apply_split(vd, x), vd.x_parts)


def test_bad_input_one_line_errors():
    x, y = _tab()
    with pytest.raises(PoisonJaxInputError) as e:
        vdata.make_vertical(x, num_parties=11)
    _one_line(e, "num_parties")
    with pytest.raises(PoisonJaxInputError) as e:
        vdata.make_vertical(np.zeros((3, 4, 4, 1)), num_parties=5)
    _one_line(e, "num_parties")
    with pytest.raises(PoisonJaxInputError) as e:
        vdata.make_vertical(x, groups=[[0, 1], [], [2]])
    _one_line(e, "no columns")
    with pytest.raises(PoisonJaxInputError) as e:
        vdata.make_vertical(np.zeros((3, 4, 4, 1)), strip_widths=(2, 2, 0))
    _one_line(e, "strip_widths")
    with pytest.raises(PoisonJaxInputError) as e:
        vdata.strip_widths_for(28, 4, strip_width=10)
    _one_line(e, "strip_width")
    with pytest.raises(PoisonJaxInputError) as e:
        vdata.make_vertical(x, num_parties=2, label_holders=(0, 1))
    _one_line(e, "label_holders")
    kw = dict(num_parties=3, val_size=50, hidden=8, embed_dim=4, top_hidden=8, num_classes=2)
    for bad, word in [(dict(eps_max=1.5), "eps_max"), (dict(eps_min=0.0), "eps_min"), (dict(delta=1.0), "delta"),
                      (dict(delta=-1e-5), "delta"), (dict(tau=-1.0), "tau"), (dict(drop_mode="median"), "drop_mode"),
                      (dict(mechanism="analytic", eps_min=2.0, eps_max=1.0), "eps_min")]:
        with pytest.raises(PoisonJaxInputError) as e:
            F.build_federation(x, y, x, y, **kw, **bad)
        _one_line(e, word)
    fed = F.build_federation(x, y, x, y, **kw)
    with pytest.raises(PoisonJaxInputError) as e:
        F.make_problem(fed, "fixed_dp", eps=2.0)                        # classic mechanism: eps must be <= 1
    _one_line(e, "eps")
    with pytest.raises(PoisonJaxInputError) as e:
        F.make_problem(fed, "opus", eps=-0.5)
    _one_line(e, "eps")


def test_budget_balance_and_rewards_math():
    rng = np.random.default_rng(0)
    passive = jnp.array([0.0, 1, 1, 1, 1])
    for _ in range(10):
        c = jnp.asarray(rng.normal(size=5), jnp.float32)
        cost = jnp.asarray(rng.uniform(0.01, 1, size=5), jnp.float32)
        eps = jnp.asarray(rng.uniform(0.1, 1, size=5), jnp.float32)
        tau = float(rng.uniform(0, 10))
        raw = inc.raw_rewards(c, cost, eps, passive, 1.0, 0.1, 1.0)
        np.testing.assert_allclose(np.asarray(raw)[1:], np.asarray(c * cost ** 0.2 + 0.1 / eps)[1:], rtol=1e-6)
        r, _ = inc.balanced_rewards(raw, passive, tau)
        assert abs(float(jnp.sum(r)) - tau) <= 1e-6 * max(tau, 1.0)
        assert float(r[0]) == 0.0 and float(jnp.min(r)) >= 0.0
    # the analytic gradient of the normalised reward matches finite differences of R_k(eps_k)
    c, cost = jnp.array([0.0, 0.5, 0.2, 0.1]), jnp.array([1.0, 0.05, 0.03, 0.02])
    eps = jnp.array([1.0, 0.5, 0.7, 0.9])
    pas = jnp.array([0.0, 1, 1, 1])
    dc = jnp.array([0.0, 0.3, 0.1, 0.05])
    raw = inc.raw_rewards(c, cost, eps, pas, 1.0, 0.1, 1.0)
    _, s = inc.balanced_rewards(raw, pas, 1.0)
    g = inc.reward_eps_gradient(raw, s, dc, cost, eps, pas, 1.0, 0.1, 1.0, 1.0)
    for k in (1, 2, 3):
        h = 1e-3
        rk = jax.jit(lambda e: inc.balanced_rewards(inc.raw_rewards(c.at[k].add(dc[k] * (e - eps[k])), cost,
                                                                    eps.at[k].set(e), pas, 1.0, 0.1, 1.0), pas, 1.0)[0][k])
        fd = (rk(eps[k] + h) - rk(eps[k] - h)) / (2 * h)
        assert float(g[k]) == pytest.approx(float(fd), rel=2e-2, abs=1e-4)


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_loo_matches_direct_computation(mode):
    spec = E.VFLSpec(num_parties=4, d_max=5, hidden=8, embed_dim=3, top_hidden=8, num_classes=3)
    params = E.init_params(spec, jax.random.PRNGKey(0))
    sent = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 3))
    y = jax.random.randint(jax.random.PRNGKey(2), (32,), 0, 3)

    @jax.jit
    def loss_of(s):
        import optax
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(E.top_logits(spec, params["top"], s), y))

    losses = jax.jit(lambda s: inc.loo_losses(loss_of, s, mode))(sent)
    full = float(loss_of(sent))
    assert float(losses[0]) == pytest.approx(full, rel=1e-5)
    for k in range(4):
        s = np.array(sent)
        s[k] = 0.0 if mode == "zero" else np.broadcast_to(s[k].mean(0), s[k].shape)
        lk = float(loss_of(jnp.asarray(s)))
        assert float(losses[k + 1]) == pytest.approx(lk, rel=1e-5)
        assert float(inc.loo_contribution(losses)[k]) == pytest.approx((lk - full) / full, rel=1e-4, abs=1e-6)


def test_engine_sigma_is_the_dp_formula_and_bytes():
    spec = E.VFLSpec(num_parties=4, d_max=5, hidden=8, embed_dim=3, top_hidden=8, num_classes=3, delta=1e-5,
                     clip_norm=2.0, batch_size=16, val_batch=8)
    eps = jnp.array([1.0, 0.25, 0.5, 1.0])
    s = E.sigmas(spec, eps, jnp.array([0.0, 1, 1, 1]))
    expected = math.sqrt(2 * math.log(1.25 / 1e-5)) * 2.0 / np.array([0.25, 0.5, 1.0])
    np.testing.assert_allclose(np.asarray(s)[1:], expected, rtol=1e-6)
    assert float(s[0]) == 0.0                                          # the active party does not noise itself
    assert E.round_bytes(spec, False) == 4 * 2 * 3 * 16 * 3
    assert E.round_bytes(spec, True) == 4 * (2 * 3 * 16 * 3 + 3 * 3 * 8 * 3)


@pytest.mark.slow  # compiles the full training round (~4 min on the loaded shared machine)
def test_opus_round_and_gradient_replacement_step():
    """``opus_round``'s contributions equal the LOO computed directly; ``make_step``'s gradient replacement
    (Liu et al. 2020) changes only what the malicious party sends and learns."""
    x, y = _tab(n=120, f=9)
    fed = F.build_federation(x, y, x, y, num_parties=3, val_size=40, hidden=8, embed_dim=4, top_hidden=8,
                             num_classes=2, batch_size=16, val_batch=40, mechanism="analytic", eps_min=0.5,
                             eps_max=8.0)
    spec = fed.spec
    pb = F.make_problem(fed, "opus", eps=4.0)
    params = E.init_params(spec, jax.random.PRNGKey(0))
    eps = jnp.full((3,), 4.0)
    new_eps, aux = jax.jit(lambda p, e, k: E.opus_round(spec, p, e, k, pb))(params, eps, jax.random.PRNGKey(5))
    assert abs(float(aux["budget_sum"]) - spec.tau) <= 1e-6
    assert np.all(np.asarray(new_eps)[1:] >= 0.5) and np.all(np.asarray(new_eps)[1:] <= 8.0)
    # the same contributions by hand: same validation rows, same noise, each party zeroed in turn
    import optax
    kv, kz = jax.random.split(jax.random.PRNGKey(5))
    vidx = jax.random.randint(kv, (spec.val_batch,), 0, len(fed.yv))
    dpm = pb.passive * pb.dp_on
    ev = E.privatize(spec, E.embed(spec, params["bottom"], pb.xv[:, vidx], pb.hmask), dpm)
    sent = np.asarray(ev + E.sigmas(spec, eps, dpm)[:, None, None] * jax.random.normal(kz, ev.shape))
    ce = lambda s: float(jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        E.top_logits(spec, params["top"], jnp.asarray(s)), pb.yv[vidx])))
    full = ce(sent)
    for k in range(3):
        dropped = sent.copy()
        dropped[k] = 0.0
        assert float(aux["contrib"][k]) == pytest.approx((ce(dropped) - full) / full, rel=1e-3, abs=1e-5)
    step = jax.jit(E.make_step(spec))
    init = E.make_vfl(spec).init
    s0 = init(jax.random.PRNGKey(1), pb)
    every = np.arange(len(fed.y))[:10]
    pb_bd = F.make_problem(fed, "opus", eps=4.0, backdoor=True, bd_party=2, known_ids=every, bd_gamma=5.0,
                           trigger_size=1)
    pb_no = F.make_problem(fed, "opus", eps=4.0, n_known=10)
    a, b = step(s0, pb_bd), step(s0, pb_no)
    diff = [float(jnp.max(jnp.abs(u[k] - v[k]))) for k in range(3)
            for u, v in [(a.params["bottom"]["params"]["Dense_0"]["kernel"], b.params["bottom"]["params"]["Dense_0"]["kernel"])]]
    assert diff[2] > 0.0                                   # the attacker's bottom update differs
    assert float(jnp.max(jnp.abs(a.params["top"]["params"]["Dense_0"]["kernel"]
                                 - b.params["top"]["params"]["Dense_0"]["kernel"]))) > 0.0  # and the top learns it


def test_privatize_grads_clips_and_noises_only_dp_parties():
    """Gradient perturbation: per-sample (B x g) clipped to G, noise std sigma(eps)/Delta x G, rescaled by 1/B;
    parties outside the mask untouched; the empirical noise std matches."""
    spec = E.VFLSpec(num_parties=3, d_max=4, hidden=4, embed_dim=64, top_hidden=4, num_classes=2,
                     mechanism="analytic", eps_max=10.0, grad_clip=0.5)
    b = 256
    g = jnp.ones((3, b, 64)) * (3.0 / b)                 # per-sample norm 3 * 8 = 24 > G
    eps = jnp.array([4.0, 4.0, 4.0])
    out = np.asarray(E.privatize_grads(spec, g, eps, jnp.array([0.0, 1.0, 0.0]), jax.random.PRNGKey(0)))
    np.testing.assert_array_equal(out[0], np.asarray(g[0]))
    np.testing.assert_array_equal(out[2], np.asarray(g[2]))
    sig = float(E.sigmas(spec, eps, jnp.ones(3))[1]) / spec.clip_norm * spec.grad_clip
    clipped = 0.5 / 8.0                                   # each coordinate of the clipped per-sample gradient
    resid = out[1] * b - clipped
    assert abs(resid.mean()) < 4 * sig / math.sqrt(resid.size)
    assert resid.std() == pytest.approx(sig, rel=0.03)


def test_grad_clip_and_clean_evaluation():
    x, y = _tab()
    with pytest.raises(PoisonJaxInputError) as e:
        F.build_federation(x, y, x, y, num_parties=2, val_size=20, grad_clip=0.0)
    _one_line(e, "grad_clip")
    fed = F.build_federation(x, y, x, y, num_parties=2, val_size=20, hidden=4, embed_dim=2, top_hidden=4,
                             num_classes=2, mechanism="analytic", eps_max=10.0)
    pb = F.make_problem(fed, "opus", eps=0.6, grad_dp=True)
    assert float(pb.gdp_on) == 1.0 and float(F.make_problem(fed, "vanilla", grad_dp=True).gdp_on) == 0.0
    st = E.make_vfl(fed.spec).init(jax.random.PRNGKey(0), pb)
    clean = F.test_accuracy(fed, st, pb)                  # default: no test-time noise
    ref = E.accuracy(fed.spec, st.params, fed.xte, fed.yte, pb.hmask, st.eps, np.zeros(2, np.float32),
                     jax.random.PRNGKey(9))
    assert clean == ref
