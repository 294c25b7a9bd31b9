"""One-step array draws, private to ``batchgrad_spec.strategies.value``: the byte layout and its
numpy decoding.

An array of n elements is drawn as k byte strings of exactly ``CHUNK`` bytes (one Hypothesis
choice each, ``st.binary``), not as n separate float draws (``hnp.arrays`` draws an index, a value
and a "more" flag per element: ~7 ms of a 9 ms §2.1 example). Hypothesis shrinks a byte string
byte by byte towards zeros, and all-zero bytes decode to the all-zero array, so arrays still
shrink towards zeros, element by element.

Float layout (5 bytes per element)::

    [mode][fill: 5 bytes][element 0: 5 bytes] ... [element n-1: 5 bytes]

``mode`` < 48 (a fifth of the arrays): every element is the fill value (``hnp.arrays`` makes
~30 % of arrays constant through its fill), and the array is one chunk whatever its size; ≥ 64:
every element is decoded from its own 5 bytes, from as many chunks as it takes.
An element's 5 bytes are ``k`` (kind), ``a`` (aux), ``p`` (24-bit payload), decoded by kind:

    k in [0, 56)    0.0                                                     (21.9 %)
    k in [56, 80)   1, −1, m, −m, tiny, −tiny (three times each), ½, −½, the float32 below m
                    and its negative, 1 + ulp, 2·tiny                         (9.4 %)
    k in [80, 96)   ±j/4, j ≤ 4m: small integers, halves, quarters          (6.25 %)
    k in [96, 256)  float32 normals (1 + mantissa/2²³)·2^e, sign k & 1, e by slot (k − 96) >> 1:
                    slots 0–63: e in [emax − 4, emax]; 64–71: [emax − 20, emax − 5];
                    72–79: [−126, emax − 21] (down to float32 tiny)          (62.5 %)

(m = the largest float32 ≤ max_magnitude, emax = ⌊log₂ m⌋; a value above m is halved, which
keeps it a float32 normal.) So the value set is ``floats()``'s (float32-representable normals of
magnitude ≤ m, and 0; never subnormal), and the bytes' order is the shrink order: 0, then 1, −1,
m, ... Labels: one byte per element, taken modulo the number of classes.

Why fixed-size chunks: when a replayed choice no longer fits (a shape changed while shrinking,
the mutator copied a span elsewhere), Hypothesis replaces it by its simplest value (all zeros);
with one choice of 5n bytes per array that zeroed 35 % of the arrays, with equal-size chunks 6 %.
Why a constant array is one chunk: the simplest bytes (all zeros) are the all-zero array in one
chunk, so an array that does not matter to a failure shrinks to a single chunk of the same size
for any shape, and a shape shrinking elsewhere (a narrower layer) does not shift the chunks of the
arrays drawn after it (the shrunk counterexamples stay small).
Within a chunk the element slots are read last to first: the byte shrinker moves a needed
non-zero element to the chunk's *last* slot, which is read as the chunk's first element, so it
survives when the array's shape shrinks.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from hypothesis import strategies as st

__all__: list[str] = []

CHUNK = 41
"""Bytes per choice: a float chunk holds the mode, the fill and 7 elements, or a pad byte and 8
elements; a label chunk 41 labels."""
F32_TINY = float(np.finfo(np.float32).tiny)
CONSTANT_MODES = 48
ZERO_KINDS = 56
SPECIAL_KINDS = 80
GRID_KINDS = 96
_CHUNK = st.binary(min_size=CHUNK, max_size=CHUNK)


def f32_floor(x: float) -> float:
    """The largest float32 ≤ x (x > 0)."""
    f = np.float32(x)
    if float(f) > x:
        f = np.nextafter(f, np.float32(0))
    return float(f)


def _float_layout(chunks: tuple[bytes, ...]) -> bytes:
    """[mode][fill][element 0][element 1]... from the chunks (slots read last to first)."""
    first = chunks[0]
    parts = [first[:6]] + [first[6 + 5 * i: 11 + 5 * i] for i in range(6, -1, -1)]
    for c in chunks[1:]:
        parts += [c[1 + 5 * i: 6 + 5 * i] for i in range(7, -1, -1)]
    return b"".join(parts)


def _label_layout(chunks: tuple[bytes, ...]) -> bytes:
    return b"".join(c[::-1] for c in chunks)


@st.composite
def _float_chunks(draw: st.DrawFn, more: int) -> bytes:
    """The first chunk, and ``more`` further chunks unless it says "constant"."""
    first = draw(_CHUNK)
    if first[0] < CONSTANT_MODES or not more:
        return first
    return _float_layout((first, *(draw(_CHUNK) for _ in range(more))))


@cache
def chunked(n: int, width: int) -> st.SearchStrategy[bytes]:
    """The byte string of an array of ``n`` elements of ``width`` bytes (5: the float layout,
    1: labels), drawn as fixed-size chunks."""
    if width == 5:
        more = max(0, -(-(n - 7) // 8))
        return _float_chunks(more) if more else _CHUNK.map(lambda c: _float_layout((c,)))
    return st.tuples(*[_CHUNK] * -(-n // CHUNK)).map(_label_layout)


@cache
def _tables(m: float) -> tuple[np.ndarray, np.ndarray, int]:
    """(value of each kind < GRID_KINDS (nan for the grid kinds), exponent of each (slot, aux)
    of the generic kinds, grid size)."""
    m32 = f32_floor(m)
    below = float(np.nextafter(np.float32(m32), np.float32(0)))
    one_up = float(np.nextafter(np.float32(1), np.float32(2)))
    specials = [1.0, -1.0, m32, -m32, F32_TINY, -F32_TINY] * 3 + [
        0.5, -0.5, below, -below, one_up, 2 * F32_TINY]
    specials = [v if abs(v) <= m32 else 0.5 * float(np.sign(v)) * min(abs(v), m32)
                for v in specials]
    const = np.full(GRID_KINDS, np.nan)
    const[:ZERO_KINDS] = 0.0
    const[ZERO_KINDS:SPECIAL_KINDS] = [float(np.float32(v)) for v in specials]
    emax = int(np.floor(np.log2(m32)))
    aux = np.arange(256)
    exps = np.empty((80, 256), dtype=np.int64)
    exps[:64] = emax - (aux % 5)
    exps[64:72] = emax - 5 - (aux % 16)
    lo_span = max(emax - 21 + 126 + 1, 1)
    exps[72:80] = emax - 21 - (aux * lo_span) // 256
    return const, np.maximum(exps, -126), int(np.floor(4 * m32)) + 1


def decode_floats(raw: bytes, n: int, m: float) -> np.ndarray:
    """n float64 values (each a float32 number in [−m, m]) from the float layout."""
    const, exps, grid = _tables(m)
    b = np.frombuffer(raw, dtype=np.uint8)
    if b[0] < CONSTANT_MODES:  # the fill value everywhere
        e = np.broadcast_to(b[1:6].reshape(1, 5), (n, 5))
    else:
        e = b[6:6 + 5 * n].reshape(n, 5)
    k = e[:, 0].astype(np.int64)
    a = e[:, 1].astype(np.int64)
    p = (e[:, 2].astype(np.int64) << 16) | (e[:, 3].astype(np.int64) << 8) | e[:, 4]
    out = const[np.minimum(k, GRID_KINDS - 1)]
    grid_kind = (k >= SPECIAL_KINDS) & (k < GRID_KINDS)
    if grid_kind.any():
        j = (p[grid_kind] % grid).astype(np.float64) / 4
        out[grid_kind] = np.where(a[grid_kind] & 1, -j, j)
    generic = k >= GRID_KINDS
    if generic.any():
        kg = k[generic]
        v = np.ldexp(1.0 + (p[generic] & 0x7FFFFF) / 2.0**23, exps[(kg - GRID_KINDS) >> 1,
                                                                   a[generic]])
        v = np.where(v > m, v / 2, v)
        out[generic] = np.where(kg & 1, -v, v)
    return out


def decode_labels(raw: bytes, n: int, classes: int) -> np.ndarray:
    """n labels in [0, classes) from one byte each."""
    return np.frombuffer(raw, dtype=np.uint8)[:n].astype(np.int64) % classes
