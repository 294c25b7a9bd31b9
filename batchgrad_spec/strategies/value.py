"""Values: the bounded float32-representable numbers every strategy draws, and the size caps.

Values are float32-representable normal numbers (``width=32``) of magnitude ≤ ``max_magnitude``:
the float32 and float64 backends see exactly the same inputs, and nothing overflows (with widths
≤ ``MAX_WIDTH`` = 16 and depth ≤ ``MAX_DEPTH`` = 4 every pre-activation stays below 2.2·10⁶,
spec §1.6, §7.1). Hypothesis favours 0, ±1 and the bounds, so exact-zero pre-activations (relu's
kink) occur by themselves.
"""

from __future__ import annotations

from numbers import Real

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

__all__ = ["MAX_BATCH", "MAX_DEPTH", "MAX_LENGTH", "MAX_WIDTH", "floats"]

MAX_WIDTH = 16
"""Largest layer width any strategy draws (and largest number of classes)."""
MAX_DEPTH = 4
"""Most Dense layers in a drawn network."""
MAX_BATCH = 64
"""Most examples (or sequences) in a drawn batch."""
MAX_LENGTH = 8
"""Most tokens in a drawn sequence (spec §3.7)."""
MAX_MAGNITUDE = 8
"""Largest ``max_magnitude`` a strategy accepts."""


def floats(*, max_magnitude: float = 2.0) -> st.SearchStrategy[float]:
    """Finite float32-representable normal floats in [−max_magnitude, max_magnitude].

    ``max_magnitude`` lies in (0, 8] (default 2). Shrinks towards 0, then small integers.
    """
    if (isinstance(max_magnitude, bool) or not isinstance(max_magnitude, Real)
            or not (0 < max_magnitude <= MAX_MAGNITUDE)):
        raise InvalidArgument(f"max_magnitude={max_magnitude!r} must lie in (0, {MAX_MAGNITUDE}]"
                              f"; e.g. max_magnitude=2.0")
    return st.floats(-max_magnitude, max_magnitude, width=32, allow_nan=False,
                     allow_infinity=False, allow_subnormal=False)


def float32_range(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Normal float32 numbers in [lo, hi] (weights, running variances, dropout rates)."""
    return st.floats(lo, hi, width=32, allow_subnormal=False)
