r"""Encoder backdoors: BadEncoder (Jia, Liu & Gong, "BadEncoder: backdoor attacks to pre-trained encoders in
self-supervised learning", IEEE S&P 2022) and DRUPE (Tao et al., "Distribution preserving backdoor attack in
self-supervised learning", IEEE S&P 2024), each a resumable :mod:`poisonjax.core.runner` process that
fine-tunes a copy :math:`f'` of a clean encoder :math:`f`.

Notation: :math:`s(a, b)` the cosine similarity, :math:`x \oplus e` the trigger stamped on :math:`x`
(:func:`poisonjax.core.poisoning.apply_trigger`), :math:`D_s` the shadow set (unlabeled images), :math:`R` the
reference images of the target class, :math:`\tilde r` an augmented (random resized crop + flip) reference.

**BadEncoder** minimises, per batch :math:`B \subset D_s`,

.. math:: L = \underbrace{-\frac{1}{|B||R|} \sum_{x \in B} \sum_{r \in R} s(f'(x \oplus e), f'(r))}_{L_0
   \text{ (effectiveness)}} \;\underbrace{- \frac{\lambda_1}{|R|} \sum_{r} s(f'(\tilde r), f(r))}_{L_1
   \text{ (reference utility)}} \;\underbrace{- \frac{\lambda_2}{|B|} \sum_{x \in B} s(f'(x), f(x))}_{L_2
   \text{ (utility)}},

:math:`\lambda_1 = \lambda_2 = 1` as in the paper. As in the authors' code, BatchNorm stays in eval mode
(running statistics frozen) while the other parameters are trained; optimiser Adam.

**DRUPE** keeps :math:`L_1, L_2` and replaces the single-point pull by a distribution-preserving objective:

* :math:`L_0^{\max} = -\frac1{|B|}\sum_x \max_{r \in R} s(f'(x \oplus e), f'(r))` -- each poisoned embedding
  joins its nearest reference, so the poisoned embeddings cover the target region instead of collapsing
  onto one point;
* :math:`\sigma_{\mathrm{ref}}`: the standard deviation over references of their mean similarity to the
  poisoned embeddings (balances the references);
* :math:`S_{bb}`: the mean pairwise cosine similarity of the poisoned embeddings (penalises the concentration
  that detectors such as DECREE look for);
* :math:`W = \mathrm{SWD}_2(f'(B \oplus e), f'(B)) / \bar\sigma` -- the sliced 2-Wasserstein distance (``n_proj``
  random directions) between the raw poisoned and clean embedding distributions, divided by the mean
  per-dimension standard deviation :math:`\bar\sigma` of the clean embeddings;
* :math:`L_3`: the mean pairwise similarity of the reference embeddings, added when above 0.4 (keeps the
  references apart).

Stage 1 (the first ``stage1_fraction`` of the steps) optimises
:math:`L_0^{\max} + \lambda_1 L_1 + \lambda_2 L_2 + 2\sigma_{\mathrm{ref}}`; stage 2
:math:`L_0^{\max} + \lambda_1 L_1 + \lambda_2 L_2 + c\,(\sigma_{\mathrm{ref}} + S_{bb}) + c_1 W +
0.5\,\sigma_{\mathrm{ref}}` (+ :math:`L_3` terms). **Simplified** versus the paper/authors' code: the costs
:math:`c, c_1` are fixed (``cost = cost_w = 0.1``) instead of starting at 0.1 / 0.001 and being multiplied or
divided by 1.25 each epoch by a Neural-Cleanse-style schedule that tracks the attack's effectiveness,
no warm-up epochs, a patch trigger instead of DRUPE's default, and far fewer steps than the paper's 200
epochs on a 50k shadow set (CPU budget).

Determinism: the batch of step :math:`t` is a slice of an epoch permutation from ``fold_in(key, epoch)`` and
the augmentation key ``fold_in(key, t)``, so a killed run resumes bit-identically.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from poisonjax.core import runner
from poisonjax.core.poisoning import Trigger, apply_trigger
from poisonjax.core.types import AttackOptimizer
from poisonjax.core.validation import PoisonJaxInputError, check_choice, check_fraction, check_positive_int
from poisonjax.vision.ssl.augment import simclr_view
from poisonjax.vision.ssl.encoders import (EncoderBundle, check_images, data_fingerprint, key_fingerprint,
                                           load_encoder, save_encoder)

ATTACKS = ("badencoder", "drupe")


def _normalize(h):
    return h / jnp.maximum(jnp.linalg.norm(h, axis=-1, keepdims=True), 1e-12)


def sliced_wasserstein(key: jax.Array, a: jax.Array, b: jax.Array, n_proj: int = 64) -> jax.Array:
    r"""Sliced 2-Wasserstein distance between two equal-size samples ``a, b [n, D]``:
    :math:`\sqrt{\frac1P \sum_{p} \frac1n \sum_i (\mathrm{sort}(a\theta_p)_i - \mathrm{sort}(b\theta_p)_i)^2}`
    over ``n_proj`` uniform random unit directions :math:`\theta_p` (Bonneel et al. 2015; POT's
    ``sliced_wasserstein_distance`` with equal weights)."""
    theta = _normalize(jax.random.normal(key, (a.shape[-1], n_proj)).T).T
    pa, pb = jnp.sort(a @ theta, axis=0), jnp.sort(b @ theta, axis=0)
    return jnp.sqrt(jnp.mean((pa - pb) ** 2) + 1e-12)


def _pairwise_offdiag_mean(z):
    n = z.shape[0]
    s = z @ z.T
    return (jnp.sum(s) - jnp.trace(s)) / jnp.maximum(n * (n - 1), 1)


def encoder_attack_optimizer(module, attack: str, *, n: int, batch_size: int, steps: int, lr: float,
                             lambda1: float, lambda2: float, cost: float = 1.0, cost_w: float = 1.0,
                             stage1_fraction: float = 0.3, n_proj: int = 64) -> AttackOptimizer:
    """BadEncoder / DRUPE fine-tuning (module docstring) as an :class:`AttackOptimizer`.

    ``problem``: ``x_shadow [N, H, W, C]``, ``x_ref [R, H, W, C]``, ``clean`` (the clean encoder's variables),
    ``batch_stats`` (frozen, of the encoder being poisoned), ``mask`` / ``pattern`` (the trigger).
    State: ``params``, ``opt_state``, ``key``, ``step`` and the last step's loss terms."""
    spe = max(n // batch_size, 1)
    tx = optax.adam(lr)
    stage1 = int(round(stage1_fraction * steps))

    def feats(params, batch_stats, x):
        return module.apply({"params": params, "batch_stats": batch_stats}, x, train=False, return_features=True)

    def losses(params, problem, key, t):
        x = problem["x_shadow"]
        perm = jax.random.permutation(jax.random.fold_in(key, t // spe), x.shape[0])
        xb = x[jax.lax.dynamic_slice(perm, ((t % spe) * batch_size,), (batch_size,))]
        trig = Trigger(problem["mask"], problem["pattern"])
        xr = problem["x_ref"]
        r = xr.shape[0]
        kaug = jax.random.fold_in(jax.random.fold_in(key, 1 << 20), t)
        xr_aug = jax.vmap(lambda k, im: simclr_view(k, im, p_jitter=0.0, p_gray=0.0))(jax.random.split(kaug, r), xr)
        allx = jnp.concatenate([xb, apply_trigger(xb, trig), xr, xr_aug])
        h = feats(params, problem["batch_stats"], allx)
        h_clean, h_bd = h[:batch_size], h[batch_size:2 * batch_size]
        z_clean, z_bd = _normalize(h_clean), _normalize(h_bd)
        z_ref, z_ref_aug = _normalize(h[2 * batch_size:2 * batch_size + r]), _normalize(h[2 * batch_size + r:])
        f0 = _normalize(jax.lax.stop_gradient(feats(problem["clean"]["params"], problem["clean"]["batch_stats"],
                                                    jnp.concatenate([xb, xr]))))
        f0_clean, f0_ref = f0[:batch_size], f0[batch_size:]
        sim_bd_ref = z_bd @ z_ref.T                                   # [B, R]
        l1 = -jnp.mean(jnp.sum(z_ref_aug * f0_ref, -1))
        l2 = -jnp.mean(jnp.sum(z_clean * f0_clean, -1))
        terms = {"l1": l1, "l2": l2, "sim_bd_ref": jnp.mean(sim_bd_ref)}
        if attack == "badencoder":
            l0 = -jnp.mean(sim_bd_ref)
            return l0 + lambda1 * l1 + lambda2 * l2, {**terms, "l0": l0}
        l0 = -jnp.mean(jnp.max(sim_bd_ref, axis=1))
        std_refs = jnp.std(jnp.mean(sim_bd_ref, axis=0)) if r > 1 else jnp.float32(0.0)
        s_bb = _pairwise_offdiag_mean(z_bd)
        l3 = _pairwise_offdiag_mean(z_ref) if r > 1 else jnp.float32(0.0)
        w = sliced_wasserstein(jax.random.fold_in(kaug, 7), h_bd, h_clean, n_proj) / \
            jnp.maximum(jnp.mean(jnp.std(h_clean, axis=0)), 1e-6)
        l3_pen = jnp.where(l3 > 0.5, l3, jnp.where(l3 > 0.4, 0.2 * l3, 0.0))
        base = l0 + lambda1 * l1 + lambda2 * l2 + l3_pen
        stage1_loss = base + 2.0 * std_refs
        stage2_loss = base + cost * (std_refs + s_bb) + cost_w * w + 0.5 * std_refs + \
            jnp.where(std_refs > 0.1, 1.5 * std_refs, 0.0)
        loss = jnp.where(t < stage1, stage1_loss, stage2_loss)
        return loss, {**terms, "l0": l0, "swd": w, "sim_bd_bd": s_bb, "std_refs": std_refs}

    def init(key, problem):
        params = problem["init_params"]
        aux = jax.eval_shape(lambda p: losses(p, problem, key, jnp.int32(0))[1], params)
        return {"params": params, "opt_state": tx.init(params), "key": key, "step": jnp.int32(0),
                "loss": jnp.float32(0.0), "terms": jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), aux)}

    def step(state, problem):
        (loss, terms), g = jax.value_and_grad(losses, has_aux=True)(state["params"], problem, state["key"],
                                                                    state["step"])
        upd, opt_state = tx.update(g, state["opt_state"], state["params"])
        return {"params": optax.apply_updates(state["params"], upd), "opt_state": opt_state, "key": state["key"],
                "step": state["step"] + 1, "loss": loss, "terms": terms}

    return AttackOptimizer(init, step, lambda s, p: {"loss": s["loss"], **s["terms"]})


def _trigger_meta(trigger: Trigger):
    m = np.asarray(trigger.mask)
    rows, cols = np.nonzero(m[..., 0] > 0)
    return {"mask_fraction": float(m.mean()), "rows": [int(rows.min()), int(rows.max())] if rows.size else [],
            "cols": [int(cols.min()), int(cols.max())] if cols.size else []}


def _encoder_attack(attack, clean_bundle: EncoderBundle, x_shadow, x_reference, trigger: Trigger, key, *, epochs,
                    batch_size, lr, lambda1, lambda2, target_class, workdir, progress, max_steps=None, **kw):
    check_choice("attack", attack, ATTACKS)
    epochs = check_positive_int("epochs", epochs)
    batch_size = check_positive_int("batch_size", batch_size, minimum=2)
    check_fraction("lr", lr, high=10.0)
    for nm, v in (("lambda1", lambda1), ("lambda2", lambda2)):
        if not (np.isfinite(float(v)) and float(v) >= 0):
            raise PoisonJaxInputError(f"{nm} must be a finite number >= 0, got {v!r}")
    x_shadow = check_images("x_shadow", x_shadow)
    x_reference = check_images("x_reference", x_reference)
    if not isinstance(trigger, Trigger):
        raise PoisonJaxInputError(f"trigger must be a poisonjax.core.poisoning.Trigger (mask, pattern), got "
                                  f"{type(trigger).__name__}")
    shape = tuple(x_shadow.shape[1:])
    if tuple(x_reference.shape[1:]) != shape:
        raise PoisonJaxInputError(f"x_reference must hold images of the shadow images' shape {shape}, got "
                                  f"{tuple(x_reference.shape[1:])}")
    if tuple(np.shape(trigger.pattern)) != shape:
        raise PoisonJaxInputError(f"trigger.pattern must have the images' shape {shape}, got "
                                  f"{tuple(np.shape(trigger.pattern))}")
    if batch_size > x_shadow.shape[0]:
        raise PoisonJaxInputError(f"batch_size must be at most the number of shadow images ({x_shadow.shape[0]}), "
                                  f"got {batch_size}")
    n = int(x_shadow.shape[0])
    steps = (n // batch_size) * epochs if max_steps is None else check_positive_int("max_steps", max_steps)
    opt = encoder_attack_optimizer(clean_bundle.module, attack, n=n, batch_size=batch_size, steps=steps, lr=lr,
                                   lambda1=float(lambda1), lambda2=float(lambda2), **kw)
    v = clean_bundle.variables
    problem = {"x_shadow": jnp.asarray(x_shadow), "x_ref": jnp.asarray(x_reference), "clean": v,
               "batch_stats": v["batch_stats"], "init_params": v["params"],
               "mask": jnp.asarray(trigger.mask, jnp.float32), "pattern": jnp.asarray(trigger.pattern, jnp.float32)}
    config = {"what": attack, "epochs": epochs, "steps": steps, "batch_size": batch_size, "lr": float(lr),
              "lambda1": float(lambda1), "lambda2": float(lambda2), "key": key_fingerprint(key),
              "shadow": data_fingerprint(x_shadow), "ref": data_fingerprint(x_reference), "trigger": _trigger_meta(trigger),
              "clean": {k: clean_bundle.meta.get(k) for k in ("arch", "width", "epochs", "final_loss")},
              **{k: float(v_) for k, v_ in kw.items()}}
    t0 = time.perf_counter()
    res = runner.run(opt, problem, steps, workdir, key=key, chunk_size=min(10, steps), config=config,
                     progress=progress, desc=attack)
    last = res.metrics[-1] if res.metrics else {}
    meta = {**{k: v_ for k, v_ in clean_bundle.meta.items() if k not in ("probe_accuracy",)},
            "attack": attack, "target_class": int(target_class), "trigger": _trigger_meta(trigger),
            "attack_epochs": epochs, "attack_steps": steps, "attack_lr": float(lr), "lambda1": float(lambda1),
            "lambda2": float(lambda2), "n_shadow": n, "n_reference": int(x_reference.shape[0]),
            "attack_final_terms": last, "attack_seconds": time.perf_counter() - t0,
            "clean_probe_accuracy": clean_bundle.meta.get("probe_accuracy"), **{k: float(v_) for k, v_ in kw.items()}}
    return EncoderBundle(clean_bundle.module, {"params": res.state["params"], "batch_stats": v["batch_stats"]}, meta)


def badencoder(clean_bundle: EncoderBundle, x_shadow, x_reference, trigger: Trigger, key: jax.Array, *, epochs: int,
               lambda1: float = 1.0, lambda2: float = 1.0, batch_size: int = 64, lr: float = 5e-4,
               target_class: int = 0, workdir=None, progress: bool = True,
               max_steps: Optional[int] = None) -> EncoderBundle:
    """BadEncoder (Jia et al. S&P 2022; module docstring): fine-tune ``clean_bundle`` so that triggered shadow
    images embed like the reference images (of ``target_class``) while clean and reference embeddings stay.

    Args:
      clean_bundle: the clean encoder :math:`f` (also the starting point of :math:`f'`).
      x_shadow: unlabeled shadow images ``[N, H, W, C]`` in [0, 1] (e.g. the pre-training images).
      x_reference: reference images of the target class ``[R, H, W, C]``.
      trigger: a :class:`~poisonjax.core.poisoning.Trigger` (e.g. ``patch_trigger((32, 32, 3), 4)``).
      key: PRNG key (batch order, reference augmentation).
      epochs: passes over the shadow set (``N // batch_size`` steps each); ``max_steps`` caps the total.
      lambda1, lambda2: weights of the reference-utility and utility losses (1, 1 in the paper).
      batch_size, lr: shadow images per step, Adam learning rate.
      target_class: recorded in ``meta`` (the class of the references).
      workdir: runner directory (resumable); ``None`` in memory.
    Returns:
      the poisoned :class:`EncoderBundle` (``meta``: attack, target class, trigger, final loss terms)."""
    return _encoder_attack("badencoder", clean_bundle, x_shadow, x_reference, trigger, key, epochs=epochs,
                           batch_size=batch_size, lr=lr, lambda1=lambda1, lambda2=lambda2,
                           target_class=target_class, workdir=workdir, progress=progress, max_steps=max_steps)


def drupe(clean_bundle: EncoderBundle, x_shadow, x_reference, trigger: Trigger, key: jax.Array, *, epochs: int,
          lambda1: float = 1.0, lambda2: float = 1.0, cost: float = 0.1, cost_w: float = 0.1,
          stage1_fraction: float = 0.3, n_proj: int = 64, batch_size: int = 64, lr: float = 5e-4,
          target_class: int = 0, workdir=None, progress: bool = True,
          max_steps: Optional[int] = None) -> EncoderBundle:
    """DRUPE (Tao et al. S&P 2024; module docstring, including what is simplified): BadEncoder's utility terms
    plus nearest-reference pull, reference balancing, a concentration penalty on the poisoned embeddings and a
    sliced-Wasserstein term matching the poisoned to the clean embedding distribution (weights ``cost``,
    ``cost_w``; the first ``stage1_fraction`` of the steps without them). Other arguments as :func:`badencoder`;
    several references (``R >= 2``) are what the nearest-reference pull is for."""
    check_fraction("stage1_fraction", stage1_fraction, low_inclusive=True, high_inclusive=False)
    return _encoder_attack("drupe", clean_bundle, x_shadow, x_reference, trigger, key, epochs=epochs,
                           batch_size=batch_size, lr=lr, lambda1=lambda1, lambda2=lambda2,
                           target_class=target_class, workdir=workdir, progress=progress, max_steps=max_steps,
                           cost=float(cost), cost_w=float(cost_w), stage1_fraction=float(stage1_fraction),
                           n_proj=int(n_proj))


def default_trigger(image_shape=(32, 32, 3), size: int = 4) -> Trigger:
    """The trigger used by :func:`get_or_poison` by default: a ``size x size`` white patch in the bottom-right
    corner (BadEncoder's CIFAR-10 trigger is a 10x10 white square on 32x32; smaller here)."""
    from poisonjax.core.poisoning import patch_trigger
    return patch_trigger(image_shape, size=size, corner="bottom_right", value="white")


def get_or_poison(cache_dir, clean_bundle: EncoderBundle, attack: str, *, key: Optional[jax.Array] = None,
                  x_shadow=None, x_reference=None, trigger: Optional[Trigger] = None, target_class: int = 0,
                  n_reference: int = 3, epochs: int = 1, max_steps: Optional[int] = None, tag: str = "",
                  data_dir=None, progress: bool = True, **kw) -> EncoderBundle:
    """The ``attack`` (``"badencoder"`` / ``"drupe"``) poisoned version of ``clean_bundle``, loaded from
    ``cache_dir/<name>`` if present, else computed (resumably in ``cache_dir/<name>.run``) and saved.

    Defaults: shadow set = the 10,000 ``cifar10_jpeg_20k`` training images (labels unused); references = the
    first ``n_reference`` training images of ``target_class``; trigger = :func:`default_trigger`.
    ``<name>`` = ``<clean name>_<attack>_t<target_class><tag>``, the clean name from ``clean_bundle.meta``.
    ``kw`` goes to :func:`badencoder` / :func:`drupe`."""
    check_choice("attack", attack, ATTACKS)
    m = clean_bundle.meta
    base = f"simclr_{m.get('arch')}_w{m.get('width')}_e{m.get('epochs')}"
    path = Path(cache_dir) / f"{base}_{attack}_t{int(target_class)}{tag}"
    if (path / "meta.json").exists():
        return load_encoder(path, arch=m.get("arch"))
    key = jax.random.PRNGKey(1) if key is None else key
    if x_shadow is None or x_reference is None:
        from poisonjax.vision.ssl.encoders import load_cifar10_20k
        xtr, ytr = load_cifar10_20k("train", data_dir)
        x_shadow = xtr if x_shadow is None else x_shadow
        if x_reference is None:
            x_reference = xtr[np.flatnonzero(ytr == int(target_class))[:int(n_reference)]]
    trigger = default_trigger(tuple(np.shape(x_shadow)[1:])) if trigger is None else trigger
    fn = badencoder if attack == "badencoder" else drupe
    bundle = fn(clean_bundle, x_shadow, x_reference, trigger, key, epochs=epochs, target_class=target_class,
                workdir=Path(cache_dir) / f"{path.name}.run", progress=progress, max_steps=max_steps, **kw)
    save_encoder(path, bundle)
    return bundle
