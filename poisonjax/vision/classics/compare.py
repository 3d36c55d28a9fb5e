r"""Each classic attack family against its baseline on the same data (used by tests and the study).

* :func:`feature_space_comparison` -- Poison Frogs vs Convex Polytope vs Bullseye Polytope (and
  random noise) in the frozen-feature transfer setting: same targets, same poison bases, same eps
  and step count; the victims are linear heads retrained on the frozen features
  (:func:`poisonjax.vision.witches_brew.transfer_success`).

Every function returns a dict ``{method: {"success_rate", "target_prob", "clean_accuracy"}}`` plus the
setting's sizes, so the caller can assert "attack beats baseline" on one number.
"""
from __future__ import annotations

from typing import Dict, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from poisonjax.core import gradient_matching as gm
from poisonjax.core.runner import run as run_attack
from poisonjax.core.training import init_and_train, softmax_cross_entropy_loss
from poisonjax.vision import witches_brew as wb
from poisonjax.vision.classics.feature_space import bullseye_polytope_attack, convex_polytope_attack
from poisonjax.vision.models import make_classifier


def train_surrogate(data, key, *, model: str = "convnet", epochs: int = 10, batch_size: int = 128, lr: float = 1e-2):
    """One clean classifier ``(module, params)`` trained with Adam on ``data.x_train`` (an
    :class:`~poisonjax.data.images.ImageDataset`)."""
    net = make_classifier(model, num_classes=data.num_classes)
    x0 = jnp.asarray(data.x_train[:1])
    init = lambda k: net.init(k, x0)
    loss = softmax_cross_entropy_loss(net.apply)
    params = init_and_train(init, loss, optax.adam(lr), {"x": jnp.asarray(data.x_train), "y": jnp.asarray(data.y_train)},
                            key, epochs=epochs, batch_size=batch_size).params
    return net, params


def feature_space_comparison(data, key, *, trials: int = 4, budget: float = 0.02, eps: float = 32 / 255,
                             steps: int = 100, lr: float = 0.02, n_victims: int = 2, head_steps: int = 150,
                             surrogate=None, methods: Sequence[str] = ("random_noise", "poison_frogs",
                                                                        "convex_polytope", "bullseye_polytope")
                             ) -> Dict:
    r"""Poison Frogs vs Convex Polytope vs Bullseye Polytope in the transfer setting.

    A clean surrogate (``surrogate=(module, params)`` or one trained here) gives the frozen features
    :math:`\phi`. ``trials`` (target, adversarial class) pairs are drawn, each with the same
    ``round(budget * N)`` random poison bases of its adversarial class for every method; each attack
    runs ``steps`` projected-Adam steps (``lr``) at L-inf radius ``eps``; ``n_victims`` linear heads
    per trial are retrained on the poisoned features. Returns ``{method: {success_rate, target_prob,
    clean_accuracy}}`` and ``n_poisons``.
    """
    k_sur, k_tr, k_p, k_att, k_v = jax.random.split(key, 5)
    net, params = surrogate if surrogate is not None else train_surrogate(data, k_sur)
    feat = lambda x: net.apply(params, x, return_features=True)
    ti, adv = wb.choose_trials(k_tr, data.y_test, data.num_classes, trials)
    problem, pidx = wb.witches_brew_problem(jax.tree.map(lambda a: a[None], params), data.x_train, data.y_train,
                                            data.x_test, None, data.num_classes, target_indices=ti,
                                            adv_classes=adv, budget=budget, eps=eps, key=k_p)
    attacks = {"poison_frogs": wb.feature_collision_attack(feat, lr=lr),
               "convex_polytope": convex_polytope_attack(feat, lr=lr),
               "bullseye_polytope": bullseye_polytope_attack(feat, lr=lr)}
    deltas = {"none": jnp.zeros_like(problem.base_images),
              "random_noise": jax.vmap(wb.random_noise_deltas, in_axes=(0, 0, None))(
                  jax.random.split(k_att, trials), problem.base_images, eps)}
    for m in methods:
        if m in attacks:
            res = run_attack(gm.batch_over_trials(attacks[m]), problem, steps, None, key=k_att, progress=False,
                             chunk_size=max(1, min(50, steps)))
            deltas[m] = res.state.delta
    ftr, fte = feat(jnp.asarray(data.x_train)), feat(jnp.asarray(data.x_test))
    ftarget = feat(jnp.asarray(data.x_test[ti]))
    rep = lambda a: np.repeat(np.asarray(a), n_victims, axis=0)
    keys = jax.random.split(k_v, trials * n_victims)
    ts = jax.jit(lambda pf: wb.transfer_success(ftr, jnp.asarray(data.y_train), keys, poison_index=rep(pidx),
                                                poison_features=pf, target_features=rep(ftarget), adv_label=rep(adv),
                                                num_classes=data.num_classes, steps=head_steps, features_test=fte,
                                                y_test=jnp.asarray(data.y_test)))
    out = {"n_poisons": int(pidx.shape[1]), "trials": int(trials), "n_victims": int(n_victims), "eps": float(eps),
           "budget": float(budget)}
    for m in ("none",) + tuple(methods):
        pf = jax.vmap(feat)(problem.base_images + deltas[m])
        o = jax.device_get(ts(rep(pf)))
        out[m] = {"success_rate": float(np.mean(o["success"])), "target_prob": float(np.mean(o["target_prob"])),
                  "clean_accuracy": float(np.mean(o["clean_accuracy"])),
                  "max_linf": float(jnp.max(jnp.abs(deltas[m])))}
    return out
