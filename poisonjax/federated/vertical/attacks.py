r"""Attacks on vertical FL: label inference, feature inference, backdoor.

* **Label inference by passive model completion** (Fu et al., "Label inference attacks against vertical
  federated learning", USENIX Security 2022): after training, a curious passive party ``k`` puts a small head on
  its trained bottom model :math:`f_k` and fine-tunes head and bottom on a few labelled auxiliary samples
  (40 here, 4 per class) plus its unlabelled training rows with **MixMatch** (Berthelot et al. 2019: K = 2
  noisy augmentations of each unlabelled row, averaged and sharpened guesses (T = 0.5), MixUp of labelled and
  unlabelled rows with :math:`\lambda' = \max(\lambda, 1-\lambda)`, :math:`\lambda \sim \mathrm{Beta}(0.75, 0.75)`,
  loss :math:`\mathrm{CE}_\text{lab} + \lambda_u \lVert p - q\rVert^2`). :func:`model_completion` returns its
  accuracy at inferring test labels (``lia_accuracy``). Simplification: the augmentation is Gaussian input
  noise (image strips are too narrow for crops/flips).
  The **active** variant (Fu et al.'s malicious local optimizer) happens during training: the attacker scales
  up its own bottom-model updates (``grad_scale`` in :func:`~.federation.make_problem`), so the top model
  relies more on its features and its bottom model becomes a better feature extractor for the completion.
  Fu et al. adapt the scale per step; we use a constant multiplier (simplified).
* **Feature inference by a generative regression network** (Luo et al., "Feature inference attack on model
  predictions in vertical federated learning", ICDE 2021): the active party trains a generator
  :math:`G(x_0, r)` (its own strip ``x_0`` and random ``r``) whose output :math:`\hat x_k` makes the model
  reproduce what it observed: :math:`\lVert \mathrm{softmax}(g(\ldots, f_k(\hat x_k), \ldots)) - v\rVert^2`.
  In this engine the active party also receives the passive party's (noisy, under DP) embedding
  :math:`\tilde h_k`, so the generator is additionally conditioned on it and matches it,
  :math:`\lVert \mathrm{clip}(f_k(\hat x_k)) - \tilde h_k\rVert^2` (an extension of Luo et al.'s
  confidence-only setting; set ``condition_on_embedding=False, w_embed=0`` for the original). Like Luo et al.,
  the attacker knows the trained model (white-box). :func:`grn_feature_inference` returns the
  reconstruction MSE on the true columns and the mean-image baseline's MSE.
* **Backdoor by gradient replacement** (Liu et al., "Backdoor attacks and defenses in feature-partitioned
  collaborative learning", 2020): implemented inside the training step (see :mod:`.engine`); the passive
  attacker knows the training IDs of a few (10) target-class samples, sends the embedding of a triggered
  random sample in their place, and amplifies (``bd_gamma``) the gradient it receives for them.
  :func:`backdoor_asr` measures the attack success rate on triggered non-target test samples.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from poisonjax.core.privacy import clip_l2 as _clip_l2
from poisonjax.federated.vertical import data as vdata
from poisonjax.federated.vertical import engine as E


def aux_indices(y, per_class: int = 4, num_classes: int = 10, seed: int = 0) -> np.ndarray:
    """``per_class`` labelled auxiliary indices per class (40 for 4 x 10), seeded."""
    rng = np.random.default_rng(seed)
    out = [rng.choice(np.flatnonzero(np.asarray(y) == c), per_class, replace=False) for c in range(num_classes)]
    return np.sort(np.concatenate(out))


class _Head(nn.Module):
    hidden: int
    num_classes: int

    @nn.compact
    def __call__(self, h):
        return nn.Dense(self.num_classes)(nn.relu(nn.Dense(self.hidden)(h)))


@functools.partial(jax.jit, static_argnames=("spec", "steps", "batch_u", "num_classes", "finetune_bottom"))
def _mixmatch(spec, key, bottom_k, hmask_k, x_lab, y_lab, x_unl, steps, batch_u, num_classes, lr, noise, lambda_u,
              finetune_bottom):
    bottom, _ = E.build_models(spec)
    head = _Head(64, num_classes)
    kh, key = jax.random.split(key)
    params = {"bottom": bottom_k, "head": head.init(kh, jnp.zeros((1, spec.embed_dim)))}
    tx = optax.adam(lr)
    opt = tx.init(params)

    def logits(p, x):
        return head.apply(p["head"], bottom.apply(p["bottom"], x, hmask_k))

    def step(carry, k):
        p, o = carry
        k1, k2, k3, k4, k5, k6 = jax.random.split(k, 6)
        xu = x_unl[jax.random.randint(k1, (batch_u,), 0, x_unl.shape[0])]
        xl = x_lab + noise * jax.random.normal(k2, x_lab.shape)
        u1 = xu + noise * jax.random.normal(k3, xu.shape)
        u2 = xu + noise * jax.random.normal(k4, xu.shape)
        q = 0.5 * (jax.nn.softmax(logits(p, u1)) + jax.nn.softmax(logits(p, u2)))
        q = q ** 2.0                                 # sharpen, T = 0.5
        q = jax.lax.stop_gradient(q / jnp.sum(q, -1, keepdims=True))
        wx = jnp.concatenate([xl, u1, u2])
        wy = jnp.concatenate([jax.nn.one_hot(y_lab, num_classes), q, q])
        perm = jax.random.permutation(k5, wx.shape[0])
        lam = jax.random.beta(k6, 0.75, 0.75)
        lam = jnp.maximum(lam, 1 - lam)
        mx = lam * wx + (1 - lam) * wx[perm]
        my = lam * wy + (1 - lam) * wy[perm]
        nl = x_lab.shape[0]

        def loss(p):
            lg = logits(p, mx)
            ll = jnp.mean(optax.softmax_cross_entropy(lg[:nl], my[:nl]))
            lu = jnp.mean(jnp.square(jax.nn.softmax(lg[nl:]) - my[nl:]))
            return ll + lambda_u * lu

        g = jax.grad(loss)(p)
        if not finetune_bottom:
            g = dict(g, bottom=jax.tree.map(jnp.zeros_like, g["bottom"]))
        up, o = tx.update(g, o, p)
        return (optax.apply_updates(p, up), o), None

    (params, _), _ = jax.lax.scan(step, (params, opt), jax.random.split(key, steps))
    return params


def model_completion(spec: E.VFLSpec, key, bottom_k, hmask_k, x_lab, y_lab, x_unl, x_test, y_test, *,
                     steps: int = 400, batch_u: int = 64, lr: float = 1e-3, noise: float = 0.05,
                     lambda_u: float = 10.0, finetune_bottom: bool = True) -> float:
    """Passive model completion (Fu et al. 2022) with MixMatch; returns the attack's label-inference accuracy on
    ``(x_test [M, d_max], y_test [M])``. ``bottom_k``: the attacker's bottom params (the trained ones, or a fresh
    init for the from-scratch reference); ``x_lab [40, d_max]``, ``x_unl [U, d_max]``: its own rows.
    ``finetune_bottom=False`` trains only the head (the bottom model stays as trained in the federation)."""
    p = _mixmatch(spec, key, bottom_k, jnp.asarray(hmask_k), jnp.asarray(x_lab), jnp.asarray(y_lab, jnp.int32),
                  jnp.asarray(x_unl), int(steps), int(batch_u), int(spec.num_classes), lr, noise, lambda_u,
                  bool(finetune_bottom))
    bottom, _ = E.build_models(spec)
    head = _Head(64, spec.num_classes)
    lg = head.apply(p["head"], bottom.apply(p["bottom"], jnp.asarray(x_test), jnp.asarray(hmask_k)))
    return float(jnp.mean(jnp.argmax(lg, -1) == jnp.asarray(y_test)))


def party_params(bottom_params, k: int):
    """Party ``k``'s slice of the stacked bottom params."""
    return jax.tree.map(lambda l: l[k], bottom_params)


class _Generator(nn.Module):
    """``sigmoid(MLP(z) + prior_logit)``: starts at the prior image."""
    out: int
    hidden: int = 256

    @nn.compact
    def __call__(self, z, prior_logit):
        h = nn.relu(nn.Dense(self.hidden)(z))
        h = nn.relu(nn.Dense(self.hidden)(h))
        return nn.sigmoid(nn.Dense(self.out, kernel_init=nn.initializers.zeros)(h) + prior_logit)


@functools.partial(jax.jit, static_argnames=("spec", "steps", "batch", "target", "width", "cond"))
def _grn_train(spec, key, params, hmask, dp_mask, eps, x_parts, target, width, steps, batch, cond, w_embed, w_out, lr,
               prior, w_prior, aux_idx, aux_x, w_sup):
    """Train the GRN; returns the reconstruction ``[N, width]`` of party ``target``'s rows."""
    n = x_parts.shape[1]
    kn, kg, kr, key = jax.random.split(key, 4)
    # what the active party observes: the sent (noisy under DP) embeddings and the model's confidences
    emb = E.privatize(spec, E.embed(spec, params["bottom"], x_parts, hmask), dp_mask)
    sent = emb + E.sigmas(spec, eps, dp_mask)[:, None, None] * jax.random.normal(kn, emb.shape)
    v_obs = jax.nn.softmax(E.top_logits(spec, params["top"], sent))
    h_obs = sent[target]
    r_all = jax.random.uniform(kr, (n, width))
    zin = jnp.concatenate([x_parts[0], r_all] + ([h_obs] if cond else []), axis=1)
    gen = _Generator(width)
    prior_logit = jnp.log(prior / (1 - prior))
    gp = gen.init(kg, zin[:1], prior_logit)
    tx = optax.adam(lr)
    bottom, _ = E.build_models(spec)
    pk = party_params(params["bottom"], target)

    def recon_loss(gp, ib):
        xk = gen.apply(gp, zin[ib], prior_logit)
        sup = jnp.mean(jnp.square(gen.apply(gp, zin[aux_idx], prior_logit) - aux_x))
        xk_pad = jnp.pad(xk, ((0, 0), (0, spec.d_max - width)))
        hk = bottom.apply(pk, xk_pad, hmask[target])
        hk = jnp.where(dp_mask[target] > 0, _clip_l2(hk, spec.clip_norm), hk)
        s = sent[:, ib].at[target].set(hk)
        v = jax.nn.softmax(E.top_logits(spec, params["top"], s))
        return w_out * jnp.mean(jnp.sum(jnp.square(v - v_obs[ib]), -1)) + \
            w_embed * jnp.mean(jnp.sum(jnp.square(hk - h_obs[ib]), -1)) + w_prior * jnp.mean(jnp.square(xk - prior)) + \
            w_sup * sup

    def step(carry, k):
        gp, o = carry
        ib = jax.random.randint(k, (batch,), 0, n)
        g = jax.grad(recon_loss)(gp, ib)
        up, o = tx.update(g, o, gp)
        return (optax.apply_updates(gp, up), o), None

    (gp, _), _ = jax.lax.scan(step, (gp, tx.init(gp)), jax.random.split(key, steps))
    return gen.apply(gp, zin, prior_logit)


def grn_feature_inference(spec: E.VFLSpec, key, params, hmask, dp_mask, eps, x_parts, widths, target: int = 1, *,
                          steps: int = 1500, batch: int = 128, condition_on_embedding: bool = True,
                          w_embed: float = 1.0, w_out: float = 1.0, lr: float = 1e-3, w_prior: float = 0.0,
                          aux_idx=None, w_sup: float = 1.0, mean_image=None) -> dict:
    """GRN feature inference (Luo et al. 2021) by the active party against passive party ``target`` on the rows
    ``x_parts [P, N, d_max]``. Returns ``{"fia_mse", "fia_mse_mean_image", "reconstruction" [N, w]}``; the
    baseline predicts ``mean_image`` (default: the rows' own per-feature mean, i.e. an oracle mean).

    Prior knowledge: with ``aux_idx`` (row indices), the attacker knows the full features of those few users
    (e.g. 40; an auxiliary-data extension of Luo et al.'s data-free GRN): its prior image is their per-feature
    mean and ``w_sup * MSE`` on them is added to the loss. Without, its prior is the mean intensity of its *own*
    strip (a scalar). The generator starts at the prior, and ``w_prior * mean((x_hat - prior)^2)`` keeps it near
    (``w_prior = 0``: no penalty)."""
    w = int(widths[target])
    xp = jnp.asarray(x_parts)
    true = np.asarray(x_parts[target, :, :w])
    if aux_idx is not None and len(aux_idx):
        aux_idx = np.asarray(aux_idx, np.int32)
        prior = true[aux_idx].mean(0)
    else:
        aux_idx, w_sup = np.zeros((1,), np.int32), 0.0
        prior = np.full((w,), np.asarray(x_parts[0, :, :int(widths[0])]).mean())
    prior = np.clip(prior, 0.02, 0.98).astype(np.float32)
    rec = _grn_train(spec, key, params, jnp.asarray(hmask), jnp.asarray(dp_mask), jnp.asarray(eps), xp, int(target),
                     w, int(steps), int(batch), bool(condition_on_embedding), w_embed, w_out, lr,
                     jnp.asarray(prior), w_prior, jnp.asarray(aux_idx), jnp.asarray(true[aux_idx]), w_sup)
    mean = true.mean(0) if mean_image is None else np.asarray(mean_image)[:w]
    rec = np.asarray(rec)
    return {"fia_mse": float(np.mean((rec - true) ** 2)), "fia_mse_mean_image": float(np.mean((mean - true) ** 2)),
            "reconstruction": rec}


def backdoor_asr(spec: E.VFLSpec, key, params, hmask, dp_mask, eps, x_parts, y, *, bd_party: int, strip_shape,
                 target_class: int, trigger_size: int = 3) -> float:
    """Fraction of non-target test rows predicted as ``target_class`` once the trigger is stamped on
    ``bd_party``'s strip (Liu et al. 2020's attack success rate)."""
    keep = np.asarray(y) != target_class
    xt = vdata.stamp_strip_trigger(np.asarray(x_parts)[:, keep], bd_party, strip_shape, trigger_size,
                                   spec.trigger_value)
    lg = E.predict(spec, params, xt, jnp.asarray(hmask), jnp.asarray(eps), jnp.asarray(dp_mask), key)
    return float(jnp.mean(jnp.argmax(lg, -1) == target_class))
