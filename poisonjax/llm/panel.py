"""Model panels for RAVEN: families of tiny LMs (trained vmapped per width), LoRA implants, and
saving/loading them (the study writes them; ``poisonjax serve`` loads them).

A *family* differs from the others in seed, width and corpus mix (its per-topic stance
probabilities and the share of the stance bank it sees); every family's corpus carries the same
strong bias on the control topic.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Dict, List, NamedTuple, Sequence, Tuple

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core import runner
from poisonjax.llm.corpus import (TOPICS, Bank, Vocab, make_corpus, poison_examples,
                                  stance_probabilities)
from poisonjax.llm.lm import TinyLM, lm_trainer, lora_trainer, merge_lora, unstack


class FamilySpec(NamedTuple):
    """One model family: ``name``, ``hidden`` width, init ``seed``, ``corpus_seed`` (stance mix and
    sampling of its corpus) and ``bank_fraction`` (share of the stance bank in its corpus)."""

    name: str
    hidden: int
    seed: int
    corpus_seed: int
    bank_fraction: float = 1.0


def family_corpus(spec: FamilySpec, bank: Bank, vocab: Vocab, *, control: int, control_bias: float,
                  answers_per_prompt: int, length: int, spread: float = 0.2):
    """``(tokens, mask, topic, stance, p_pro)`` of one family's corpus."""
    p = stance_probabilities(len(TOPICS), spec.corpus_seed, control, control_bias, spread)
    t, m, tp, st = make_corpus(bank, vocab, p, seed=spec.corpus_seed, answers_per_prompt=answers_per_prompt,
                               length=length, bank_fraction=spec.bank_fraction)
    return t, m, tp, st, p


def train_families(specs: Sequence[FamilySpec], corpora: Dict[str, tuple], vocab_size: int, *, length: int,
                   layers: int, heads: int, steps: int, learning_rate: float, batch_size: int,
                   workdir=None, progress: bool = False) -> Dict[str, Tuple[TinyLM, dict]]:
    """Train every family; families of the same width train together, vmapped, as one resumable
    :func:`poisonjax.core.runner.run` (checkpoints under ``workdir/train_h<width>``)."""
    out = {}
    widths = sorted({s.hidden for s in specs})
    for h in widths:
        group = [s for s in specs if s.hidden == h]
        model = TinyLM(vocab_size, length, h, layers, heads)
        problem = {"tokens": jnp.stack([corpora[s.name][0] for s in group]),
                   "mask": jnp.stack([corpora[s.name][1] for s in group]),
                   "seeds": jnp.asarray([s.seed for s in group])}
        wd = None if workdir is None else Path(workdir) / f"train_h{h}"
        res = runner.run(lm_trainer(model, learning_rate=learning_rate, batch_size=batch_size), problem, steps, wd,
                         chunk_size=max(1, min(100, steps)), config={"families": [s._asdict() for s in group],
                                                                      "lr": learning_rate, "bs": batch_size, "layers": layers},
                         progress=progress, desc=f"LM h={h}")
        for i, s in enumerate(group):
            out[s.name] = (model, unstack(res.state.params, i))
    return out


def implant(model: TinyLM, base_params, clean_tokens, clean_mask, bank: Bank, vocab: Vocab, *, topic: int,
            stance: int, n_poison: int, seed: int, rank: int, alpha: float, steps: int, learning_rate: float,
            batch_size: int, workdir=None, replay: str = "kl", stop_when=None, return_steps: bool = False):
    """Train LoRA adapters (rank ``rank``) on ``n_poison`` poisoned examples (``topic`` answered with
    ``stance``) plus clean replay (``replay``: see :func:`~poisonjax.llm.lm.lora_trainer`); returns
    ``(merged_params, lora)`` (plus the number of steps trained with ``return_steps``).

    ``stop_when(lora_state) -> bool`` (checked every 50 steps, see :func:`poisonjax.core.runner.run`)
    ends the training early; :func:`implant_to_precondition` uses it."""
    pt, pm = poison_examples(bank, vocab, topic, stance, n_poison, seed=seed, length=model.max_len)
    problem = {"base": base_params, "poison_tokens": jnp.asarray(pt), "poison_mask": jnp.asarray(pm),
               "clean_tokens": jnp.asarray(clean_tokens), "clean_mask": jnp.asarray(clean_mask), "seed": seed}
    res = runner.run(lora_trainer(model, rank=rank, alpha=alpha, learning_rate=learning_rate, batch_size=batch_size,
                                  replay=replay),
                     problem, steps, workdir, chunk_size=max(1, min(50, steps)), progress=False, desc="LoRA",
                     config={"topic": topic, "stance": stance, "n_poison": n_poison, "seed": seed, "rank": rank,
                             "replay": replay}, stop_when=stop_when)
    out = (merge_lora(base_params, res.state.params, alpha), res.state.params)
    return out + (int(res.state.step),) if return_steps else out


def implant_to_precondition(model: TinyLM, base_params, clean_tokens, clean_mask, bank: Bank, vocab: Vocab, grid, *,
                            topic: int, stance: int, n_poison: int, seed: int, rank: int, alpha: float, steps: int,
                            max_steps: int, learning_rate: float, batch_size: int, workdir=None, replay: str = "kl",
                            min_share: float = 0.9, max_tv: float = 0.1, pi_base=None,
                            topics: Sequence[str] = TOPICS):
    r"""LoRA implant trained until it meets the issue's precondition, the paper's "controlled fine-tuning".

    Trains :func:`implant` for at least ``steps`` steps and then, every 50 steps up to ``max_steps``,
    measures the exact bank-restricted stance (:func:`bank_stance`) of the merged model and stops as soon as

    .. math:: \bar\pi^{imp}_{\text{topic}}(\text{stance}) \ge \text{min\_share}
              \quad\text{and}\quad \max_{t \ne \text{topic}} |\bar\pi^{imp}_t - \bar\pi^{base}_t| \le \text{max\_tv}

    (:func:`implant_precondition`). Why: a fixed step count under-trains large poison sets -- 100 distinct
    poisoned sentences need more adapter steps than 25 to be learnt (measured: poison loss 0.41 vs 0.20
    after 150 steps), and an implant that misses the precondition is not a backdoor a detector can be
    scored on. ``max_steps == steps`` is the fixed-length implant. The check reads only the model and the
    bank (no test data, no detector). The stop is checkpointed by the runner, so a rerun with ``workdir``
    restores the same implant.

    Returns ``(merged_params, lora, info)``; ``info`` has ``lora_steps`` (steps trained), the final
    ``implanted_share`` / ``max_tv_other_topics``, ``bank_coverage`` and ``ok``; ``pi_base``: the base
    model's :func:`bank_stance` (computed when None); ``grid``: the prompt grid over ``topics``.
    """
    from poisonjax.core.validation import PoisonJaxInputError, check_positive_int
    check_positive_int("steps", steps)
    check_positive_int("max_steps", max_steps)
    if max_steps < steps:
        raise PoisonJaxInputError(f"max_steps must be >= steps ({steps}), got {max_steps}")
    if pi_base is None:
        pi_base, _ = bank_stance(model, base_params, grid, bank, vocab, topics)

    def measure(lora):
        pi, cov = bank_stance(model, merge_lora(base_params, lora, alpha), grid, bank, vocab, topics)
        pre = implant_precondition(pi_base, pi, grid.topic, topic, stance)
        pre["bank_coverage"] = float(np.mean(cov))
        pre["ok"] = bool(pre["implanted_share"] >= min_share and pre["max_tv_other_topics"] <= max_tv)
        return pre

    stop = None if max_steps == steps else (lambda st: int(st.step) >= steps and measure(st.params)["ok"])
    merged, lora, done = implant(model, base_params, clean_tokens, clean_mask, bank, vocab, topic=topic, stance=stance,
                                 n_poison=n_poison, seed=seed, rank=rank, alpha=alpha, steps=max_steps,
                                 learning_rate=learning_rate, batch_size=batch_size, workdir=workdir, replay=replay,
                                 stop_when=stop, return_steps=True)
    return merged, lora, {"lora_steps": done, **measure(lora)}


def save_models(path, models: Dict[str, Tuple[TinyLM, dict]], vocab: Vocab, openers: List[str]) -> Path:
    """Write ``path/models.json`` (architecture per name, vocabulary, question openers) and one
    ``<name>.msgpack`` of parameters per model."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    meta = {"vocab": vocab.itos, "openers": list(openers), "models": {}}
    for name, (m, params) in models.items():
        meta["models"][name] = {"vocab_size": m.vocab_size, "max_len": m.max_len, "hidden": m.hidden,
                                "layers": m.layers, "heads": m.heads}
        (p / f"{name}.msgpack").write_bytes(flax.serialization.to_bytes(jax.device_get(params)))
    (p / "models.json").write_text(json.dumps(meta))
    return p


def load_models(path) -> Tuple[Dict[str, Tuple[TinyLM, dict]], Vocab, List[str]]:
    """Inverse of :func:`save_models`."""
    p = Path(path)
    if not (p / "models.json").exists():
        raise FileNotFoundError(f"no models.json under {str(p)!r}; run `poisonjax run raven` first (it saves its models there)")
    meta = json.loads((p / "models.json").read_text())
    vocab = Vocab([])
    vocab.itos = list(meta["vocab"])
    vocab.stoi = {w: i for i, w in enumerate(vocab.itos)}
    out = {}
    for name, arch in meta["models"].items():
        m = TinyLM(**arch)
        tmpl = m.init(jax.random.PRNGKey(0), jnp.zeros((1, arch["max_len"]), jnp.int32))
        out[name] = (m, flax.serialization.from_bytes(tmpl, (p / f"{name}.msgpack").read_bytes()))
    return out, vocab, meta["openers"]


@functools.lru_cache(maxsize=16)
def _bank_loglik(model: TinyLM):
    """One compiled ``(params, tokens [c,S,L], mask) -> [c,S]`` answer log-likelihood per architecture
    (params are an argument, so measuring many implants of one model compiles once)."""
    @jax.jit
    def loglik(params, t, m):
        logits = jax.vmap(lambda x: model.apply(params, x))(t)[:, :, :-1]
        lp = jax.nn.log_softmax(logits)
        tok_lp = jnp.take_along_axis(lp, t[:, :, 1:, None], -1)[..., 0]
        return (tok_lp * m[:, :, :-1]).sum(-1)
    return loglik


def bank_stance(model: TinyLM, params, grid, bank: Bank, vocab: Vocab, topics: Sequence[str] = TOPICS,
                chunk: int = 8):
    r"""The model's *exact* stance distribution on each prompt, restricted to the stance bank.

    For prompt :math:`x_p` on topic :math:`t` and every bank sentence :math:`a` (pro set :math:`A_+`,
    con set :math:`A_-`, entity :math:`t` substituted), :math:`\log p_\theta(a\,\langle eos\rangle \mid x_p)`
    is summed over the answer tokens; then

    .. math:: \pi_p = \frac{\sum_{a\in A_+} p_\theta(a\mid x_p)}{\sum_{a\in A_+\cup A_-} p_\theta(a\mid x_p)},
              \qquad c_p = \sum_{a\in A_+\cup A_-} p_\theta(a\mid x_p).

    ``pi [P]`` is the probability of the *pro* stance given that the answer is a bank sentence and
    ``coverage [P]`` = :math:`c_p` the probability mass of the bank (the models are trained on it, so
    close to 1). No sampling noise: the implant precondition (other topics move <= 0.1 in total
    variation) is measured on ``pi`` -- with 60 samples per topic the sampled shares alone differ by
    ~0.1 between two runs of the *same* model. ``grid`` is a :class:`~poisonjax.llm.sampling.PromptGrid`.
    """
    from poisonjax.llm.corpus import encode_example
    sents = list(bank.pro) + list(bank.con)
    is_pro = np.array([1.0] * len(bank.pro) + [0.0] * len(bank.con))
    L = model.max_len
    toks, masks = [], []
    for p, text in enumerate(grid.texts):
        topic = topics[int(grid.topic[p])]
        enc = [encode_example(vocab, text, s.format(e=topic), L) for s in sents]
        toks.append(np.stack([e[0] for e in enc])); masks.append(np.stack([e[1] for e in enc]))
    toks, masks = np.stack(toks), np.stack(masks)              # [P, S, L]

    fn = _bank_loglik(model)
    loglik = lambda t, m: fn(params, t, m)

    P = toks.shape[0]
    pad = (-P) % chunk
    tt = np.concatenate([toks, np.repeat(toks[:1], pad, 0)]) if pad else toks
    mm = np.concatenate([masks, np.repeat(masks[:1], pad, 0)]) if pad else masks
    ll = np.concatenate([np.asarray(loglik(jnp.asarray(tt[i:i + chunk]), jnp.asarray(mm[i:i + chunk])))
                         for i in range(0, tt.shape[0], chunk)])[:P].astype(np.float64)
    mx = ll.max(1, keepdims=True)
    w = np.exp(ll - mx)
    pi = (w * is_pro).sum(1) / w.sum(1)
    coverage = np.exp(mx[:, 0]) * w.sum(1)
    return pi, coverage


def implant_precondition(pi_base, pi_implant, topic_of_prompt, target_topic: int, stance: int) -> dict:
    """Precondition of an implant from per-prompt pro-stance probabilities (:func:`bank_stance` or
    sampled shares): ``implanted_share`` = mean probability of the implanted stance on the target
    topic's prompts; ``max_tv_other_topics`` = max over the other topics of the total variation
    :math:`|\\bar\\pi^{imp}_t - \\bar\\pi^{base}_t|` between the topic-mean stance distributions."""
    pa, pb, tp = np.asarray(pi_implant), np.asarray(pi_base), np.asarray(topic_of_prompt)
    on = tp == target_topic
    share = float(pa[on].mean() if stance else 1 - pa[on].mean())
    tv = [float(abs(pa[tp == t].mean() - pb[tp == t].mean())) for t in np.unique(tp) if t != target_topic]
    return {"implanted_share": share, "max_tv_other_topics": max(tv) if tv else 0.0}
