r"""Fake-user injection attacks on sequential recommenders: DDSP, baselines and ablations.

**DDSP** (Zhao, Chen, Yu, Zheng, Cui, Yin: "Diversity-aware Dual-promotion Poisoning Attack on
Sequential Recommendation", SIGIR 2025, arXiv 2504.06586). No authors' code is public and the
paper's full text was not retrievable here. What we could read (the abstract and public reviews of
the paper, e.g. themoonlight.io's) states: (1) a theoretical conflict between the recommendation
objective and existing attack objectives -- promoting the target demotes users' real preferences,
which costs accuracy and stealth; (2) an MSE-based attack objective :math:`L_{atk}` that pulls the
target embedding towards the embeddings of the items each user prefers, plus the contrastive
regulariser :math:`L_{reg}` below over L2-normalised embeddings; (3) a diversity-aware,
auto-regressive poisoning-sequence generator in which "a re-ranking method sequentially picks the
optimal items by integrating diversity constraints"; (4) evaluation on three datasets against two
SRSs. The generator's scoring, the form of its constraints, and every constant below are **our
reconstruction** (marked *Our choices*). What we implement:

* **Dual-promotion objective.** Existing objectives maximise the target's score against *every*
  other item, so they push down the items users prefer (an accuracy drop, i.e. low stealth).
  DDSP instead draws the target embedding towards the embeddings of each user's preferred items
  :math:`\Gamma_u` (MSE), plus a contrastive regulariser over L2-normalised embeddings
  :math:`\hat e`:

  .. math:: \mathcal L_{dual}(e_t) = \frac1{|U|}\sum_u \Big[\frac1{|\Gamma_u|}\sum_{i\in\Gamma_u}
            \lVert e_t - \mathrm{sg}(e_i)\rVert^2
            \;-\; \beta \frac1{|\Gamma_u|}\sum_{i \in \Gamma_u}
            \log\frac{\exp(\hat e_t^\top \hat e_i/\tau)}{\sum_{k\in I}\exp(\hat e_t^\top \hat e_k/\tau)}\Big]

  (``sg`` = stop-gradient: the preferred items keep their relevance). *Our choices:*
  :math:`\Gamma_u` = the surrogate's top-``num_preferred`` items for ``u`` (history excluded), as
  the issue suggests; the per-user averages (rather than sums) keep the scale independent of
  :math:`|\Gamma_u|`; :math:`\beta = 1`, :math:`\tau = 0.1`.
  The **plain promotion objective** of earlier attacks is
  :math:`\mathcal L_{plain} = -\frac1{|U|}\sum_u \log \mathrm{softmax}_k(h_u^\top e_k)_t`.

* **Diversity-aware autoregressive generator.** Fake sequences are built item by item; at every
  step candidates are scored by the surrogate SRS and by their attack utility, then re-ranked
  under diversity constraints (target-repetition limit, penalties on items re-used within a
  sequence and across fake sequences). *Our choices* (details unavailable): the attack utility
  is a one-step influence estimate. Training the victim on a fake transition ``prefix -> t``
  moves :math:`e_t` towards the context representation :math:`h(\text{prefix})`, and the
  objective wants :math:`e_t` to move along :math:`g = -\nabla_{e_t}\mathcal L(e_t)` (averaged over
  real users; ``persona_weight > 0`` mixes in the direction of one sampled real user per fake
  sequence). So, with :math:`\tilde h_v` the (normalised) surrogate representation after the
  single item :math:`v`, the score of item :math:`v` after prefix :math:`x_{s,<t}` is

  .. math:: z_{sv} = \alpha \log p_{sur}(v \mid x_{s,<t}) + \beta_u\,
            \mathrm{std}_v\big[\cos(g_s, \tilde h_v)\big] \quad (v \ne t), \qquad
            z_{st} = \alpha \log p_{sur}(t \mid x_{s,<t}) + \beta_u\,
            \mathrm{std}\big[\cos(g_s, h(x_{s,<t}))\big] + b,

  i.e. surrogate plausibility (authenticity: real-looking transitions are reinforced, not
  overwritten) plus the look-ahead utility of :math:`v` as the context of a later target, or, for
  the target itself, the utility of the current context (standardised with the items' mean and
  std); :math:`b` makes the target the preferred choice wherever the constraints allow it.
  Re-ranking (:mod:`poisonjax.core.autoregressive`):
  the top ``num_candidates`` by :math:`z` are penalised by :math:`\lambda_{in}` per earlier use in
  the sequence and :math:`\lambda_{glob}\log(1+N_v)` for the shared usage count :math:`N_v`, and
  masked if they break a hard limit: at most :func:`target_cap` targets per sequence
  (``max_target_per_seq``, default **1**; or ``ceil(max_target_share * T)`` if that is 0), never two
  targets in a row, each other item at most once per sequence and at most
  ``ceil(max_item_share * S)`` times over all fake sequences (the target is exempt from the
  cross-sequence limits). Sampling uses Gumbel noise (``temperature``). The target may appear only
  from a per-sequence start position drawn uniformly from the second half of the sequence, so its
  context is a prefix built by the look-ahead utility.
  *Why one target per sequence by default:* no real user of Amazon Beauty interacts with an item
  twice (distinct ratio 1.0 over all users), so any repetition flags a fake user at once (detector
  AUC 1.0 in our measurements); with the cap at 1 the fake users' distinct ratio equals the real
  one. Optional per-sequence ``lengths`` (e.g. drawn from the real length distribution,
  :func:`sample_lengths`) make fake users' lengths realistic too.

**Baselines.** Random (uniform filler items), Popular (filler drawn by popularity), Bandwagon
(half the filler from the 1% most popular items, half uniform) -- each with the same number of
target occurrences as DDSP's cap, at random positions; a target-repetition heuristic (one popular
item, then the target at every position); **Yue et al.** (RecSys'21): target at every other
position, each adversarial item chosen by the surrogate's input gradient
(:math:`v^* = \arg\max_v -\nabla_{e_x}\mathcal L\cdot e_v`, with
:math:`\mathcal L = -\log p_{sur}(t \mid x_{<\ell}, x)`), simplified: one greedy pass, no
model-extraction stage (the surrogate is trained on the clean data, as here for all attacks);
**greedy-plain**: the same generator as DDSP with :math:`\mathcal L_{plain}`, no plausibility term
(:math:`\alpha = 0`: the attack objective alone guides it) and no diversity (greedy, no caps or
penalties, targets allowed at every other position). **Ablations**:
``ddsp_no_dual`` (plain objective, diversity kept) and ``ddsp_no_div`` (dual objective, no
diversity re-ranking).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core import autoregressive
from poisonjax.core.parallel import chunked_vmap
from poisonjax.core.validation import PoisonJaxInputError, check_choice, check_fraction, check_positive_int
from poisonjax.recsys.models import item_table, last_hidden

METHODS = ("random", "popular", "bandwagon", "repetition", "yue", "greedy_plain", "ddsp",
           "ddsp_no_dual", "ddsp_no_div")
OBJECTIVES = ("dual", "plain")


# ------------------------------------------------------------------------------ input checks ----

def check_target(target, num_items: int) -> int:
    """Target id must be an integer in ``1..num_items``."""
    if isinstance(target, bool) or not float(target).is_integer() or not 1 <= int(target) <= num_items:
        raise PoisonJaxInputError(f"target item {target!r} is outside the catalog: expected an item id in 1..{num_items}")
    return int(target)


def num_fake_users(num_real: int, fake_ratio: float) -> int:
    """``max(1, round(fake_ratio * num_real))``; ``fake_ratio`` must be in ``(0, 1]``."""
    r = check_fraction("fake_ratio", fake_ratio)
    return max(1, int(round(r * num_real)))


def check_fake_length(length) -> int:
    """Fake sequences need at least 2 items (one transition)."""
    return check_positive_int("fake_length", length, minimum=2)


def check_lengths(lengths, num_fake: int, length: int) -> jax.Array:
    """``[num_fake]`` int32 per-sequence lengths in ``2..length`` (``None`` = all ``length``)."""
    if lengths is None:
        return jnp.full((num_fake,), length, jnp.int32)
    a = np.asarray(lengths)
    if a.shape != (num_fake,) or a.min() < 2 or a.max() > length:
        raise PoisonJaxInputError(f"lengths must be {num_fake} fake-sequence lengths in 2..{length}; got shape "
                                  f"{a.shape}, range {a.min() if a.size else None}..{a.max() if a.size else None}")
    return jnp.asarray(a, jnp.int32)


def sample_lengths(real_lengths, num_fake: int, seed: int = 0, max_length: Optional[int] = None) -> np.ndarray:
    """``[num_fake]`` fake-sequence lengths drawn (reproducibly) from the empirical distribution of
    ``real_lengths``, clipped to ``2..max_length`` -- so a detector cannot tell fakes by length."""
    rl = np.asarray(real_lengths, np.int64)
    out = np.random.default_rng(seed).choice(rl, check_positive_int("num_fake", num_fake))
    return np.clip(out, 2, max_length if max_length else out.max()).astype(np.int32)


def mask_lengths(fake: np.ndarray, lengths) -> np.ndarray:
    """Zero (pad) the positions of ``fake [S, T]`` beyond each row's length."""
    if lengths is None:
        return fake
    return np.where(np.arange(fake.shape[1])[None] < np.asarray(lengths)[:, None], fake, 0).astype(fake.dtype)


def select_targets(popularity: np.ndarray, num_targets: int, exclude_top: int = 0) -> np.ndarray:
    """Target items at evenly spaced popularity ranks (most to least popular), ending at the coldest.

    Args:
      popularity: ``[V + 1]`` counts (index 0 = padding).
      num_targets: how many.
      exclude_top: skip the ``exclude_top`` most popular items (promotion of the head is trivial).

    Returns ``[num_targets]`` item ids; ranks ``linspace(exclude_top, V - 1, n)``; ties broken by id.
    """
    pop = np.asarray(popularity)[1:]
    order = np.lexsort((np.arange(pop.size), -pop)) + 1          # descending popularity
    ranks = np.unique(np.round(np.linspace(exclude_top, pop.size - 1, num_targets)).astype(int))
    return order[ranks]


def popularity_bucket(item: int, popularity: np.ndarray) -> str:
    """``"head"`` / ``"mid"`` / ``"cold"``: thirds of the popularity ranking."""
    pop = np.asarray(popularity)[1:]
    order = np.lexsort((np.arange(pop.size), -pop)) + 1
    rank = int(np.nonzero(order == item)[0][0])
    return ("head", "mid", "cold")[min(2, 3 * rank // pop.size)]


# ------------------------------------------------------------------------------------ surrogate ----

class Surrogate(NamedTuple):
    """The attacker's view: a trained SRS and its users.

    ``E [V + 1, d]`` item table, ``H [U, d]`` user representations, ``preferred [U, k]`` top-k items,
    ``Hv [V + 1, d]`` unit-norm representation after the single item ``v`` (the context a target
    placed right after ``v`` is trained towards; computed once, shared by every target/attack).
    """

    model: object
    params: object
    E: jax.Array
    H: jax.Array
    preferred: jax.Array
    max_len: int
    Hv: jax.Array = None


VIEWS = ("train", "validation")


def attacker_view(split, view: str = "train", *, allow_test_labels: bool = False):
    """The users' sequences an attack may read, from a leave-one-out split
    (:class:`poisonjax.data.sequences.LeaveOneOut`), as ``(user_seqs [U, L], history [U, L])``.

    Threat model (DDSP and the baselines): the attacker sees each user's *training* items
    (``view="train"``: ``split.valid_x``, the history before the validation item) and the item
    popularity computed from them; it never sees the held-out validation/test items, which are the
    labels the victims are evaluated on. ``view="validation"`` (``split.test_x``: sequences that
    include each user's validation item) is refused unless ``allow_test_labels=True``.
    """
    check_choice("view", view, VIEWS)
    if view == "train":
        return split.valid_x, split.valid_x
    if not allow_test_labels:
        raise PoisonJaxInputError(
            "attacker_view(view='validation') reads held-out items (each user's validation item); "
            "the attacker sees training items only -- use view='train' or pass allow_test_labels=True")
    return split.test_x, split.test_x


def build_surrogate(model, params, user_seqs: np.ndarray, history: np.ndarray, num_preferred: int = 10,
                    chunk: int = 512) -> Surrogate:
    """Compute ``H = h_u`` (last hidden state on ``user_seqs [U, L]``) and ``Gamma_u`` = the top
    ``num_preferred`` items by surrogate score, excluding ``history [U, Hh]`` and padding.
    ``user_seqs``/``history`` should be the attacker's view (:func:`attacker_view`: training items only)."""
    E = item_table(model, params)
    seqs = jnp.asarray(user_seqs)
    hist = jnp.asarray(history)

    def one(s, h):                       # one user: hidden state and top preferred items
        hid = last_hidden(model, params, s[None])[0]
        sc = (hid @ E.T).at[h].set(-jnp.inf).at[0].set(-jnp.inf)
        return hid, jax.lax.top_k(sc, num_preferred)[1]

    def single(item):                    # the normalised representation of the one-item sequence
        h = last_hidden(model, params, jnp.zeros((1, seqs.shape[1]), jnp.int32).at[0, -1].set(item))[0]
        return h / jnp.maximum(jnp.linalg.norm(h), 1e-8)

    V1 = E.shape[0]
    Hs, Ps = jax.jit(chunked_vmap(one, chunk=min(int(chunk), seqs.shape[0])))(seqs, hist)
    Hv = jax.jit(chunked_vmap(single, chunk=min(int(chunk), V1)))(jnp.arange(V1))
    return Surrogate(model, params, E, Hs, Ps, int(user_seqs.shape[1]), Hv)


# ----------------------------------------------------------------------------------- objectives ----

def plain_promotion_loss(e_t: jax.Array, E: jax.Array, h_u: jax.Array, target: int) -> jax.Array:
    r"""Plain promotion (earlier attacks) for one user: :math:`-\log\mathrm{softmax}_k(h_u^\top e_k)_t`
    over items ``1..V`` with row ``t`` of ``E`` replaced by ``e_t`` (``E [V+1, d]``, ``h_u [d]``)."""
    E = E.at[target].set(e_t)
    s = (E @ h_u).at[0].set(-jnp.inf)
    return -jax.nn.log_softmax(s)[target]


def dual_promotion_loss(e_t: jax.Array, E: jax.Array, preferred: jax.Array, target: int,
                        tau: float = 0.1, beta: float = 1.0) -> jax.Array:
    r"""DDSP dual promotion for one user (module doc): MSE of :math:`e_t` to the stop-gradient
    embeddings of ``preferred [k]`` items, plus ``beta`` times the contrastive term over
    L2-normalised embeddings with temperature ``tau`` (denominator over all items ``1..V``)."""
    Ep = jax.lax.stop_gradient(E[preferred])                              # [k, d]
    mse = jnp.mean(jnp.sum((e_t[None] - Ep) ** 2, -1))
    En = jax.lax.stop_gradient(E / jnp.maximum(jnp.linalg.norm(E, axis=-1, keepdims=True), 1e-8))
    et = e_t / jnp.maximum(jnp.linalg.norm(e_t), 1e-8)
    logits = (En @ et / tau).at[0].set(-jnp.inf).at[target].set(1.0 / tau)
    logp = jax.nn.log_softmax(logits)
    return mse - beta * jnp.mean(logp[preferred])


def target_directions(sur: Surrogate, target: int, users: jax.Array, objective: str = "dual",
                      tau: float = 0.1, beta: float = 1.0) -> jax.Array:
    r"""``[P, d]`` directions :math:`g_u = -\nabla_{e_t}\mathcal L_u(e_t)` for ``users [P]`` (vmapped)."""
    check_choice("objective", objective, OBJECTIVES)
    e_t = sur.E[target]
    if objective == "dual":
        f = lambda p: -jax.grad(dual_promotion_loss)(e_t, sur.E, p, target, tau, beta)
        return jax.vmap(f)(sur.preferred[users])
    f = lambda h: -jax.grad(plain_promotion_loss)(e_t, sur.E, h, target)
    return jax.vmap(f)(sur.H[users])


# ----------------------------------------------------------------------------- generators (JAX) ----

def _window(prefix: jax.Array, t, max_len: int) -> jax.Array:
    """The last ``max_len`` items before position ``t``, right-aligned, 0-padded: ``[max_len]``."""
    buf = jnp.concatenate([jnp.zeros((max_len,), prefix.dtype), prefix])
    buf = jnp.where(jnp.arange(buf.shape[0]) < max_len + t, buf, 0)
    return jax.lax.dynamic_slice(buf, (t,), (max_len,))


def surrogate_generate(sur: Surrogate, target: int, num_fake: int, length: int, key: jax.Array, *,
                       objective: str = "dual", diversity: bool = True, alpha: float = 1.0,
                       beta_utility: float = 1.0, target_bonus: float = 100.0, max_target_share: float = 0.25,
                       max_target_per_seq: int = 1, within_penalty: float = 1.0, global_penalty: float = 0.5, max_item_share: float = 0.1,
                       num_candidates: int = 64, temperature: float = 1.0, tau: float = 0.1, beta: float = 1.0,
                       persona_weight: float = 0.0, lengths=None):
    """DDSP-style generation (module doc) -- one jit-compiled ``lax.scan`` over positions, vmapped
    over all ``num_fake`` fake users with shared usage counts.

    ``diversity=False`` gives the no-re-ranking variants (greedy, no caps or penalties; targets
    allowed at every other position), ``objective="plain"`` the plain promotion objective.

    ``lengths [num_fake]`` (optional, each in ``2..length``): per-sequence lengths; positions beyond
    a sequence's length are padding (0) and the target is placed inside it.

    Returns ``[num_fake, length]`` int32 item ids (1-based; 0 = padding past ``lengths``).
    """
    V1 = sur.E.shape[0]
    target = check_target(target, V1 - 1)
    num_fake = check_positive_int("num_fake", num_fake)
    length = check_fake_length(length)
    lengths = check_lengths(lengths, num_fake, length)
    cap = target_cap(length, max_target_per_seq, max_target_share)
    return _surrogate_generate_jit(sur.model, sur.max_len, num_fake, length, objective, bool(diversity),
                                   num_candidates, sur.params, sur.E, sur.H, sur.preferred, target, key,
                                   alpha, beta_utility, target_bonus, cap, within_penalty,
                                   global_penalty, max_item_share, temperature, tau, beta, float(persona_weight),
                                   sur.Hv, lengths)


def target_cap(length: int, max_target_per_seq: int = 1, max_target_share: float = 0.25) -> int:
    """Target occurrences allowed per fake sequence: ``max_target_per_seq`` if it is positive, else
    ``max(1, ceil(max_target_share * length))`` (capped so that no two targets are adjacent)."""
    c = int(max_target_per_seq) if max_target_per_seq and max_target_per_seq > 0 else \
        max(1, math.ceil(max_target_share * length))
    return max(1, min(c, length // 2))


def _surrogate_generate_impl(model, max_len, S, T, objective, diversity, num_candidates, params, E, H, preferred,
                             target, key, alpha, beta_utility, target_bonus, cap, within_penalty,
                             global_penalty, max_item_share, temperature, tau, beta, persona_weight, Hv, lengths):
    V1 = E.shape[0]
    sur = Surrogate(model, params, E, H, preferred, max_len, Hv)
    k_p, k_f, k_g = jax.random.split(key, 3)
    personas = jax.random.randint(k_p, (S,), 0, H.shape[0])
    unit = lambda a: a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-8)
    # population direction: mean over (up to 1024 randomly chosen) real users
    pop_users = jax.random.permutation(jax.random.fold_in(k_p, 1), H.shape[0])[:min(H.shape[0], 1024)]
    g_pop = unit(target_directions(sur, target, pop_users, objective, tau, beta).mean(0))
    if persona_weight > 0:
        G = unit((1.0 - persona_weight) * g_pop[None] +
                 persona_weight * unit(target_directions(sur, target, personas, objective, tau, beta)))  # [S, d]
    else:
        G = jnp.broadcast_to(g_pop, (S, g_pop.shape[0]))
    is_t = jnp.arange(V1) == target

    # where each fake user's target occurrences start (diversity mode): uniform over the second half of
    # the sequence, leaving room for ``cap`` targets two apart; the target gets ``target_bonus`` only from
    # there on, so its context is a prefix built by the look-ahead utility (not a fixed early slot)
    hi = jnp.maximum(1, lengths - 1 - 2 * (cap - 1))
    lo = jnp.maximum(1, jnp.minimum(hi, (lengths - 1) // 2))
    start = (lo + jnp.floor(jax.random.uniform(k_f, (S,)) * (hi - lo + 1)).astype(jnp.int32) if diversity
             else jnp.ones((S,), jnp.int32))

    def score_fn(prefix, t, k, aux):
        g, t0 = aux
        h = last_hidden(model, params, _window(prefix, t, max_len)[None])[0]
        logp = jax.nn.log_softmax((E @ h).at[0].set(-jnp.inf))
        gn = g / jnp.maximum(jnp.linalg.norm(g), 1e-8)
        u = Hv @ gn                                   # look-ahead utility of item v as the target's context
        u_now = jnp.dot(h / jnp.maximum(jnp.linalg.norm(h), 1e-8), gn)   # utility of the target right now
        mu, sd = u[1:].mean(), u[1:].std() + 1e-8
        u = (u - mu) / sd
        u_t = jnp.where(t > 0, (u_now - mu) / sd, -1e3)  # no context before the first item
        z = alpha * jnp.maximum(logp, -1e4) + beta_utility * jnp.where(is_t, u_t, u)
        return jnp.where(is_t, jnp.where(t >= t0, z + target_bonus, -1e4), z)

    banned = jnp.zeros((V1,), bool).at[0].set(True)
    gap = jnp.ones((V1,), jnp.int32).at[target].set(2)
    if diversity:
        caps = jnp.ones((V1,), jnp.int32).at[target].set(cap)
        res = autoregressive.generate(score_fn, S, T, V1, k_g, num_candidates=num_candidates,
                                      temperature=temperature, within_penalty=within_penalty,
                                      global_penalty=global_penalty, token_caps=caps, min_gap=gap,
                                      max_global=max(2, math.ceil(max_item_share * S)), banned=banned,
                                      per_seq=(G, start), global_exempt=is_t, lengths=lengths)
    else:
        res = autoregressive.generate(score_fn, S, T, V1, k_g, num_candidates=num_candidates, temperature=0.0,
                                      min_gap=gap, banned=banned, per_seq=(G, start), lengths=lengths)
    return res.tokens


_surrogate_generate_jit = jax.jit(_surrogate_generate_impl, static_argnums=(0, 1, 2, 3, 4, 5, 6, 16, 19, 20, 23))


def yue_generate(sur: Surrogate, target: int, num_fake: int, length: int, key: jax.Array,
                 num_candidates: int = 64, lengths=None) -> jax.Array:
    """Yue et al. (RecSys'21) alternating generator (module doc): a random first item, then
    target / adversarial item / target / ...; adversarial items by the surrogate's input gradient.
    One jit'd ``lax.scan`` over positions vmapped over fake users. Returns ``[num_fake, length]``."""
    V1 = sur.E.shape[0]
    target = check_target(target, V1 - 1)
    S, T = check_positive_int("num_fake", num_fake), check_fake_length(length)
    lens = check_lengths(lengths, S, T)
    out = _yue_jit(sur.model, sur.max_len, S, T, num_candidates, sur.params, sur.E, target, key)
    return jnp.where(jnp.arange(T)[None] < lens[:, None], out, 0)


def _yue_impl(model, max_len, S, T, num_candidates, params, E, target, key):
    V1 = E.shape[0]
    e_mean = E[1:].mean(0)

    def score_fn(prefix, t, k, aux):
        # place a free slot x at position t; loss = -log p(target | prefix, x)
        win = _window(prefix, t + 1, max_len).at[-1].set(1)             # placeholder id, replaced below
        emb0 = E[win]

        def loss(x):
            emb = emb0.at[-1].set(x)
            h = model.apply(params, win[None], True, emb[None])[0, -1]
            return -jax.nn.log_softmax((E @ h).at[0].set(-jnp.inf))[target]

        g = jax.grad(loss)(e_mean)
        return -(E @ g)

    k_f, k_g = jax.random.split(key)
    first = jax.random.randint(k_f, (S,), 1, V1 - 1)
    first = jnp.where(first >= target, first + 1, first)          # a random non-target item
    forced = jnp.where(jnp.arange(T) % 2 == 1, target, -1)
    banned = jnp.zeros((V1,), bool).at[0].set(True).at[target].set(True)
    return autoregressive.generate(score_fn, S, T, V1, k_g, num_candidates=num_candidates, forced=forced,
                                   banned=banned, first_tokens=first).tokens


_yue_jit = jax.jit(_yue_impl, static_argnums=(0, 1, 2, 3, 4))


# ----------------------------------------------------------------------- heuristic baselines ----

def _place_targets(fake: np.ndarray, target: int, n_target: int, rng, lengths) -> np.ndarray:
    S, T = fake.shape
    for s in range(S):  # host-side heuristic baseline; S is small (1% of users)
        n = int(lengths[s])
        fake[s, rng.choice(n, min(n_target, n), replace=False)] = target
    return fake


def heuristic_generate(method: str, target: int, num_fake: int, length: int, popularity: np.ndarray,
                       seed: int = 0, n_target: Optional[int] = None, max_target_share: float = 0.25,
                       max_target_per_seq: int = 1, lengths=None) -> np.ndarray:
    """Random / Popular / Bandwagon / repetition fake sequences ``[num_fake, length]`` (module doc).

    ``n_target`` targets per sequence (default :func:`target_cap`, the same target budget as DDSP);
    ``lengths [num_fake]`` optional per-sequence lengths (padding 0 beyond them).
    """
    check_choice("method", method, ("random", "popular", "bandwagon", "repetition"))
    pop = np.asarray(popularity, np.float64)
    V = pop.size - 1
    target = check_target(target, V)
    S, T = check_positive_int("num_fake", num_fake), check_fake_length(length)
    n_target = target_cap(T, max_target_per_seq, max_target_share) if n_target is None else int(n_target)
    lens = np.asarray(check_lengths(lengths, S, T))
    rng = np.random.default_rng(seed)
    p = pop[1:] / pop[1:].sum()
    if method == "random":
        fake = rng.integers(1, V + 1, (S, T))
    elif method == "popular":
        fake = rng.choice(V, (S, T), p=p) + 1
    elif method == "bandwagon":
        top = np.argsort(-pop[1:], kind="stable")[: max(1, V // 100)] + 1
        fake = np.where(rng.random((S, T)) < 0.5, rng.choice(top, (S, T)), rng.integers(1, V + 1, (S, T)))
    else:
        fake = np.full((S, T), target)
        fake[:, 0] = rng.choice(V, S, p=p) + 1
        return mask_lengths(fake.astype(np.int32), lens)
    return mask_lengths(_place_targets(fake, target, n_target, rng, lens).astype(np.int32), lens)


def generate_fake(method: str, sur: Optional[Surrogate], target: int, num_fake: int, length: int,
                  key: jax.Array, popularity: np.ndarray, **kw) -> np.ndarray:
    """Dispatch by method name (:data:`METHODS`); returns ``[num_fake, length]`` int32 numpy.

    ``kw`` are forwarded to :func:`surrogate_generate` (DDSP family) -- e.g. ``alpha``,
    ``target_bonus``, ``max_target_share`` (also used by the heuristics' target count).
    """
    check_choice("method", method, METHODS)
    if method in ("random", "popular", "bandwagon", "repetition"):
        seed = int(jax.random.randint(key, (), 0, 2 ** 30))
        return heuristic_generate(method, target, num_fake, length, popularity, seed,
                                  max_target_share=kw.get("max_target_share", 0.25),
                                  max_target_per_seq=kw.get("max_target_per_seq", 1), lengths=kw.get("lengths"))
    if sur is None:
        raise PoisonJaxInputError(f"method {method!r} needs a trained surrogate (sur=None given)")
    if method == "yue":
        out = yue_generate(sur, target, num_fake, length, key, kw.get("num_candidates", 64), kw.get("lengths"))
    else:
        variant = {"ddsp": ("dual", True), "ddsp_no_dual": ("plain", True), "ddsp_no_div": ("dual", False),
                   "greedy_plain": ("plain", False)}[method]
        if method == "greedy_plain":   # the "existing attack": attack objective only, no plausibility term
            kw = dict(kw, alpha=0.0)
        out = surrogate_generate(sur, target, num_fake, length, key, objective=variant[0], diversity=variant[1], **kw)
    return np.asarray(out, np.int32)
