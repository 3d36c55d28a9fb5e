"""Child process for the backdoor-study kill/resume test: one attack (BadNets) x (none, Spectral
Signatures, CLP) on digits8 with a tiny BatchNorm CNN, K=2 victims, 8 epochs checkpointed every 2.

Usage: python _backdoor_child.py WORKDIR [sleep_seconds_per_checkpoint_chunk]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repo root (configs/, experiments/)

from configs.backdoor import get_config  # noqa: E402
from experiments import backdoor  # noqa: E402
from tests._study_child import slow_down  # noqa: E402  (sleeps after every runner chunk)


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
