"""Catalog entries for sequential-recommender poisoning (issue 5: DDSP and baselines)."""
from poisonjax.catalog import Entry

_A = "poisonjax.recsys.attacks:"
_S = "ddsp"


def _atk(name, fn, family, paper, knowledge="gray-box", stealth="-", notes=""):
    return Entry(name=name, kind="attack", domain="recsys", family=family, paper=paper, where=_A + fn,
                 objective="data", goal="targeted", knowledge=knowledge, stealthiness=stealth, notes=notes,
                 scope="single-task", impact="performance", variability="static", study=_S)


ENTRIES = [
    _atk("ddsp", "surrogate_generate", "generative",
         "Zhao et al., Diversity-aware Dual-promotion Poisoning Attack on Sequential Recommendation, SIGIR 2025 "
         "(arXiv 2504.06586)", stealth="camouflaged", notes="accuracy-preserving, diverse fake users"),
    _atk("ddsp_no_dual", "surrogate_generate", "generative", "DDSP ablation: plain promotion objective"),
    _atk("ddsp_no_div", "surrogate_generate", "generative", "DDSP ablation: no diversity re-ranking"),
    _atk("seq_greedy_plain", "surrogate_generate", "generative",
         "surrogate-guided greedy fake users with the plain promotion objective (the 'existing attack' of DDSP)"),
    _atk("yue_alternating", "yue_generate", "generative",
         "Yue et al., Black-box attacks on sequential recommenders via data-free model extraction, RecSys 2021"),
    _atk("seq_random", "heuristic_generate", "heuristic", "random fake users with the target (shilling baseline)",
         knowledge="black-box"),
    _atk("seq_popular", "heuristic_generate", "heuristic", "popular-item fake users with the target",
         knowledge="black-box"),
    _atk("seq_bandwagon", "heuristic_generate", "heuristic",
         "bandwagon shilling (Burke et al. 2005) adapted to sequences", knowledge="black-box"),
    _atk("seq_target_repetition", "heuristic_generate", "heuristic", "target-repetition fake users",
         knowledge="black-box"),
]
