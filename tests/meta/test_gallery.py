"""The gallery of caught bugs: each classic bug of ``faulty.GALLERY`` is caught by its clause.

For each entry, the property test of its clause (from ``batchgrad_spec.properties``) is run
against the faulty backend (a small wrapper of a real backend, ``--backend
batchgrad_spec.faults:<name>``) under the ``ci`` profile — derandomised, ``max_examples`` 100 —
with the machinery of ``batchgrad_spec.catching``. Each case asserts that

* the property fails, and every failure is a ``ClauseFailure`` of the expected clause whose message
  names the backend and dtype and carries a repro snippet;
* the first failure comes within the profile's ``max_examples`` (run with ``-s`` to see the count:
  the "examples needed" column of the README table);
* the correct ``numpy`` backend passes every example the faulty run tried: the failure is the
  bug's, not the example's;
* the README's "Gallery of caught bugs" table has a row for the backend naming the same clause.

Shrinking is skipped to keep this module fast (about 10 s); the shrunk counterexample sizes of the
README table come from the same runs with shrinking, ``python -m examples.gallery_sizes`` (under a
minute), whose output the table is pasted from.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from batchgrad_spec.catching import (
    MAX_EXAMPLES,
    assert_correct_backend_passes,
    clause_failures,
    make_target,
    run_property,
)
from batchgrad_spec.faults.gallery import GALLERY, PENDING, Bug, describe, property_test
from batchgrad_spec.harness import ClauseFailure
from batchgrad_spec.resources import ROOT

pytestmark = pytest.mark.meta

GALLERY_CLAUSES = sorted({b.clause for b in GALLERY}, key=lambda c: tuple(map(int, c.split("."))))


def chapter_property(bug: Bug) -> Callable[..., Any]:
    """``bug``'s property, which the chapter test module named by ``bug.test`` imports by name."""
    path, _, name = bug.test.partition("::")
    chapter = (ROOT / path).read_text(encoding="utf-8")
    assert re.search(rf"^    {name},$", chapter, re.M), f"{path} does not import {name}"
    return property_test(bug)


def readme_gallery() -> dict[str, str]:
    """Backend name → clause of each row of the README's "Gallery of caught bugs" table."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Gallery of caught bugs")
    end = text.find("\n## ", start + 1)
    rows = {}
    for line in text[start:end if end > 0 else None].splitlines():
        m = re.match(r"^\|[^|]*\|\s*`(\w+)`\s*\|\s*§(\d+\.\d+(?:\.\d+)?)\b", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def catch(bug: Bug, **kwargs: Any) -> tuple[Any, list[ClauseFailure]]:
    """Run ``bug``'s property against its backend; assert the failures are the expected clause's."""
    __tracebackhide__ = True
    if bug.needs:
        pytest.importorskip(bug.needs)
    test = chapter_property(bug)
    target = make_target(f"batchgrad_spec.faults:{bug.backend}", bug.clause, bug.dtype, bug.method)
    out = run_property(test, target, **kwargs)
    return out, clause_failures(out, bug.backend, bug.clause, bug.dtype, bug.method)


@pytest.mark.clause(*GALLERY_CLAUSES)
@pytest.mark.parametrize("bug", GALLERY, ids=[b.backend for b in GALLERY])
def test_every_gallery_bug_is_caught_by_its_clause(bug):
    out, failures = catch(bug)
    print(f"\n{bug.backend:<29} {bug.dtype:<8} caught by §{bug.clause:<4} at example "
          f"{out.first_failure:>3} of <= {MAX_EXAMPLES}: {describe(out.failing[0])}", end="")
    target = make_target(f"batchgrad_spec.faults:{bug.backend}", bug.clause, bug.dtype, bug.method)
    assert_correct_backend_passes(property_test(bug), target,
                                  out.tried + out.failing[-len(failures):])
    listed = readme_gallery()
    assert listed.get(bug.backend) == bug.clause, (
        f"README 'Gallery of caught bugs' should list `{bug.backend}` as caught by §{bug.clause} "
        f"(regenerate the table with `python -m examples.gallery_sizes`); it lists "
        f"{listed.get(bug.backend)}")


@pytest.mark.clause(*GALLERY_CLAUSES)
def test_the_gallery_has_twelve_bugs_and_the_readme_lists_exactly_them():
    assert len(GALLERY) >= 12
    assert len({b.backend for b in GALLERY}) == len(GALLERY)
    assert set(readme_gallery()) == {b.backend for b in GALLERY}
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for bug, _ in PENDING:
        assert bug in text, f"README gallery should list the pending bug {bug!r}"
