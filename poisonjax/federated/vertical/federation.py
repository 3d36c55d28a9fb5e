r"""Build a vertical federation from arrays, make the per-run problem (defense x attack), train it with
:func:`poisonjax.core.runner.run`, and evaluate.

* :func:`build_federation` -- split images (pixel-column strips) or a table (column groups) among ``P``
  parties, hold out a validation set for the LOO, derive per-party hidden widths and the cost
  :math:`\mathrm{cost}_k \propto` bottom-model FLOPs (normalised to sum to ``cost_scale`` over passive
  parties), optionally replace one party's strip by pure noise (``noise_party``).
* :func:`make_problem` -- a :class:`~poisonjax.federated.vertical.engine.VFLProblem` for a defense in
  ``("vanilla", "fixed_dp", "opus")`` and attack switches (active label inference, backdoor).
* :func:`train` -- one resumable run; :func:`test_accuracy`.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core import privacy
from poisonjax.core.validation import PoisonJaxInputError, check_choice, check_positive_int
from poisonjax.federated.vertical import data as vdata
from poisonjax.federated.vertical import engine as E
from poisonjax.federated.vertical import incentives as inc

DEFENSES = ("vanilla", "fixed_dp", "opus")


class Federation(NamedTuple):
    """A split dataset plus the static spec. ``x [P, N, d]``/``y [N]`` train, ``xv``/``yv`` validation (LOO),
    ``xte``/``yte`` test; ``hmask [P, hidden]``; ``cost [P]``; ``flops [P]``; ``passive [P]``;
    ``vd`` the :class:`~poisonjax.federated.vertical.data.VerticalData` (columns, strip shapes)."""

    spec: E.VFLSpec
    vd: Any
    x: np.ndarray
    y: np.ndarray
    xv: np.ndarray
    yv: np.ndarray
    xte: np.ndarray
    yte: np.ndarray
    hmask: np.ndarray
    cost: np.ndarray
    flops: np.ndarray
    passive: np.ndarray


def check_privacy_args(spec: E.VFLSpec, eps0=None) -> None:
    """One-line errors for eps / delta / clip_norm / tau / eps bounds out of range."""
    privacy.check_eps_delta(spec.eps_min, spec.delta, spec.mechanism, name="eps_min")
    privacy.check_eps_delta(spec.eps_max, spec.delta, spec.mechanism, name="eps_max")
    if spec.eps_min > spec.eps_max:
        raise PoisonJaxInputError(f"eps_min={spec.eps_min} must be <= eps_max={spec.eps_max}")
    if eps0 is not None:
        privacy.check_eps_delta(eps0, spec.delta, spec.mechanism, name="eps")
    if not (np.isfinite(spec.grad_clip) and spec.grad_clip > 0):
        raise PoisonJaxInputError(f"grad_clip (per-sample bound of returned gradients) must be > 0, got {spec.grad_clip}")
    if not spec.clip_norm > 0:
        raise PoisonJaxInputError(f"clip_norm (Delta) must be > 0, got {spec.clip_norm}")
    if not (np.isfinite(spec.tau) and spec.tau >= 0):
        raise PoisonJaxInputError(f"tau (the reward budget) must be >= 0, got {spec.tau}")
    if int(spec.eps_warmup) < 0:
        raise PoisonJaxInputError(f"eps_warmup must be >= 0 rounds, got {spec.eps_warmup}")
    if spec.drop_mode not in ("zero", "mean"):
        raise PoisonJaxInputError(f"drop_mode must be 'zero' or 'mean', got {spec.drop_mode!r}")


def build_federation(x_train, y_train, x_test, y_test, *, num_parties: int = 4,
                     strip_widths: Optional[Sequence[int]] = None, groups=None, label_holders=(0,),
                     hidden: int = 64, hidden_widths: Optional[Sequence[int]] = None, embed_dim: int = 16,
                     top_hidden: int = 64, num_classes: int = 10, val_size: int = 500, noise_party: int = -1,
                     cost_scale: float = 0.1, seed: int = 0, **spec_kw) -> Federation:
    """Split and validate (see module docstring). ``spec_kw`` go to :class:`VFLSpec` (batch_size, lr, mechanism,
    delta, clip_norm, eps_min, eps_max, eps_lr, fd_h, alpha, beta, tau, drop_mode, ...).

    ``hidden_widths`` (length ``P``, each <= ``hidden``): per-party bottom widths (heterogeneous cost);
    default ``hidden`` for everyone.
    """
    x_train, x_test = np.asarray(x_train, np.float32), np.asarray(x_test, np.float32)
    y_train, y_test = np.asarray(y_train, np.int32), np.asarray(y_test, np.int32)
    if len(x_train) != len(y_train):
        raise PoisonJaxInputError(f"y_train has {len(y_train)} labels for {len(x_train)} samples")
    val_size = check_positive_int("val_size", val_size)
    if val_size >= len(y_train):
        raise PoisonJaxInputError(f"val_size={val_size} must be smaller than the {len(y_train)} training samples")
    vd = vdata.make_vertical(x_train, num_parties=num_parties, strip_widths=strip_widths, groups=groups,
                             label_holders=label_holders)
    p = vd.x_parts.shape[0]
    xte = vdata.apply_split(vd, x_test)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y_train))
    vi, ti = perm[:val_size], perm[val_size:]  # shuffled: any prefix is a random subset
    xp = vd.x_parts
    if noise_party >= 0:
        if not 0 < noise_party < p:
            raise PoisonJaxInputError(f"noise_party must be a passive party in [1, {p - 1}] or -1, got {noise_party}")
        w = int(vd.widths[noise_party])
        for arr in (xp, xte):
            arr[noise_party, :, :w] = rng.uniform(0, 1, size=(arr.shape[1], w)).astype(np.float32)
    hw = [hidden] * p if hidden_widths is None else [int(h) for h in hidden_widths]
    if len(hw) != p or any(h < 1 or h > hidden for h in hw):
        raise PoisonJaxInputError(f"hidden_widths must be {p} integers in [1, hidden={hidden}], got {list(hw)}")
    hmask = (np.arange(hidden)[None, :] < np.asarray(hw)[:, None]).astype(np.float32)
    flops = inc.bottom_flops(vd.widths, hw, embed_dim)
    passive = np.asarray([0.0] + [1.0] * (p - 1), np.float32)
    cost = (cost_scale * flops / np.sum(flops * passive) * passive).astype(np.float32)
    cost[0] = 1.0  # unused (the active party is not paid); kept positive for cost^(1/5)
    spec = E.VFLSpec(num_parties=p, d_max=xp.shape[2], hidden=hidden, embed_dim=embed_dim, top_hidden=top_hidden,
                     num_classes=num_classes, **spec_kw)
    check_privacy_args(spec)
    return Federation(spec, vd, xp[:, ti], y_train[ti], xp[:, vi], y_train[vi], xte, y_test, hmask, cost,
                      flops, passive)


def make_problem(fed: Federation, defense: str = "vanilla", *, eps=None, grad_scale=None,
                 backdoor: bool = False, bd_party: int = 1, known_ids=(), bd_gamma: float = 5.0,
                 trigger_size: int = 3, n_known: int = 10, grad_dp: bool = False) -> E.VFLProblem:
    """The run's arrays. ``defense``: "vanilla" (no DP, equal-split incentive), "fixed_dp" (DP at a fixed
    ``eps``, equal split), "opus" (adaptive DP starting at ``eps``, OPUS rewards). ``eps`` scalar or ``[P]``.
    ``grad_scale [P]``: per-party gradient multipliers (malicious local optimizer). Backdoor: ``bd_party``
    (passive) knows the training-set indices ``known_ids`` of target-class samples. ``grad_dp``: with a DP
    defense, the active party also clips and noises the gradients it returns (:func:`.engine.privatize_grads`)."""
    check_choice("defense", defense, DEFENSES)
    p = fed.spec.num_parties
    e = np.full((p,), fed.spec.eps_max, np.float32) if eps is None else np.broadcast_to(
        np.asarray(eps, np.float32), (p,)).copy()
    if defense != "vanilla":
        check_privacy_args(fed.spec, e[1:])
    gs = np.ones((p,), np.float32) if grad_scale is None else np.asarray(grad_scale, np.float32)
    if gs.shape != (p,):
        raise PoisonJaxInputError(f"grad_scale must have shape ({p},), got {gs.shape}")
    if backdoor and not 0 < bd_party < p:
        raise PoisonJaxInputError(f"bd_party must be a passive party in [1, {p - 1}], got {bd_party}")
    if len(known_ids) > n_known:
        raise PoisonJaxInputError(f"known_ids: at most n_known={n_known} IDs, got {len(known_ids)}")
    kid = np.full((n_known,), -1, np.int32)  # fixed length (padded with -1) so every run shares one program
    kid[:len(known_ids)] = np.asarray(known_ids, np.int32)
    tmask = vdata.trigger_mask(fed.spec.d_max, fed.vd.strip_shapes[bd_party], trigger_size)
    f32 = lambda v: jnp.float32(v)
    return E.VFLProblem(
        x=jnp.asarray(fed.x), y=jnp.asarray(fed.y), xv=jnp.asarray(fed.xv), yv=jnp.asarray(fed.yv),
        hmask=jnp.asarray(fed.hmask), cost=jnp.asarray(fed.cost), passive=jnp.asarray(fed.passive),
        dp_on=f32(defense != "vanilla"), adaptive=f32(defense == "opus"), equal=f32(defense != "opus"),
        eps0=jnp.asarray(e), grad_scale=jnp.asarray(gs), bd_on=f32(bool(backdoor)), bd_party=jnp.int32(bd_party),
        known_ids=jnp.asarray(kid), trig_mask=jnp.asarray(tmask), bd_gamma=f32(bd_gamma),
        gdp_on=f32(bool(grad_dp) and defense != "vanilla"))


def train(fed: Federation, problem: E.VFLProblem, steps: int, workdir=None, *, seed: int = 0, config=None,
          progress: bool = True, desc: str = "vfl", chunk_size: int = 50):
    """Train through :func:`poisonjax.core.runner.run` (resumable from ``workdir``). Returns its RunResult."""
    from poisonjax.core import runner
    return runner.run(E.make_vfl(fed.spec), problem, steps, workdir, seed=seed, chunk_size=chunk_size,
                      config=config, progress=progress, desc=desc)


def dp_mask(problem: E.VFLProblem):
    """``passive * dp_on`` (``[P]``)."""
    return problem.passive * problem.dp_on


def test_accuracy(fed: Federation, state, problem: E.VFLProblem, key=None, x=None, y=None,
                  noised: bool = False) -> float:
    """Test accuracy of the trained model. By default the embeddings are NOT noised at test time (the DP mechanism
    protects what is exchanged during training; the authors' code also evaluates on clean embeddings);
    ``noised=True`` gives the accuracy when every test query is also privatised at the party's final eps."""
    key = jax.random.PRNGKey(123) if key is None else key
    x = fed.xte if x is None else x
    y = fed.yte if y is None else y
    dpm = dp_mask(problem) if noised else jnp.zeros_like(problem.passive)
    return E.accuracy(fed.spec, state.params, x, y, problem.hmask, state.eps, dpm, key)
