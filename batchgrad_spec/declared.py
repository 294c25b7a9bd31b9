"""What a test may draw for its backend (spec §8.6, §8.7): the draw context, read at draw time by
the strategies' choice points, and the guard of every check.

The plugin sets a ``DrawContext`` around each test call from the test's target (``drawing``):
the features the backend declares (``reference.contract.capabilities_of``), less those of its
known deviations from the test's clause (§8.7), and, for the strict variant of such a deviation,
the feature every problem must use (``required``). The strategies ask it at their choice points
(which activation, layer kind, loss, option, reduction, whether sequences):

* ``choose(names, features)``: the names whose features are allowed, the same tuple when all are
  (so that draws are byte-identical for a backend declaring everything); those left out are
  recorded in ``DrawContext.excluded``; with a required feature among ``features`` only the
  names using it;
* ``permits(feature)``: whether an optional feature (a flag) may be drawn;
* ``require(feature)``: a feature the strategy cannot do without;
* ``sizes(lo, hi)``: an integer size, from a few buckets when the backend asks for bucketed
  shapes (``shapes:bucketed``, or ``--shape-buckets``).

A strategy that cannot draw without an undeclared feature raises ``not_supported(...)``, a
pytest skip (Hypothesis re-raises it at once; pytest reports it at the test's location) whose
reason is
``not supported: <backend> does not declare <feature>``. Without a context (outside the plugin)
everything is allowed and nothing is recorded.

``admit(target, problem)``: the guard of ``harness.check``: a problem that uses an undeclared
feature is never sent to the backend (a skip), nor, inside the clause's certification, one with a
deviating feature; in a strict variant a problem without the required feature is rejected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from reference.capabilities import capabilities_of, features_of

__all__ = ["BUCKETED", "BUCKETS", "DrawContext", "Plan", "admit", "choose", "current",
           "demands", "drawing", "feature_flag", "integers", "not_supported", "permits", "plans",
           "require", "sampled", "sizes"]

BUCKETED = "shapes:bucketed"
BUCKETS = (1, 2, 4, 8, 16, 32, 64)
"""The sizes drawn under ``shapes:bucketed``: powers of two (the smallest size allowed when none
lies in the range)."""


def not_supported(reason: str, feature: str) -> BaseException:
    """The skip of a test that cannot be drawn for its backend without ``feature`` (or, the
    strict variant of a deviation, §8.7, that cannot draw ``feature``): pytest's own skip
    exception, reported at the test's location with ``reason``; ``.feature`` names the
    feature."""
    import pytest  # the suite's library is importable without pytest (benchmarks)

    exc = pytest.skip.Exception(reason, _use_item_location=True)
    exc.feature = feature  # type: ignore[attr-defined]
    return exc


@dataclass
class DrawContext:
    """What the strategies may draw for one test call.

    ``allowed``: the declared features less the deviating ones; ``deviating``: feature → the
    clause it deviates from (left out of this test, certified apart); ``required``: features every
    problem must use (the strict variant of a deviation); ``bucketed``: sizes from ``BUCKETS``;
    ``excluded``: what the choice points left out (read by the plugin into ``stats``)."""

    backend: str
    allowed: frozenset[str]
    deviating: Mapping[str, str] = field(default_factory=dict)
    required: frozenset[str] = frozenset()
    bucketed: bool = False
    excluded: set[str] = field(default_factory=set)

    def missing(self, feature: str) -> BaseException:
        if feature in self.deviating:
            return not_supported(f"known deviation: {self.backend} deviates from "
                                f"§{self.deviating[feature]} with {feature} (checked apart)",
                                feature)
        return not_supported(f"not supported: {self.backend} does not declare {feature}", feature)


_CURRENT: ContextVar[DrawContext | None] = ContextVar("batchgrad_draw_context", default=None)


def current() -> DrawContext | None:
    """The context of the running test, or None (everything allowed)."""
    return _CURRENT.get()


@contextmanager
def drawing(ctx: DrawContext | None) -> Iterator[DrawContext | None]:
    """Run the block with ``ctx`` as the draw context (and the previous one after it)."""
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)


Features = Mapping[str, Any] | Callable[[str], Any]


def _of(features: Features, name: str) -> frozenset[str]:
    f = features(name) if callable(features) else features[name]
    return frozenset([f]) if isinstance(f, str) else frozenset(f)


def choose(names: tuple[str, ...], features: Features, *,
           empty_ok: bool = False) -> tuple[str, ...]:
    """The ``names`` whose features (``features[name]``: a name or a set of names) are all
    allowed: ``names`` itself when every one is. With a required feature that some name of
    ``features``'s whole domain uses, only the names using it. None left: a skip
    (``not_supported``), or () with ``empty_ok``."""
    ctx = current()
    if ctx is None:
        return names
    keep = []
    for n in names:
        left = _of(features, n) - ctx.allowed
        if left:
            ctx.excluded.update(left)
        else:
            keep.append(n)
    if ctx.required:
        whole = features if isinstance(features, Mapping) else names
        wanted = ctx.required & frozenset().union(*(_of(features, n) for n in whole))
        if wanted:
            keep = [n for n in keep if _of(features, n) & wanted]
            if not keep:
                raise not_supported(f"this test does not draw {', '.join(sorted(wanted))}",
                                   min(wanted))
    if not keep:
        if empty_ok:
            return ()
        raise ctx.missing(sorted(set().union(*(_of(features, n) for n in names))
                                 - ctx.allowed)[0])
    return names if len(keep) == len(names) else tuple(keep)


def permits(feature: str) -> bool:
    """Whether the optional ``feature`` may be drawn (recorded as excluded when not)."""
    ctx = current()
    if ctx is None or feature in ctx.allowed:
        return True
    ctx.excluded.add(feature)
    return False


def demands(feature: str) -> bool:
    """Whether every problem of this test must use ``feature`` (a strict variant, §8.7)."""
    ctx = current()
    return ctx is not None and feature in ctx.required


def require(feature: str) -> None:
    """``feature`` is needed: a skip (``not_supported``) when it is not allowed."""
    ctx = current()
    if ctx is not None and feature not in ctx.allowed:
        ctx.excluded.add(feature)
        raise ctx.missing(feature)


def feature_flag(value: bool | None, feature: str) -> st.SearchStrategy[bool]:
    """An optional ``feature`` drawn (``value`` None: ``st.booleans()``) or forced (True/False),
    as the context allows: False when undeclared (a skip when forced on), True when a strict
    variant demands it (a skip when forced off)."""
    if value is None:
        if demands(feature):
            return st.just(True)
        return st.booleans() if permits(feature) else st.just(False)
    if value:
        require(feature)
    elif demands(feature):
        raise not_supported(f"this test does not draw {feature}", feature)
    return st.just(value)


def sizes(lo: int, hi: int) -> st.SearchStrategy[int]:
    """An integer in [lo, hi]: ``st.integers(lo, hi)``, or under bucketed shapes one of the
    ``BUCKETS`` in the range (``lo`` when none is), shrinking towards the smallest."""
    ctx = current()
    if ctx is None or not ctx.bucketed:
        return integers(lo, hi)
    return sampled(tuple(b for b in BUCKETS if lo <= b <= hi) or (lo,))


integers = cache(st.integers)
"""``st.integers`` built once per range, not per draw (issue #15)."""
sampled = cache(st.sampled_from)
"""``st.sampled_from`` built once per tuple of choices (``choose``'s answer), not per draw."""


def admit(target: Any, problem: Any) -> None:
    """The guard of every check: a problem using a feature the target's backend does not
    declare is never sent to it (a skip, ``not_supported``); within the draw context, a problem
    with a deviating feature is not part of the clause's certification (a skip), and in a strict
    variant a problem without the required feature is rejected (inside Hypothesis) or skipped."""
    used = features_of(problem)
    ctx = current()
    allowed = ctx.allowed if ctx is not None else capabilities_of(target.backend)
    extra = sorted(used - allowed)
    if extra:
        if ctx is not None:
            ctx.excluded.update(extra)
            raise ctx.missing(extra[0])
        raise not_supported(f"not supported: {target.backend.name} does not declare {extra[0]}",
                           extra[0])
    if ctx is not None and ctx.required - used:
        if currently_in_test_context():
            assume(False)
        raise not_supported(f"this problem does not use {', '.join(sorted(ctx.required - used))}",
                           min(ctx.required - used))


# -- what each test item may draw: computed when tests are generated ----------------------------
@dataclass(frozen=True)
class Plan:
    """The draw context of one test item, before it runs (``context()`` makes a fresh one)."""

    backend: str
    allowed: frozenset[str]
    deviating: tuple[tuple[str, str], ...] = ()
    required: frozenset[str] = frozenset()
    bucketed: bool = False

    def context(self) -> DrawContext:
        return DrawContext(self.backend, self.allowed, dict(self.deviating), self.required,
                           self.bucketed)


def plans(backend: Any, deviations: list[Any], bucketed: bool) -> tuple[Plan, list[tuple[Any,
                                                                                       Plan]]]:
    """The plan of a test item on ``backend`` given the known deviations (``KnownDeviation``s)
    that concern it, and one (deviation, plan) per deviation: its strict variant (spec §8.7)."""
    declared = capabilities_of(backend)
    bucketed = bucketed or BUCKETED in declared
    features = {d.feature: d.clause for d in deviations if d.feature in declared}
    base = Plan(backend.name, declared - set(features), tuple(sorted(features.items())),
                bucketed=bucketed)
    variants = [(d, Plan(backend.name, declared, required=frozenset([d.feature]),
                         bucketed=bucketed)) for d in deviations if d.feature in declared]
    return base, variants
