"""Child process for the backdoor-study kill/resume test: one attack (BadNets) x (none, Spectral
Signatures, CLP) on digits8 with a tiny BatchNorm CNN, K=2 victims, 8 epochs checkpointed every 2.

Usage: python _backdoor_child.py WORKDIR [sleep_seconds_per_checkpoint_chunk]
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repo root (configs/, experiments/)

import jax  # noqa: E402

from configs.backdoor import get_config  # noqa: E402
from experiments import backdoor  # noqa: E402
from poisonjax.core import runner  # noqa: E402


def slow_down(seconds):
    """Slow every compiled chunk of epochs down (host side) so the parent can kill the study mid-cell."""
    real = runner.make_chunk_fn

    def slow_chunk_fn(attack, chunk_size):
        fn = real(attack, chunk_size)

        def chunk(*args):
            out = fn(*args)
            jax.block_until_ready(out)
            time.sleep(seconds)
            return out
        return chunk

    runner.make_chunk_fn = slow_chunk_fn


def config():
    c = get_config("quick")
    c.n_victims = 2
    c.width = 4
    c.attacks = ("badnets",)
    c.defenses = ("none", "spectral_signatures", "clp")
    c.train.epochs = 8
    c.checkpoint_every = 2
    return c


if __name__ == "__main__":
    if len(sys.argv) > 2 and float(sys.argv[2]):
        slow_down(float(sys.argv[2]))
    backdoor.run(config(), sys.argv[1])
