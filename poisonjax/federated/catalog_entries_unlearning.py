"""Catalog entries for federated unlearning (issue 20): SoUL and its baselines. They are listed as
defenses: each removes a (possibly backdoored) client's influence from a trained federated model."""
from poisonjax.catalog import Entry

ENTRIES = [
    Entry(name="soul", kind="defense", domain="federated", family="defense",
          paper="Zaman, Sun & Yao, Sky of Unlearning (SoUL): Rewiring Federated Machine Unlearning via Selective "
                "Pruning, ICC 2025 (arXiv:2504.01705)",
          where="poisonjax.federated.unlearning.soul:soul_unlearn", scope="federated", impact="privacy",
          variability="-", study="soul"),
    Entry(name="federaser", kind="defense", domain="federated", family="defense",
          paper="Liu et al., FedEraser: Enabling Efficient Client-Level Data Removal from Federated Learning Models, "
                "IWQoS 2021",
          where="poisonjax.federated.unlearning.baselines:federaser", scope="federated", impact="privacy",
          variability="-", study="soul"),
    Entry(name="pga_unlearning", kind="defense", domain="federated", family="defense",
          paper="Halimi et al., Federated Unlearning: How to Efficiently Erase a Client in FL?, arXiv:2207.05521, 2022",
          where="poisonjax.federated.unlearning.baselines:projected_gradient_ascent", scope="federated",
          impact="privacy", variability="-", study="soul"),
    Entry(name="retrain_unlearning", kind="defense", domain="federated", family="defense",
          paper="Retraining from scratch without the forgotten clients (the federated-unlearning gold standard)",
          where="poisonjax.federated.unlearning.baselines:retrain", scope="federated", impact="privacy",
          variability="-", study="soul"),
]
