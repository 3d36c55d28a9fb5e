"""Federated learning: vectorised client simulation, model-poisoning attacks, robust aggregators.

* :mod:`poisonjax.federated.simulation` -- ``build_simulation``, ``run_simulation``, ``federate_dataset``,
  ``RoundContext`` (what a defense sees), ``summarize``.
* :mod:`poisonjax.federated.aggregators` -- ``fedavg, krum, multi_krum, median, trimmed_mean, bulyan,
  rfa, fltrust, flame, foolsgold, dnc, centered_clipping, flare``, each
  ``(updates, state, key, *, context, ...) -> (aggregate, state, report)``.
* :mod:`poisonjax.federated.attacks` -- data poisoning (label flipping, BadNets) and model poisoning
  (sign flip, Gaussian, scaling, LIE, Min-Max, Min-Sum, IPM, Fang, adaptive hook).
* :mod:`poisonjax.federated.metrics` -- detection precision/recall/AUROC.
* :mod:`poisonjax.federated.models` -- MLP, CNN with penultimate ``features``.
"""
