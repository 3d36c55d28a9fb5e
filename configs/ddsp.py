"""Config for the DDSP study (``poisonjax run ddsp --config.dataset=beauty``).

DDSP: diversity-aware dual-promotion poisoning of sequential recommenders (SIGIR 2025,
arXiv 2504.06586); see :mod:`poisonjax.recsys.attacks`.

Variants:
* ``quick``: a reproducible subset of 2,000 sampled Beauty users (3-core after subsampling:
  1,379 users, 1,651 items), a 1-block SASRec (d=32, 20 epochs), K=2 victim seeds, 4 targets at
  evenly spaced popularity ranks, 2% fake users; a few minutes on a laptop CPU (all 37 x 2 victims
  are trained in one vmapped call). 2% rather than 1%: with ~16 fake users the 1% effect is small
  next to seed noise on such a subset. The 20-epoch victims are under-trained (clean test
  NDCG@10 0.012; 0.018 at 50 epochs; 0.030 with ``--config.train.epochs=150
  --config.train.batch_size=128 --config.train.learning_rate=3e-3``): enough to compare promotion,
  not accuracy costs. Under-trained victims gain accuracy from *any* 2% extra sequences (+0.003
  NDCG@10 from duplicated real users or target-free random ones), which swamps an attack's cost;
  measure stealth with the 150-epoch setting and ``--config.n_victims=6``.
* Both variants draw each fake user's length from the real length distribution
  (``attack.length_dist="real"``, clipped to ``model.max_len``); ``"fixed"`` gives every fake user
  ``fake_length`` items (0 = the mean real length), the issue's default wording.
* ``paper``: the full 5-core files, SASRec 2 blocks (d=64, max_len 50), Adam 2e-3, batch 256, trained
  to convergence (early stopping on the leave-one-out validation item: full-ranking NDCG@10 every 5
  epochs, patience 4 evaluations, at most 200 epochs, the best model kept; the attacker's surrogate
  stops on its own held-out last *training* item), K=5 seeds, 25 targets (as Yue et al.), fake-user
  ratios 1% (main table), 2% and 5%. Victims train in groups of ``train_group`` datasets through
  ``core.runner`` with checkpoints under ``<workdir>/checkpoints`` (a killed run resumes mid-cell);
  ``results.json`` is rewritten after every finished ratio.
"""
import ml_collections

from poisonjax.core.validation import check_choice

VARIANTS = ("quick", "paper")
METHODS = ("random", "popular", "bandwagon", "repetition", "yue", "greedy_plain", "ddsp",
           "ddsp_no_dual", "ddsp_no_div")


def get_config(variant: str = "quick") -> ml_collections.ConfigDict:
    check_choice("variant", variant, VARIANTS)
    quick = variant == "quick"
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0
    c.dataset = "beauty"                     # "beauty", "video", or "synthetic" (no data files needed)
    c.synthetic = ml_collections.ConfigDict(dict(num_users=800, num_items=100, mean_length=8.0, zipf_a=1.2))
    c.data_dir = ""                          # "" = $POISONJAX_DATA
    c.num_users = 2000 if quick else 0       # 0 = all users
    c.min_count = 3 if quick else 5          # k-core
    c.model = ml_collections.ConfigDict(dict(name="sasrec", max_len=15 if quick else 50, hidden=32 if quick else 64,
                                             num_blocks=1 if quick else 2, num_heads=1, dropout=0.2))
    c.train = ml_collections.ConfigDict(dict(epochs=20 if quick else 200, batch_size=256,
                                             learning_rate=5e-3 if quick else 2e-3, loss="bce", num_negatives=100,
                                             # paper: train to convergence, early stopping on the validation
                                             # item (epochs = max epochs; evaluate every eval_every epochs,
                                             # stop after `patience` evaluations without improvement of
                                             # full-ranking validation NDCG@10, keep the best model);
                                             # checkpoints every checkpoint_every epochs (resume mid-cell)
                                             early_stopping=not quick, eval_every=5, patience=4,
                                             val_users=0, checkpoint_every=25, victim_chunk=0))
    c.n_victims = 2 if quick else 5        # K seeds, trained with vmap
    c.surrogate_seed = 1234
    c.surrogate_model = ""                   # "" = the victim's architecture; else "sasrec"/"gru4rec"
    c.attack = ml_collections.ConfigDict(dict(
        fake_ratio=0.02 if quick else 0.01,  # main table
        extra_ratios=() if quick else (0.02, 0.05),
        fake_length=0,                       # 0 = the average real sequence length
        # "real": each fake user's length is drawn from the real length distribution (clipped to
        # 2..max_fake_length, 0 = model.max_len), so a detector cannot flag fakes by length alone;
        # "fixed": every fake sequence has fake_length items (the default wording)
        length_dist="real", max_fake_length=0,
        num_targets=4 if quick else 25,
        targets=(),                          # explicit target item ids (file ids); () = evenly spaced ranks
        exclude_top=0,
        methods=METHODS,
        num_preferred=10, tau=0.1, beta=1.0,
        alpha=1.0, beta_utility=1.0, target_bonus=100.0, max_target_per_seq=1, max_target_share=0.25,
        within_penalty=1.0, global_penalty=0.5, max_item_share=0.1, num_candidates=64, temperature=1.0))
    c.eval_chunk = 512
    c.train_group = 0 if quick else 8        # datasets per vmapped training call (0 = all at once)
    return c


def sweep():
    """Grid for ``poisonjax sweep ddsp``: fake-user ratio x victim model."""
    return {"attack.fake_ratio": [0.005, 0.01, 0.02], "model.name": ["sasrec", "gru4rec"]}
