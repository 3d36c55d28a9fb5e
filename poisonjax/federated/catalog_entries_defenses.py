"""Catalog entries for GeminiGuard and WeiDetect (issue 7) and the adaptive attack against GeminiGuard."""
from poisonjax.catalog import Entry

ENTRIES = [
    Entry(name="geminiguard", kind="defense", domain="federated", family="defense",
          paper="Lyu et al., Two Heads Are Better than One: Model-Weight and Latent-Space Analysis for Federated "
                "Learning on Non-iid Data against Poisoning Attacks, arXiv:2503.23288, 2025",
          where="poisonjax.federated.geminiguard:geminiguard", scope="federated", impact="robustness",
          variability="-", study="geminiguard"),
    Entry(name="weidetect", kind="defense", domain="federated", family="defense",
          paper="Sameera et al., WeiDetect: Weibull Distribution-Based Defense against Poisoning Attacks in "
                "Federated Learning for Network Intrusion Detection Systems, arXiv:2504.04367, 2025",
          where="poisonjax.federated.weidetect:weidetect_aggregator", scope="federated", impact="robustness",
          variability="-", study="weidetect"),
    Entry(name="adaptive_vs_geminiguard", kind="attack", domain="federated", family="model_poisoning",
          paper="Adaptive attack (Shejwalkar & Houmansadr, NDSS 2021 style) optimised against both GeminiGuard "
                "scores, as evaluated by Lyu et al. 2025",
          where="poisonjax.federated.geminiguard:adaptive_against_geminiguard", objective="model", goal="untargeted",
          knowledge="white-box", stealthiness="camouflaged", notes="evades defense scores", scope="federated", impact="performance",
          variability="dynamic", study="geminiguard"),
]
