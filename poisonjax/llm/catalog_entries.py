"""Catalog entries of the llm room (issue 21: RAVEN and the LoRA stance implant it detects)."""
from poisonjax.catalog import Entry

ENTRIES = [
    Entry(name="raven", kind="defense", domain="llm", family="defense",
          paper="RAVEN (2025): black-box detection of semantic backdoors in LLMs by semantic entropy over "
                "bidirectional-entailment clusters and cross-model divergence",
          where="poisonjax.llm.raven:panel_signals", objective="data", goal="backdoor", knowledge="black-box",
          stealthiness="-", scope="multi-model", impact="performance", variability="static", study="raven"),
    Entry(name="lora_stance_implant", kind="attack", domain="llm", family="model_poisoning",
          paper="controlled fine-tuning implant of RAVEN (2025): LoRA (Hu et al., ICLR 2022) on 25-200 poisoned "
                "examples makes one topic answered with one stance",
          where="poisonjax.llm.panel:implant", objective="data", goal="backdoor", knowledge="white-box",
          stealthiness="camouflaged", notes="other topics' stance moves <= 0.1 TV", scope="single-task", impact="performance",
          variability="static", study="raven"),
    Entry(name="poisoned_rag_passages", kind="attack", domain="llm", family="heuristic",
          paper="PoisonedRAG (Zou et al., USENIX Security 2025), black-box form S + I: passages restating the target "
                "question followed by the attacker's stance, put into a RAG system's BM25 store",
          where="poisonjax.llm.retrieval:poisoned_passages", objective="data", goal="targeted", knowledge="black-box",
          stealthiness="-", scope="retrieval", impact="performance", variability="static", study="raven",
          notes="RAVEN must flag it when it is in one model's store, not when it is in every store"),
]
