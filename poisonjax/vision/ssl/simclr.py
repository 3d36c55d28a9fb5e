r"""SimCLR pre-training (Chen et al., "A simple framework for contrastive learning of visual representations",
ICML 2020) of a BatchNorm CIFAR ResNet encoder, as a resumable :mod:`poisonjax.core.runner` process.

For a batch of :math:`B` unlabeled images, two augmented views each (:mod:`.augment`) give :math:`2B` inputs;
the encoder :math:`f` and a projection head :math:`g` (``Dense(D) -> ReLU -> Dense(proj_dim)``, discarded
after training) give :math:`z_k = g(f(\tilde x_k)) / \|g(f(\tilde x_k))\|`. With :math:`p(k)` the other view
of the same image, the NT-Xent loss with temperature :math:`\tau` (0.5 here, as the issue asks) is

.. math:: \mathcal{L} = \frac{1}{2B} \sum_{k=1}^{2B} -\log
   \frac{\exp(z_k^\top z_{p(k)} / \tau)}{\sum_{l \ne k} \exp(z_k^\top z_l / \tau)}.

BatchNorm runs in training mode over the :math:`2B` views (batch statistics; running averages updated).
Optimiser: AdamW (weight decay 1e-6) with a linear warm-up over the first epoch and cosine decay to 0 -- a
simplification of SimCLR's LARS, which needs batches of thousands. One step = one batch; the order of
images is a fresh permutation per epoch drawn from ``fold_in(key, epoch)`` and the augmentation key is
``fold_in(key, step)``, so the state at step :math:`t` is a pure function of the key and :math:`t` and a
killed run resumes bit-identically. The last ``N mod B`` images of each epoch's permutation are skipped.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from poisonjax.core import runner
from poisonjax.core.types import AttackOptimizer
from poisonjax.core.validation import PoisonJaxInputError, check_fraction, check_positive_int
from poisonjax.vision.ssl.augment import simclr_views
from poisonjax.vision.ssl.encoders import (EncoderBundle, check_images, data_fingerprint, key_fingerprint,
                                           load_encoder, save_encoder)


def nt_xent(z1: jax.Array, z2: jax.Array, temperature: float = 0.5) -> jax.Array:
    r"""NT-Xent loss (module docstring) of two batches of projections ``z1, z2 [B, d]`` (row ``i`` of each is a
    view of image ``i``); rows are L2-normalised here. Returns a scalar."""
    z = jnp.concatenate([z1, z2], 0)
    z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
    n = z.shape[0]
    b = n // 2
    sim = (z @ z.T) / temperature
    sim = jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, sim)
    pos = jnp.concatenate([jnp.arange(b, n), jnp.arange(0, b)])
    logp = jax.nn.log_softmax(sim, axis=-1)
    return -jnp.mean(logp[jnp.arange(n), pos])


class ProjectionHead(nn.Module):
    """SimCLR's 2-layer projection MLP ``Dense(hidden) -> ReLU -> Dense(out)``."""

    hidden: int
    out: int = 128

    @nn.compact
    def __call__(self, h):
        return nn.Dense(self.out, name="fc2")(nn.relu(nn.Dense(self.hidden, name="fc1")(h)))


def simclr_optimizer(module, head, *, n: int, batch_size: int, epochs: int, temperature: float,
                     lr: float, image_shape) -> AttackOptimizer:
    """SimCLR pre-training as an :class:`AttackOptimizer` over ``problem = {"x": images [N, H, W, 3]}``.

    State: ``params`` (``{"encoder", "head"}``), ``batch_stats``, ``opt_state``, ``key``, ``step``, ``loss``
    (of the last step)."""
    spe = n // batch_size
    total = spe * epochs
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, max(1, min(spe, total // 2)), max(total, 2), 0.0)
    tx = optax.adamw(sched, weight_decay=1e-6)

    def init(key, problem):
        k_enc, k_head, k_run = jax.random.split(key, 3)
        v = module.init(k_enc, jnp.zeros((1,) + tuple(image_shape)), train=False, return_features=True)
        hp = head.init(k_head, jnp.zeros((1, head.hidden)))["params"]
        params = {"encoder": v["params"], "head": hp}
        return {"params": params, "batch_stats": v["batch_stats"], "opt_state": tx.init(params),
                "key": k_run,
                "step": jnp.int32(0), "loss": jnp.float32(0.0)}

    def loss_fn(params, batch_stats, v1, v2):
        xs = jnp.concatenate([v1, v2], 0)
        h, upd = module.apply({"params": params["encoder"], "batch_stats": batch_stats}, xs, train=True,
                              return_features=True, mutable=["batch_stats"])
        z = head.apply({"params": params["head"]}, h)
        b = v1.shape[0]
        return nt_xent(z[:b], z[b:], temperature), upd["batch_stats"]

    def step(state, problem):
        x = problem["x"]
        t = state["step"]
        key = state["key"]
        perm = jax.random.permutation(jax.random.fold_in(key, t // spe), x.shape[0])
        idx = jax.lax.dynamic_slice(perm, ((t % spe) * batch_size,), (batch_size,))
        v1, v2 = simclr_views(jax.random.fold_in(jax.random.fold_in(key, 1 << 20), t), x[idx])
        (loss, bs), g = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], state["batch_stats"], v1, v2)
        upd, opt_state = tx.update(g, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], upd)
        return {"params": params, "batch_stats": bs, "opt_state": opt_state, "key": key, "step": t + 1,
                "loss": loss}

    return AttackOptimizer(init, step, lambda s, p: {"loss": s["loss"]})


def pretrain_simclr(x, key: jax.Array, *, arch: str = "narrow", width: int = 16, epochs: int,
                    batch_size: int = 256, temperature: float = 0.5, lr: float = 1e-3, proj_dim: int = 128,
                    workdir=None, progress: bool = True, chunk_size: int = 10) -> EncoderBundle:
    """Pre-train an encoder with SimCLR on unlabeled images ``x [N, H, W, 3]`` in [0, 1] (module docstring).

    Args:
      x: the images (labels are never used).
      key: PRNG key (initialisation, batch order, augmentations).
      arch, width: ``"narrow"`` (:func:`~poisonjax.vision.backdoor.resnet.narrow_resnet`, widths
        ``(w, 2w, 4w)``, :math:`D = 4w`) or ``"preact18"`` (PreAct-ResNet-18, :math:`D = 512`).
      epochs: passes over ``x`` (``N // batch_size`` steps each).
      batch_size: images per step (``2 * batch_size`` views); ``<= N``.
      temperature: NT-Xent's :math:`\\tau` (0.5).
      lr: peak AdamW learning rate.
      proj_dim: output size of the projection head (discarded afterwards).
      workdir: the runner's directory (checkpoints, ``metrics.jsonl``); a killed run resumes from it.
        ``None`` trains in memory.
      progress: tqdm bar.

    Returns:
      :class:`EncoderBundle` with ``meta["trained_by"] = "simclr"`` and the final loss.
    """
    from poisonjax.vision.ssl.encoders import build_encoder
    epochs = check_positive_int("epochs", epochs)
    batch_size = check_positive_int("batch_size", batch_size, minimum=2)
    check_fraction("temperature", temperature, high=1e6)
    check_fraction("lr", lr, high=10.0)
    x = check_images("x", x)
    if x.shape[-1] != 3:
        raise PoisonJaxInputError(f"x must be RGB images [N, H, W, 3], got {x.shape[-1]} channel(s)")
    if batch_size > x.shape[0]:
        raise PoisonJaxInputError(f"batch_size must be at most the number of images ({x.shape[0]}), got {batch_size}")
    module, d = build_encoder(arch, width)
    head = ProjectionHead(hidden=d, out=int(proj_dim))
    n = int(x.shape[0])
    steps = (n // batch_size) * epochs
    image_shape = tuple(int(s) for s in x.shape[1:])
    opt = simclr_optimizer(module, head, n=n, batch_size=batch_size, epochs=epochs, temperature=temperature,
                           lr=lr, image_shape=image_shape)
    config = {"what": "simclr", "arch": arch, "width": int(width), "epochs": epochs, "batch_size": batch_size,
              "temperature": float(temperature), "lr": float(lr), "proj_dim": int(proj_dim),
              "key": key_fingerprint(key), "data": data_fingerprint(x)}
    t0 = time.perf_counter()
    res = runner.run(opt, {"x": jnp.asarray(x)}, steps, workdir, key=key, chunk_size=min(chunk_size, max(steps, 1)),
                     config=config, progress=progress, desc="simclr")
    st = res.state
    meta = {"arch": arch, "width": int(width) if arch == "narrow" else 64, "feature_dim": int(d),
            "image_shape": list(image_shape), "trained_by": "simclr", "epochs": epochs, "steps": steps,
            "batch_size": batch_size, "temperature": float(temperature), "lr": float(lr), "n_images": n,
            "final_loss": float(st["loss"]), "seconds": time.perf_counter() - t0,
            "resumed_from": res.resumed_from}
    return EncoderBundle(module, {"params": st["params"]["encoder"], "batch_stats": st["batch_stats"]}, meta)


def get_or_pretrain(cache_dir, *, variant: str = "quick", key: Optional[jax.Array] = None, x=None,
                    epochs: Optional[int] = None, arch: Optional[str] = None, width: Optional[int] = None,
                    batch_size: int = 128, lr: float = 2e-3, data_dir=None, progress: bool = True,
                    probe: bool = False) -> EncoderBundle:
    """The clean SimCLR encoder of ``variant``, loaded from ``cache_dir/<name>`` when present, else pre-trained
    (resumably, in ``cache_dir/<name>.run``) on ``x`` (default: the 10,000 training images of
    ``cifar10_jpeg_20k``, labels unused) and saved there.

    ``variant``: ``"quick"`` (narrow width 8, 1 epoch: what a busy 2-core CPU affords; width 16 costs 4x per
    step) or ``"paper"`` (PreAct-ResNet-18, 30 epochs);
    ``epochs`` / ``arch`` / ``width`` override. ``<name>`` is ``simclr_<arch>_w<width>_e<epochs>``. A cached
    checkpoint of another architecture than asked raises :class:`PoisonJaxInputError` (``arch``).
    ``probe=True`` measures the clean linear-probe accuracy (CIFAR-10 test split, 8,000 / 2,000) before saving
    and stores it as ``meta["probe_accuracy"]``."""
    from poisonjax.core.validation import check_choice
    check_choice("variant", variant, ("quick", "paper"))
    defaults = {"quick": ("narrow", 8, 1), "paper": ("preact18", 64, 30)}[variant]
    arch = arch or defaults[0]
    width = int(width or defaults[1])
    epochs = int(epochs or defaults[2])
    name = f"simclr_{arch}_w{width}_e{epochs}" if arch == "narrow" else f"simclr_{arch}_e{epochs}"
    path = Path(cache_dir) / name
    if (path / "meta.json").exists():
        return load_encoder(path, arch=arch, width=width if arch == "narrow" else None)
    key = jax.random.PRNGKey(0) if key is None else key
    if x is None:
        from poisonjax.vision.ssl.encoders import load_cifar10_20k
        x, _ = load_cifar10_20k("train", data_dir)
    bundle = pretrain_simclr(x, key, arch=arch, width=width, epochs=epochs, batch_size=batch_size, lr=lr,
                             workdir=Path(cache_dir) / f"{name}.run", progress=progress)
    if probe:
        from poisonjax.vision.ssl.probe import cifar_probe_split, linear_probe
        xtr, ytr, xte, yte = cifar_probe_split(data_dir)
        acc = linear_probe(bundle, xtr, ytr, xte, yte, epochs=300, key=jax.random.PRNGKey(1))
        bundle = bundle._replace(meta={**bundle.meta, "probe_accuracy": acc})
    save_encoder(path, bundle)
    return bundle
