"""Config for the federated-unlearning study (``poisonjax run soul``): SoUL against retraining, FedEraser,
projected gradient ascent and fine-tuning only.

Variants:
* ``quick`` -- scikit-learn digits, MLP (64 hidden units), 10 clients, 30 FedAvg rounds, both scenarios
  (backdoored clients; one client's right to be forgotten) under IID and Dirichlet 0.5 / 0.1, the
  p x alpha sweep on the backdoor/IID cell (a few minutes on a laptop CPU).
* ``paper`` -- the MNIST subset (``--config.dataset=cifar10_20k`` for the CIFAR-10 20k set), the CNN,
  10 clients, 50 rounds, every cell swept.

The clients stand for SoUL's drones; there is no drone data.
"""
import ml_collections

from poisonjax.core.validation import check_choice

VARIANTS = ("quick", "paper")


def get_config(variant: str = "quick") -> ml_collections.ConfigDict:
    check_choice("variant", variant, VARIANTS)
    quick = variant == "quick"
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0
    c.dataset = "digits" if quick else "mnist"     # digits | mnist | cifar10 | cifar10_20k
    c.model = "mlp" if quick else "cnn"
    c.hidden = 64
    c.channels = (16, 32)
    c.num_clients = 10
    c.rounds = 30 if quick else 50                 # original training = retraining rounds (T)
    c.local_epochs = 2
    c.batch_size = 8 if quick else 32
    c.local_lr = 0.05
    c.aux_size = 100                               # the server's clean proxy set
    c.max_client_size = 0                          # 0 = no cap
    c.client_chunk_size = 0                        # 0 = all clients at once
    # scenarios x partitions: "iid" or "dirichlet:<dirichlet_alpha>"
    c.scenarios = ("backdoor", "forget_client")
    c.partitions = ("iid", "dirichlet:0.5", "dirichlet:0.1")
    # backdoor scenario: BadNets clients to unlearn; precondition asr >= min_asr on the trained model
    c.malicious_fraction = 0.2
    c.backdoor_target = 0
    c.backdoor_fraction = 0.8
    c.trigger_size = 3
    c.min_asr = 0.8
    # right to be forgotten: this benign client leaves
    c.forget_client = 0
    # SoUL
    c.soul = ml_collections.ConfigDict()
    # defaults OUTSIDE the paper's grid (inside it, p <= 10% and alpha >= 0.3, the backdoor survives the
    # fine-tuning: README), chosen by experiments/soul.py:select_soul_config on a backdoor/IID sweep (max
    # retain_accuracy - forget_accuracy among points within select_retain_tolerance of the best retained
    # accuracy; clients' training data only, no test data): quick on the digits sweep of this study, paper on a
    # MNIST-CNN sweep (README)
    c.soul.prune_fraction = 0.3 if quick else 0.2
    c.soul.blend_alpha = 0.0
    c.soul.select_retain_tolerance = 0.01
    c.soul.finetune_rounds = 5                     # R (also fine-tuning-only's and PGA's post-training)
    c.soul.importance_reference = "clients"        # clients | server (proxy set)
    c.soul.eps_relative = 0.1                      # ratio floor, relative to the layer's mean retain activation
    c.soul.ranking = "global"                      # global: top p of all units | layer: top p of each layer
    # the paper's grid p in {1, 2, 5, 10}%, alpha in {0.3, 0.5, 0.7} (with 64 hidden units p = 1% and 2% both
    # prune round(p * 64) = 1 unit), extended by p in {20, 30}% and alpha = 0
    c.sweep_prune_fractions = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
    c.sweep_blend_alphas = (0.0, 0.3, 0.5, 0.7)
    c.sweep_cells = ("backdoor/iid",) if quick else ("all",)   # "<scenario>/<partition>" or "all"
    # FedEraser
    c.federaser = ml_collections.ConfigDict()
    c.federaser.delta_t = 2
    c.federaser.calibration_ratio = 0.5
    # projected gradient ascent (Halimi et al. 2022)
    c.pga = ml_collections.ConfigDict()
    c.pga.lr = 0.05
    c.pga.epochs = 5
    c.pga.batch_size = 32
    c.pga.radius_fraction = 1.0 / 3.0
    c.pga.tau = 0.7
    return c
