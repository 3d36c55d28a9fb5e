"""SSL encoders on real CIFAR-10 (``slow``): a SimCLR encoder pre-trained on the 10,000 ``cifar10_jpeg_20k``
training images, linear probes on the CIFAR-10 test split (8,000 adaptation / 2,000 evaluation); BadEncoder and
DRUPE keep the clean probe accuracy within 3 points and raise the ASR of the trigger far above the clean
encoder's.

Set ``POISONJAX_ENCODER_CACHE`` to reuse encoders (e.g. /work/cache/encoders); otherwise everything is trained
in a temporary folder (about an hour on a busy 2-core machine)."""
import os

import pytest

from poisonjax.vision.ssl import cifar_probe_split, get_or_pretrain, probe_accuracy_and_asr
from poisonjax.vision.ssl.encoder_attacks import ATTACKS, default_trigger, get_or_poison

pytestmark = [pytest.mark.slow, pytest.mark.requires_data("cifar10_jpeg_20k")]


def test_encoder_attacks_keep_probe_accuracy_and_reach_asr(tmp_path):
    cache = os.environ.get("POISONJAX_ENCODER_CACHE", str(tmp_path))
    clean = get_or_pretrain(cache, variant="quick", width=8, epochs=1, batch_size=128, lr=2e-3, progress=False)
    xa, ya, xe, ye = cifar_probe_split()
    trig = default_trigger((32, 32, 3))
    base = probe_accuracy_and_asr(clean, xa, ya, xe, ye, trig, 0)
    assert base["clean_accuracy"] > 0.25  # far above chance (0.1)
    for attack in ATTACKS:
        bd = get_or_poison(cache, clean, attack, target_class=0, max_steps=60, batch_size=64, lr=1e-3,
                           progress=False)
        r = probe_accuracy_and_asr(bd, xa, ya, xe, ye, trig, 0)
        assert r["clean_accuracy"] >= base["clean_accuracy"] - 0.03, (attack, r, base)
        assert r["asr"] >= 0.5 and r["asr"] > base["asr"] + 0.3, (attack, r, base)
