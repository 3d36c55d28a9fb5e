"""Every attack and defense, tagged with the data-poisoning survey's taxonomy.

The axes follow Zhao et al. 2025 ("Data Poisoning in Deep Learning: A Survey"):
objective (label / input / data modification), goal (untargeted / targeted / backdoor),
knowledge (white / gray / black-box), stealthiness (clean-label, bounded-perturbation, ...),
scope (single-task, transfer, federated, ...), impact (performance / robustness / fairness) and
variability (static / dynamic), plus the method family (heuristic, label_flipping, feature_space,
bilevel, gradient_matching, influence, generative, model_poisoning), the domain and the paper.

Each domain room lists its entries in ``poisonjax/<domain>/catalog_entries*.py`` modules as
``ENTRIES = [Entry(...), ...]``; :func:`entries` collects them (``poisonjax list``).
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import List, Optional

DOMAINS = ("vision", "graph", "recsys", "federated", "llm", "core")
FAMILIES = ("heuristic", "label_flipping", "feature_space", "bilevel", "gradient_matching",
            "influence", "generative", "model_poisoning", "defense")
OBJECTIVES = ("label", "input", "data", "model", "-")
GOALS = ("untargeted", "targeted", "backdoor", "-")
KNOWLEDGE = ("white-box", "gray-box", "black-box", "-")
IMPACTS = ("performance", "robustness", "fairness", "privacy", "-")
VARIABILITY = ("static", "dynamic", "-")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One attack or defense. ``kind`` is "attack" or "defense"; ``where`` is the import path
    (``module:function``) of its implementation; ``study`` the ``poisonjax run`` study that uses it."""

    name: str
    kind: str
    domain: str
    family: str
    paper: str
    where: str
    objective: str = "-"
    goal: str = "-"
    knowledge: str = "-"
    stealthiness: str = "-"
    scope: str = "-"
    impact: str = "performance"
    variability: str = "static"
    study: str = ""

    def __post_init__(self):
        for field, allowed in (("kind", ("attack", "defense")), ("domain", DOMAINS), ("family", FAMILIES),
                               ("objective", OBJECTIVES), ("goal", GOALS), ("knowledge", KNOWLEDGE),
                               ("impact", IMPACTS), ("variability", VARIABILITY)):
            if getattr(self, field) not in allowed:
                raise ValueError(f"catalog entry {self.name!r}: {field}={getattr(self, field)!r} not in {allowed}")


def entries(domain: Optional[str] = None, family: Optional[str] = None, kind: Optional[str] = None) -> List[Entry]:
    """All registered entries, optionally filtered by domain, family and kind."""
    out: List[Entry] = []
    import pkgutil
    for d in DOMAINS:
        try:
            pkg = importlib.import_module(f"poisonjax.{d}")
        except ModuleNotFoundError:
            continue
        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
            if info.name.startswith("catalog_entries"):
                mod = importlib.import_module(f"poisonjax.{d}.{info.name}")
                out.extend(getattr(mod, "ENTRIES", []))
    if domain is not None:
        if domain not in DOMAINS:
            raise ValueError(f"unknown domain {domain!r}; expected one of {list(DOMAINS)}")
        out = [e for e in out if e.domain == domain]
    if family is not None:
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r}; expected one of {list(FAMILIES)}")
        out = [e for e in out if e.family == family]
    if kind is not None:
        out = [e for e in out if e.kind == kind]
    return sorted(out, key=lambda e: (e.domain, e.kind, e.name))
