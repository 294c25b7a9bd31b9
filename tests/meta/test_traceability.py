"""§8.4: every clause has tests, every test cites an existing clause, and the spec says which."""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

from batchgrad_spec.harness import clauses
from batchgrad_spec.properties import core
from batchgrad_spec.resources import ROOT, SPEC

pytestmark = [pytest.mark.meta, pytest.mark.clause("8.4")]

TEST_REF = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")
HEADING = re.compile(r"^#{2,4}\s+§(\d+\.\d+(?:\.\d+)*)\s")
"""A clause heading ``### §C.N Title`` or a sub-clause heading ``#### §C.N.M Title``."""
RFC2119 = re.compile(r"\b(MUST|SHALL|SHOULD|REQUIRED|RECOMMENDED|MAY|OPTIONAL)\b")
NORMATIVE_LEAD = ("**Statement.**", "**Normative.**")

Tests = dict[tuple[str, str], set[str]]


@dataclass
class Section:
    """What traceability needs of one clause or sub-clause: the tests its **Tests.** paragraph
    names, and whether its own text (up to the next heading) is normative: a **Statement.** or
    **Normative.** paragraph, or an RFC 2119 word outside the informative paragraphs (those that
    open with ``*`` — *In plain words*, *Informative.*, **Tests.**, **Realised by** …)."""

    tests: set[tuple[str, str | None]] = field(default_factory=set)
    normative: bool = False


def parse_spec(texts: Iterable[str]) -> dict[str, Section]:
    """Clause id → its section, from the text of spec chapters."""
    sections: dict[str, Section] = {}
    for text in texts:
        current: Section | None = None
        in_tests = False
        lead = ""
        for line in text.splitlines():
            m = HEADING.match(line)
            if m:
                current, in_tests, lead = sections.setdefault(m.group(1), Section()), False, ""
                continue
            if current is None:
                continue
            if not line.strip():
                in_tests, lead = False, ""
                continue
            if not lead:  # the first line of a paragraph decides what kind it is
                lead = line.lstrip()
                in_tests = line.startswith("**Tests.**")
            elif line.startswith("**") or line.startswith("#"):
                in_tests = False
            if in_tests:
                current.tests.update((p, n or None) for p, n in TEST_REF.findall(line))
            informative = lead.startswith("*") and not lead.startswith(NORMATIVE_LEAD)
            if lead.startswith(NORMATIVE_LEAD) or (not informative and RFC2119.search(line)):
                current.normative = True
    return sections


def spec_sections() -> dict[str, Section]:
    return parse_spec(p.read_text(encoding="utf-8") for p in sorted(SPEC.glob("*.md")))


def spec_tests() -> dict[str, set[tuple[str, str | None]]]:
    """Clause id → the tests its **Tests.** paragraph names, as (path, name or None)."""
    return {cid: s.tests for cid, s in spec_sections().items() if s.tests}


def within(cid: str, parent: str) -> bool:
    """``cid`` is ``parent`` or one of its sub-clauses (at any depth)."""
    return cid == parent or cid.startswith(parent + ".")


PROPERTIES = "batchgrad_spec.properties."
"""Test functions defined in these modules and imported into a test module are its tests."""


def collected_here(fn: object, module: object) -> bool:
    """Whether pytest collects ``fn`` as a test of ``module``: defined there, or a property of
    ``batchgrad_spec.properties`` imported into it by name."""
    where = getattr(fn, "__module__", "")
    return where == getattr(module, "__name__", None) or where.startswith(PROPERTIES)


def module_tests(module: ModuleType) -> dict[str, set[str]]:
    """Test name → clause ids from its clause markers (function or module level), for the tests
    pytest collects in ``module``."""
    module_marks = getattr(module, "pytestmark", [])
    module_marks = module_marks if isinstance(module_marks, list) else [module_marks]
    out: dict[str, set[str]] = {}
    for name, fn in inspect.getmembers(module, inspect.isfunction):
        if not name.startswith("test_") or not collected_here(fn, module):
            continue
        marks = list(getattr(fn, "pytestmark", [])) + module_marks
        out[name] = {str(a) for m in marks if m.name == "clause" for a in m.args}
    return out


def cited_tests() -> dict[tuple[str, str], set[str]]:
    """(path, test name) → clause ids from its clause markers (function or module level)."""
    out: dict[tuple[str, str], set[str]] = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        rel = path.relative_to(ROOT).as_posix()
        module = importlib.import_module(rel[:-3].replace("/", "."))
        out.update({(rel, name): ids for name, ids in module_tests(module).items()})
    return out


def test_a_property_imported_into_a_test_module_is_its_test_and_must_cite_a_clause():
    fake = ModuleType("tests.test_fake")

    def test_uncited():  # a property that forgot its clause marker
        pass

    def test_elsewhere():  # imported from a module that is neither this one nor a property room
        pass

    test_uncited.__module__ = PROPERTIES + "fake"
    test_elsewhere.__module__ = "somewhere.else"
    mean = core.test_gradient_of_the_mean_loss_is_the_mean_of_per_example_gradients
    for name, fn in [("test_uncited", test_uncited), ("test_elsewhere", test_elsewhere),
                     ("test_mean", mean)]:
        setattr(fake, name, fn)
    assert module_tests(fake) == {"test_uncited": set(), "test_mean": {"2.1"}}


def citation_problems(sections: dict[str, Section], tests: Tests) -> list[str]:
    """Tests citing no clause or a clause that does not exist; clauses without a test. A
    sub-clause needs a test citing it; a parent clause (one with sub-clauses) needs a test
    citing it or one of its sub-clauses — its sub-clauses' tests are its tests — and is never
    left without any; every clause whose own text is normative has a test."""
    problems = [f"{p}::{n} cites no clause (add @pytest.mark.clause)"
                for (p, n), ids in sorted(tests.items()) if not ids]
    problems += [f"{p}::{n} cites §{c}, which does not exist in spec/"
                 for (p, n), ids in sorted(tests.items()) for c in sorted(ids)
                 if c not in sections]
    cited = {c for ids in tests.values() for c in ids}
    for cid, sec in sections.items():
        if any(within(c, cid) for c in cited):
            continue
        subs = [c for c in sections if c != cid and within(c, cid)]
        what = "a normative clause" if sec.normative else "a clause"
        problems.append(f"§{cid} ({what}) has no test citing it"
                        + (" or one of its sub-clauses" if subs else ""))
    return problems


def listing_problems(sections: dict[str, Section], tests: Tests) -> list[str]:
    """The spec lists exactly the tests that cite each clause: every clause has a **Tests.**
    paragraph; each test or module it lists exists and cites the clause or one of its
    sub-clauses (a parent may list its sub-clauses' tests); every test citing a clause is
    listed under it (by name or by its module)."""
    problems = []
    for cid, sec in sections.items():
        refs = sec.tests
        if not refs:
            problems.append(f"§{cid} has no **Tests.** paragraph naming a test")
        for path, name in sorted(refs, key=str):
            if name is None:
                if not any(p == path and any(within(c, cid) for c in ids)
                           for (p, _), ids in tests.items()):
                    problems.append(f"§{cid} lists {path}, which has no test citing it")
            elif not any(within(c, cid) for c in tests.get((path, name), set())):
                problems.append(f"§{cid} lists {path}::{name}, which does not exist or does "
                                f"not cite §{cid}")
        for (path, name), ids in sorted(tests.items()):
            if cid in ids and (path, name) not in refs and (path, None) not in refs:
                problems.append(f"{path}::{name} cites §{cid} but §{cid} does not list it")
    return problems


FAKE_SPEC = """
<a id="s9.1"></a>
### §9.1 A parent

**Statement.** A backend MUST meet §9.1.1 and §9.1.2.

**Tests.** `tests/test_fake.py::test_one`, `tests/test_fake.py::test_two`

<a id="s9.1.1"></a>
#### §9.1.1 The first

**Statement.** The first thing MUST hold.

**Tests.** `tests/test_fake.py::test_one`

<a id="s9.1.2"></a>
#### §9.1.2 The second

**Statement.** The second thing MUST hold.

**Tests.** `tests/test_fake.py::test_two`

<a id="s9.2"></a>
### §9.2 Informative only

*In plain words (informative):* a backend MUST nothing here.

**Tests.** `tests/test_fake.py::test_three`
"""


def test_a_parent_clause_is_covered_by_its_sub_clauses_tests():
    sections = parse_spec([FAKE_SPEC])
    assert sorted(sections) == ["9.1", "9.1.1", "9.1.2", "9.2"]
    assert [sections[c].normative for c in sorted(sections)] == [True, True, True, False]
    assert sections["9.1"].tests == {("tests/test_fake.py", "test_one"),
                                     ("tests/test_fake.py", "test_two")}
    tests = {("tests/test_fake.py", "test_one"): {"9.1.1"},
             ("tests/test_fake.py", "test_two"): {"9.1.2"},
             ("tests/test_fake.py", "test_three"): {"9.2"}}
    assert citation_problems(sections, tests) == []
    assert listing_problems(sections, tests) == []


def test_an_uncited_sub_clause_fails_both_ways():
    sections = parse_spec([FAKE_SPEC])
    tests = {("tests/test_fake.py", "test_one"): {"9.1.1"},
             ("tests/test_fake.py", "test_two"): {"9.1"},  # cites the parent, not §9.1.2
             ("tests/test_fake.py", "test_three"): {"9.2"}}
    assert citation_problems(sections, tests) == [
        "§9.1.2 (a normative clause) has no test citing it"]
    assert listing_problems(sections, tests) == [
        "§9.1.2 lists tests/test_fake.py::test_two, which does not exist or does not cite §9.1.2"]


def test_a_normative_clause_without_tests_and_an_unknown_sub_clause_fail():
    sections = parse_spec([FAKE_SPEC.replace("`tests/test_fake.py::test_two`", "none")])
    tests = {("tests/test_fake.py", "test_one"): {"9.1.1", "9.1.3"},
             ("tests/test_fake.py", "test_three"): {"9.2"}}
    assert citation_problems(sections, tests) == [
        "tests/test_fake.py::test_one cites §9.1.3, which does not exist in spec/",
        "§9.1.2 (a normative clause) has no test citing it"]
    assert "§9.1.2 has no **Tests.** paragraph naming a test" in listing_problems(sections, tests)


def test_a_parent_without_any_test_fails():
    sections = parse_spec([FAKE_SPEC])
    tests = {("tests/test_fake.py", "test_three"): {"9.2"}}
    assert citation_problems(sections, tests)[0] == (
        "§9.1 (a normative clause) has no test citing it or one of its sub-clauses")


def test_every_clause_has_a_test_and_every_test_cites_a_clause():
    sections = spec_sections()
    assert sections, "no clauses parsed from spec/*.md"
    assert set(sections) == set(clauses()), "the harness and this check parse different headings"
    problems = citation_problems(sections, cited_tests())
    assert not problems, "\n".join(problems)


def test_every_clause_states_a_requirement():
    """A clause or sub-clause whose text has no normative statement is a heading without a
    requirement: it should be informative text under another clause."""
    bare = sorted(cid for cid, sec in spec_sections().items() if not sec.normative)
    assert not bare, f"clauses with no **Statement.** or RFC 2119 word: {bare}"


def test_spec_lists_exactly_the_tests_that_cite_each_clause():
    problems = listing_problems(spec_sections(), cited_tests())
    assert not problems, "\n".join(problems)


def test_clause_headings_have_anchors():
    for path in sorted(Path(SPEC).glob("*.md")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            m = HEADING.match(line)
            if m:
                assert i > 0 and lines[i - 1] == f'<a id="s{m.group(1)}"></a>', (
                    f"{path.name}: §{m.group(1)} needs the anchor line "
                    f'<a id="s{m.group(1)}"></a> right above its heading')
