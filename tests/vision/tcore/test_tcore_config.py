"""The T-Core study's config checks (no training)."""
import pytest

from poisonjax.core.validation import PoisonJaxInputError


@pytest.mark.parametrize("size", [0, 33])
def test_encoder_trigger_size_is_checked(size):
    from configs.tcore import get_config
    from experiments import tcore
    c = get_config("quick")
    c.encoder_trigger_size = size
    with pytest.raises(PoisonJaxInputError, match="encoder_trigger_size"):
        tcore._validate(c)


def test_default_config_validates():
    from configs.tcore import get_config
    from experiments import tcore
    for v in ("quick", "paper"):
        tcore._validate(get_config(v))
