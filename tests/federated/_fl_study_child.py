"""Child process for the FL-study kill/resume test: a one-cell fl_robustness grid.

Usage: python _fl_study_child.py WORKDIR [sleep_seconds_per_round]
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root (configs/, experiments/)

import jax  # noqa: E402

from configs.fl_robustness import get_config  # noqa: E402
from experiments import fl_robustness  # noqa: E402
from poisonjax.federated import simulation as S  # noqa: E402


def slow_down(seconds):
    """Slow every round down (host side) so the parent can kill the study mid-cell."""
    real = S.make_train_fn

    def slow_train_fn(sim):
        fn = real(sim)

        def train(st, data):
            out = fn(st, data)
            jax.block_until_ready(out)
            time.sleep(seconds)
            return out
        return train

    S.make_train_fn = slow_train_fn


def config():
    c = get_config("quick")
    c.n_clients = 8
    c.hidden = 16
    c.rounds = 10
    c.checkpoint_every = 2
    c.eval_last = 2
    c.attacks = ("sign_flip",)
    c.aggregators = ("median",)
    return c


if __name__ == "__main__":
    if len(sys.argv) > 2 and float(sys.argv[2]):
        slow_down(float(sys.argv[2]))
    fl_robustness.run(config(), sys.argv[1])
