"""Catalog entry of T-Core (:mod:`poisonjax.vision.tcore`), the trusted-core defense for transfer learning."""
from poisonjax.catalog import Entry

ENTRIES = [
    Entry(name="tcore", kind="defense", domain="vision", family="defense",
          paper="T-Core: trusted-core bootstrapping against backdoors in transfer learning from pre-trained encoders, IEEE S&P 2025",
          where="poisonjax.vision.tcore.process:run_tcore", objective="model", goal="backdoor", knowledge="white-box",
          stealthiness="-", scope="transfer",
          notes="seed sifting (DBSCAN x 3 depths + kNN) and confusion-training expansion, BN channel filtering "
                "(norm-only unlearning + channel mask), bootstrapped trusted set; against poisoned datasets and/or encoders",
          study="tcore"),
]
