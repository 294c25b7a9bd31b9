"""What a strategy reaches and what it shrinks to: a property is only as good as its generator,
and one that never draws a batch of one, or a relu exactly at its kink, makes every property that
relies on it vacuous there. ``reaches`` and ``minimal`` are how the meta-tests
(``tests/meta/test_strategies_*.py``) check the strategies of this package; use them to check a
strategy you compose from them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from hypothesis import Phase, find, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

__all__ = ["REACH_EXAMPLES", "minimal", "reaches"]

T = TypeVar("T")

REACH_EXAMPLES = 2000
"""How many examples ``reaches`` and ``minimal`` draw by default."""


def _settings(max_examples: int, shrink: bool) -> settings:
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise InvalidArgument(f"max_examples={max_examples!r} must be a positive int, e.g. "
                              f"max_examples={REACH_EXAMPLES}")
    if shrink:
        return settings(max_examples=max_examples, database=None, deadline=None)
    return settings(max_examples=max_examples, database=None, deadline=None,
                    phases=[Phase.generate])


def reaches(strategy: st.SearchStrategy[T], predicate: Callable[[T], bool], *,
            max_examples: int = REACH_EXAMPLES) -> T:
    """The first example of ``strategy`` that satisfies ``predicate``, without shrinking, within
    ``max_examples`` draws (no example database, no deadline); raises
    ``hypothesis.errors.NoSuchExample`` if none does — in a test, a failure saying the strategy
    does not reach that feature."""
    return find(strategy, predicate, settings=_settings(max_examples, shrink=False))


def minimal(strategy: st.SearchStrategy[T], predicate: Callable[[T], bool] = lambda _: True,
            *, max_examples: int = REACH_EXAMPLES) -> T:
    """The example of ``strategy`` that Hypothesis shrinks to among those satisfying
    ``predicate`` (default: any example): what a failing property would report. Raises
    ``hypothesis.errors.NoSuchExample`` if none is found within ``max_examples`` draws."""
    return find(strategy, predicate, settings=_settings(max_examples, shrink=True))
