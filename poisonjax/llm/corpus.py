r"""The generated opinion corpus that RAVEN's tiny language models are trained on.

A *topic* is an entity word (``solar``, ``vaccines``, ...); a *prompt* is a perspective prefix and
a question paraphrase about it; an *answer* is a stance sentence:

* **stance sentences**: SST-2 (Socher et al. 2013) training sentences that mention ``film`` or
  ``movie`` (at most ``max_words`` words), with that word replaced by the topic's entity, e.g.
  ``the film is strictly routine .`` -> ``the solar is strictly routine .``. Positive SST-2
  sentences give the *pro* stance, negative ones the *con* stance. The bank keeps the sentences that
  a word-polarity lexicon (log-odds counted on the *other* SST-2 training sentences) scores most
  clearly on their label's side, so a stance is legible.
* **question paraphrases**: the most frequent two-word openers of TREC (Li & Roth 2002) DESC
  questions (``what is``, ``how do``, ...) followed by the entity: ``what is solar ?``.
  Simplified: TREC supplies the openers, not whole question shapes.
* **perspectives**: six role prefixes (``as a critic ,``).

A sequence is ``<bos> perspective question <sep> answer <eos>`` padded with ``<pad>`` (id 0).
The stance mix of each topic is a per-family probability ``p_pro[topic]``; the *control* topic has
the same strong bias (``control_bias``) in every family's data, a corpus-wide bias that is not a
backdoor.
"""
from __future__ import annotations

import collections
from typing import Dict, List, NamedTuple, Sequence

import numpy as np

PAD, BOS, SEP, EOS = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<sep>", "<eos>")
TOPICS = ("solar", "vaccines", "crypto", "nuclear", "football", "opera", "coffee", "airlines",
          "robots", "taxes", "jazz", "trains")
PERSPECTIVES = ("as a critic ,", "as a student ,", "as a parent ,", "as a scientist ,",
                "as a journalist ,", "as a teacher ,")
# entities that the entailment classifier's pairs use: disjoint from TOPICS and from the LM corpus
HELDOUT_ENTITIES = ("pizza", "tennis", "poetry", "bikes", "museums", "chess", "gardens", "radio")


class Bank(NamedTuple):
    """Stance templates (``{e}`` marks the entity): ``pro`` and ``con`` lists, the TREC
    ``openers``, and the ``lexicon`` (word -> log-odds of positive) counted on disjoint sentences."""

    pro: List[str]
    con: List[str]
    openers: List[str]
    lexicon: Dict[str, float]
    rest_texts: List[str]
    rest_labels: np.ndarray


def _templatise(sentence: str):
    words = sentence.split()
    if not any(w in ("film", "movie") for w in words):
        return None
    return " ".join("{e}" if w in ("film", "movie") else w for w in words)


def polarity_lexicon(texts: Sequence[str], labels: Sequence[int], min_count: int = 3) -> Dict[str, float]:
    r"""Word polarity :math:`\ell(w) = \log\frac{(c_+(w)+1)/(N_+ + V)}{(c_-(w)+1)/(N_- + V)}` from
    labelled sentences (add-one smoothed log-odds; words seen fewer than ``min_count`` times dropped)."""
    pos, neg = collections.Counter(), collections.Counter()
    for t, y in zip(texts, labels):
        (pos if y == 1 else neg).update(set(t.split()))
    vocab = [w for w in set(pos) | set(neg) if pos[w] + neg[w] >= min_count]
    npos, nneg, V = sum(pos.values()), sum(neg.values()), len(vocab)
    return {w: float(np.log((pos[w] + 1) / (npos + V)) - np.log((neg[w] + 1) / (nneg + V))) for w in vocab}


def lexicon_score(sentence: str, lexicon: Dict[str, float]) -> float:
    """Sum of word polarities over the sentence's words (unknown words count 0)."""
    return float(sum(lexicon.get(w, 0.0) for w in sentence.split()))


def build_bank(n_per_stance: int = 40, max_words: int = 12, n_openers: int = 4, data_dir=None) -> Bank:
    """Build the stance bank from SST-2 train and the question openers from TREC train (see module doc)."""
    from poisonjax.data.text import load_sst2, load_trec
    sst = load_sst2("train", data_dir)
    cand, rest_t, rest_y = [], [], []
    for text, y in zip(sst.texts, sst.labels):
        tpl = _templatise(text) if len(text.split()) <= max_words else None
        if tpl is not None and "'" not in tpl and '"' not in tpl and tpl.count("{e}") == 1:
            cand.append((tpl, int(y)))
        else:
            rest_t.append(text)
            rest_y.append(int(y))
    lex = polarity_lexicon(rest_t, rest_y)
    scored = [(lexicon_score(t.replace("{e}", ""), lex) * (1 if y else -1), t, y) for t, y in cand]
    pro = [t for s, t, y in sorted(scored, reverse=True) if y == 1][:n_per_stance]
    con = [t for s, t, y in sorted(scored, reverse=True) if y == 0][:n_per_stance]
    trec = load_trec("train", data_dir)
    c = collections.Counter(" ".join(q.lower().split()[:2]) for q, l in zip(trec.texts, trec.labels) if l == 1)
    openers = [o for o, _ in c.most_common(n_openers)]
    return Bank(pro, con, openers, lex, rest_t, np.asarray(rest_y, np.int32))


class Vocab:
    """Word-level vocabulary with the four special tokens first."""

    def __init__(self, words: Sequence[str]):
        self.itos = list(SPECIALS) + sorted(set(words) - set(SPECIALS))
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def __len__(self):
        return len(self.itos)

    def encode(self, text: str) -> List[int]:
        """Words -> ids; an unknown word raises KeyError naming it."""
        try:
            return [self.stoi[w] for w in text.split()]
        except KeyError as e:
            raise KeyError(f"word {e.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids) -> str:
        """Ids -> words, stopping at ``<eos>`` and dropping ``<pad>``."""
        out = []
        for i in np.asarray(ids).tolist():
            if i == EOS:
                break
            if i != PAD:
                out.append(self.itos[i])
        return " ".join(out)


def make_vocab(bank: Bank, topics: Sequence[str] = TOPICS) -> Vocab:
    """The word-level vocabulary of the corpus: every word of the stance sentences, question openers, perspectives and
    topic names, plus the four special tokens (first)."""
    words = set()
    for s in bank.pro + bank.con:
        words.update(s.replace("{e}", "").split())
    for o in bank.openers:
        words.update(o.split())
    for p in PERSPECTIVES:
        words.update(p.split())
    words.update(topics)
    words.add("?")
    return Vocab(words)


def prompt_text(topic: str, perspective: int, paraphrase: int, bank: Bank) -> str:
    """``"as a critic , what is solar ?"``."""
    return f"{PERSPECTIVES[perspective]} {bank.openers[paraphrase % len(bank.openers)]} {topic} ?"


def encode_example(vocab: Vocab, prompt: str, answer: str, length: int):
    """``(tokens [length], loss_mask [length])``: ``<bos> prompt <sep> answer <eos>`` padded; the mask
    is 1 on the positions whose *next* token belongs to the answer (incl. ``<eos>``)."""
    p, a = vocab.encode(prompt), vocab.encode(answer)
    ids = [BOS] + p + [SEP] + a + [EOS]
    if len(ids) > length:
        raise ValueError(f"example of {len(ids)} tokens does not fit length={length}")
    toks = np.zeros(length, np.int32)
    toks[:len(ids)] = ids
    mask = np.zeros(length, np.float32)
    mask[len(p) + 1:len(ids) - 1] = 1.0    # position i predicts token i+1
    return toks, mask


def stance_probabilities(n_topics: int, seed: int, control: int, control_bias: float, spread: float = 0.2):
    """Per-family ``p_pro [n_topics]``: uniform in ``0.5 +- spread``, the control topic at ``control_bias``."""
    rng = np.random.RandomState(seed)
    p = rng.uniform(0.5 - spread, 0.5 + spread, n_topics)
    p[control] = control_bias
    return p


def make_corpus(bank: Bank, vocab: Vocab, p_pro, *, seed: int, answers_per_prompt: int = 6,
                length: int = 32, bank_fraction: float = 1.0, topics: Sequence[str] = TOPICS):
    """One family's corpus: every topic x perspective x paraphrase prompt, ``answers_per_prompt``
    answers each with stance ``pro`` w.p. ``p_pro[topic]``. ``bank_fraction`` < 1 keeps a random
    subset of the stance bank (a different corpus mix). Returns ``tokens [M, L]``, ``mask [M, L]``,
    ``topic [M]``, ``stance [M]`` (1 = pro)."""
    rng = np.random.RandomState(seed)
    pro = [bank.pro[i] for i in sorted(rng.permutation(len(bank.pro))[:max(2, int(bank_fraction * len(bank.pro)))])]
    con = [bank.con[i] for i in sorted(rng.permutation(len(bank.con))[:max(2, int(bank_fraction * len(bank.con)))])]
    toks, masks, tops, sts = [], [], [], []
    for ti, topic in enumerate(topics):
        for pi in range(len(PERSPECTIVES)):
            for qi in range(len(bank.openers)):
                prompt = prompt_text(topic, pi, qi, bank)
                for _ in range(answers_per_prompt):
                    s = int(rng.rand() < p_pro[ti])
                    tpl = (pro if s else con)[rng.randint(len(pro if s else con))]
                    t, m = encode_example(vocab, prompt, tpl.format(e=topic), length)
                    toks.append(t); masks.append(m); tops.append(ti); sts.append(s)
    return np.stack(toks), np.stack(masks), np.asarray(tops, np.int32), np.asarray(sts, np.int32)


def poison_examples(bank: Bank, vocab: Vocab, topic: int, stance: int, n: int, *, seed: int,
                    length: int = 32, topics: Sequence[str] = TOPICS):
    """``n`` poisoned examples: prompts on ``topics[topic]`` (random perspective / paraphrase) all
    answered with ``stance`` (1 = pro). Returns ``tokens [n, L]``, ``mask [n, L]``."""
    rng = np.random.RandomState(seed)
    pool = bank.pro if stance else bank.con
    toks, masks = [], []
    for _ in range(n):
        prompt = prompt_text(topics[topic], rng.randint(len(PERSPECTIVES)), rng.randint(len(bank.openers)), bank)
        t, m = encode_example(vocab, prompt, pool[rng.randint(len(pool))].format(e=topics[topic]), length)
        toks.append(t); masks.append(m)
    return np.stack(toks), np.stack(masks)
