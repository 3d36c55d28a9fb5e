r"""T-Core as one resumable process: stages 1-3 as the steps of an ``AttackOptimizer``-style run.

:func:`tcore_process` returns ``(AttackOptimizer(init, step, metrics), n_steps)``; drive it with
:func:`poisonjax.core.runner.run` (``host_loop=True``: stage 1's DBSCAN runs on the host), which
checkpoints the state with orbax after every step and resumes a killed run from the last one; every
step is a deterministic function of the state, so a resumed run ends identical to an uninterrupted
one. :func:`run_tcore` does this and returns a :class:`TCoreResult`.

Steps (``state["step"]`` says which comes next):

* ``0`` -- stage 1 sifting (:func:`poisonjax.vision.tcore.sifting.sift_seeds`) on the pre-trained
  encoder's three-depth features;
* ``1 .. R`` -- one round of seed expansion each (:func:`~poisonjax.vision.tcore.sifting.expand_seeds`);
* ``R + 1`` -- stage 2 (:func:`poisonjax.vision.tcore.channels.filter_channels`): a linear head is
  fitted on the expanded seeds, the classifier's BN channels filtered on (at most ``max_seed_batch``)
  seed images;
* ``R + 2 ..`` -- stage 3 rounds (:mod:`poisonjax.vision.tcore.bootstrap`), each a linear probe on
  the filtered encoder's features of the current trusted set and one growth;
* last -- the final model on the final trusted set: ``mode="linear"`` a linear probe on the filtered
  (frozen) encoder; ``mode="finetune"`` full fine-tuning of the filtered encoder + head with the
  untrusted channels held at zero (:func:`~poisonjax.vision.tcore.common.fine_tune`).

Simplification: in ``finetune`` mode the bootstrap rounds still select with linear probes on the
filtered encoder (cheap); only the final model is fine-tuned (the paper fine-tunes while it grows).

Every input is checked before any training (:func:`check_inputs`): the encoder's architecture, labels
within the head's classes, no empty class, fractions and the growth schedule in (0, 1].
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core.types import AttackOptimizer
from poisonjax.core.validation import PoisonJaxInputError, check_choice, check_fraction, check_positive_int
from poisonjax.vision.tcore import bootstrap as B
from poisonjax.vision.tcore import channels as CH
from poisonjax.vision.tcore import sifting as S
from poisonjax.vision.tcore.common import (as_classifier, bn_paths, check_encoder, check_labels, class_counts,
                                           features, fine_tune, head_losses, mask_bn, stage_features,
                                           train_head, with_head)

MODES = ("linear", "finetune")


@dataclasses.dataclass(frozen=True)
class TCoreConfig:
    """Every constant of T-Core (defaults = the paper's where the issue states them; see each stage's
    module docstring for the meaning).

    Stage 1: ``seed_fraction`` 0.01 (top 1% per class by kNN consistency), ``n_depths`` 3,
    ``dbscan_min_samples`` 5, ``dbscan_eps_quantile`` 0.5 (k-distance median), ``knn_k`` 10,
    ``expand_rounds`` 2 and ``expand_growth`` 0.05 (highest-loss 5% per round), ``confusion_weight``
    (lambda of the confusion objective), ``confusion_steps``, ``confusion_lr``.
    Stage 2: ``target_accuracy`` 0.2, ``unlearn_lr``, ``max_unlearn_steps``, ``mask_l1``, ``mask_steps``,
    ``mask_lr``, ``channel_fraction`` 0.1 (per layer), ``max_seed_batch`` 512 (seed images used).
    Stage 3: ``per_class`` 0.02 x ``per_class_rounds``, ``global_growth`` 0.02 x ``global_rounds``,
    ``loss_growth`` 0.05, ``until`` 0.9. Heads: ``head_epochs``, ``head_lr``; final fine-tuning:
    ``ft_epochs``, ``ft_lr``, ``ft_batch_size``, ``augment``.
    """

    seed_fraction: float = 0.01
    n_depths: int = 3
    dbscan_min_samples: int = 5
    dbscan_eps_quantile: float = 0.5
    knn_k: int = 10
    expand_rounds: int = 2
    expand_growth: float = 0.05
    confusion_weight: float = 5.0
    confusion_steps: int = 200
    confusion_lr: float = 1e-2
    target_accuracy: float = 0.2
    unlearn_lr: float = 0.002
    max_unlearn_steps: int = 500
    mask_l1: float = 1e-3
    mask_steps: int = 200
    mask_lr: float = 0.05
    channel_fraction: float = 0.1
    max_seed_batch: int = 512
    per_class: float = 0.02
    per_class_rounds: int = 5
    global_growth: float = 0.02
    global_rounds: int = 5
    loss_growth: float = 0.05
    until: float = 0.9
    head_epochs: int = 30
    head_lr: float = 1e-2
    ft_epochs: int = 5
    ft_lr: float = 0.01
    ft_batch_size: int = 64
    augment: bool = False

    @classmethod
    def from_dict(cls, d) -> "TCoreConfig":
        """From a dict / ConfigDict (unknown keys refused, naming them)."""
        d = dict(d.to_dict() if hasattr(d, "to_dict") else d)
        bad = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if bad:
            raise PoisonJaxInputError(f"tcore config has unknown keys {bad}")
        return cls(**d)


class TCoreResult(NamedTuple):
    """``variables`` of the defended classifier (module = :func:`as_classifier`), ``seed_mask`` (stage 1,
    before expansion), ``expanded_mask``, ``trusted`` (final), ``keep_masks`` (BN channel keep-masks),
    ``info`` (stage statistics), ``run`` (the runner's :class:`RunResult`)."""

    variables: Any
    seed_mask: np.ndarray
    expanded_mask: np.ndarray
    trusted: np.ndarray
    keep_masks: Dict[str, np.ndarray]
    info: Dict[str, Any]
    run: Any


def check_inputs(module, variables, x, y, num_classes: int, cfg: TCoreConfig, mode: str) -> None:
    """All of T-Core's input checks (one-line :class:`PoisonJaxInputError` naming the argument)."""
    check_choice("mode", mode, MODES)
    check_positive_int("num_classes", num_classes, minimum=2)
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise PoisonJaxInputError(f"x must be NHWC images [N, H, W, C], got shape {x.shape}")
    if np.asarray(y).shape != (x.shape[0],):
        raise PoisonJaxInputError(f"y must have shape ({x.shape[0]},) to match x, got {np.asarray(y).shape}")
    check_labels(y, num_classes)
    check_encoder(module, variables, x.shape[1:])
    check_fraction("seed_fraction", cfg.seed_fraction)
    check_fraction("expand_growth", cfg.expand_growth)
    check_fraction("target_accuracy", cfg.target_accuracy)
    check_fraction("channel_fraction", cfg.channel_fraction)
    check_fraction("dbscan_eps_quantile", cfg.dbscan_eps_quantile)
    B.check_schedule(cfg.per_class, cfg.global_growth, cfg.loss_growth, cfg.until)
    check_positive_int("n_depths", cfg.n_depths)
    if cfg.n_depths > len(module.widths):
        raise PoisonJaxInputError(f"n_depths must be <= the encoder's {len(module.widths)} stages, got {cfg.n_depths}")
    check_positive_int("expand_rounds", cfg.expand_rounds, minimum=0)


def _seed_count(y, num_classes, frac):
    return int(sum(max(1, round(frac * c)) for c in class_counts(y, num_classes)))


def _keys(paths):
    return {p.replace("/", "__"): p for p in paths}


def tcore_process(module, variables, num_classes: int, y, cfg: TCoreConfig = TCoreConfig(), mode: str = "linear"):
    """``(AttackOptimizer, n_steps)`` for the problem ``{"x": [N, H, W, C], "y": [N]}`` (module docstring).

    ``module``/``variables``: the pre-trained encoder (a PreActResNet; its ``linear`` layer, if any, is
    ignored). The state holds the classifier variables, the masks and the losses, all arrays."""
    clf = as_classifier(module, num_classes)
    y_host = np.asarray(y)
    counts = class_counts(y_host, num_classes)
    n = len(y_host)
    n_exp = min(n, _seed_count(y_host, num_classes, cfg.seed_fraction) + cfg.expand_rounds * int(round(cfg.expand_growth * n)))
    plan = B.growth_plan(counts, n_exp, per_class=cfg.per_class, per_class_rounds=cfg.per_class_rounds,
                         global_growth=cfg.global_growth, global_rounds=cfg.global_rounds,
                         loss_growth=cfg.loss_growth, until=cfg.until)
    R = cfg.expand_rounds
    n_steps = 1 + R + 1 + len(plan) + 1
    base = {"params": {k: v for k, v in variables["params"].items() if k != "linear"},
            "batch_stats": variables["batch_stats"]}
    paths = bn_paths(base["params"])
    kmap = _keys(paths)
    cache: Dict[Any, Any] = {}

    def feats_of(v, tag):          # memoised per encoder version (deterministic either way)
        k = (tag, id(cache_x[0]))
        if k not in cache:
            cache.clear()
            cache[k] = stage_features(clf, v, cache_x[0], cfg.n_depths)
        return cache[k]
    cache_x = [None]

    def init(key, problem):
        head = {"kernel": jnp.zeros((module.widths[-1], num_classes)), "bias": jnp.zeros((num_classes,))}
        return {"step": jnp.int32(0), "key": key, "seed_mask": jnp.zeros((n,), bool), "expanded": jnp.zeros((n,), bool),
                "trusted": jnp.zeros((n,), bool), "loss_prev": jnp.zeros((n,), jnp.float32),
                "variables": with_head(base, head),
                "keep": {k: jnp.ones_like(mask_bn_scale(base["params"], p)) for k, p in kmap.items()},
                "stats": {"unlearn_steps": jnp.int32(0), "unlearn_accuracy": jnp.float32(0),
                          "initial_accuracy": jnp.float32(0), "flagged_channel_fraction": jnp.float32(0)}}

    def step(state, problem):
        cache_x[0] = problem["x"]
        s = int(state["step"])
        key = jax.random.fold_in(state["key"], s)
        st = dict(state)
        yy = problem["y"]
        if s == 0:
            sf = feats_of(base, "pre")
            seeds, _ = S.sift_seeds(sf, np.asarray(yy), num_classes, seed_fraction=cfg.seed_fraction,
                                    min_samples=cfg.dbscan_min_samples, eps_quantile=cfg.dbscan_eps_quantile,
                                    knn_k=cfg.knn_k)
            st["seed_mask"] = jnp.asarray(seeds)
            st["trusted"] = jnp.asarray(seeds)
        elif s <= R:
            sf = feats_of(base, "pre")
            t = S.expand_seeds(S.concat_depths(sf), yy, np.asarray(state["trusted"]), key, num_classes, rounds=1,
                               growth=cfg.expand_growth, confusion_weight=cfg.confusion_weight,
                               steps=cfg.confusion_steps, learning_rate=cfg.confusion_lr)
            st["trusted"] = jnp.asarray(t)
        elif s == R + 1:
            f = feats_of(base, "pre")[-1]
            t = np.asarray(state["trusted"])
            head = train_head(f, yy, t.astype(np.float32), key, num_classes, epochs=cfg.head_epochs,
                              learning_rate=cfg.head_lr)
            rows = np.flatnonzero(t)
            if len(rows) > cfg.max_seed_batch:
                rows = np.sort(np.asarray(jax.random.choice(jax.random.fold_in(key, 1), rows, (cfg.max_seed_batch,),
                                                             replace=False)))
            filt, keep, info = CH.filter_channels(
                clf, with_head(base, head), problem["x"][rows], yy[rows], target_accuracy=cfg.target_accuracy,
                unlearn_lr=cfg.unlearn_lr, max_unlearn_steps=cfg.max_unlearn_steps, mask_l1=cfg.mask_l1,
                mask_steps=cfg.mask_steps, mask_lr=cfg.mask_lr, fraction=cfg.channel_fraction)
            st["variables"] = filt
            st["expanded"] = state["trusted"]
            st["keep"] = {k: keep[p] for k, p in kmap.items()}
            st["stats"] = {"unlearn_steps": jnp.int32(info["unlearn_steps"]),
                           "unlearn_accuracy": jnp.float32(info["unlearn_accuracy"]),
                           "initial_accuracy": jnp.float32(info["initial_accuracy"]),
                           "flagged_channel_fraction": jnp.float32(info["flagged_channel_fraction"])}
            f2 = feats_of(filt, "filtered")[-1]
            st["loss_prev"] = head_losses(train_head(f2, yy, t.astype(np.float32), jax.random.fold_in(key, 2),
                                                     num_classes, epochs=cfg.head_epochs, learning_rate=cfg.head_lr),
                                          f2, yy).astype(jnp.float32)
        else:
            v = state["variables"]
            f = feats_of(v, "filtered")[-1]
            t = np.asarray(state["trusted"])
            head = train_head(f, yy, t.astype(np.float32), key, num_classes, epochs=cfg.head_epochs,
                              learning_rate=cfg.head_lr)
            if s < n_steps - 1:
                kind = plan[s - R - 2]
                loss = head_losses(head, f, yy)
                t2 = B.grow(t, kind, loss, state["loss_prev"], yy, num_classes, per_class=cfg.per_class,
                            global_growth=cfg.global_growth, loss_growth=cfg.loss_growth, until=cfg.until)
                st["trusted"] = jnp.asarray(t2)
                st["loss_prev"] = loss.astype(jnp.float32)
            else:                                          # final model
                fin = with_head(v, head)
                if mode == "finetune":
                    keep = {p: state["keep"][k] for k, p in kmap.items()}
                    fin = fine_tune(clf, fin, problem["x"], yy, t.astype(np.float32), jax.random.fold_in(key, 3),
                                    channel_masks=keep, epochs=cfg.ft_epochs, batch_size=cfg.ft_batch_size,
                                    learning_rate=cfg.ft_lr, augment=cfg.augment)
                st["variables"] = fin
        st["step"] = jnp.int32(s + 1)
        return st

    def metrics(state, problem):
        return {"trusted_fraction": state["trusted"].mean(), "seeds": state["seed_mask"].sum(),
                "flagged_channel_fraction": state["stats"]["flagged_channel_fraction"]}

    return AttackOptimizer(init, step, metrics), n_steps


def mask_bn_scale(params, path):
    """The BN ``scale`` vector at ``path`` (used for mask shapes)."""
    from poisonjax.vision.tcore.common import get_path
    return get_path(params, path)["scale"]


def run_tcore(module, variables, x, y, num_classes: int, key: jax.Array, *, cfg: TCoreConfig = TCoreConfig(),
              mode: str = "linear", workdir: Optional[str] = None, progress: bool = False,
              run_config: Any = None) -> TCoreResult:
    """Check the inputs, then run the whole T-Core process through :func:`poisonjax.core.runner.run`
    (checkpointed and resumable when ``workdir`` is given). ``x [N, H, W, C]`` in [0, 1], ``y [N]``:
    the (possibly poisoned) downstream set; ``module``/``variables``: the (possibly poisoned) encoder."""
    from poisonjax.core.runner import run
    check_inputs(module, variables, x, y, num_classes, cfg, mode)
    opt, n_steps = tcore_process(module, variables, num_classes, y, cfg, mode)
    problem = {"x": jnp.asarray(x, jnp.float32), "y": jnp.asarray(y, jnp.int32)}
    res = run(opt, problem, n_steps, workdir, key=key, chunk_size=1, host_loop=True, progress=progress,
              desc="tcore", config={"tcore": dataclasses.asdict(cfg), "mode": mode, "run": run_config},
              save_final=True)
    st = res.state
    kmap = _keys(bn_paths({k: v for k, v in variables["params"].items() if k != "linear"}))
    info = {k: float(v) for k, v in st["stats"].items()}
    info["n_steps"] = n_steps
    return TCoreResult(st["variables"], np.asarray(st["seed_mask"]), np.asarray(st["expanded"]), np.asarray(st["trusted"]),
                       {p: np.asarray(st["keep"][k]) for k, p in kmap.items()}, info, res)
