"""Catalog entries of the gradient-matching room (Witches' Brew, PADHASH, baselines)."""
from poisonjax.catalog import Entry

ENTRIES = [
    Entry(name="witches_brew", kind="attack", domain="vision", family="gradient_matching",
          paper="Geiping et al., Witches' Brew: Industrial Scale Data Poisoning via Gradient Matching, ICLR 2021",
          where="poisonjax.core.gradient_matching:gradient_matching_attack", objective="input", goal="targeted",
          knowledge="gray-box", stealthiness="clean-label", notes="clean-label, bounded perturbation (L-inf)", scope="single-task",
          impact="performance", variability="static", study="witches_brew"),
    Entry(name="padhash", kind="attack", domain="vision", family="gradient_matching",
          paper="Li et al., Clean Image May be Dangerous: Data Poisoning Attacks Against Deep Hashing, IEEE TMM 2025",
          where="poisonjax.core.gradient_matching:strict_alignment_loss", objective="input", goal="targeted",
          knowledge="gray-box", stealthiness="clean-label", notes="clean-label, bounded perturbation (L-inf), clean queries",
          scope="retrieval", impact="performance", variability="static", study="padhash"),
    Entry(name="poison_frogs", kind="attack", domain="vision", family="feature_space",
          paper="Shafahi et al., Poison Frogs! Targeted Clean-Label Poisoning Attacks on Neural Networks, NeurIPS 2018",
          where="poisonjax.vision.witches_brew:feature_collision_attack", objective="input", goal="targeted",
          knowledge="white-box", stealthiness="clean-label", notes="clean-label, bounded perturbation (L-inf)",
          scope="transfer", impact="performance", variability="static",
          study="witches_brew"),
    Entry(name="random_noise_poisons", kind="attack", domain="vision", family="heuristic",
          paper="baseline: random +-eps noise on the same poison budget (Geiping et al. 2021, Sec. 5)",
          where="poisonjax.vision.witches_brew:random_noise_deltas", objective="input", goal="targeted",
          knowledge="black-box", stealthiness="clean-label", notes="clean-label, bounded perturbation (L-inf)", scope="single-task",
          impact="performance", variability="static", study="witches_brew"),
]
