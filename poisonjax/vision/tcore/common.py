r"""Shared pieces of T-Core's stages: the encoder-plus-head classifier, its features, heads, training.

**The classifier.** T-Core adapts a pre-trained encoder :math:`g_\phi` (a CIFAR
:class:`~poisonjax.vision.backdoor.resnet.PreActResNet` with BatchNorm, variables
``{"params", "batch_stats"}``) to a downstream task with a linear head :math:`h(z) = W z + b`. We use
the ResNet's own ``linear`` layer as the head, so the classifier is *one* flax module
(``PreActResNet(num_classes=C, widths, blocks)``) and every backdoor-suite repair (CLP,
fine-pruning) applies to it unchanged. :func:`as_classifier` builds it from any encoder.

**BatchNorm in eval mode.** The encoder always runs with its running statistics (``train=False``),
also while fine-tuning: the output of a BN channel is then the affine map
:math:`\gamma_c \hat x_c + \beta_c`, so a channel mask :math:`m_c` on BN outputs equals scaling
:math:`(\gamma_c, \beta_c)` by :math:`m_c` (:func:`mask_bn`), and unlearning "through the
normalization parameters" means changing :math:`(\gamma, \beta)` only.

**Heads** are trained on frozen features (a linear probe) by :func:`train_head`: Adam, full-data
mini-batches through :func:`poisonjax.core.victims.train_victims`, per-example weights (0 = the row
is not in the training set), features standardised with the weighted mean / std and the
standardisation folded back into :math:`(W, b)` so the head is a plain ``linear`` layer on raw features.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from poisonjax.core.validation import PoisonJaxInputError

PyTree = Any


# ------------------------------------------------------------------ encoder / classifier ---

def as_classifier(module, num_classes: int):
    """A :class:`PreActResNet` with the encoder's ``widths`` / ``blocks`` and a ``num_classes`` head.

    Raises :class:`PoisonJaxInputError` (argument ``encoder``) if ``module`` is not a PreActResNet."""
    from poisonjax.vision.backdoor.resnet import PreActResNet
    if not isinstance(module, PreActResNet):
        raise PoisonJaxInputError(f"encoder must be a poisonjax.vision.backdoor.resnet.PreActResNet "
                                  f"(BatchNorm ResNet), got {type(module).__name__}")
    return PreActResNet(num_classes=num_classes, widths=tuple(module.widths), blocks=tuple(module.blocks))


def check_encoder(module, variables, image_shape: Sequence[int]) -> None:
    """Check that ``variables`` are a PreActResNet's ``{"params", "batch_stats"}`` for ``module``
    (same tree and shapes, the ``linear`` head excepted); one-line error naming ``encoder`` else."""
    clf = as_classifier(module, 2)
    if not isinstance(variables, dict) or "params" not in variables or "batch_stats" not in variables:
        raise PoisonJaxInputError("encoder variables must be a dict with 'params' and 'batch_stats' "
                                  f"(a BatchNorm ResNet), got {type(variables).__name__} with keys "
                                  f"{sorted(variables) if isinstance(variables, dict) else '-'}")
    want = jax.eval_shape(lambda k: clf.init(k, jnp.zeros((1,) + tuple(image_shape))), jax.random.PRNGKey(0))
    strip = lambda v: {"params": {k: p for k, p in v["params"].items() if k != "linear"},
                       "batch_stats": v["batch_stats"]}
    got_s = jax.tree.map(lambda a: tuple(jnp.shape(a)), strip(variables))
    want_s = jax.tree.map(lambda a: tuple(a.shape), strip(want))
    if got_s != want_s:
        raise PoisonJaxInputError(
            f"encoder checkpoint does not match the architecture (widths {tuple(module.widths)}, blocks "
            f"{tuple(module.blocks)}, images {tuple(image_shape)}): parameter tree or shapes differ")


def with_head(variables: PyTree, head: Dict[str, jax.Array]) -> PyTree:
    """Encoder variables with ``params["linear"] = head`` (``{"kernel": [D, C], "bias": [C]}``)."""
    params = dict(variables["params"])
    params["linear"] = head
    return {"params": params, "batch_stats": variables["batch_stats"]}


def predict_batched(fn, x: jax.Array, batch_size: int = 500):
    """``fn`` over ``x`` in chunks of ``batch_size`` (``lax.map``; a remainder chunk run separately);
    ``fn`` returns an array or a list of arrays with leading axis ``B``."""
    n = x.shape[0]
    bs = int(min(batch_size, n))
    nfull = n // bs
    outs = [jax.lax.map(fn, x[: nfull * bs].reshape((nfull, bs) + x.shape[1:]))]
    outs = [jax.tree.map(lambda a: a.reshape((nfull * bs,) + a.shape[2:]), outs[0])]
    if n > nfull * bs:
        outs.append(fn(x[nfull * bs:]))
    return jax.tree.map(lambda *a: jnp.concatenate(a, 0), *outs)


def stage_features(module, variables, x: jax.Array, n_depths: int = 3, batch_size: int = 500) -> List[jax.Array]:
    """Pooled features at the ``n_depths`` deepest stages of the encoder (``return_stages=True`` of
    :class:`PreActResNet`): a list of ``[N, w_i]``, the last the penultimate representation."""
    clf = as_classifier(module, 2)
    v = {"params": {k: p for k, p in variables["params"].items() if k != "linear"}, "batch_stats": variables["batch_stats"]}
    return _stages_jit(clf, v, jnp.asarray(x, jnp.float32), int(n_depths), int(batch_size))


def _stages_impl(clf, v, x, n_depths, batch_size):
    fn = lambda xb: clf.apply(v, xb, train=False, return_stages=True)[-n_depths:]
    return predict_batched(fn, x, batch_size)


_stages_jit = jax.jit(_stages_impl, static_argnums=(0, 3, 4))


def features(module, variables, x, batch_size: int = 500) -> jax.Array:
    """Penultimate features ``[N, D]`` of the encoder (eval mode)."""
    return stage_features(module, variables, x, 1, batch_size)[0]


def logits(module, variables, x, batch_size: int = 500) -> jax.Array:
    """Classifier logits ``[N, C]`` (``variables`` with a ``linear`` head; eval mode)."""
    return _logits_jit(module, variables, jnp.asarray(x, jnp.float32), int(batch_size))


_logits_jit = jax.jit(lambda m, v, x, bs: predict_batched(lambda xb: m.apply(v, xb, train=False), x, bs),
                      static_argnums=(0, 3))


# ------------------------------------------------------------------ BN channels ---------------

def bn_paths(params: PyTree) -> List[str]:
    """``"/"``-joined paths of every BatchNorm layer (dicts holding ``scale`` and ``bias``), sorted."""
    out = []

    def walk(d, prefix):
        if isinstance(d, dict):
            if "scale" in d and "bias" in d and not isinstance(d["scale"], dict):
                out.append(prefix)
                return
            for k, v in d.items():
                walk(v, f"{prefix}/{k}" if prefix else k)
    walk(params, "")
    return sorted(out)


def get_path(tree, path):
    """The leaf or subtree at a "/"-joined path of a nested dict."""
    for p in path.split("/"):
        tree = tree[p]
    return tree


def set_path(tree, path, value):
    """A copy of a nested dict with the subtree at a "/"-joined path replaced by ``value``."""
    parts = path.split("/")
    tree = dict(tree)
    if len(parts) == 1:
        tree[parts[0]] = value
        return tree
    tree[parts[0]] = set_path(tree[parts[0]], "/".join(parts[1:]), value)
    return tree


def mask_bn(params: PyTree, masks: Dict[str, jax.Array]) -> PyTree:
    r"""Params with every masked BN's :math:`(\gamma, \beta)` multiplied by its channel mask ``[C]``:
    in eval mode this is the BN output times :math:`m_c`."""
    for path, m in masks.items():
        layer = get_path(params, path)
        params = set_path(params, path, dict(layer, scale=layer["scale"] * m, bias=layer["bias"] * m))
    return params


def ones_masks(params: PyTree) -> Dict[str, jax.Array]:
    """An all-ones channel mask per BN layer."""
    return {p: jnp.ones_like(get_path(params, p)["scale"]) for p in bn_paths(params)}


# ------------------------------------------------------------------ heads ----------------------

def train_head(feats: jax.Array, y: jax.Array, weights: jax.Array, key: jax.Array, num_classes: int, *,
               epochs: int = 30, batch_size: int = 256, learning_rate: float = 1e-2,
               weight_decay: float = 1e-4) -> Dict[str, jax.Array]:
    r"""Linear probe :math:`\min_{W,b} \sum_i w_i\,\mathrm{CE}(W \tilde z_i + b, y_i) / \sum_i w_i` on
    standardised features :math:`\tilde z = (z - \mu_w) / \sigma_w` (weighted moments,
    :func:`poisonjax.core.training.feature_standardization`), Adam
    (``learning_rate``, decoupled ``weight_decay``), ``epochs`` passes of shuffled mini-batches
    (:func:`poisonjax.core.victims.train_victims`). Returns the head on *raw* features
    ``{"kernel": [D, C], "bias": [C]}`` (standardisation folded in). ``feats [N, D]``, ``y [N]``,
    ``weights [N]`` (0/1 or soft). Compiled once per shape and settings."""
    return _train_head_jit(jnp.asarray(feats, jnp.float32), jnp.asarray(y, jnp.int32), jnp.asarray(weights, jnp.float32),
                           key, int(num_classes), int(epochs), int(min(batch_size, feats.shape[0])),
                           float(learning_rate), float(weight_decay))


def _train_head_impl(feats, y, w, key, num_classes, epochs, batch_size, learning_rate, weight_decay):
    from poisonjax.core.victims import as_victim, train_victims
    from poisonjax.core.training import feature_standardization
    mu, sd = feature_standardization(feats, w)
    z = (feats - mu) / sd
    d = feats.shape[1]

    def init(k):
        return {"kernel": jnp.zeros((d, num_classes)), "bias": jnp.zeros((num_classes,))}

    def loss(p, batch, k):
        return optax.softmax_cross_entropy_with_integer_labels(batch["z"] @ p["kernel"] + p["bias"], batch["y"])

    vic = as_victim(init, loss, lambda p, zz: zz @ p["kernel"] + p["bias"])
    opt = optax.adamw(learning_rate, weight_decay=weight_decay)
    res = train_victims(vic, opt, {"z": z, "y": y}, key[None], epochs=epochs, batch_size=batch_size, mask=w)
    p = jax.tree.map(lambda a: a[0], res.variables)
    kernel = p["kernel"] / sd[:, None]
    return {"kernel": kernel, "bias": p["bias"] - mu @ kernel}


_train_head_jit = jax.jit(_train_head_impl, static_argnums=(4, 5, 6, 7, 8))


def head_losses(head, feats, y) -> jax.Array:
    """Per-example cross-entropy ``[N]`` of a head on raw features."""
    return optax.softmax_cross_entropy_with_integer_labels(feats @ head["kernel"] + head["bias"], y)


def fine_tune(classifier, variables: PyTree, x: jax.Array, y: jax.Array, weights: jax.Array, key: jax.Array, *,
              channel_masks: Optional[Dict[str, jax.Array]] = None, epochs: int = 5, batch_size: int = 64,
              learning_rate: float = 0.01, head_learning_rate: Optional[float] = None,
              weight_decay: float = 5e-4, augment: bool = False, max_grad_norm: Optional[float] = 5.0) -> PyTree:
    r"""Full fine-tuning of encoder + head on the rows with ``weights > 0``: SGD (momentum 0.9,
    cosine schedule from ``learning_rate``; the head at ``head_learning_rate``, default
    ``10 x learning_rate``), BN in eval mode (running statistics frozen), flagged channels held at
    zero by multiplying their BN :math:`(\gamma, \beta)` by ``channel_masks`` in every forward pass
    (so the gradient of a masked channel is 0). Through :func:`poisonjax.core.victims.train_victims`.

    The gradient is clipped to global norm ``max_grad_norm`` (:math:`g \leftarrow g \min(1, c/\|g\|_2)`,
    ``None`` = no clipping) before the updates: on the GPU run of 2026-11-30 (SimCLR width-32 encoder,
    batch 128, head lr 0.1) the unclipped fine-tuning of T-Core's filtered encoder diverged to NaN."""
    if max_grad_norm is not None and not (isinstance(max_grad_norm, (int, float)) and max_grad_norm > 0):
        raise PoisonJaxInputError(f"max_grad_norm must be a positive number or None (no clipping), got {max_grad_norm!r}")
    return _fine_tune_jit(classifier, variables, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32),
                          jnp.asarray(weights, jnp.float32), key, channel_masks or {}, int(epochs), int(batch_size),
                          float(learning_rate), head_learning_rate, float(weight_decay), bool(augment),
                          None if max_grad_norm is None else float(max_grad_norm))


def _fine_tune_impl(classifier, variables, x, y, weights, key, masks, epochs, batch_size, learning_rate,
                    head_learning_rate, weight_decay, augment, max_grad_norm):
    from poisonjax.core.victims import as_victim, train_victims
    from poisonjax.vision.backdoor.victim import augment_batch

    def loss(v, batch, k):
        p = mask_bn(v["params"], masks)
        out = classifier.apply({"params": p, "batch_stats": v["batch_stats"]}, batch["x"], train=False)
        return optax.softmax_cross_entropy_with_integer_labels(out, batch["y"])

    n = x.shape[0]
    bs = int(min(batch_size, n))
    steps = epochs * -(-n // bs)
    hl = head_learning_rate or 10 * learning_rate
    label = lambda params: {k: jax.tree.map(lambda _: "head" if k == "linear" else "body", sub)
                            for k, sub in params.items()}
    mk = lambda lr: optax.chain(optax.add_decayed_weights(weight_decay),
                                optax.sgd(optax.cosine_decay_schedule(lr, steps), momentum=0.9))
    opt = optax.multi_transform({"head": mk(hl), "body": mk(learning_rate)}, label)
    if max_grad_norm is not None:
        opt = optax.chain(optax.clip_by_global_norm(max_grad_norm), opt)
    vic = as_victim(lambda k: variables, loss, lambda v, xx: classifier.apply(v, xx, train=False))
    res = train_victims(vic, opt, {"x": x, "y": y}, key[None], epochs=epochs, batch_size=bs,
                        mask=weights, variables=variables, variables_axis=None,
                        augment=augment_batch if augment else None)
    v = jax.tree.map(lambda a: a[0], res.variables)
    return {"params": mask_bn(v["params"], masks), "batch_stats": v["batch_stats"]}


_fine_tune_jit = jax.jit(_fine_tune_impl, static_argnums=(0, 7, 8, 9, 10, 11, 12, 13))


def class_counts(y, num_classes: int) -> np.ndarray:
    """``[C]`` number of rows per class (host)."""
    return np.bincount(np.asarray(y), minlength=num_classes)


def check_labels(y, num_classes: int, name: str = "y") -> None:
    """Labels must be integers in ``[0, num_classes)`` and every class non-empty (one-line errors)."""
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise PoisonJaxInputError(f"{name} must be a 1-D integer label array, got shape {y.shape} dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise PoisonJaxInputError(f"{name} has labels outside the head's classes [0, {num_classes}): "
                                  f"min {int(y.min())}, max {int(y.max())}")
    empty = np.flatnonzero(class_counts(y, num_classes) == 0)
    if empty.size:
        raise PoisonJaxInputError(f"{name}: class {int(empty[0])} is empty (T-Core sifts seeds per class; "
                                  "every class needs samples)")
