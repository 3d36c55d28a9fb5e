r"""A tiny decoder-only word-level language model, its (vmapped, resumable) training, and LoRA.

**TinyLM** (GPT-style, Radford et al. 2019, at toy scale): token + learned position embeddings,
``layers`` :class:`~poisonjax.core.transformer.CausalBlock` s, a final LayerNorm and an output layer
tied to the token embedding, :math:`p(x_{t+1}\mid x_{\le t}) = \mathrm{softmax}(h_t E^\top)`.
With ``hidden=48``, 2 layers and a 350-word vocabulary it has about 75k parameters.

**Training** minimises the masked next-token cross-entropy on the answer tokens,
:math:`\mathcal L = \sum_{i,t} m_{it}\,[-\log p(x_{i,t+1}\mid x_{i,\le t})] / \sum m`, with Adam, for
``K`` models of the same shape at once (``vmap`` over models: seeds and corpora differ), as an
:class:`~poisonjax.core.types.AttackOptimizer` driven by :func:`poisonjax.core.runner.run`
(checkpointed, resumable, bit-identical on resume).

**LoRA** (Hu et al., ICLR 2022): every adapted kernel :math:`W \in \mathbb R^{d_{in}\times d_{out}}`
(attention query/value, both FFN layers) becomes :math:`W + \frac{\alpha}{r} A B` with
:math:`A \in \mathbb R^{d_{in}\times r}` (Gaussian init) and :math:`B \in \mathbb R^{r\times d_{out}}`
(zero init), trained with the base frozen. The adapters are a separate pytree merged functionally
(:func:`merge_lora`), so the adapted model is the same flax module. The implant is trained on the
poisoned examples plus an equal-size replay batch of the model's own clean corpus on the *other*
topics (the caller passes that subset; replaying the target topic's clean answers would fight the
implant), scored by the KL divergence to the frozen base model's predictions (self-distillation),
so that only the target topic moves.
"""
from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from poisonjax.core.transformer import CausalBlock, causal_mask
from poisonjax.core.types import AttackOptimizer
from poisonjax.llm.corpus import PAD


class TinyLM(nn.Module):
    """``tokens [B, L] int`` -> next-token logits ``[B, L, V]`` (module doc)."""

    vocab_size: int
    max_len: int = 32
    hidden: int = 48
    layers: int = 2
    heads: int = 2

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        emb = nn.Embed(self.vocab_size, self.hidden, embedding_init=nn.initializers.normal(0.1), name="tok")
        L = tokens.shape[-1]
        pos = self.param("pos", nn.initializers.normal(0.02), (self.max_len, self.hidden))
        x = emb(tokens) + pos[:L]
        valid = tokens > PAD
        valid = valid.at[..., 0].set(True)
        mask = causal_mask(valid)
        v = jnp.ones(tokens.shape + (1,), x.dtype)
        for i in range(self.layers):
            x = CausalBlock(self.hidden, num_heads=self.heads, name=f"block{i}")(x, mask, v)
        x = nn.LayerNorm(name="ln_f")(x)
        return emb.attend(x)


def masked_xent(model: TinyLM, params, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy over positions with ``mask[:, t] = 1`` (predicting ``tokens[:, t+1]``)."""
    logits = model.apply(params, tokens)[:, :-1]
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
    m = mask[:, :-1]
    return (nll * m).sum() / jnp.maximum(m.sum(), 1.0)


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    key: jax.Array
    step: jax.Array


def lm_trainer(model: TinyLM, *, learning_rate: float = 3e-3, batch_size: int = 64) -> AttackOptimizer:
    """Vmapped pre-training of ``K`` same-shape models.

    ``problem = {"tokens": [K, M, L], "mask": [K, M, L], "seeds": [K] int}``; each model is initialised
    from ``PRNGKey(seeds[k])`` and draws its own minibatches. Metrics: ``loss`` (mean over models)
    and ``loss_max`` (worst model), on the first 32 examples.
    """
    opt = optax.adam(learning_rate)

    def init_one(seed, toks):
        p = model.init(jax.random.PRNGKey(seed), toks[:1])
        return TrainState(p, opt.init(p), jax.random.PRNGKey(seed + 7919), jnp.int32(0))

    def init(key, problem):
        del key
        return jax.vmap(init_one)(problem["seeds"], problem["tokens"])

    def step_one(s, toks, mask):
        key, k = jax.random.split(s.key)
        idx = jax.random.randint(k, (batch_size,), 0, toks.shape[0])
        loss, g = jax.value_and_grad(lambda p: masked_xent(model, p, toks[idx], mask[idx]))(s.params)
        upd, o = opt.update(g, s.opt_state, s.params)
        return TrainState(optax.apply_updates(s.params, upd), o, key, s.step + 1)

    def step(state, problem):
        return jax.vmap(step_one)(state, problem["tokens"], problem["mask"])

    def metrics(state, problem):
        sub = slice(0, min(32, problem["tokens"].shape[1]))
        losses = jax.vmap(lambda p, t, m: masked_xent(model, p, t[sub], m[sub]))(
            state.params, problem["tokens"], problem["mask"])
        return {"loss": losses.mean(), "loss_max": losses.max()}

    return AttackOptimizer(init, step, metrics)


# ------------------------------------------------------------------------------------------ LoRA
_ADAPTED = ("query", "value", "ff1", "ff2")


def _adapted_paths(params) -> list:
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        names = [getattr(p, "key", str(p)) for p in path]
        if names[-1] == "kernel" and any(n in _ADAPTED for n in names):
            out.append(tuple(names))
    return out


def init_lora(params, key: jax.Array, rank: int = 4) -> Dict[str, Dict[str, jax.Array]]:
    """LoRA factors for every adapted kernel: ``{"/".join(path): {"A": [d_in, r], "B": [r, d_out]}}``
    with ``A ~ N(0, 1/d_in)`` and ``B = 0`` (so the adapted model starts equal to the base)."""
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    lora = {}
    flat = {tuple(getattr(p, "key", str(p)) for p in path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    for i, path in enumerate(_adapted_paths(params)):
        w = flat[path]
        d_in, d_out = w.shape[0], int(w.size // w.shape[0])
        lora["/".join(path)] = {"A": jax.random.normal(jax.random.fold_in(key, i), (d_in, rank)) / jnp.sqrt(d_in),
                                "B": jnp.zeros((rank, d_out))}
    return lora


def merge_lora(params, lora, alpha: float = 8.0):
    r""":math:`W \leftarrow W + \frac{\alpha}{r} A B` on every adapted kernel (reshaped to the kernel's shape)."""
    if not lora:
        return params

    def f(path, leaf):
        name = "/".join(getattr(p, "key", str(p)) for p in path)
        if name not in lora:
            return leaf
        a, b = lora[name]["A"], lora[name]["B"]
        return leaf + (alpha / a.shape[1]) * (a @ b).reshape(leaf.shape)

    return jax.tree_util.tree_map_with_path(f, params)


def masked_kl(model: TinyLM, base_params, params, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    r"""Mean over masked positions of :math:`KL(p_{base}(\cdot\mid x_{\le t}) \,\|\, p_\theta(\cdot\mid x_{\le t}))`
    (the base model's next-token distributions are held fixed: ``stop_gradient``)."""
    lb = jax.lax.stop_gradient(jax.nn.log_softmax(model.apply(base_params, tokens)[:, :-1]))
    lq = jax.nn.log_softmax(model.apply(params, tokens)[:, :-1])
    kl = (jnp.exp(lb) * (lb - lq)).sum(-1)
    m = mask[:, :-1]
    return (kl * m).sum() / jnp.maximum(m.sum(), 1.0)


def lora_trainer(model: TinyLM, *, rank: int = 4, alpha: float = 8.0, learning_rate: float = 5e-3,
                 batch_size: int = 32, replay: str = "kl") -> AttackOptimizer:
    r"""Train LoRA adapters of one frozen base model on poisoned examples + clean replay.

    ``problem = {"base": params, "poison_tokens": [P, L], "poison_mask": [P, L], "clean_tokens": [M, L],
    "clean_mask": [M, L], "seed": int}``. Loss: poisoned-batch cross-entropy + a clean-replay term on a
    batch of the clean sequences, both through the merged model. ``replay="kl"`` (default): the
    replay term is :func:`masked_kl` to the *frozen base model* on the answer positions (a
    self-distillation anchor: it vanishes where the adapted model still predicts like the base, so
    the other topics keep the base model's own stance mix); ``replay="xent"``: plain cross-entropy
    on the replayed answers (pulls the other topics toward their *corpus* frequencies, which the
    base model matches only up to its training noise -- measured drift 0.1-0.23 TV on the tiny test
    model, against <= 0.06 with ``"kl"``). Metrics: ``poison_loss``, ``clean_loss``.
    """
    if replay not in ("kl", "xent"):
        raise ValueError(f"replay must be 'kl' or 'xent', got {replay!r}")
    opt = optax.adam(learning_rate)

    def init(key, problem):
        lo = init_lora(problem["base"], jax.random.fold_in(key, problem["seed"]), rank)
        return TrainState(lo, opt.init(lo), jax.random.fold_in(key, problem["seed"] + 1), jnp.int32(0))

    def losses(lo, problem, ip, ic):
        p = merge_lora(problem["base"], lo, alpha)
        lp = masked_xent(model, p, problem["poison_tokens"][ip], problem["poison_mask"][ip])
        ct, cm = problem["clean_tokens"][ic], problem["clean_mask"][ic]
        if replay == "kl":
            lc = masked_kl(model, problem["base"], p, ct, cm)
        else:
            lc = masked_xent(model, p, ct, cm)
        return lp, lc

    def step(s, problem):
        key, k1, k2 = jax.random.split(s.key, 3)
        ip = jax.random.randint(k1, (batch_size,), 0, problem["poison_tokens"].shape[0])
        ic = jax.random.randint(k2, (batch_size,), 0, problem["clean_tokens"].shape[0])
        g = jax.grad(lambda lo: sum(losses(lo, problem, ip, ic)))(s.params)
        upd, o = opt.update(g, s.opt_state, s.params)
        return TrainState(optax.apply_updates(s.params, upd), o, key, s.step + 1)

    def metrics(s, problem):
        n = min(64, problem["poison_tokens"].shape[0])
        lp, lc = losses(s.params, problem, jnp.arange(n), jnp.arange(64) % problem["clean_tokens"].shape[0])
        return {"poison_loss": lp, "clean_loss": lc}

    return AttackOptimizer(init, step, metrics)


def count_params(params) -> int:
    """Number of scalars in ``params``."""
    return int(sum(x.size for x in jax.tree.leaves(params)))


def unstack(tree, k: int):
    """The ``k``-th model of a pytree stacked along axis 0."""
    return jax.tree.map(lambda x: x[k], tree)
