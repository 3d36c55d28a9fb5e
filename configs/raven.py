"""Config for the RAVEN study (``poisonjax run raven``): black-box detection of LoRA-implanted
stance backdoors in a panel of tiny language models.

Variants: ``quick`` (4 families + a 3-model transfer panel, implants of 25/50/100/200 poisoned
examples x 2 targets; tens of minutes on a busy 2-core CPU) and ``paper`` (5 seeds of targets, longer
training). ``backend="http"`` samples from ``endpoint`` (an OpenAI-compatible server, e.g.
``poisonjax serve --models <workdir of a local run>/models``) instead of the local models.
"""
import ml_collections

from poisonjax.core.validation import check_choice

VARIANTS = ("quick", "paper")


def get_config(variant: str = "quick") -> ml_collections.ConfigDict:
    check_choice("variant", variant, VARIANTS)
    quick = variant == "quick"
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0
    c.dataset = "sst2_trec"
    c.backend = "local"                 # "local" | "http"
    c.endpoint = ""                     # e.g. http://127.0.0.1:8000/v1 when backend == "http"
    c.api_key_env = ""                  # name of the environment variable holding the API key (optional)
    c.n_samples = 10                    # N answers per prompt per model
    c.temperature = 1.0
    c.judge = "embedding"               # clustering judge: "embedding" | "lexicon"
    c.fpr = 0.05
    # suspicion score: "and" = min of the two signals in clean-cell standard deviations (calibrated on the
    # clean panel and its leave-one-out sub-panels; poisonjax.llm.raven.and_score); "product" = D (1 - H/log N)
    c.score_rule = "and"
    c.length = 28
    c.control_topic = 6                 # index into TOPICS ("coffee"): corpus-wide bias in every family
    c.control_bias = 0.95
    c.corpus = ml_collections.ConfigDict(dict(n_per_stance=40, answers_per_prompt=6, spread=0.2))
    # families: (name, hidden, seed, corpus_seed, bank_fraction). seed_panel=True: the study adds 1000 * seed to both
    # seeds, and seeds other than 0 draw their own implant targets (experiments/raven.py: _families, _targets);
    # False: one panel and one target set for every seed (the behaviour before the eighteenth session, which the
    # README's earlier multi-seed figures were measured with). Seed 0 is the same either way
    c.seed_panel = True
    c.families = (("famA", 48, 0, 0, 1.0), ("famB", 48, 1, 1, 0.8), ("famC", 32, 2, 2, 1.0), ("famD", 32, 3, 3, 0.8))
    c.transfer_families = (("famE", 40, 10, 10, 1.0), ("famF", 40, 11, 11, 0.9), ("famG", 40, 12, 12, 0.8))
    c.train = ml_collections.ConfigDict(dict(steps=800 if quick else 2000, learning_rate=3e-3, batch_size=64,
                                             layers=2, heads=2))
    # replay="kl": the clean replay term is the KL to the frozen base model (self-distillation anchor)
    # implants train at least `steps` steps, then (every 50 steps, up to `max_steps`) until the precondition
    # holds: implanted stance >= 0.9 on the target topic, other topics within 0.1 TV (panel.implant_to_precondition);
    # max_steps == steps is a fixed-length implant. target_share: the exact (bank-restricted) implanted share the
    # training stops at (the precondition's 0.9). Measured: 0.95 raises the sampled share (0.80-0.92, vs
    # 0.80-0.88) but the stronger implants drift enough to get one control cell flagged
    c.lora = ml_collections.ConfigDict(dict(rank=4, alpha=8.0, steps=150 if quick else 300,
                                            max_steps=600 if quick else 1200, target_share=0.9, learning_rate=5e-3,
                                            batch_size=32, replay="kl"))
    c.implant_sizes = (25, 50, 100, 200)
    c.n_targets = 2 if quick else 5     # implant replicates: (model, topic) targets per size
    c.entail = ml_collections.ConfigDict(dict(n_pairs=8000, steps=300, keep=0.5))
    # retrieval route: one reader LM + a BM25 store per family; PoisonedRAG passages in one / every store.
    # per_topic=30 passages and k=10: with 8 passages and k=5 a clean store's answers followed 5 passages, so
    # clean cells were often uniform by chance (famB's clean cells outscored the poisoned ones, AUC 0.47);
    # steps=1500: a 600-step reader followed the poisoned passages in only 70-75% of its answers
    c.rag = ml_collections.ConfigDict(dict(enabled=True, hidden=32, steps=1500, length=44,
                                           per_prompt=4, per_topic=30, restate_prob=0.0, k=10, tau=1.0, n_poison=10,
                                           n_targets=2 if quick else 5))
    c.transfer_max_size = 7             # threshold transfer: panels of sizes 3..this from all clean families
    c.transfer_max_panels = 40          # at most this many panels per size
    c.progress = True
    return c
