"""The run statistics: what each check counted, per clause and backend configuration.

Every ``with check(target, problem)`` block (``batchgrad_spec.harness``) counts one Hypothesis
example for its target, each comparison records its error/tolerance ratio, and each failed
comparison (or broken contract) counts a failure. They are kept per :data:`Key` —
``(clause, backend, device, dtype, precision)``, built only by :func:`key` — and read by the
plugin's run summary (:func:`totals` per column), the conformance report (:func:`snapshot` and
:func:`since` around one test item), the benchmark and the meta-tests. Nobody else touches the
table: this module is its one owner.

* Examples of tests that end as *expected* failures (strict xfails of known deviations) are not
  backend results: :func:`set_aside` moves them out of the table into a count of their own
  (:func:`expected_failures`), shown beside the summary.
* Runs against deliberately wrong backends (the meta-tests, ``batchgrad_spec.catching``) happen
  inside :func:`preserved`, which restores the table afterwards.
* The features a test's strategies left out because its backend does not declare them (or
  deviates with them, spec §8.6, §8.7) are kept per key too (:func:`count_excluded`,
  :func:`excluded`), for the run summary and the conformance report.
* Under pytest-xdist every worker counts its own examples: :func:`export` is what a worker sends,
  :func:`merge` adds it on the controller.

The module needs nothing but the standard library; a target is anything with ``clause``,
``backend.name`` and ``config.device/dtype/precision`` (``harness.Target``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Column", "Key", "Stat", "count_example", "count_excluded", "count_failure",
           "count_ratio", "excluded", "expected_failures", "export", "key", "merge", "per_clause",
           "preserved",
           "set_aside", "since", "snapshot", "totals"]

Key = tuple[str, str, str, str, str]
"""(clause, backend, device, dtype, precision)"""
Column = tuple[str, str, str, str]
"""(backend, device, dtype, precision): a column of the run summary and of the report."""


class _Config(Protocol):
    device: str
    dtype: str
    precision: str


class _Backend(Protocol):
    name: str


class _Target(Protocol):
    clause: str
    backend: _Backend
    config: _Config


@dataclass
class Stat:
    """Examples run, failures, and the largest error/tolerance (with what it was measured on)."""

    examples: int = 0
    max_ratio: float = 0.0
    failures: int = 0
    worst: str = ""


_TABLE: dict[Key, Stat] = {}
_EXPECTED: dict[Column, int] = {}  # examples of expected failures, per column
_EXCLUDED: dict[Key, set[str]] = {}  # features not drawn for want of a declaration, per key


def key(target: _Target) -> Key:
    """The statistics key of a target: its clause and backend configuration."""
    c = target.config
    return (target.clause, target.backend.name, c.device, c.dtype, c.precision)


def _entry(target: _Target) -> Stat:
    return _TABLE.setdefault(key(target), Stat())


# -- counting (the harness's checks) ----------------------------------------------------------
def count_example(target: _Target) -> None:
    """One Hypothesis example checked against ``target``."""
    _entry(target).examples += 1


def count_failure(target: _Target) -> None:
    """One failed comparison or broken contract on ``target``."""
    _entry(target).failures += 1


def count_ratio(target: _Target, ratio: float, what: str) -> None:
    """An observed error/tolerance ratio of the comparison ``what``: kept if the largest."""
    s = _entry(target)
    if ratio > s.max_ratio:
        s.max_ratio, s.worst = ratio, what


def count_excluded(target: _Target, features: set[str] | frozenset[str]) -> None:
    """Features the strategies of a test on ``target`` did not draw: undeclared (§8.6) or
    deviating (§8.7)."""
    if features:
        _EXCLUDED.setdefault(key(target), set()).update(features)


# -- reading ----------------------------------------------------------------------------------
def snapshot(k: Key | None) -> Stat | None:
    """A copy of the entry of ``k`` (None when nothing was counted for it)."""
    s = _TABLE.get(k) if k is not None else None
    return copy.copy(s) if s is not None else None


def since(k: Key | None, before: Stat | None) -> Stat | None:
    """What was counted for ``k`` since its ``snapshot`` ``before``: examples and failures, and
    the running largest ratio (the largest over a session's items is the session's); None when
    nothing was ever counted for ``k``."""
    now = snapshot(k)
    if now is None:
        return None
    if before is not None:
        now.examples -= before.examples
        now.failures -= before.failures
    return now


def totals() -> dict[Column, Stat]:
    """The statistics summed over clauses: one entry per backend configuration."""
    per: dict[Column, Stat] = {}
    for (_, *col), s in _TABLE.items():
        agg = per.setdefault(tuple(col), Stat())  # type: ignore[arg-type]
        agg.examples += s.examples
        agg.failures += s.failures
        if s.max_ratio > agg.max_ratio:
            agg.max_ratio, agg.worst = s.max_ratio, s.worst
    return per


def per_clause() -> dict[Column, dict[str, int]]:
    """Examples checked per clause, for each backend configuration."""
    out: dict[Column, dict[str, int]] = {}
    for (cid, *col), s in _TABLE.items():
        out.setdefault(tuple(col), {})[cid] = s.examples  # type: ignore[index]
    return out


def excluded() -> dict[Key, set[str]]:
    """The features not drawn, per key (a copy)."""
    return {k: set(v) for k, v in _EXCLUDED.items()}


def expected_failures() -> dict[Column, int]:
    """Examples run by tests that ended as expected failures, per backend configuration."""
    return dict(_EXPECTED)


# -- keeping results that are not backend results out ------------------------------------------
def set_aside(k: Key, before: Stat | None) -> None:
    """The test item that ran on ``k`` since ``snapshot(k)`` returned ``before`` ended as an
    expected failure: its examples move to :func:`expected_failures`, and the entry of ``k``
    returns to ``before``."""
    now = _TABLE.get(k)
    ran = (now.examples if now else 0) - (before.examples if before else 0)
    col: Column = k[1:]  # type: ignore[assignment]
    _EXPECTED[col] = _EXPECTED.get(col, 0) + ran
    if before is None:
        _TABLE.pop(k, None)
    else:
        _TABLE[k] = copy.copy(before)


@contextmanager
def preserved() -> Iterator[None]:
    """Whatever is counted inside the block is forgotten after it (runs against deliberately
    wrong backends, deliberately wrong comparisons)."""
    saved, expected, left = copy.deepcopy(_TABLE), dict(_EXPECTED), copy.deepcopy(_EXCLUDED)
    try:
        yield
    finally:
        _TABLE.clear()
        _TABLE.update(saved)
        _EXPECTED.clear()
        _EXPECTED.update(expected)
        _EXCLUDED.clear()
        _EXCLUDED.update(left)


# -- pytest-xdist: a worker's statistics, added on the controller ------------------------------
def export() -> dict[str, Any]:
    """This process's statistics as plain data (what an xdist worker sends the controller)."""
    return {"table": [[list(k), vars(s)] for k, s in _TABLE.items()],
            "expected": [[list(c), n] for c, n in _EXPECTED.items()],
            "excluded": [[list(k), sorted(v)] for k, v in _EXCLUDED.items()]}


def merge(data: dict[str, Any]) -> None:
    """Add statistics that :func:`export` made in another process."""
    for k, s in data.get("table", []):
        agg = _TABLE.setdefault(tuple(k), Stat())  # type: ignore[arg-type]
        agg.examples += s["examples"]
        agg.failures += s["failures"]
        if s["max_ratio"] > agg.max_ratio:
            agg.max_ratio, agg.worst = s["max_ratio"], s["worst"]
    for c, n in data.get("expected", []):
        col: Column = tuple(c)  # type: ignore[assignment]
        _EXPECTED[col] = _EXPECTED.get(col, 0) + n
    for k, v in data.get("excluded", []):
        _EXCLUDED.setdefault(tuple(k), set()).update(v)  # type: ignore[arg-type]
