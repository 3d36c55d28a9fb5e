"""Config for the GeminiGuard study (``poisonjax run geminiguard``): robustness vs non-IID strength.

GeminiGuard (Lyu et al., 2025) and the baselines under model-poisoning attacks, for several
Dirichlet alphas; main accuracy, backdoor ASR and detection precision/recall per cell, and main
accuracy vs alpha.

Variants:
* ``quick`` -- digits, 20 clients (20% malicious), alpha in {0.1, 0.5, 1.0}, 20 rounds, MLP;
  no attack, LIE and Min-Max; FedAvg, Median and GeminiGuard (a few minutes on a laptop CPU).
* ``paper`` -- the paper's style of grid: MNIST subset, 50 clients (20% malicious), alpha in
  {0.1, 0.5, 1.0}, 50 rounds, CNN; attacks LIE, Min-Max, Min-Sum, IPM, Fang, sign flip, scaling
  backdoor and the adaptive attack against GeminiGuard; baselines FedAvg, Krum, Multi-Krum, Trimmed
  mean, Median, FLTrust, FLAME, DnC, FLARE. (``dataset="cifar10"`` runs the CIFAR-10 subset.)

Attack names: ``none``, ``lie``, ``min_max``, ``min_sum``, ``ipm``, ``fang_krum``,
``fang_trimmed_mean``, ``sign_flip``, ``scaling`` (BadNets data + model replacement),
``adaptive`` (grid search against the defense in the loop; against GeminiGuard its objective also
penalises both GeminiGuard scores of the malicious clients).
"""
import ml_collections

from poisonjax.core.validation import check_choice

VARIANTS = ("quick", "paper")
ALL_ATTACKS = ("lie", "min_max", "min_sum", "ipm", "fang_trimmed_mean", "sign_flip", "scaling", "adaptive")
ALL_AGGREGATORS = ("fedavg", "krum", "multi_krum", "trimmed_mean", "median", "fltrust", "flame", "dnc", "flare",
                   "geminiguard")


def get_config(variant: str = "quick") -> ml_collections.ConfigDict:
    check_choice("variant", variant, VARIANTS)
    quick = variant == "quick"
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0
    # independent federations per cell (partition, init and client sampling); cells report the mean and
    # std over them, and the per-seed accuracy for paired comparisons (--config.seed=S runs just S)
    c.seeds = (0,) if quick else (0, 1, 2)
    c.dataset = "digits" if quick else "mnist"
    c.model = "mlp" if quick else "cnn"
    c.hidden = 64
    c.n_clients = 20 if quick else 50
    c.malicious_fraction = 0.2
    c.dirichlet_alphas = (0.1, 0.5, 1.0)    # Dirichlet concentrations of the non-IID partitions (grid)
    c.rounds = 20 if quick else 50
    c.client_fraction = 1.0
    c.local_epochs = 1
    c.batch_size = 16 if quick else 32
    c.local_lr = 0.1 if quick else 0.05
    c.server_optimizer = "fedavg"
    c.server_lr = 1.0
    c.aux_size = 100                   # server's auxiliary samples (latent analysis, FLTrust root data)
    c.backdoor_target = 0
    c.backdoor_fraction = 0.5
    c.trigger_size = 2
    c.eval_last = 5                    # accuracy = mean test accuracy of the last rounds
    c.checkpoint_every = 10            # rounds between checkpoints of an unfinished cell (resume mid-cell)
    c.attacks = ("none", "lie", "min_max") if quick else ("none",) + ALL_ATTACKS
    c.aggregators = ("fedavg", "median", "geminiguard") if quick else ALL_AGGREGATORS
    c.attack_kwargs = ml_collections.ConfigDict({
        "min_max": {"direction": "unit"},
        "min_sum": {"direction": "unit"},
        "ipm": {"epsilon": 0.5},
        "sign_flip": {"scale": 4.0},
        "adaptive": {"direction": "unit"},
    })
    c.trimmed_beta = 0.2
    # GeminiGuard hyperparameters (see poisonjax.federated.geminiguard)
    c.gg = ml_collections.ConfigDict({"fusion": "union", "tau_weight": 4.0, "tau_latent": 4.0, "clip": False,
                                      "coherence_floor": 0.05,
                                      "scale_invariant": True, "tau_sum": 6.0})
    c.adaptive_penalty = 10.0          # adaptive attack vs GeminiGuard: weight of the score penalty
    return c
