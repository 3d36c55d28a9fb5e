"""Config for the WeiDetect study (``poisonjax run weidetect``): FL network-intrusion detection on
NSL-KDD under label-flipping and model-poisoning attacks.

WeiDetect (Sameera et al., 2025) scores every client model on a server validation set and keeps the
clients whose exponentiated-Weibull CDF clears a threshold. Metrics per cell: target-class recall
(the recall of ``target_class`` -- the attack class that targeted flipping relabels as normal),
macro-F1 and accuracy of the global model on KDDTest+, and detection precision/recall.

Variants:
* ``quick`` -- binary framing, 20 clients (20% malicious), Dirichlet alpha 0.5, 10 rounds of 3 local
  epochs, MLP on a stratified 8,000-row subsample of KDDTrain+_20Percent (test: 5,000 rows of
  KDDTest+); no attack, targeted and untargeted label flipping, Min-Max; FedAvg, Median, WeiDetect.
* ``paper`` -- binary and 5-class framings, 50 clients, the full files, 30 rounds; attacks: targeted and
  untargeted flipping, LIE, Min-Max, sign flip, IPM; baselines FedAvg, Krum, Multi-Krum, Trimmed mean,
  Median, FLTrust, FLAME, DnC, FLARE.
"""
import ml_collections

from poisonjax.core.validation import check_choice

VARIANTS = ("quick", "paper")
ALL_ATTACKS = ("targeted_label_flip", "label_flip", "lie", "min_max", "sign_flip", "ipm")
ALL_AGGREGATORS = ("fedavg", "krum", "multi_krum", "trimmed_mean", "median", "fltrust", "flame", "dnc", "flare",
                   "weidetect")


def get_config(variant: str = "quick") -> ml_collections.ConfigDict:
    check_choice("variant", variant, VARIANTS)
    quick = variant == "quick"
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0
    c.framings = ("binary",) if quick else ("binary", "5class")
    c.max_train = 8000 if quick else 0          # 0 = all rows
    c.max_test = 5000 if quick else 0
    c.hidden = 64
    c.n_clients = 20 if quick else 50
    c.malicious_fraction = 0.2
    c.dirichlet_alpha = 0.5                     # Dirichlet concentration of the non-IID partition
    c.rounds = 10 if quick else 30
    c.client_fraction = 1.0
    # several local epochs: with one epoch a flipping client barely moves from the global model (the
    # attack is then both harmless and invisible); FL-IDS papers train clients for a few epochs
    c.local_epochs = 3
    c.batch_size = 32
    c.local_lr = 0.1
    c.server_optimizer = "fedavg"
    c.server_lr = 1.0
    c.val_per_class = 100                       # server validation set: up to this many rows per class
    # target class per framing (binary: 1 = attack; 5-class: 1 = DoS); flipped to class 0 (normal)
    c.target_class = ml_collections.ConfigDict({"binary": 1, "5class": 1})
    c.eval_last = 3
    c.checkpoint_every = 10                     # rounds between checkpoints of an unfinished cell
    c.attacks = ("none", "targeted_label_flip", "label_flip", "min_max") if quick else ("none",) + ALL_ATTACKS
    c.aggregators = ("fedavg", "median", "weidetect") if quick else ALL_AGGREGATORS
    c.attack_kwargs = ml_collections.ConfigDict({
        "min_max": {"direction": "unit"},
        "sign_flip": {"scale": 4.0},
        "ipm": {"epsilon": 0.5},
    })
    c.trimmed_beta = 0.2
    # WeiDetect: metric "auto" (target-class recall vs targeted flipping, macro-F1 otherwise), "macro_f1"
    # or "target_recall" (uses target_class); selection "cdf" (threshold on F) or "top_k" (0 = n - f)
    c.wd = ml_collections.ConfigDict({"metric": "auto", "selection": "cdf", "threshold": 0.2, "top_k": 0})
    return c
