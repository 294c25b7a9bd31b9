"""§8.4: every clause has tests, every test cites an existing clause, and the spec says which."""

from __future__ import annotations

import importlib
import inspect
import re
from collections import defaultdict
from pathlib import Path
from types import ModuleType

import pytest

from batchgrad_spec.harness import clauses
from batchgrad_spec.properties import core
from batchgrad_spec.resources import ROOT, SPEC

pytestmark = [pytest.mark.meta, pytest.mark.clause("8.4")]

TEST_REF = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")


def spec_tests() -> dict[str, set[tuple[str, str | None]]]:
    """Clause id → the tests its **Tests.** paragraph names, as (path, name or None)."""
    listed: dict[str, set[tuple[str, str | None]]] = defaultdict(set)
    for path in sorted(SPEC.glob("*.md")):
        current = None
        in_tests = False
        for line in path.read_text(encoding="utf-8").splitlines():
            m = re.match(r"^#{2,4}\s+§(\d+\.\d+)\s", line)
            if m:
                current, in_tests = m.group(1), False
                continue
            if line.startswith("**Tests.**"):
                in_tests = True
            elif not line.strip() or line.startswith("**") or line.startswith("#"):
                in_tests = False
            if in_tests and current:
                listed[current].update(TEST_REF.findall(line))
    return {k: {(p, n or None) for p, n in v} for k, v in listed.items()}


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


def test_every_clause_has_a_test_and_every_test_cites_a_clause():
    spec_ids = set(clauses())
    tests = cited_tests()
    assert spec_ids, "no clauses parsed from spec/*.md"
    uncited = sorted(f"{p}::{n}" for (p, n), ids in tests.items() if not ids)
    assert not uncited, f"tests citing no clause (add @pytest.mark.clause): {uncited}"
    unknown = sorted(f"{p}::{n} cites §{c}" for (p, n), ids in tests.items() for c in ids
                     if c not in spec_ids)
    assert not unknown, f"tests citing clauses that do not exist in spec/: {unknown}"
    covered = {c for ids in tests.values() for c in ids}
    assert not spec_ids - covered, f"clauses without a test: {sorted(spec_ids - covered)}"


def test_spec_lists_exactly_the_tests_that_cite_each_clause():
    tests = cited_tests()
    listed = spec_tests()
    problems = []
    for cid in clauses():
        refs = listed.get(cid, set())
        if not refs:
            problems.append(f"§{cid} has no **Tests.** paragraph naming a test")
        for path, name in refs:
            if name is None:
                if not any(p == path and cid in ids for (p, _), ids in tests.items()):
                    problems.append(f"§{cid} lists {path}, which has no test citing it")
            elif cid not in tests.get((path, name), set()):
                problems.append(f"§{cid} lists {path}::{name}, which does not exist or does "
                                f"not cite §{cid}")
        for (path, name), ids in tests.items():
            if cid in ids and (path, name) not in refs and (path, None) not in refs:
                problems.append(f"{path}::{name} cites §{cid} but §{cid} does not list it")
    assert not problems, "\n".join(problems)


def test_clause_headings_have_anchors():
    for path in sorted(Path(SPEC).glob("*.md")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            m = re.match(r"^#{2,4}\s+§(\d+\.\d+)\s", line)
            if m:
                assert i > 0 and lines[i - 1] == f'<a id="s{m.group(1)}"></a>', (
                    f"{path.name}: §{m.group(1)} needs the anchor line "
                    f'<a id="s{m.group(1)}"></a> right above its heading')
