r"""The vertical-FL engine: P parties, stacked bottom MLPs (one vmap), the active party's top model, and
OPUS-VFL's adaptive DP / leave-one-out contribution / incentive / privacy-utility step, all in one
jit-compiled ``step`` driven by :func:`poisonjax.core.runner.run` (checkpoints, resume, progress).

One round (= one mini-batch, as in split learning / VFL with a shared user index):

1. Every party ``k`` computes its embedding :math:`h_k = f_k(x_{k,b}) \in \mathbb R^{B\times E}` (all
   parties in one ``vmap`` over the stacked, zero-padded bottom models; hidden units beyond party ``k``'s
   width ``h_k`` are masked, so heterogeneous widths share one program).
2. A passive party under DP sends :math:`\tilde h_k = \mathrm{clip}_\Delta(h_k) + \mathcal N(0, \sigma_k^2)`
   with :math:`\sigma_k = \sigma(\varepsilon_k, \delta, \Delta)` (:mod:`poisonjax.core.privacy`).
3. The active party (labels, top model :math:`g`) computes :math:`L = \mathrm{CE}(g([\tilde h_0, ..,
   \tilde h_{P-1}]), y)`, updates :math:`g`, and sends back :math:`\partial L / \partial \tilde h_k`.
   Optionally (``gdp_on``) the returned gradients of DP parties are clipped per sample and noised at the same
   noise multiplier (:func:`privatize_grads`).
4. Each party back-propagates the received gradient through its own bottom model (``jax.vjp``) and
   updates it (SGD with momentum). Bytes exchanged: the ``(P-1) B E`` float32 embeddings and as many
   gradients, plus the validation embeddings of step 5.
5. OPUS-VFL: on a validation batch, the LOO losses (:mod:`.incentives`), the contributions
   :math:`c_k`, the budget-balanced rewards :math:`R_k`, and (adaptive mode) the party-side update of
   :math:`\varepsilon_k` by the gradient of :math:`U_k = R_k - \mathrm{cost}_k`, with
   :math:`\partial c_k/\partial\varepsilon_k` by a central finite difference (common random numbers).

Attack hooks in the step (all switched by arrays in the problem, so one compiled program serves every run):
``grad_scale [P]`` (a passive party's *malicious local optimizer*, Fu et al. 2022: it amplifies its own
updates so the top model leans on its features), and the gradient-replacement backdoor of Liu et al. 2020
(``bd_on``, see :mod:`.attacks`).
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from poisonjax.core import privacy
from poisonjax.core.types import AttackOptimizer
from poisonjax.federated.vertical import incentives as inc


class Bottom(nn.Module):
    """Party bottom model ``x [B, d_max] -> h [B, E]``: Dense(hidden) -> ReLU (masked to the party's width)
    -> Dense(E)."""

    hidden: int
    embed: int

    @nn.compact
    def __call__(self, x, hmask):
        h = nn.relu(nn.Dense(self.hidden)(x)) * hmask
        return nn.Dense(self.embed)(h)


class Top(nn.Module):
    """Active party's top model ``[B, P * E] -> logits [B, C]``: Dense(hidden) -> ReLU -> Dense(C)."""

    hidden: int
    num_classes: int

    @nn.compact
    def __call__(self, z):
        return nn.Dense(self.num_classes)(nn.relu(nn.Dense(self.hidden)(z)))


class VFLSpec(NamedTuple):
    """Static (hashable) settings of a vertical federation. ``drop_mode``: "zero" | "mean"
    (how the LOO drops a party); ``mechanism``: "classic" | "analytic" Gaussian; ``eps_warmup``: rounds before
    the parties start moving eps (before the model has learned anything every LOO contribution is ~0 and the
    privacy term alone would drive every eps to ``eps_min``); ``grad_clip``: per-sample L2 bound ``G`` of the
    gradients returned to a passive party when gradient perturbation is on (``VFLProblem.gdp_on``)."""

    num_parties: int
    d_max: int
    hidden: int
    embed_dim: int
    top_hidden: int
    num_classes: int
    batch_size: int = 128
    val_batch: int = 256
    lr: float = 0.05
    momentum: float = 0.9
    mechanism: str = "classic"
    delta: float = 1e-5
    clip_norm: float = 1.0
    eps_min: float = 0.1
    eps_max: float = 1.0
    eps_lr: float = 0.1
    fd_h: float = 0.05
    alpha: float = 1.0
    beta: float = 0.1
    tau: float = 1.0
    drop_mode: str = "zero"
    trigger_value: float = 1.0
    eps_warmup: int = 0
    grad_clip: float = 1.0


class VFLProblem(NamedTuple):
    """Arrays of one run (a pytree). ``x [P, N, d_max]``, ``y [N]``; ``xv [P, Nv, d_max]``, ``yv [Nv]``
    (validation, for LOO); ``hmask [P, hidden]``; ``cost [P]``; ``passive [P]``; ``dp_on``, ``adaptive``,
    ``equal`` (equal-split incentive), ``gdp_on`` (the active party also clips and noises the gradients it returns
    to DP parties, see :func:`privatize_grads`) scalars in {0, 1}; ``eps0 [P]``; ``grad_scale [P]``; backdoor:
    ``bd_on``, ``bd_party`` (int), ``known_ids [n_known]``, ``trig_mask [d_max]``, ``bd_gamma``."""

    x: Any
    y: Any
    xv: Any
    yv: Any
    hmask: Any
    cost: Any
    passive: Any
    dp_on: Any
    adaptive: Any
    equal: Any
    eps0: Any
    grad_scale: Any
    bd_on: Any
    bd_party: Any
    known_ids: Any
    trig_mask: Any
    bd_gamma: Any
    gdp_on: Any = 0.0


class VFLState(NamedTuple):
    """``params {"bottom": stacked [P, ...], "top": ...}``, ``opt_state``, ``key``, ``eps [P]``, ``aux``
    (this round's loss, contributions, rewards, utilities, budget sum, bytes), ``round`` (int32)."""

    params: Any
    opt_state: Any
    key: Any
    eps: Any
    aux: Any
    round: Any


def build_models(spec: VFLSpec):
    """The bottom (per-party) and top (active party) flax modules of a vertical federation ``spec``."""
    return Bottom(spec.hidden, spec.embed_dim), Top(spec.top_hidden, spec.num_classes)


def init_params(spec: VFLSpec, key):
    """Stacked bottom params (``vmap`` of ``init`` over ``P`` keys) and top params."""
    bottom, top = build_models(spec)
    kb, kt = jax.random.split(key)
    x0 = jnp.zeros((1, spec.d_max))
    pb = jax.vmap(lambda k: bottom.init(k, x0, jnp.ones((spec.hidden,))))(jax.random.split(kb, spec.num_parties))
    pt = top.init(kt, jnp.zeros((1, spec.num_parties * spec.embed_dim)))
    return {"bottom": pb, "top": pt}


def embed(spec: VFLSpec, bottom_params, x_parts, hmask):
    """All parties' embeddings ``[P, B, E]`` from ``x_parts [P, B, d_max]`` (one vmap)."""
    bottom, _ = build_models(spec)
    return jax.vmap(bottom.apply)(bottom_params, x_parts, hmask)


def top_logits(spec: VFLSpec, top_params, sent):
    """Logits ``[B, C]`` from the received embeddings ``sent [P, B, E]`` (concatenated per sample)."""
    _, top = build_models(spec)
    p, b, e = sent.shape
    return top.apply(top_params, jnp.transpose(sent, (1, 0, 2)).reshape(b, p * e))


def sigmas(spec: VFLSpec, eps, dp_mask):
    """Per-party noise scale ``[P]`` (0 where ``dp_mask`` is 0)."""
    return privacy.gaussian_sigma(eps, spec.delta, spec.clip_norm, spec.mechanism) * dp_mask


def privatize(spec: VFLSpec, emb, dp_mask):
    """Clip passive DP parties' per-sample embeddings to ``clip_norm`` (others unchanged)."""
    return jnp.where(dp_mask[:, None, None] > 0, privacy.clip_l2(emb, spec.clip_norm), emb)


def privatize_grads(spec: VFLSpec, g_sent, eps, gdp_mask, key):
    r"""Gradient perturbation on the backward channel (our reading of OPUS-VFL's "noise on what is exchanged",
    see the module docstring of :mod:`experiments.opus_vfl`): for parties with ``gdp_mask [P] == 1`` the active
    party clips each per-sample gradient :math:`B\,\partial L/\partial\tilde h_{k,i}` to L2 norm
    :math:`G` (``spec.grad_clip``) and adds :math:`\mathcal N(0, (\sigma_k G/\Delta)^2)`, i.e. the same noise
    multiplier :math:`\sigma(\varepsilon_k,\delta,\Delta)/\Delta` as party ``k``'s forward channel; then rescales
    by :math:`1/B`. ``g_sent [P, B, E]`` (the mean-loss gradient); others unchanged."""
    b = g_sent.shape[1]
    mult = sigmas(spec, eps, gdp_mask) / spec.clip_norm
    ps = privacy.clip_l2(g_sent * b, spec.grad_clip)
    noisy = (ps + (mult * spec.grad_clip)[:, None, None] * jax.random.normal(key, g_sent.shape)) / b
    return jnp.where(gdp_mask[:, None, None] > 0, noisy, g_sent)


def _ce(logits, y):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def round_bytes(spec: VFLSpec, with_opus: bool) -> int:
    """Bytes exchanged per round: (P-1) x B x E float32 embeddings up and gradients down; with OPUS also
    the validation embeddings at eps and eps +- h (3 x (P-1) x B_val x E)."""
    n = 2 * (spec.num_parties - 1) * spec.batch_size * spec.embed_dim
    if with_opus:
        n += 3 * (spec.num_parties - 1) * spec.val_batch * spec.embed_dim
    return 4 * n


def opus_round(spec: VFLSpec, params, eps, key, pb: VFLProblem, rnd=None):
    """Step 5 of the module docstring on one validation batch. Returns ``(new_eps, aux dict)``."""
    kv, kz = jax.random.split(key)
    vidx = jax.random.randint(kv, (spec.val_batch,), 0, pb.yv.shape[0])
    xv, yv = pb.xv[:, vidx], pb.yv[vidx]
    dp_mask = pb.passive * pb.dp_on
    ev = privatize(spec, embed(spec, params["bottom"], xv, pb.hmask), dp_mask)
    z = jax.random.normal(kz, ev.shape)
    loss_of = lambda s: _ce(top_logits(spec, params["top"], s), yv)
    send = lambda e: ev + sigmas(spec, e, dp_mask)[:, None, None] * z
    losses = inc.loo_losses(loss_of, send(eps), spec.drop_mode)
    contrib = inc.loo_contribution(losses)
    ks = jnp.arange(spec.num_parties)

    def c_at(k, e_k):  # contribution of party k when it alone moves to e_k (same noise draw z)
        lk = loss_of(send(eps.at[k].set(e_k)))
        return (losses[k + 1] - lk) / lk

    h = spec.fd_h
    dc = (jax.vmap(c_at)(ks, eps + h) - jax.vmap(c_at)(ks, jnp.maximum(eps - h, 1e-3))) / (
        eps + h - jnp.maximum(eps - h, 1e-3))
    raw = inc.raw_rewards(contrib, pb.cost, eps, pb.passive, spec.alpha, spec.beta, spec.clip_norm)
    opus_r, s = inc.balanced_rewards(raw, pb.passive, spec.tau)
    rewards = jnp.where(pb.equal > 0, inc.equal_split(pb.passive, spec.tau), opus_r)
    grad_u = inc.reward_eps_gradient(raw, s, dc, pb.cost, eps, pb.passive, spec.alpha, spec.beta,
                                     spec.clip_norm, spec.tau)
    warm = 1.0 if rnd is None else (rnd >= spec.eps_warmup).astype(jnp.float32)
    new_eps = inc.epsilon_step(eps, grad_u, pb.passive, spec.eps_lr, spec.eps_min, spec.eps_max,
                               pb.adaptive * pb.dp_on * warm)
    aux = {"val_loss": losses[0], "contrib": contrib, "rewards": rewards, "utility": rewards - pb.cost * pb.passive,
           "budget_sum": jnp.sum(rewards), "dc_deps": dc}
    return new_eps, aux


def _optimizer(spec):
    return optax.sgd(spec.lr, momentum=spec.momentum)


def make_step(spec: VFLSpec):
    """``step(state, problem) -> state``: one VFL round (module docstring, steps 1-5)."""
    tx = _optimizer(spec)

    def step(state: VFLState, pb: VFLProblem) -> VFLState:
        key, kb, kn, kt, ko = jax.random.split(state.key, 5)
        kg = jax.random.fold_in(kn, 7)
        params = state.params
        n = pb.y.shape[0]
        idx = jax.random.randint(kb, (spec.batch_size,), 0, n)
        xb, yb = pb.x[:, idx], pb.y[idx]
        # Liu et al. 2020 gradient replacement: where a known target-class sample is in the batch, the malicious
        # party sends the embedding of a triggered random sample instead, and amplifies the gradient it gets back.
        sub = jnp.isin(idx, pb.known_ids) & (pb.bd_on > 0)
        j = jax.random.randint(kt, (spec.batch_size,), 0, n)
        x_trig = pb.x[pb.bd_party, j] * (1 - pb.trig_mask) + spec.trigger_value * pb.trig_mask
        xb = xb.at[pb.bd_party].set(jnp.where(sub[:, None], x_trig, xb[pb.bd_party]))
        dp_mask = pb.passive * pb.dp_on

        def bottoms(pbot):
            return privatize(spec, embed(spec, pbot, xb, pb.hmask), dp_mask)

        emb, vjp = jax.vjp(bottoms, params["bottom"])
        sent = emb + sigmas(spec, state.eps, dp_mask)[:, None, None] * jax.random.normal(kn, emb.shape)
        loss, (g_top, g_sent) = jax.value_and_grad(
            lambda pt, s: _ce(top_logits(spec, pt, s), yb), argnums=(0, 1))(params["top"], sent)
        g_sent = privatize_grads(spec, g_sent, state.eps, dp_mask * pb.gdp_on, kg)  # before it leaves the active party
        amp = jnp.where(sub, pb.bd_gamma, 1.0)[:, None]
        g_sent = g_sent.at[pb.bd_party].multiply(amp)
        (g_bottom,) = vjp(g_sent)
        g_bottom = jax.tree.map(lambda g: g * pb.grad_scale.reshape((-1,) + (1,) * (g.ndim - 1)), g_bottom)
        grads = {"bottom": g_bottom, "top": g_top}
        updates, opt_state = tx.update(grads, state.opt_state, params)
        params = optax.apply_updates(params, updates)
        new_eps, aux = opus_round(spec, params, state.eps, ko, pb, state.round)
        acc = jnp.mean(jnp.argmax(top_logits(spec, params["top"], sent), -1) == yb)
        aux = dict(aux, loss=loss, batch_accuracy=acc, eps=state.eps)
        return VFLState(params, opt_state, key, new_eps, aux, state.round + 1)

    return step


def _empty_aux(p):
    z = jnp.zeros((p,))
    return {"val_loss": jnp.float32(0), "contrib": z, "rewards": z, "utility": z, "budget_sum": jnp.float32(0),
            "dc_deps": z, "loss": jnp.float32(0), "batch_accuracy": jnp.float32(0), "eps": z}


@functools.lru_cache(maxsize=16)
def make_vfl(spec: VFLSpec) -> AttackOptimizer:
    """The VFL training run as an :class:`AttackOptimizer` (``init``, ``step``, ``metrics``); cached per spec,
    so :func:`poisonjax.core.runner.run` compiles it once for every run with the same shapes."""
    tx = _optimizer(spec)
    step = make_step(spec)
    bytes_per_round = float(round_bytes(spec, True))

    def init(key, pb: VFLProblem) -> VFLState:
        kp, ks = jax.random.split(key)
        params = init_params(spec, kp)
        return VFLState(params, tx.init(params), ks, jnp.asarray(pb.eps0, jnp.float32), _empty_aux(spec.num_parties),
                        jnp.int32(0))

    def metrics(state: VFLState, pb: VFLProblem):
        a = state.aux
        m = {"loss": a["loss"], "batch_accuracy": a["batch_accuracy"], "val_loss": a["val_loss"],
             "budget_sum": a["budget_sum"], "bytes": jnp.float32(bytes_per_round)}
        for k in range(spec.num_parties):
            m[f"contrib_p{k}"] = a["contrib"][k]
            if k > 0:
                m[f"eps_p{k}"] = a["eps"][k]
                m[f"reward_p{k}"] = a["rewards"][k]
                m[f"utility_p{k}"] = a["utility"][k]
        return m

    return AttackOptimizer(init, step, metrics)


@functools.partial(jax.jit, static_argnums=0)
def predict(spec: VFLSpec, params, x_parts, hmask, eps, dp_mask, key):
    """Logits ``[M, C]`` of the deployed model on ``x_parts [P, M, d_max]`` (DP parties noised as in training)."""
    emb = privatize(spec, embed(spec, params["bottom"], x_parts, hmask), dp_mask)
    sent = emb + sigmas(spec, eps, dp_mask)[:, None, None] * jax.random.normal(key, emb.shape)
    return top_logits(spec, params["top"], sent)


def accuracy(spec, params, x_parts, y, hmask, eps, dp_mask, key, chunk: int = 4096) -> float:
    """Test accuracy of :func:`predict` (in chunks of ``chunk`` samples)."""
    correct = 0
    for i, s in enumerate(range(0, len(y), chunk)):
        lg = predict(spec, params, jnp.asarray(x_parts[:, s:s + chunk]), hmask, eps, dp_mask,
                     jax.random.fold_in(key, i))
        correct += int(jnp.sum(jnp.argmax(lg, -1) == jnp.asarray(y[s:s + chunk])))
    return correct / max(len(y), 1)


__all__ = ["Bottom", "Top", "VFLProblem", "VFLSpec", "VFLState", "accuracy", "embed", "init_params", "make_step",
           "make_vfl", "opus_round", "predict", "privatize", "privatize_grads", "round_bytes", "sigmas", "top_logits"]
