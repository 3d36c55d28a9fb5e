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
from typing import Dict, List, Optional

DOMAINS = ("vision", "graph", "recsys", "federated", "llm", "core")
FAMILIES = ("heuristic", "label_flipping", "feature_space", "bilevel", "gradient_matching",
            "influence", "generative", "model_poisoning", "defense")
OBJECTIVES = ("label", "input", "data", "model", "-")
GOALS = ("untargeted", "targeted", "backdoor", "-")
KNOWLEDGE = ("white-box", "gray-box", "black-box", "-")
IMPACTS = ("performance", "robustness", "fairness", "privacy", "-")
VARIABILITY = ("static", "dynamic", "-")
STEALTHINESS = ("clean-label", "dirty-label", "visible-trigger", "imperceptible-trigger", "camouflaged",
                "budget-constrained", "passive", "-")
"""How the attack hides: labels untouched (clean-label) or changed (dirty-label); a visible or an
imperceptible trigger; statistics kept within benign ranges / cover samples (camouflaged); a hard
perturbation budget only (budget-constrained, e.g. edge flips); no active manipulation (passive)."""
SCOPES = ("single-task", "transfer", "federated", "retrieval", "multi-model", "-")
"""What the attack (or defense) applies to: one task trained from scratch, transfer learning on frozen
features, federated learning (horizontal or vertical), retrieval (hashing), a panel of models."""
SURVEY_FAMILIES = ("heuristic", "label_flipping", "feature_space", "bilevel", "influence", "generative")
"""The survey's method families (Zhao et al. 2025, Sec. 4)."""
FAMILY_TO_SURVEY = {"gradient_matching": "bilevel", "model_poisoning": "heuristic", "defense": "-"}
"""The one table mapping poisonjax's extra families onto the survey's: gradient matching approximates the
bilevel problem (the survey lists Witches' Brew under bilevel); federated model poisoning (sign flips,
scaling, LIE, Fang) crafts updates by heuristics or one-level optimisation; defenses are not attacks.
Every other family is its own survey family."""
AXES = ("objective", "goal", "knowledge", "stealthiness", "scope", "impact", "variability")
"""The survey's seven axes (Entry fields), each with a controlled vocabulary (:data:`VOCABULARY`)."""
VOCABULARY = {"objective": OBJECTIVES, "goal": GOALS, "knowledge": KNOWLEDGE, "stealthiness": STEALTHINESS,
              "scope": SCOPES, "impact": IMPACTS, "variability": VARIABILITY}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One attack or defense. ``kind`` is "attack" or "defense"; ``where`` is the import path
    (``module:function``) of its implementation; ``study`` the ``poisonjax run`` study that uses it.
    The seven axes take values from :data:`VOCABULARY` only (checked at creation); ``notes`` holds any
    free-text detail (e.g. "bounded perturbation (L-inf)")."""

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
    notes: str = ""

    @property
    def survey_family(self) -> str:
        """The survey's family of this entry (:data:`FAMILY_TO_SURVEY`), ``"-"`` for defenses."""
        return FAMILY_TO_SURVEY.get(self.family, self.family)

    def __post_init__(self):
        for field, allowed in (("kind", ("attack", "defense")), ("domain", DOMAINS), ("family", FAMILIES),
                               *VOCABULARY.items()):
            if getattr(self, field) not in allowed:
                raise ValueError(f"catalog entry {self.name!r}: {field}={getattr(self, field)!r} not in {allowed}; "
                                 "put free-text detail in notes=")


def entries(domain: Optional[str] = None, family: Optional[str] = None, kind: Optional[str] = None,
            axes: Optional[Dict[str, str]] = None) -> List[Entry]:
    """All registered entries, optionally filtered by domain, family (a poisonjax family, or a survey
    family, which also matches the families mapped onto it by :data:`FAMILY_TO_SURVEY`), kind and
    axis values (``axes={"goal": "backdoor"}``)."""
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
        out = [e for e in out if e.family == family or e.survey_family == family]
    if kind is not None:
        out = [e for e in out if e.kind == kind]
    for axis, value in (axes or {}).items():
        if axis not in VOCABULARY:
            raise ValueError(f"unknown axis {axis!r}; expected one of {list(AXES)}")
        if value not in VOCABULARY[axis]:
            raise ValueError(f"unknown {axis} {value!r}; expected one of {list(VOCABULARY[axis])}")
        out = [e for e in out if getattr(e, axis) == value]
    return sorted(out, key=lambda e: (e.domain, e.kind, e.name))
