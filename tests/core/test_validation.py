"""core.validation: every check accepts good input and names the argument in its error."""
import numpy as np
import pytest

from poisonjax.core import validation as V


def test_fraction_bounds_and_messages():
    assert V.check_fraction("rate", 0.5) == 0.5 and V.check_fraction("rate", 1) == 1.0
    assert V.check_fraction("rate", 0.0, low_inclusive=True) == 0.0
    for bad in (0.0, 1.5, -0.1, float("nan"), "x", None):
        with pytest.raises(V.PoisonJaxInputError, match="rate"):
            V.check_fraction("rate", bad)
    with pytest.raises(V.PoisonJaxInputError, match=r"\(0.0, 1.0\)"):
        V.check_fraction("p", 1.0, high_inclusive=False)
    assert issubclass(V.PoisonJaxInputError, ValueError)


def test_ints_finite_shapes_ranges_choices():
    assert V.check_positive_int("steps", 3) == 3 and V.check_positive_int("steps", 3.0) == 3
    for bad in (0, -1, 2.5, True):
        with pytest.raises(V.PoisonJaxInputError, match="steps"):
            V.check_positive_int("steps", bad)
    assert V.check_positive_int("n", 0, minimum=0) == 0
    V.check_finite("x", np.ones(3))
    with pytest.raises(V.PoisonJaxInputError, match="x contains 2 non-finite"):
        V.check_finite("x", np.array([1.0, np.nan, np.inf]))
    V.check_shape("images", np.zeros((5, 28, 28, 1)), (None, 28, 28, 1))
    with pytest.raises(V.PoisonJaxInputError, match=r"images must have shape \(N, 28, 28, 1\)"):
        V.check_shape("images", np.zeros((5, 28, 28)), (None, 28, 28, 1))
    V.check_in_range("x", np.array([0.0, 1.0]), 0.0, 1.0)
    with pytest.raises(V.PoisonJaxInputError, match=r"x must lie in \[0.0, 1.0\]"):
        V.check_in_range("x", np.array([0.0, 2.0]), 0.0, 1.0)
    V.check_choice("loss", "bce", ("bce", "ce"))
    with pytest.raises(V.PoisonJaxInputError, match=r"unknown loss 'x'; expected one of \['bce', 'ce'\]"):
        V.check_choice("loss", "x", ("bce", "ce"))
