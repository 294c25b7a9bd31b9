"""Values: the bounded float32-representable numbers every strategy draws, and the size caps.

Values are float32-representable normal numbers (``width=32``) of magnitude ≤ ``max_magnitude``:
the float32 and float64 backends see exactly the same inputs, and nothing overflows (with widths
≤ ``MAX_WIDTH`` = 16 and depth ≤ ``MAX_DEPTH`` = 4 every pre-activation stays below 2.2·10⁶,
spec §1.6, §7.1). Hypothesis favours 0, ±1 and the bounds, so exact-zero pre-activations (relu's
kink) occur by themselves.

Arrays (``float_arrays``, ``float_arrays_between``, ``label_arrays``) are drawn in one step: a
few fixed-size byte strings decoded with numpy (the layout is in ``_arrays``), not element by
element — the same value set (float32 normals and 0 within the bound; exact 0, ±1, ±bound and
±float32-tiny each a few percent of the elements), shrinking towards all zeros.
"""

from __future__ import annotations

from functools import lru_cache
from numbers import Real

import numpy as np
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from batchgrad_spec.strategies._arrays import chunked, decode_floats, decode_labels, f32_floor

__all__ = [
    "MAX_BATCH",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "MAX_WIDTH",
    "float_arrays",
    "float_arrays_between",
    "floats",
    "label_arrays",
]

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
    check_magnitude(max_magnitude)
    return st.floats(-max_magnitude, max_magnitude, width=32, allow_nan=False,
                     allow_infinity=False, allow_subnormal=False)


def check_magnitude(max_magnitude: object) -> float:
    """``max_magnitude`` as a float, if it lies in (0, MAX_MAGNITUDE]; else InvalidArgument."""
    if (isinstance(max_magnitude, bool) or not isinstance(max_magnitude, Real)
            or not (0 < max_magnitude <= MAX_MAGNITUDE)):
        raise InvalidArgument(f"max_magnitude={max_magnitude!r} must lie in (0, {MAX_MAGNITUDE}]"
                              f"; e.g. max_magnitude=2.0")
    return float(max_magnitude)


def _check_shape(shape: object) -> tuple[int, ...]:
    if (not isinstance(shape, tuple) or not shape
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)):
        raise InvalidArgument(f"shape={shape!r} must be a non-empty tuple of positive ints, "
                              f"e.g. (4, 3)")
    return shape


def float_arrays(shape: tuple[int, ...], *, max_magnitude: float = 2.0
                 ) -> st.SearchStrategy[np.ndarray]:
    """float64 arrays of ``shape`` whose elements ``floats(max_magnitude=...)`` could draw
    (float32 normals and 0 in [−max_magnitude, max_magnitude]), drawn in one step (one byte
    string per 8 elements). About a quarter of the arrays are constant (one value everywhere).
    Shrinks towards all zeros, then 1, −1, ±max_magnitude (as float32), ±float32 tiny.
    """
    return _float_arrays(_check_shape(shape), check_magnitude(max_magnitude))


@lru_cache(maxsize=4096)
def _float_arrays(shape: tuple[int, ...], m: float) -> st.SearchStrategy[np.ndarray]:
    n = int(np.prod(shape))
    return chunked(n, 5).map(lambda raw: decode_floats(raw, n, m).reshape(shape))


def float_arrays_between(shape: tuple[int, ...], *, lo: float, hi: float
                         ) -> st.SearchStrategy[np.ndarray]:
    """float64 arrays of ``shape`` of float32 numbers in [lo, hi] (0 ≤ lo < hi ≤ 8), drawn in
    one step: |v| of ``float_arrays(max_magnitude=hi)``, raised by ``lo`` where below it and
    rounded to float32 (so lo, hi and the float32 numbers between are reached). Shrinks towards
    ``lo`` everywhere."""
    if not (isinstance(lo, Real) and isinstance(hi, Real) and 0 <= lo < hi <= MAX_MAGNITUDE):
        raise InvalidArgument(f"lo={lo!r}, hi={hi!r} must satisfy 0 <= lo < hi <= "
                              f"{MAX_MAGNITUDE}; e.g. lo=0.25, hi=4.0")
    return _float_arrays_between(_check_shape(shape), float(lo), float(hi))


@lru_cache(maxsize=4096)
def _float_arrays_between(shape: tuple[int, ...], lo: float, hi: float
                          ) -> st.SearchStrategy[np.ndarray]:
    n = int(np.prod(shape))
    top = f32_floor(hi)
    bottom = float(np.float32(lo)) if float(np.float32(lo)) >= lo else float(
        np.nextafter(np.float32(lo), np.float32(np.inf)))

    def decode(raw: bytes) -> np.ndarray:
        v = np.abs(decode_floats(raw, n, hi))
        v = np.where(v < lo, v + lo, v).astype(np.float32).astype(np.float64)
        return np.clip(v, bottom, top).reshape(shape)

    return chunked(n, 5).map(decode)


def label_arrays(shape: tuple[int, ...], *, classes: int) -> st.SearchStrategy[np.ndarray]:
    """int64 arrays of ``shape`` with entries in [0, classes), 1 ≤ classes ≤ 256 (booleans:
    ``classes=2`` and ``.astype(bool)``), drawn in one step (one byte per entry). Shrinks
    towards all zeros."""
    if isinstance(classes, bool) or not isinstance(classes, int) or not 1 <= classes <= 256:
        raise InvalidArgument(f"classes={classes!r} must be an int in [1, 256]")
    return _label_arrays(_check_shape(shape), classes)


@lru_cache(maxsize=4096)
def _label_arrays(shape: tuple[int, ...], classes: int) -> st.SearchStrategy[np.ndarray]:
    n = int(np.prod(shape))
    return chunked(n, 1).map(lambda raw: decode_labels(raw, n, classes).reshape(shape))


def float32_range(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Normal float32 numbers in [lo, hi] (weights, running variances, dropout rates)."""
    return st.floats(lo, hi, width=32, allow_subnormal=False)
