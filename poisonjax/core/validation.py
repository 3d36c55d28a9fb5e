"""Input checks shared by every room: fail early, name the argument and what was expected."""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np


class PoisonJaxInputError(ValueError):
    """Bad user input: the message names the argument and what was expected."""


def check_fraction(name: str, value, *, low_inclusive: bool = False, high_inclusive: bool = True,
                   low: float = 0.0, high: float = 1.0) -> float:
    """Check ``low < value <= high`` (bounds inclusive as requested) and return it as float."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise PoisonJaxInputError(f"{name} must be a number in {_interval(low, high, low_inclusive, high_inclusive)}, got {value!r}")
    ok_low = v >= low if low_inclusive else v > low
    ok_high = v <= high if high_inclusive else v < high
    if not (ok_low and ok_high) or math.isnan(v):
        raise PoisonJaxInputError(f"{name} must be in {_interval(low, high, low_inclusive, high_inclusive)}, got {value!r}")
    return v


def _interval(lo, hi, li, hi_inc):
    return f"{'[' if li else '('}{lo}, {hi}{']' if hi_inc else ')'}"


def check_positive_int(name: str, value, minimum: int = 1) -> int:
    """Check that ``value`` is an integer ``>= minimum``."""
    if isinstance(value, bool) or not float(value).is_integer() or int(value) < minimum:
        raise PoisonJaxInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_finite(name: str, array) -> None:
    """Raise if ``array`` holds NaN or inf."""
    a = np.asarray(array)
    if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
        bad = int(np.size(a) - np.isfinite(a).sum())
        raise PoisonJaxInputError(f"{name} contains {bad} non-finite values (NaN/inf); expected finite numbers")


def check_shape(name: str, array, expected: Sequence) -> None:
    """Check ``array.shape`` against ``expected`` where ``None`` matches any size.

    Example: ``check_shape("images", x, (None, 28, 28, 1))``.
    """
    shape = tuple(np.shape(array))
    if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected, shape)):
        exp = "(" + ", ".join("N" if e is None else str(e) for e in expected) + ")"
        raise PoisonJaxInputError(f"{name} must have shape {exp}, got {shape}")


def check_in_range(name: str, array, low: float, high: float) -> None:
    """Check every element of ``array`` lies in ``[low, high]``."""
    a = np.asarray(array)
    check_finite(name, a)
    if a.size and (a.min() < low or a.max() > high):
        raise PoisonJaxInputError(f"{name} must lie in [{low}, {high}], got values in [{a.min():.4g}, {a.max():.4g}]")


def check_choice(name: str, value, choices: Iterable) -> None:
    """Check ``value`` is one of ``choices``; the message lists the valid ones."""
    choices = list(choices)
    if value not in choices:
        raise PoisonJaxInputError(f"unknown {name} {value!r}; expected one of {sorted(map(str, choices))}")
