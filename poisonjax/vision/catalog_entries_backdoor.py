"""Catalog entries for the heuristic image poisoning in :mod:`poisonjax.vision.triggers`."""
from poisonjax.catalog import Entry

ENTRIES = [
    Entry(name="badnets", kind="attack", domain="vision", family="heuristic",
          paper="Gu et al., BadNets, 2017 (arXiv:1708.06733)", where="poisonjax.vision.triggers:badnets_poison",
          objective="data", goal="backdoor", knowledge="black-box", stealthiness="visible-trigger", notes="visible patch, dirty label",
          scope="single-task", impact="performance", variability="static", study="badnets"),
    Entry(name="label_flip", kind="attack", domain="vision", family="label_flipping",
          paper="Biggio et al., Poisoning attacks against SVMs, ICML 2012 (random flips as baseline)",
          where="poisonjax.vision.triggers:flip_labels", objective="label", goal="untargeted",
          knowledge="black-box", stealthiness="dirty-label", notes="dirty label", scope="single-task", study="badnets"),
]
