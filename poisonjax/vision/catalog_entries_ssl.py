"""Catalog entries of the encoder backdoors (:mod:`poisonjax.vision.ssl.encoder_attacks`)."""
from poisonjax.catalog import Entry

_E = "poisonjax.vision.ssl.encoder_attacks"

ENTRIES = [
    Entry(name="badencoder", kind="attack", domain="vision", family="model_poisoning",
          paper="Jia, Liu & Gong, BadEncoder: backdoor attacks to pre-trained encoders in self-supervised learning, "
                "IEEE S&P 2022",
          where=f"{_E}:badencoder", objective="model", goal="backdoor", knowledge="white-box",
          stealthiness="visible-trigger", scope="transfer", study="tcore",
          notes="fine-tunes a SimCLR encoder: triggered shadow images embed like target-class reference images, "
                "clean embeddings kept (cosine utility losses)"),
    Entry(name="drupe", kind="attack", domain="vision", family="model_poisoning",
          paper="Tao et al., Distribution preserving backdoor attack in self-supervised learning, IEEE S&P 2024",
          where=f"{_E}:drupe", objective="model", goal="backdoor", knowledge="white-box",
          stealthiness="camouflaged", scope="transfer", study="tcore",
          notes="BadEncoder objective plus nearest-reference pull, concentration penalty and sliced-Wasserstein "
                "matching of poisoned to clean embeddings; fixed costs (simplified)"),
]
