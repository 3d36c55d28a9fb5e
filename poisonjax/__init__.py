"""poisonjax: a JAX research library for data-poisoning attacks and defenses.

Rooms: :mod:`poisonjax.core` (the engine), :mod:`poisonjax.data`, :mod:`poisonjax.vision`,
:mod:`poisonjax.graph`, :mod:`poisonjax.recsys`, :mod:`poisonjax.federated`, :mod:`poisonjax.llm`;
:mod:`poisonjax.catalog` lists every attack and defense; :mod:`poisonjax.cli` is the ``poisonjax`` command.
"""
__version__ = "0.1.0"
