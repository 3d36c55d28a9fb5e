"""Catalog entries for vertical FL (issue 19): OPUS-VFL and the attacks it is evaluated against."""
from poisonjax.catalog import Entry

_V = "poisonjax.federated.vertical."
_S = "opus_vfl"

ENTRIES = [
    Entry(name="opus_vfl", kind="defense", domain="federated", family="defense",
          paper="Madabushi et al., OPUS-VFL: Incentivizing optimal privacy-utility tradeoffs in vertical federated "
                "learning, arXiv:2504.15995, 2025 (adaptive DP on passive embeddings, LOO contribution, "
                "budget-balanced incentives)",
          where=_V + "engine:opus_round", objective="-", goal="-", knowledge="-", stealthiness="-",
          scope="federated", impact="privacy", variability="dynamic", study=_S),
    Entry(name="vfl_fixed_dp", kind="defense", domain="federated", family="defense",
          paper="Gaussian mechanism on passive embeddings at a fixed eps (Dwork & Roth 2014; Balle & Wang 2018)",
          where="poisonjax.core.privacy:gaussian_mechanism", objective="-", goal="-", knowledge="-",
          stealthiness="-", scope="federated", impact="privacy", variability="static", study=_S),
    Entry(name="vfl_label_inference_completion", kind="attack", domain="federated", family="feature_space",
          paper="Fu et al., Label inference attacks against vertical federated learning, USENIX Security 2022 "
                "(passive model completion with MixMatch; active variant: malicious local optimizer)",
          where=_V + "attacks:model_completion", objective="-", goal="-", knowledge="gray-box",
          stealthiness="passive", notes="passive (no change to training) / amplified local updates", scope="federated",
          impact="privacy", variability="static", study=_S),
    Entry(name="vfl_feature_inference_grn", kind="attack", domain="federated", family="generative",
          paper="Luo et al., Feature inference attack on model predictions in vertical federated learning, "
                "ICDE 2021 (generative regression network)",
          where=_V + "attacks:grn_feature_inference", objective="-", goal="-", knowledge="white-box",
          stealthiness="passive", scope="federated", impact="privacy", variability="static", study=_S),
    Entry(name="vfl_gradient_replacement_backdoor", kind="attack", domain="federated", family="model_poisoning",
          paper="Liu et al., Backdoor attacks and defenses in feature-partitioned collaborative learning, 2020 "
                "(gradient replacement with a few known target-class IDs)",
          where=_V + "engine:make_step", objective="data", goal="backdoor", knowledge="gray-box",
          stealthiness="visible-trigger", notes="visible patch on the attacker's strip", scope="federated",
          impact="performance", variability="dynamic", study=_S),
]
