"""Tiny configs of the studies for the kill-and-resume tests (``tests/test_study_resume.py``), each small
enough to run in a few minutes on a CPU and long enough that its cells write runner checkpoints before
they finish.

``SPECS[study] = (config_fn, kill_under, min_step)``: the test kills the child once a checkpoint of step
>= ``min_step`` exists in some ``checkpoints/`` folder below ``workdir/kill_under``.
"""
from __future__ import annotations

import importlib


def _base(study, variant="quick"):
    return importlib.import_module(f"configs.{study}").get_config(variant)


def soul():
    c = _base("soul")
    c.rounds = 12                      # the original federation checkpoints at round 10 (runner chunks of 10)
    c.num_clients = 6
    c.hidden = 16
    c.malicious_fraction = 0.34
    c.scenarios = ("backdoor",)
    c.partitions = ("iid",)
    c.soul.finetune_rounds = 2
    c.pga.epochs = 1
    c.sweep_prune_fractions = (0.1,)
    c.sweep_blend_alphas = (0.5,)
    c.sweep_cells = ("backdoor/iid",)
    return c


def vgae_attack():
    c = _base("vgae_attack")
    c.attacks = ("meta_self", "random")
    c.inner_steps = 10
    c.n_victims = 1
    c.victim.epochs = 10
    c.steps_per_budget = 6             # 6 meta-gradient steps, a checkpoint after each
    c.pgd_steps = 5
    c.extra_rates = ()
    c.progress = False
    return c


def classics():
    c = _base("classics")
    c.families = ("feature_space",)
    fs = c.feature_space
    fs.trials, fs.steps, fs.n_surrogates, fs.blackbox = 2, 60, 1, False   # chunks of 50 steps: checkpoints 50, 60
    return c


def opus_vfl():
    c = _base("opus_vfl")
    c.datasets = ("digits",)
    c.n_test = 200
    c.rounds = 120                     # chunks of 50 rounds: checkpoints 50, 100, 120
    c.hidden = 16
    c.top_hidden = 16
    c.val_size = 200
    c.batch_size = 64
    c.val_batch = 64
    c.eps_warmup = 20
    c.noise_party_check = False
    c.lia_floor = False
    c.lia_unlabelled = 200
    c.lia_steps = 10
    c.fia_rows = 200
    c.fia_steps = 10
    c.fia_aux = 20
    return c


def geminiguard():
    c = _base("geminiguard")
    c.seeds = (0, 1)
    c.dirichlet_alphas = (0.5,)
    c.attacks = ("lie",)
    c.aggregators = ("geminiguard",)
    c.n_clients = 8
    c.hidden = 16
    c.rounds = 10
    c.checkpoint_every = 2
    c.eval_last = 2
    return c


def weidetect():
    c = _base("weidetect")
    c.attacks = ("targeted_label_flip",)
    c.aggregators = ("weidetect",)
    c.max_train = 1500
    c.max_test = 500
    c.n_clients = 8
    c.hidden = 16
    c.local_epochs = 1
    c.rounds = 10
    c.checkpoint_every = 2
    c.eval_last = 2
    return c


def raven():
    """Killed during the families' LM training (runner checkpoints at steps 100 and 200)."""
    c = _base("raven")
    c.families = (("famA", 16, 0, 0, 1.0), ("famB", 16, 1, 1, 0.8), ("famC", 16, 2, 2, 1.0))
    c.transfer_families = (("famE", 16, 10, 10, 1.0), ("famF", 16, 11, 11, 0.9))
    c.train.steps = 200                # one vmapped LM group; runner chunks of 100: checkpoints 100, 200
    c.lora.steps = 60
    c.implant_sizes = (25,)
    c.n_targets = 1
    c.n_samples = 4
    c.corpus.answers_per_prompt = 2
    c.entail.n_pairs = 1000
    c.entail.steps = 30
    c.rag.enabled = False
    c.transfer_max_size = 3
    c.transfer_max_panels = 3
    c.progress = False
    return c


def badnets():
    c = _base("badnets")
    c.n_victims = 2
    c.attacks = ("badnets",)
    c.train.epochs = 8
    c.train.channels = (8, 8)
    c.train.hidden = 16
    c.checkpoint_every = 2             # a checkpoint every 2 epochs of the cell's victim training
    return c


def fl_robustness():
    c = _base("fl_robustness")
    c.n_clients = 8
    c.hidden = 16
    c.rounds = 10
    c.checkpoint_every = 2
    c.eval_last = 2
    c.attacks = ("sign_flip",)
    c.aggregators = ("median",)
    return c


SPECS = {
    "soul": (soul, "runs", 10),
    "vgae_attack": (vgae_attack, "cells", 2),
    "classics": (classics, "cells", 50),
    "opus_vfl": (opus_vfl, "runs", 50),
    "geminiguard": (geminiguard, "cells/a0.5__lie__geminiguard/seed1", 2),   # in the second seed
    "weidetect": (weidetect, "cells", 4),
    "fl_robustness": (fl_robustness, "cells", 4),
    "badnets": (badnets, "cells", 4),
    "raven": (raven, "train", 100),
}
