"""Config for the OPUS-VFL study (``poisonjax run opus_vfl``): vertical FL under label-inference,
feature-inference and backdoor attacks, with vanilla VFL, fixed DP and OPUS-VFL (issue 19).

Variants:
* ``quick`` -- MNIST subset (4 parties, 7-pixel strips), 400 rounds, 2,000 test images; a few minutes on a
  busy 2-core CPU (most of it compilation). ``dataset="digits"`` is the built-in fallback (8x8 images, 2-pixel
  strips) when the shared data are absent.
* ``paper`` -- MNIST (10,000 test images) and the CIFAR-10 20k set (4 parties, 8-pixel strips), 1,500 rounds.
  CIFAR-100 (in the paper) is not available here.

DP: delta = 1e-5, per-sample L2 clip Delta = ``clip_norm``. The classic bound sigma = sqrt(2 ln(1.25/delta))
Delta / eps only holds for eps in (0, 1]; the default ``mechanism="analytic"`` (Balle & Wang 2018) is exact for
any eps and lets the parties choose eps in [``eps_min``, ``eps_max``] = [0.5, 10].
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
    c.datasets = ("mnist",) if quick else ("mnist", "cifar10_20k")
    c.n_test = 2000 if quick else 10000
    c.num_parties = 4
    c.strip_width = 0                  # pixel columns per party; 0 = width / num_parties (MNIST 7, CIFAR-10 8)
    c.hidden = 64                      # bottom MLP width (max over parties)
    c.hidden_widths = ()               # per-party widths (heterogeneous cost); () = all `hidden`
    c.embed_dim = 8
    c.top_hidden = 64
    c.val_size = 500                   # held-out rows for the leave-one-out contribution
    c.rounds = 400 if quick else 1500  # one round = one mini-batch exchange
    c.batch_size = 128
    c.val_batch = 256
    c.lr = 0.05
    c.momentum = 0.9
    # DP and OPUS-VFL
    c.mechanism = "analytic"
    c.delta = 1e-5
    c.clip_norm = 1.0                  # Delta
    c.eps = 4.0                        # OPUS's initial eps (fixed DP uses OPUS's average eps instead)
    c.eps_min = 0.5
    c.eps_max = 10.0
    c.eps_lr = 1.0                     # step size of the party-side eps update
    c.fd_h = 0.05                      # finite-difference step for d c_k / d eps_k
    c.eps_warmup = 50                  # rounds before parties start moving eps (contributions are ~0 at init)
    c.alpha = 1.0                      # contribution weight in R_k
    c.beta = 0.01                      # privacy weight in R_k (0.1 lets the privacy term outweigh contribution)
    c.tau = 1.0                        # reward budget per round
    c.eval_noise = False               # noise test-time queries too? (accuracy_noised_inference reports it)
    c.grad_dp = False                  # True: the active party also clips + noises the gradients it returns (VS.md)
    c.grad_clip = 1.0                  # per-sample L2 bound G of a returned gradient (B x dL/dh)
    c.drop_mode = "zero"               # LOO: a dropped party's embedding is "zero" or "mean" (imputed)
    c.cost_scale = 0.1                 # sum of passive parties' costs (cost_k proportional to bottom FLOPs)
    c.noise_party_check = True         # extra OPUS run in which the last party's strip is pure noise
    # attacks
    c.lia_parties = ()                 # passive attackers for model completion; () = every passive party
    c.lia_aux_per_class = 4            # 4 x 10 = 40 labelled auxiliary samples
    c.lia_unlabelled = 2000
    c.lia_steps = 400
    c.lia_finetune_bottom = True       # Fu et al. fine-tune the bottom model with the new head
    c.lia_floor = True                 # also the attack from a never-trained bottom (the floor of any defense)
    c.lia_active_party = 1
    c.lia_active_scale = 3.0           # malicious local optimizer: update multiplier
    c.fia_party = 1                    # passive party whose strip the active party reconstructs
    c.fia_rows = 2000
    c.fia_steps = 1000
    c.fia_aux = 40                     # rows whose full features the attacker knows (0: none)
    c.fia_w_embed = 0.1
    c.fia_w_out = 0.1
    c.fia_w_prior = 1.0
    c.fia_w_sup = 1.0
    c.bd_party = 2
    c.target_class = 0
    c.n_known = 10                     # known target-class training IDs (Liu et al. 2020)
    c.bd_gamma = 5.0
    c.trigger_size = 3
    return c
