"""Checks of strategy arguments, run when a strategy is built: each raises ``InvalidArgument``
that repeats the bad value and says how to fix it. Private to ``batchgrad_spec.strategies``."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

__all__: list[str] = []


def check_range(name: str, lo: int, hi: int, floor: int, ceiling: int) -> None:
    """``min_<name>=lo`` and ``max_<name>=hi`` are ints with floor ≤ lo ≤ hi ≤ ceiling."""
    if not (isinstance(lo, int) and isinstance(hi, int)):
        raise InvalidArgument(f"min_{name}={lo!r} and max_{name}={hi!r} must be integers")
    if lo < floor:
        raise InvalidArgument(f"min_{name}={lo} must be at least {floor}; "
                              f"pass min_{name}>={floor}")
    if hi > ceiling:
        raise InvalidArgument(f"max_{name}={hi} exceeds {ceiling}; magnitudes are bounded for "
                              f"sizes up to {ceiling} (spec §7.1); use max_{name}<={ceiling}")
    if lo > hi:
        raise InvalidArgument(f"min_{name}={lo} > max_{name}={hi}; "
                              f"pass min_{name} <= max_{name}")


def check_names(arg: str, names: Sequence[str], allowed: Sequence[str]) -> tuple[str, ...]:
    """``names`` as a non-empty tuple of members of ``allowed``."""
    if isinstance(names, str):
        raise InvalidArgument(f"{arg}={names!r} is a string; pass a sequence, e.g. ({names!r},)")
    names = tuple(names)
    if not names:
        raise InvalidArgument(f"{arg}=() is empty; pass at least one of {allowed}")
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise InvalidArgument(f"{arg} contains unknown {unknown}; choose from {allowed}")
    return names


def check_feature(arg: str, value: int | None, lo: int, hi: int) -> None:
    """An optional size such as ``in_features``: None or an int in [lo, hi]."""
    if value is not None and not (isinstance(value, int) and lo <= value <= hi):
        raise InvalidArgument(f"{arg}={value!r} must be None or an int in [{lo}, {hi}]")


def flag(arg: str, value: bool | None) -> st.SearchStrategy[bool]:
    """A feature that is drawn (None: shrinks towards off) or forced (True/False)."""
    if value is not None and not isinstance(value, bool):
        raise InvalidArgument(f"{arg}={value!r} must be True, False or None (drawn)")
    return st.booleans() if value is None else st.just(value)


def check_instance(arg: str, value: object, kind: type) -> None:
    """``value`` is a ``reference.problem`` object of class ``kind``."""
    if not isinstance(value, kind):
        raise InvalidArgument(f"{arg}={value!r} must be a reference.problem.{kind.__name__}")
