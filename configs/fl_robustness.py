"""Config for the federated robustness grid (``poisonjax run fl_robustness``): attacks x aggregators.

Variants:
* ``quick`` -- digits, 20 clients (``n_clients``), 20% malicious, ``dirichlet_alpha`` = 0.5, 20 rounds, MLP; 7 attacks x
  9 aggregators (a few minutes on a laptop CPU).
* ``paper`` -- MNIST subset, 100 clients, 20% malicious, alpha = 0.5, 100 rounds, CNN; every attack
  and aggregator (the FLPoison / Shejwalkar-style evaluation grid).

Attack names: ``none``, ``label_flip``, ``targeted_label_flip``, ``badnets`` (data poisoning),
``scaling`` (BadNets data + model replacement), ``sign_flip``, ``gaussian``, ``lie``, ``min_max``,
``min_sum``, ``ipm``, ``fang_krum``, ``fang_trimmed_mean``, ``adaptive`` (model poisoning).
"""
import ml_collections

from poisonjax.core.validation import check_choice

VARIANTS = ("quick", "paper")

ALL_ATTACKS = ("none", "label_flip", "targeted_label_flip", "badnets", "scaling", "sign_flip", "gaussian", "lie",
               "min_max", "min_sum", "ipm", "fang_krum", "fang_trimmed_mean", "adaptive")
ALL_AGGREGATORS = ("fedavg", "krum", "multi_krum", "median", "trimmed_mean", "bulyan", "rfa", "fltrust", "flame",
                   "foolsgold", "dnc", "centered_clipping", "flare")


def get_config(variant: str = "quick") -> ml_collections.ConfigDict:
    check_choice("variant", variant, VARIANTS)
    quick = variant == "quick"
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0
    c.dataset = "digits" if quick else "mnist"
    c.model = "mlp" if quick else "cnn"
    c.hidden = 64
    c.n_clients = 20 if quick else 100
    c.malicious_fraction = 0.2
    c.partition = "dirichlet"
    c.dirichlet_alpha = 0.5            # Dirichlet concentration of the non-IID partition
    c.rounds = 20 if quick else 100
    c.client_fraction = 1.0 if quick else 0.2
    c.local_epochs = 1
    c.batch_size = 8 if quick else 32
    c.local_lr = 0.1 if quick else 0.05
    c.server_optimizer = "fedavg"
    c.server_lr = 1.0
    c.aux_size = 100                   # server's clean auxiliary / root data (FLTrust, FLARE)
    c.backdoor_target = 0
    c.backdoor_fraction = 0.5          # of each malicious client's local data
    c.trigger_size = 2
    c.flip_source = 1                  # targeted label flipping: source -> target
    c.flip_target = 7
    c.eval_last = 3                    # accuracy = mean test accuracy over the last rounds
    c.checkpoint_every = 10            # rounds between checkpoints of an unfinished cell (resume mid-cell)
    c.client_chunk_size = 0            # 0 = all clients of a round at once
    c.attacks = (("none", "label_flip", "scaling", "sign_flip", "lie", "min_max", "ipm") if quick else ALL_ATTACKS)
    c.aggregators = (("fedavg", "krum", "median", "trimmed_mean", "rfa", "fltrust", "flame", "dnc", "flare")
                     if quick else ALL_AGGREGATORS)
    # per-attack / per-aggregator hyperparameters (attack kwargs go to poisonjax.federated.attacks)
    c.attack_kwargs = ml_collections.ConfigDict({
        # boosted sign flipping -4*delta: with 20% attackers an unboosted -delta only slows FedAvg down
        "sign_flip": {"scale": 4.0},
        "min_max": {"direction": "unit"},
        "min_sum": {"direction": "unit"},
        "gaussian": {"std": 1.0},
        "ipm": {"epsilon": 0.5},
    })
    c.trimmed_beta = 0.2
    return c


def sweep():
    """Grid for ``poisonjax sweep fl_robustness``: non-IID strength x attacker fraction."""
    return {"dirichlet_alpha": [0.1, 0.5, 1.0, 100.0], "malicious_fraction": [0.1, 0.2, 0.3]}
