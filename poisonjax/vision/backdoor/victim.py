r"""Victims of the backdoor suite: init / apply / train for flax classifiers with or without BatchNorm.

A victim is a flax module plus its variables ``{"params": ..., "batch_stats": ...}`` (``batch_stats``
absent for BN-free models such as :class:`poisonjax.vision.models.FastSmallCNN`). All functions here
are pure in the variables, so K victims are one pytree with a leading ``[K, ...]`` axis and are
trained/evaluated with ``jax.vmap`` (:func:`train_victims`, :func:`predict`).

Training runs on :mod:`poisonjax.core.victims` (K victims from scratch: :func:`train_victims`;
fine-tuning one victim with a defense-specific loss: :func:`fit`), with the per-example loss

.. math:: \mathcal{L}_B(\theta) = \frac{1}{|B|}\sum_{i \in B} s_i\, \ell(f_\theta(a(x_i)), y_i)

where :math:`s_i` is a per-example sign (1 normally; ``-1`` turns a sample into a gradient-ascent
sample, as in ABL's unlearning), :math:`a` an optional augmentation (random crop with 4-pixel zero
padding and horizontal flip, the CIFAR recipe), and with ``lga_gamma`` set, ABL's local gradient
ascent loss :math:`\mathrm{sign}(\mathcal{L}_B - \gamma)\,\mathcal{L}_B` (Li et al., NeurIPS 2021).
``param_transform`` maps params before every forward pass (e.g. pruning masks in fine-pruning).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp
import optax

PyTree = Any


def has_bn(variables: PyTree) -> bool:
    """Whether the victim carries BatchNorm running statistics."""
    return isinstance(variables, dict) and "batch_stats" in variables and bool(jax.tree.leaves(variables["batch_stats"]))


def accepts_train(module) -> bool:
    """True when the flax module's ``__call__`` takes a ``train`` flag (BatchNorm / dropout models)."""
    import inspect
    return "train" in inspect.signature(type(module).__call__).parameters


def init_victim(module, key: jax.Array, sample: jax.Array) -> Dict[str, PyTree]:
    """``{"params", ["batch_stats"]}`` of ``module`` initialised on one batch ``sample [B, H, W, C]``."""
    v = module.init(key, sample)
    return {k: v[k] for k in v}


def apply_victim(module, variables: PyTree, x: jax.Array, *, train: bool = False,
                 return_features: bool = False):
    """Logits ``[B, C]`` (or features) of a victim. With ``train=True`` and BatchNorm, returns
    ``(out, new_batch_stats)``; otherwise just ``out``."""
    kw = {"return_features": return_features}
    if accepts_train(module):
        kw["train"] = train
    if train and has_bn(variables):
        out, upd = module.apply(variables, x, mutable=["batch_stats"], **kw)
        return out, upd["batch_stats"]
    out = module.apply(variables, x, **kw)
    return (out, variables.get("batch_stats", {})) if train else out


def augment_batch(key: jax.Array, x: jax.Array, pad: int = 4, flip: bool = True) -> jax.Array:
    """Random crop (zero padding ``pad``) and random horizontal flip of a batch ``[B, H, W, C]``."""
    b, h, w, c = x.shape
    kx, ky, kf = jax.random.split(key, 3)
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ox = jax.random.randint(kx, (b,), 0, 2 * pad + 1)
    oy = jax.random.randint(ky, (b,), 0, 2 * pad + 1)
    crop = jax.vmap(lambda im, i, j: jax.lax.dynamic_slice(im, (i, j, 0), (h, w, c)))(xp, oy, ox)
    if flip:
        f = jax.random.bernoulli(kf, 0.5, (b,))
        crop = jnp.where(f[:, None, None, None], crop[:, :, ::-1], crop)
    return crop


def _victim_loss(module, *, lga_gamma=None, param_transform=None, sign_key: Optional[str] = None):
    """Per-example training loss in :mod:`poisonjax.core.victims`' signature
    ``(variables, batch, key) -> [B]`` (or ``([B], {"batch_stats": ...})`` with BatchNorm)."""
    tf = (lambda p: p) if param_transform is None else param_transform

    def loss(variables, batch, key):
        v = dict(variables)
        v["params"] = tf(variables["params"])
        logits, stats = apply_victim(module, v, batch["x"], train=True)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])
        if sign_key is not None:
            ce = ce * batch[sign_key]
        if lga_gamma is not None:                      # ABL's LGA: sign(L_B - gamma) * L_B
            ce = ce * jax.lax.stop_gradient(jnp.sign(jnp.mean(ce) - lga_gamma))
        return (ce, {"batch_stats": stats}) if has_bn(variables) else ce
    return loss


def fit(module, variables: PyTree, x: jax.Array, y: jax.Array, key: jax.Array, *, epochs: int,
        batch_size: int, optimizer: optax.GradientTransformation, sign: Optional[jax.Array] = None,
        augment: bool = False, lga_gamma: Optional[float] = None,
        param_transform: Optional[Callable[[PyTree], PyTree]] = None) -> PyTree:
    """Train (fine-tune) one victim from ``variables`` with :func:`poisonjax.core.victims.train_victims`
    and the loss of the module docstring; returns the new variables.

    Args:
      x: ``[N, H, W, C]``; y: ``[N]`` int labels; sign: ``[N]`` per-example loss multipliers (``-1`` =
        gradient ascent on that row; default 1).
      epochs, batch_size: static.
    """
    from poisonjax.core.victims import as_victim, train_victims as core_train
    data = {"x": x, "y": y}
    if sign is not None:
        data["s"] = jnp.asarray(sign, jnp.float32)
    vic = as_victim(lambda k: variables, _victim_loss(module, lga_gamma=lga_gamma, param_transform=param_transform,
                                                      sign_key="s" if sign is not None else None),
                    lambda v, xx: apply_victim(module, v, xx), stateful=has_bn(variables))
    res = core_train(vic, optimizer, data, key[None], epochs=epochs, batch_size=int(min(batch_size, x.shape[0])),
                     variables=variables, variables_axis=None, augment=augment_batch if augment else None)
    return jax.tree.map(lambda a: a[0], res.variables)


def make_optimizer(lr: float, kind: str = "sgd", momentum: float = 0.9, weight_decay: float = 5e-4,
                   total_steps: Optional[int] = None) -> optax.GradientTransformation:
    """SGD with momentum and weight decay (cosine schedule over ``total_steps`` if given), or Adam."""
    sched = optax.cosine_decay_schedule(lr, total_steps) if total_steps else lr
    if kind == "adam":
        return optax.adamw(sched, weight_decay=weight_decay)
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(sched, momentum=momentum))


def train_victims(module, keys: jax.Array, x: jax.Array, y: jax.Array, *, epochs: int, batch_size: int,
                  optimizer: optax.GradientTransformation, augment: bool = False,
                  data_axis: Optional[int] = None, chunk: Optional[int] = None) -> PyTree:
    """K victims from scratch (:func:`poisonjax.core.victims.train_victims`, one vmapped program over
    ``keys [K, 2]``); ``data_axis=0`` when ``x``/``y`` carry a leading K axis (K different poisoned
    sets). Returns stacked variables (leading axis K)."""
    from poisonjax.core.victims import flax_victim, train_victims as core_train
    sample = x[0, :1] if data_axis == 0 else x[:1]
    vic = flax_victim(module, sample, train_kwarg="train" if accepts_train(module) else None)
    res = core_train(vic, optimizer, {"x": x, "y": y}, keys, epochs=epochs, batch_size=batch_size,
                     data_axis=data_axis, augment=augment_batch if augment else None, chunk=chunk)
    return res.variables


def predict(module, variables: PyTree, x: jax.Array, *, batch_size: int = 1000,
            return_features: bool = False, stacked: bool = False) -> jax.Array:
    """Logits (or features) in eval mode, in chunks of ``batch_size`` (``lax.map``); with
    ``stacked=True`` the variables carry a leading K axis and the output is ``[K, N, ...]``."""
    def one(v):
        n = x.shape[0]
        bs = int(min(batch_size, n))
        nfull = n // bs
        f = lambda xb: apply_victim(module, v, xb, return_features=return_features)
        outs = [jax.lax.map(f, x[: nfull * bs].reshape((nfull, bs) + x.shape[1:])).reshape((nfull * bs, -1))]
        if n > nfull * bs:
            outs.append(f(x[nfull * bs:]))
        return jnp.concatenate(outs, 0)
    return jax.vmap(one)(variables) if stacked else one(variables)
