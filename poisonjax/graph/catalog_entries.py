"""Catalog entries for graph structure poisoning (:mod:`poisonjax.graph`)."""
from poisonjax.catalog import Entry

_G = dict(kind="attack", domain="graph", objective="data", goal="untargeted", scope="single-task",
          impact="performance", variability="static")

ENTRIES = [
    Entry(name="metattack_meta_self", family="bilevel", knowledge="gray-box",
          paper="Zügner & Günnemann, Adversarial Attacks on GNNs via Meta Learning, ICLR 2019",
          where="poisonjax.graph.attacks:metattack", stealthiness="edge-flip budget, degree LL test",
          study="metattack", **_G),
    Entry(name="metattack_a_meta_self", family="bilevel", knowledge="gray-box",
          paper="Zügner & Günnemann, ICLR 2019 (first-order A-Meta-Self)",
          where="poisonjax.graph.attacks:metattack", stealthiness="edge-flip budget", study="metattack", **_G),
    Entry(name="meta_pgd", family="bilevel", knowledge="gray-box",
          paper="Mujkanovic et al., Are Defenses for Graph Neural Networks Robust?, NeurIPS 2022 (Meta-PGD)",
          where="poisonjax.graph.attacks:meta_pgd", stealthiness="edge-flip budget", study="metattack", **_G),
    Entry(name="vgae_meta_attack", family="bilevel", knowledge="gray-box",
          paper="Meta-learning poisoning of VGAE link prediction (seed paper, 2025); Metattack-style",
          where="poisonjax.graph.vgae_attacks:vgae_meta_attack", stealthiness="edge-flip budget",
          study="vgae_attack", **_G),
    Entry(name="vgae_oneshot", family="bilevel", knowledge="white-box",
          paper="Seed paper (2025), authors' one-shot accumulated-gradient procedure",
          where="poisonjax.graph.vgae_attacks:vgae_oneshot", stealthiness="edge-flip budget",
          study="vgae_attack", **_G),
    Entry(name="pgd_topology", family="bilevel", knowledge="gray-box",
          paper="Xu et al., Topology Attack and Defense for GNNs, IJCAI 2019",
          where="poisonjax.graph.attacks:pgd_attack", stealthiness="edge-flip budget", study="vgae_attack", **_G),
    Entry(name="dice", family="heuristic", knowledge="gray-box",
          paper="Waniek et al., Hiding individuals and communities in a social network, Nat. Hum. Behav. 2018",
          where="poisonjax.graph.attacks:dice_attack", stealthiness="edge-flip budget", study="vgae_attack", **_G),
    Entry(name="random_flips", family="heuristic", knowledge="black-box", paper="random edge flips (baseline)",
          where="poisonjax.graph.attacks:random_attack", stealthiness="edge-flip budget", study="vgae_attack", **_G),
]
