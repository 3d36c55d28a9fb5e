r"""Linear probes on frozen encoder features: clean accuracy and backdoor attack success rate.

A linear probe is multinomial logistic regression on standardised features: with
:math:`\hat h = (f(x) - \mu) / \sigma` (:math:`\mu, \sigma` per feature, from the training features)

.. math:: \min_{W, b}\; \frac1N \sum_i -\log \mathrm{softmax}(W \hat h_i + b)_{y_i}
   + \frac{\lambda}{2} \|W\|_F^2,

solved by **full-batch** Adam (learning rate 0.01, ``epochs`` full-batch steps, :math:`\lambda = 10^{-4}`),
one compiled ``lax.scan``. This is the standard evaluation of SSL encoders (SimCLR section 4; BadEncoder and
DRUPE train their downstream classifiers on the frozen encoder's features). ASR follows
:func:`poisonjax.core.poisoning.attack_success_rate`: among test images whose label is not the target class,
the fraction classified as the target once the trigger is stamped.
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from poisonjax.core.poisoning import Trigger, apply_trigger, attack_success_rate
from poisonjax.core.training import feature_standardization
from poisonjax.core.validation import PoisonJaxInputError, check_positive_int
from poisonjax.vision.ssl.encoders import EncoderBundle, encode


class LinearHead(NamedTuple):
    """A fitted probe: ``W [D, C]``, ``b [C]``, feature ``mean`` / ``std`` ``[D]``."""

    W: jax.Array
    b: jax.Array
    mean: jax.Array
    std: jax.Array

    def logits(self, h: jax.Array) -> jax.Array:
        """``[N, C]`` logits of features ``h [N, D]``."""
        return ((h - self.mean) / self.std) @ self.W + self.b


def _check_labels(name, y, n, num_classes=None):
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise PoisonJaxInputError(f"{name} must be integer labels [N] with N = {n} (one per image), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise PoisonJaxInputError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if y.min() < 0 or (num_classes is not None and y.max() >= num_classes):
        raise PoisonJaxInputError(f"{name} must hold labels in [0, {num_classes}), got range [{y.min()}, {y.max()}]")
    return y.astype(np.int32)


def fit_linear_head(h: jax.Array, y, *, epochs: int = 300, num_classes: Optional[int] = None,
                    lr: float = 0.01, l2: float = 1e-4, key: Optional[jax.Array] = None) -> LinearHead:
    """Fit the probe (module docstring) on features ``h [N, D]`` and labels ``y [N]``. ``key`` initialises
    ``W`` (small normal; the problem is convex, so it only matters at the 1e-6 level). Standardisation is
    :func:`poisonjax.core.training.feature_standardization`; the rows of ``W`` of features constant on ``h``
    start (and, having zero gradient, stay) at 0, so a feature that only a triggered or otherwise shifted
    input moves has no weight. (Before, such a row kept its random start, decayed by the L2 term to about
    1e-3 after 20 steps and 1e-9 after 300, times the input divided by 1e-6.)"""
    epochs = check_positive_int("epochs", epochs)
    y = _check_labels("y_train", y, h.shape[0])
    c = int(num_classes or int(y.max()) + 1)
    h = jnp.asarray(h, jnp.float32)
    mean, std = feature_standardization(h)
    hn = (h - mean) / std
    live = (jnp.abs(hn).max(0) > 1e-6).astype(jnp.float32)   # a non-constant feature has max |z| >= 1
    key = jax.random.PRNGKey(0) if key is None else key
    params = {"W": 0.01 * jax.random.normal(key, (h.shape[1], c)) * live[:, None], "b": jnp.zeros((c,))}
    tx = optax.adam(lr)
    yj = jnp.asarray(y)

    @jax.jit
    def fit(params):
        def loss(p):
            lg = hn @ p["W"] + p["b"]
            return optax.softmax_cross_entropy_with_integer_labels(lg, yj).mean() + 0.5 * l2 * jnp.sum(p["W"] ** 2)

        def body(carry, _):
            p, s = carry
            g = jax.grad(loss)(p)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(body, (params, tx.init(params)), None, length=epochs)
        return p

    p = fit(params)
    return LinearHead(p["W"], p["b"], mean, std)


def linear_probe(bundle: EncoderBundle, x_train, y_train, x_test, y_test, *, epochs: int = 300,
                 key: Optional[jax.Array] = None) -> float:
    """Test accuracy of a logistic-regression probe trained on the frozen features of ``x_train``
    (module docstring: full-batch Adam, ``epochs`` steps). Images ``[N, H, W, C]`` in [0, 1]."""
    h_tr = encode(bundle, x_train)
    ytr = _check_labels("y_train", y_train, h_tr.shape[0])
    h_te = encode(bundle, x_test)
    yte = _check_labels("y_test", y_test, h_te.shape[0], int(ytr.max()) + 1)
    head = fit_linear_head(h_tr, ytr, epochs=epochs, key=key)
    return float(jnp.mean(jnp.argmax(head.logits(h_te), -1) == jnp.asarray(yte)))


def probe_accuracy_and_asr(bundle: EncoderBundle, x_train, y_train, x_test, y_test, trigger: Trigger,
                           target_class: int, *, epochs: int = 300, key: Optional[jax.Array] = None
                           ) -> Dict[str, float]:
    """``{"clean_accuracy", "asr"}`` of a linear probe trained on clean downstream data ``(x_train, y_train)``:
    accuracy on ``(x_test, y_test)`` and the ASR of the triggered non-target test images."""
    h_tr = encode(bundle, x_train)
    ytr = _check_labels("y_train", y_train, h_tr.shape[0])
    c = int(ytr.max()) + 1
    if not 0 <= int(target_class) < c:
        raise PoisonJaxInputError(f"target_class must be in [0, {c}), got {target_class}")
    yte = _check_labels("y_test", y_test, np.asarray(x_test).shape[0], c)
    head = fit_linear_head(h_tr, ytr, epochs=epochs, key=key)
    pred = jnp.argmax(head.logits(encode(bundle, x_test)), -1)
    xt = np.asarray(apply_trigger(jnp.asarray(x_test), trigger))
    pred_t = jnp.argmax(head.logits(encode(bundle, xt)), -1)
    return {"clean_accuracy": float(jnp.mean(pred == jnp.asarray(yte))),
            "asr": float(attack_success_rate(pred_t, jnp.asarray(yte), int(target_class)))}


def cifar_probe_split(data_dir=None, n_adapt: int = 8000, seed: int = 0):
    """The issue's downstream split of the CIFAR-10 test set (``cifar10_jpeg_20k/test``, disjoint from
    pre-training): a seeded, stratified ``n_adapt`` / rest split -> ``(x_adapt, y_adapt, x_eval, y_eval)``."""
    from poisonjax.data.images import stratified_split
    from poisonjax.vision.ssl.encoders import load_cifar10_20k
    x, y = load_cifar10_20k("test", data_dir)
    ia, ie = stratified_split(y, n_adapt, seed)
    return x[ia], y[ia], x[ie], y[ie]
