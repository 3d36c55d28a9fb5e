r"""Gradient-matching poisoning: alignment losses and budgeted crafting (restarts x ensembles via vmap).

Gradient matching (Geiping et al., "Witches' Brew: Industrial Scale Data Poisoning via Gradient
Matching", ICLR 2021) crafts bounded perturbations :math:`\delta_i` on ``P`` base images so that the
parameter gradient of the training loss on the poisons aligns with an *adversarial* gradient:

.. math::
    G_{adv}(\theta) = \nabla_\theta \frac1T\sum_t L(f_\theta(x_t), y^{adv}_t), \qquad
    G_p(\theta, \delta) = \nabla_\theta \frac1P\sum_i L(f_\theta(A(x_i + \delta_i)), y_i),

.. math::
    \mathcal{L}_\alpha(\delta) = \frac1M\sum_{m=1}^M (1-\alpha)\Big(1 - \frac{\langle G_p, G_{adv}\rangle}{\|G_p\|\|G_{adv}\|}\Big)
      + \alpha \frac{\|G_p - G_{adv}\|}{\|G_{adv}\|\,\|G_p\|}  \quad\text{at } \theta = \theta_m,

where inner products and norms run over *all* parameters (the flattened gradient), ``A`` is an
optional differentiable augmentation (random flips and crops), and :math:`\theta_m` are M surrogate
models. :math:`\alpha = 0` is Witches' Brew; :math:`\alpha > 0` is the "strict" loss of PADHASH
(Li et al., "Clean Image May be Dangerous: Data Poisoning Attacks Against Deep Hashing", IEEE TMM
2025), which also matches gradient magnitude.

Crafting is an :class:`~poisonjax.core.types.AttackOptimizer`: signed Adam on :math:`\delta`
(Adam fed with :math:`\mathrm{sign}(\nabla_\delta \mathcal L)`, step size decayed by 10x at 3/8, 5/8
and 7/8 of the steps as in Witches' Brew), each step followed by the exact projection onto
:math:`\{\|\delta_i\|_\infty \le \epsilon,\ 0 \le x_i + \delta_i \le 1\}`. ``R`` restarts are a
leading axis of the state and ``M`` surrogates a leading axis of the parameters; both are
``jax.vmap``-ed, so one step is a single XLA program. :func:`select_best` picks the restart with the
lowest (augmentation-free) alignment loss. :func:`craft` drives the optimiser with
:func:`poisonjax.core.runner.run` (checkpoint/resume, progress bar, metrics.jsonl).

Surrogates of *different* architectures (a black-box ensemble) are given as a tuple of per-example
losses and a matching tuple of stacked parameter pytrees (one group per architecture, each group
vmapped over its own members); the loss averages over every member of every group.

:func:`victim_success` retrains K victims from scratch on the poisoned training set with one
chunked ``vmap`` over victims (:func:`poisonjax.core.victims.train_on_poisoned` under
:func:`poisonjax.core.parallel.chunked_vmap`) and reports whether each classifies the target as
the adversarial class.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core.parallel import chunked_vmap
from poisonjax.core.projections import project_linf_box
from poisonjax.core.types import AttackOptimizer
from poisonjax.core.validation import PoisonJaxInputError, check_fraction, check_positive_int
from poisonjax.core.victims import PerExampleLoss  # noqa: F401  (params, batch {"x","y"}, key) -> [B]
from poisonjax.core.victims import poison_slots, poisoned_images, train_on_poisoned  # noqa: F401  (re-exports)

PyTree = Any

def _batch_loss(loss_fn, params, x, y):
    """``loss_fn(params, {"x": x, "y": y}, key) -> [B]`` (the one per-example-loss signature), with
    the fixed key ``PRNGKey(0)`` while crafting (surrogate losses are deterministic)."""
    return loss_fn(params, {"x": x, "y": y}, jax.random.PRNGKey(0))


# ------------------------------------------------------------------ alignment losses -----------

def _tree_vdot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def tree_norm(a) -> jax.Array:
    r""":math:`\|a\|_2` of a pytree, over all leaves (the flattened gradient). Safe at 0: the
    square root's argument is floored at 1e-30, so an all-zero gradient (e.g. a saturated surrogate)
    gives a zero derivative instead of NaN."""
    return jnp.sqrt(jnp.maximum(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(a)), 1e-30))


def cosine_alignment_loss(g_poison: PyTree, g_target: PyTree) -> jax.Array:
    r"""Witches' Brew loss :math:`1 - \langle g_p, g_t\rangle / (\|g_p\| \|g_t\|)` over all parameters.

    Args:
      g_poison, g_target: gradient pytrees of identical structure (any shapes).

    Returns:
      scalar in [0, 2].
    """
    return strict_alignment_loss(g_poison, g_target, 0.0)


def strict_alignment_loss(g_poison: PyTree, g_target: PyTree, alpha, normalize: bool = False) -> jax.Array:
    r"""PADHASH's strict gradient-matching loss (Li et al., TMM 2025, Eq. for :math:`\mathcal L_{sgm}`):

    .. math:: (1-\alpha)\Big(1 - \frac{\langle G_p, G_v\rangle}{\|G_p\|\|G_v\|}\Big)
              + \alpha\,\frac{\|G_p - G_v\|}{\|G_v\|\,\|G_p\|}.

    ``alpha = 0`` is Witches' Brew's cosine loss; the paper uses ``alpha`` in [0.05, 0.3].
    Norms and inner products are over all parameters; a tiny constant guards the divisions.

    The magnitude term scales like :math:`1/\|G\|`, so with small models (small gradients) it
    swamps the cosine term for any ``alpha`` in the paper's range. ``normalize=True`` multiplies it
    by the constant :math:`\|G_v\|` (gradient stopped: ``g_target`` is fixed while crafting), i.e.
    :math:`\alpha\|G_p - G_v\| / \|G_p\|`: the paper's loss with ``alpha`` re-weighted by a
    per-surrogate constant, invariant to the gradients' overall scale.
    """
    pn = tree_norm(g_poison)
    tn = tree_norm(g_target)
    cos = _tree_vdot(g_poison, g_target) / jnp.maximum(pn * tn, 1e-12)
    diff = tree_norm(jax.tree.map(jnp.subtract, g_poison, g_target))
    strict = diff / jnp.maximum(pn * tn, 1e-12)
    if normalize:
        strict = strict * jax.lax.stop_gradient(tn)
    return (1.0 - alpha) * (1.0 - cos) + alpha * strict


# ------------------------------------------------------------------ random draws ---------------

def flat_random(sample, key, shape, **kw):
    r"""``sample(key, shape, **kw)`` (a ``jax.random`` sampler: ``uniform``, ``bernoulli`` via ``p``,
    ``randint`` ...) drawn as one flat vector and reshaped: the *same values* (JAX's threefry draws
    each element from its row-major index), but XLA's CPU compiler builds the flat draw several times
    faster than a 4- or 5-D one (issue 23: 8 s vs 1.4 s for ``[8, 75, 8, 8, 1]`` on a busy 2-core
    machine; the 5-D draw was the largest part of the crafting's compilation)."""
    n = int(np.prod(shape)) if len(shape) else 1
    return sample(key, shape=(n,), **kw).reshape(shape)


# ------------------------------------------------------------------ augmentation ---------------

def augment(key: jax.Array, x: jax.Array, *, flip: bool = True, crop: int = 0) -> jax.Array:
    r"""Differentiable random augmentation of a batch ``x`` ``[B, H, W, C]``.

    Each image is independently flipped left-right with probability 1/2 (if ``flip``) and shifted by
    a random crop: zero-padded by ``crop`` pixels on each side, then a random ``H x W`` window is
    taken. Both are permutations/selections of pixels, so gradients flow to ``x``.
    """
    b, h, w, c = x.shape
    kf, kc = jax.random.split(key)
    if flip:
        f = flat_random(jax.random.bernoulli, kf, (b, 1, 1, 1), p=0.5)
        x = jnp.where(f, x[:, :, ::-1, :], x)
    if crop > 0:
        xp = jnp.pad(x, ((0, 0), (crop, crop), (crop, crop), (0, 0)))
        off = flat_random(jax.random.randint, kc, (b, 2), minval=0, maxval=2 * crop + 1)
        x = jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, c)))(xp, off)
    return x


# ------------------------------------------------------------------ the crafting problem -------

class GradientMatchingProblem(NamedTuple):
    """Everything the crafting step reads (a pytree of arrays; it compiles once).

    Attributes:
      surrogate_params: stacked surrogate parameters (leaves ``[M, ...]``), or a tuple of such
        pytrees, one per architecture group (matching the tuple of losses given to
        :func:`gradient_matching_attack`).
      base_images: ``[P, H, W, C]`` clean images to perturb, in [0, 1].
      base_labels: ``[P]`` labels used in the poison loss (the true labels: clean-label).
      target_images: ``[T, H, W, C]`` images whose adversarial gradient is matched.
      target_labels: ``[T]`` adversarial labels of the targets.
      eps: scalar L-inf radius.
    """

    surrogate_params: Any
    base_images: jax.Array
    base_labels: jax.Array
    target_images: jax.Array
    target_labels: jax.Array
    eps: jax.Array


class GradientMatchingState(NamedTuple):
    """Crafting state: ``delta [R, P, H, W, C]``, Adam moments of the same shape, step ``t``, PRNG
    ``key``, the target gradients per group (leaves ``[M, ...]``) and the last ``loss [R]``."""

    delta: jax.Array
    mu: jax.Array
    nu: jax.Array
    t: jax.Array
    key: jax.Array
    target_grads: Any
    loss: jax.Array


def _as_groups(loss_fns, params):
    if callable(loss_fns):
        return (loss_fns,), (params,)
    loss_fns = tuple(loss_fns)
    if not isinstance(params, (tuple, list)) or len(params) != len(loss_fns):
        raise PoisonJaxInputError(
            f"surrogate_params must be a tuple with one stacked pytree per loss ({len(loss_fns)} groups)")
    return loss_fns, tuple(params)


def _mean_loss_grad(loss_fn, params, x, y):
    return jax.grad(lambda p: jnp.mean(_batch_loss(loss_fn, p, x, y)))(params)


def target_gradients(loss_fns, surrogate_params, target_images, target_labels):
    r""":math:`G_{adv}` for every surrogate: a tuple (one per group) of gradient pytrees ``[M, ...]``."""
    fns, groups = _as_groups(loss_fns, surrogate_params)
    return tuple(jax.vmap(lambda p, f=f: _mean_loss_grad(f, p, target_images, target_labels))(g)
                 for f, g in zip(fns, groups))


def alignment_objective(loss_fns, surrogate_params, target_grads, poisons, labels, alpha,
                        key: Optional[jax.Array] = None, *, flip: bool = False, crop: int = 0,
                        normalize: bool = False) -> jax.Array:
    r"""Mean over all surrogates of :func:`strict_alignment_loss` between :math:`G_p` at ``poisons``
    ``[P, H, W, C]`` (augmented with ``key`` if given) and the precomputed ``target_grads``."""
    fns, groups = _as_groups(loss_fns, surrogate_params)
    if key is not None and (flip or crop):
        poisons = augment(key, poisons, flip=flip, crop=crop)
    total, count = 0.0, 0
    for f, g, tg in zip(fns, groups, target_grads):
        per_m = jax.vmap(lambda p, t, f=f: strict_alignment_loss(_mean_loss_grad(f, p, poisons, labels), t, alpha, normalize))(g, tg)
        total = total + per_m.sum()
        count += per_m.shape[0]
    return total / count


def gradient_matching_attack(loss_fns: Union[PerExampleLoss, Sequence[PerExampleLoss]], *, steps: int,
                             restarts: int = 1, alpha: float = 0.0, step_size: float = 0.1,
                             flip: bool = False, crop: int = 0, init_scale: float = 1.0,
                             b1: float = 0.9, b2: float = 0.999, schedule: bool = True,
                             normalize_strict: bool = False) -> AttackOptimizer:
    r"""Gradient-matching crafting as an :class:`AttackOptimizer` (Witches' Brew; PADHASH with ``alpha > 0``).

    One step, for every restart ``r`` (vmapped) and averaged over the ``M`` surrogates (vmapped):

    .. math::
        g = \mathrm{sign}\,\nabla_\delta \mathcal L_\alpha(\delta_r), \quad
        m \leftarrow \beta_1 m + (1-\beta_1) g, \quad v \leftarrow \beta_2 v + (1-\beta_2) g^2, \\
        \delta_r \leftarrow \Pi_{\epsilon,[0,1]}\Big(\delta_r - \eta_t\,\epsilon\,\frac{\hat m}{\sqrt{\hat v} + 10^{-8}}\Big),

    with :math:`\eta_t` = ``step_size`` decayed 10x at 3/8, 5/8 and 7/8 of ``steps`` (if
    ``schedule``). The step size is relative to :math:`\epsilon`, so the same value works for any
    radius. ``init`` draws :math:`\delta` uniformly in :math:`[-\epsilon, \epsilon]` times
    ``init_scale`` (then projects) and precomputes the target gradients.

    Args:
      loss_fns: per-example surrogate loss in the one signature ``(params, batch, key) -> [B]`` with
        ``batch = {"x": [B,H,W,C], "y": [B]}`` (e.g.
        :func:`poisonjax.core.training.softmax_cross_entropy_loss`, or a hashing loss; it is called
        with a fixed key), or a tuple of them (one per architecture group).
      steps: the planned number of steps (for the schedule).
      restarts: ``R``, independent random initialisations optimised in parallel.
      alpha: weight of the strict magnitude term (0 = Witches' Brew).
      step_size: Adam step size as a fraction of ``eps``.
      flip, crop: differentiable augmentation of the poisons at every step (see :func:`augment`).
      normalize_strict: scale-free magnitude term (see :func:`strict_alignment_loss`).

    Returns:
      ``AttackOptimizer(init, step, metrics)`` over :class:`GradientMatchingProblem` and
      :class:`GradientMatchingState`; metrics are ``loss_mean`` and ``loss_min`` over restarts.
    """
    steps = check_positive_int("steps", steps)
    restarts = check_positive_int("restarts", restarts)
    alpha = check_fraction("alpha", alpha, low_inclusive=True)

    def init(key, problem: GradientMatchingProblem):
        k0, k1 = jax.random.split(key)
        shape = (restarts,) + problem.base_images.shape
        d = init_scale * problem.eps * flat_random(jax.random.uniform, k0, shape, minval=-1.0, maxval=1.0)
        d = project_linf_box(problem.base_images[None], d, problem.eps)
        tg = target_gradients(loss_fns, problem.surrogate_params, problem.target_images, problem.target_labels)
        z = jnp.zeros(shape, jnp.float32)
        return GradientMatchingState(d, z, z, jnp.zeros((), jnp.int32), k1, tg, jnp.zeros((restarts,), jnp.float32))

    def lr_at(t):
        if not schedule:
            return step_size
        frac = t / steps
        decays = (frac >= 3 / 8).astype(jnp.float32) + (frac >= 5 / 8) + (frac >= 7 / 8)
        return step_size * 0.1 ** decays

    def step(state: GradientMatchingState, problem: GradientMatchingProblem):
        key, sub = jax.random.split(state.key)
        rkeys = jax.random.split(sub, restarts)

        def obj(delta, k):
            x = problem.base_images + delta
            return alignment_objective(loss_fns, problem.surrogate_params, state.target_grads, x,
                                       problem.base_labels, alpha, k, flip=flip, crop=crop,
                                       normalize=normalize_strict)

        loss, g = jax.vmap(jax.value_and_grad(obj))(state.delta, rkeys)
        g = jnp.sign(g)
        t = state.t + 1
        mu = b1 * state.mu + (1 - b1) * g
        nu = b2 * state.nu + (1 - b2) * g * g
        mhat = mu / (1 - b1 ** t)
        vhat = nu / (1 - b2 ** t)
        upd = lr_at(state.t) * problem.eps * mhat / (jnp.sqrt(vhat) + 1e-8)
        delta = project_linf_box(problem.base_images[None], state.delta - upd, problem.eps)
        return GradientMatchingState(delta, mu, nu, t, key, state.target_grads, loss)

    def metrics(state, problem):
        return {"loss_mean": state.loss.mean(), "loss_min": state.loss.min()}

    return AttackOptimizer(init, step, metrics)


def restart_losses(loss_fns, state: GradientMatchingState, problem: GradientMatchingProblem, alpha=0.0,
                   normalize: bool = False) -> jax.Array:
    """Augmentation-free alignment loss ``[R]`` of every restart in ``state``."""
    return jax.vmap(lambda d: alignment_objective(loss_fns, problem.surrogate_params, state.target_grads,
                                                  problem.base_images + d, problem.base_labels, alpha,
                                                  normalize=normalize))(state.delta)


def select_best(loss_fns, state: GradientMatchingState, problem: GradientMatchingProblem, alpha=0.0,
                normalize: bool = False):
    """``(delta [P,H,W,C], best_index, losses [R])``: the restart with the lowest alignment loss."""
    losses = restart_losses(loss_fns, state, problem, alpha, normalize)
    i = jnp.argmin(losses)
    return state.delta[i], i, losses


TRIAL_AXES = GradientMatchingProblem(None, 0, 0, 0, 0, None)
"""``vmap`` axes of a problem batched over independent trials (targets): every array but the shared
surrogate parameters and ``eps`` carries a leading ``[T]`` axis."""


def map_over_trials(fn: Callable, trial_chunk: Optional[int] = None) -> Callable:
    r"""``fn(state, problem)`` of one trial -> the same over ``T`` trials (leading ``[T]`` axis on the
    state and on the :data:`TRIAL_AXES` fields of the problem).

    ``trial_chunk=None`` (or ``>= T``) is one ``vmap``: all ``T`` trials at once, memory
    :math:`O(T \cdot R \cdot M \cdot P)` activations for ``R`` restarts, ``M`` surrogates and ``P``
    poisons. ``trial_chunk=c`` runs :math:`\lceil T / c\rceil` vmapped chunks of ``c`` trials one after
    another in the same compiled program (:func:`poisonjax.core.parallel.chunked_vmap`: ``lax.map`` over
    the chunks, the last one padded), so the activation memory is that of ``c`` trials; same arithmetic,
    same results up to float rounding. On an H200 the paper-scale CIFAR-10 crafts (10 trials x 8 restarts
    x 8 surrogates x 100 poisons through a ResNet) asked for 172 GiB at once."""
    if trial_chunk is not None:
        trial_chunk = check_positive_int("trial_chunk", trial_chunk)
    batched_fields = [f for f, ax in zip(GradientMatchingProblem._fields, TRIAL_AXES) if ax == 0]

    def one(state, batched, problem):
        return fn(state, problem._replace(**batched))

    def chunked(state, problem):
        batched = {f: getattr(problem, f) for f in batched_fields}
        shared = problem._replace(**{f: None for f in batched_fields})
        return chunked_vmap(one, trial_chunk, in_axes=(0, 0, None))(state, batched, shared)
    return chunked


def _check_trial_chunk(trial_chunk, trials: bool) -> None:
    if trial_chunk is not None:
        check_positive_int("trial_chunk", trial_chunk)
        if not trials:
            raise PoisonJaxInputError(f"trial_chunk={trial_chunk} needs trials=True (a problem batched over trials); "
                                      "drop trial_chunk for a single trial")


def batch_over_trials(attack: AttackOptimizer, trial_chunk: Optional[int] = None) -> AttackOptimizer:
    """Vectorise an attack over ``T`` independent trials (different targets/poisons, same surrogates):
    the problem's arrays carry a leading ``[T]`` axis (see :data:`TRIAL_AXES`), so is the state,
    and the metrics are averaged over trials. One compiled program crafts all T poison sets;
    ``trial_chunk`` bounds memory by running the trials ``trial_chunk`` at a time inside that
    program (:func:`map_over_trials`)."""
    def init(key, problem):
        t = problem.base_images.shape[0]
        return map_over_trials(attack.init, trial_chunk)(jax.random.split(key, t), problem)

    step = map_over_trials(attack.step, trial_chunk)

    def metrics(state, problem):
        return jax.tree.map(jnp.mean, map_over_trials(attack.metrics, trial_chunk)(state, problem))

    return AttackOptimizer(init, step, metrics if attack.metrics is not None else None)


class CraftResult(NamedTuple):
    """``delta [P,H,W,C]`` of the best restart (``[T,P,H,W,C]`` for batched trials),
    ``poisons = base + delta``, ``best_restart`` (``[T]``), ``restart_losses [R]`` (``[T, R]``),
    the per-step ``metrics``, the final ``state`` and the wall-clock ``seconds`` (incl. compilation)."""

    delta: np.ndarray
    poisons: np.ndarray
    best_restart: Any
    restart_losses: np.ndarray
    metrics: list
    state: Any
    seconds: float


def craft(loss_fns, problem: GradientMatchingProblem, *, steps: int, key: jax.Array, restarts: int = 1,
          alpha: float = 0.0, step_size: float = 0.1, flip: bool = False, crop: int = 0,
          trials: bool = False, workdir=None, chunk_size: int = 25, progress: bool = True, config=None,
          desc: str = "gradient matching", normalize_strict: bool = False,
          trial_chunk: Optional[int] = None) -> CraftResult:
    """Craft poisons with :func:`gradient_matching_attack` through :func:`poisonjax.core.runner.run`
    (resumable from ``workdir``), then pick the best restart with :func:`select_best`.

    With ``trials=True`` the problem is batched over a leading trial axis (:func:`batch_over_trials`)
    and every trial gets its own best restart; ``trial_chunk`` crafts them that many at a time inside
    the compiled step (:func:`map_over_trials`: bounded memory, same poisons).
    """
    import time
    from poisonjax.core.runner import run as run_attack
    validate_problem(problem, trials=trials)
    _check_trial_chunk(trial_chunk, trials)
    t0 = time.perf_counter()
    attack = gradient_matching_attack(loss_fns, steps=steps, restarts=restarts, alpha=alpha,
                                      step_size=step_size, flip=flip, crop=crop, normalize_strict=normalize_strict)
    if trials:
        attack = batch_over_trials(attack, trial_chunk)
    res = run_attack(attack, problem, steps, workdir, key=key, chunk_size=min(chunk_size, steps),
                     config=config, progress=progress, desc=desc)
    sel = lambda s, p: select_best(loss_fns, s, p, alpha, normalize_strict)
    if trials:
        sel = map_over_trials(sel, trial_chunk)
    delta, i, losses = jax.jit(sel)(res.state, problem)
    delta = np.asarray(delta)
    seconds = time.perf_counter() - t0
    return CraftResult(delta, np.asarray(problem.base_images) + delta, np.asarray(i), np.asarray(losses),
                       res.metrics, res.state, seconds)


def crafting_program(loss_fns, problem: GradientMatchingProblem, *, steps: int, restarts: int = 1,
                     alpha: float = 0.0, step_size: float = 0.1, flip: bool = False, crop: int = 0,
                     trials: bool = False, normalize_strict: bool = False,
                     trial_chunk: Optional[int] = None) -> Callable:
    """The pure function that :func:`craft_one_program` compiles: ``run(key, problem) -> (delta,
    best_restart, restart_losses, state)`` doing ``init``, the ``steps`` crafting steps (a ``fori_loop``
    of :func:`gradient_matching_attack`'s step) and :func:`select_best`, batched over trials with
    ``trials=True``. Exposed so that callers can ``jax.jit(...).lower(...)`` / ``.compile()`` the very
    program that crafts (e.g. to time tracing and compilation apart; ``benchmarks/gradient_matching_vs_art.py``)."""
    validate_problem(problem, trials=trials)
    _check_trial_chunk(trial_chunk, trials)
    steps = check_positive_int("steps", steps)
    attack = gradient_matching_attack(loss_fns, steps=steps, restarts=restarts, alpha=alpha, step_size=step_size,
                                      flip=flip, crop=crop, normalize_strict=normalize_strict)
    sel = lambda s, p: select_best(loss_fns, s, p, alpha, normalize_strict)
    if trials:
        attack = batch_over_trials(attack, trial_chunk)
        sel = map_over_trials(sel, trial_chunk)

    def run(key, problem):
        st = attack.init(key, problem)
        st = jax.lax.fori_loop(0, steps, lambda i, s: attack.step(s, problem), st)
        delta, best, losses = sel(st, problem)
        return delta, best, losses, st

    return run


def craft_one_program(loss_fns, problem: GradientMatchingProblem, *, steps: int, key: jax.Array, restarts: int = 1,
                      alpha: float = 0.0, step_size: float = 0.1, flip: bool = False, crop: int = 0,
                      trials: bool = False, normalize_strict: bool = False, trial_chunk: Optional[int] = None):
    """:func:`craft` without the runner: ``init``, the ``steps`` crafting steps (a ``fori_loop``) and
    :func:`select_best` traced and compiled as **one** XLA program (:func:`crafting_program`), run once.
    Same attack, same arithmetic as :func:`craft` (equal poisons up to float rounding), but no
    checkpoints, metrics or progress bar, and one compilation instead of three (init, step chunk,
    selection): on a 2-core CPU crafting 8 digit targets for 100 steps is compilation-bound (issue 23),
    so this is the fast path for short crafts; use :func:`craft` for long, resumable ones.

    Returns ``(delta, best_restart, restart_losses, state)`` as device arrays (batched over trials with
    ``trials=True``)."""
    run = crafting_program(loss_fns, problem, steps=steps, restarts=restarts, alpha=alpha, step_size=step_size,
                           flip=flip, crop=crop, trials=trials, normalize_strict=normalize_strict,
                           trial_chunk=trial_chunk)
    return jax.jit(run)(key, problem)


# ------------------------------------------------------------------ input checks ---------------

def check_images(name: str, x, channels: Optional[int] = None) -> None:
    """Images must be float NHWC ``[N, H, W, C]`` (C in 1..4) with values in [0, 1]."""
    a = np.asarray(x)
    if a.ndim != 4 or a.shape[-1] not in (1, 2, 3, 4) or (channels is not None and a.shape[-1] != channels):
        hint = ""
        if a.ndim == 4 and a.shape[1] in (1, 3) and a.shape[-1] not in (1, 3):
            hint = " (this looks like NCHW; transpose with x.transpose(0, 2, 3, 1))"
        elif a.ndim == 3:
            hint = " (add a channel axis: x[..., None])"
        raise PoisonJaxInputError(
            f"{name} must be NHWC images of shape [N, H, W, C] with C in 1..4"
            f"{'' if channels is None else f' (C = {channels})'}, got shape {a.shape}{hint}")
    if not np.all(np.isfinite(a)):
        raise PoisonJaxInputError(f"{name} contains NaN/inf; expected values in [0, 1]")
    if a.size and (a.min() < 0.0 or a.max() > 1.0):
        raise PoisonJaxInputError(
            f"{name} must lie in [0, 1] (float NHWC), got values in [{a.min():.4g}, {a.max():.4g}]; "
            "divide uint8 images by 255")


def check_epsilon(eps) -> float:
    """``eps`` must be in (0, 1] (pixel units of images in [0, 1])."""
    return check_fraction("epsilon", eps)


def check_budget(budget) -> float:
    """A poison budget (fraction of the training set) must be in (0, 1]."""
    return check_fraction("budget", budget)


def validate_problem(problem: GradientMatchingProblem, trials: bool = False) -> None:
    """Check images (NHWC, [0, 1], matching shapes), labels and eps of a problem (``trials``: arrays
    carry a leading trial axis)."""
    b, t = np.asarray(problem.base_images), np.asarray(problem.target_images)
    if trials:
        if b.ndim != 5 or t.ndim != 5 or b.shape[0] != t.shape[0]:
            raise PoisonJaxInputError(f"batched trials need base_images [T, P, H, W, C] and target_images "
                                      f"[T, T', H, W, C] with the same T, got {b.shape} and {t.shape}")
        b, t = b.reshape((-1,) + b.shape[2:]), t.reshape((-1,) + t.shape[2:])
    check_images("base_images", b)
    check_images("target_images", t, channels=b.shape[-1])
    if b.shape[1:] != t.shape[1:]:
        raise PoisonJaxInputError(f"target_images {t.shape[1:]} and base_images {b.shape[1:]} must have "
                                  "the same [H, W, C]")
    if np.shape(problem.base_labels) != np.shape(problem.base_images)[:(2 if trials else 1)]:
        raise PoisonJaxInputError(f"base_labels must have shape {np.shape(problem.base_images)[:(2 if trials else 1)]}, "
                                  f"got {np.shape(problem.base_labels)}")
    check_epsilon(float(problem.eps))


# ------------------------------------------------------------------ victim validation ----------
# Poisoned-victim training lives in :mod:`poisonjax.core.victims` (poison_slots, poisoned_images and
# train_on_poisoned are re-exported from this module for old callers).


def victim_success(init_fn: Callable, apply_fn: Callable, optimizer, train_x, train_y, keys, *, epochs: int,
                   batch_size: int, poison_index, poison_delta, target_x, adv_label, test_x=None, test_y=None,
                   per_example_loss: Optional[Callable] = None, chunk: Optional[int] = None, mesh=None,
                   eval_batch: Optional[int] = 1024):
    r"""Retrain V victims from scratch on poisoned training sets, one ``vmap`` over victims
    (over chunks of ``chunk`` victims at a time when given, see :func:`map_victims`).

    Victim ``v`` trains on :math:`D_v = \{(x_j + \delta^{(v)}_j, y_j)\}` where
    :math:`\delta^{(v)}_j` is row ``i`` of ``poison_delta[v]`` if ``poison_index[v, i] = j`` and 0
    otherwise: :math:`\theta_v = \mathrm{train}(\mathrm{init}(k_v), D_v)`. The clean set is shared (not
    copied per victim); the poisons are added inside each mini-batch. The attack succeeds on victim
    ``v`` if :math:`\arg\max f_{\theta_v}(x^{target}_v) = y^{adv}_v`.

    Args:
      init_fn: ``key -> params``. apply_fn: ``(params, x) -> logits``.
      optimizer: optax transformation.
      train_x ``[N, H, W, C]``, train_y ``[N]``: the clean training set.
      keys: ``[V, 2]`` PRNG keys (one victim each).
      poison_index: ``[V, P]`` int training-set indices of the poisons (``-1``: unused slot).
      poison_delta: ``[V, P, H, W, C]`` perturbations (zeros for a clean victim).
      target_x: ``[V, H, W, C]``; adv_label: ``[V]`` ints.
      test_x, test_y: optional clean test set for the clean accuracy.
      per_example_loss: the one signature ``(params, batch{"x","y"}, key) -> [B]``; softmax
        cross-entropy by default.
      chunk: victims trained together; ``None`` trains all V in one ``vmap``.
      mesh: optional device mesh over which each chunk's victims are sharded.
      eval_batch: test examples per forward pass of the clean-accuracy evaluation (``None``: all at once).

    Returns:
      dict of ``[V]`` arrays: ``success`` (bool), ``target_prob`` (softmax mass on the adversarial
      class) and, if a test set is given, ``clean_accuracy``.
    """
    from poisonjax.core.training import accuracy, softmax_cross_entropy_loss
    from poisonjax.core.victims import eval_batches

    base_loss = per_example_loss or softmax_cross_entropy_loss(apply_fn)

    def one(key, pidx, pdelta, tx, al):
        params = train_on_poisoned(init_fn, base_loss, optimizer, train_x, train_y, key, pidx, pdelta,
                                   epochs=epochs, batch_size=batch_size)
        logits = apply_fn(params, tx[None])[0]
        out = {"success": jnp.argmax(logits) == al, "target_prob": jax.nn.softmax(logits)[al]}
        if test_x is not None:   # in batches of eval_batch: one forward over a 10k test set per victim, vmapped
            blocks, n = eval_batches(test_x, eval_batch)     # over victims, does not fit (24 GB on CIFAR-10)
            lg = jax.lax.map(lambda b: apply_fn(params, b), blocks)
            out["clean_accuracy"] = accuracy(lg.reshape((-1,) + lg.shape[2:])[:n], test_y)
        return out

    return map_victims(one, (keys, jnp.asarray(poison_index), jnp.asarray(poison_delta), jnp.asarray(target_x),
                             jnp.asarray(adv_label)), chunk, mesh)


def map_victims(fn: Callable, args: tuple, chunk: Optional[int] = None, mesh=None):
    r"""Apply ``fn(*row)`` to every row (leading axis ``V``) of the arrays in ``args``:
    :func:`poisonjax.core.parallel.chunked_vmap` (``chunk`` victims at a time, bounding memory;
    ``None`` = one ``vmap``; victims sharded over ``mesh`` when given). Results equal one ``vmap``
    up to float reduction order (same keys, same programs)."""
    from poisonjax.core.parallel import chunked_vmap
    return chunked_vmap(fn, chunk=chunk, mesh=mesh)(*args)


def sequential_equivalent_seconds(fn: Callable[[], Any], repeats: int = 1) -> float:
    """Wall-clock seconds of ``fn()`` (blocking on its outputs), the minimum over ``repeats`` runs."""
    import time
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return best
