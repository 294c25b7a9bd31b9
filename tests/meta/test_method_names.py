"""Per-example method names are the backend's own (spec §8.9, §2.12): the suite asks a backend
only for the names it lists, and says once, in one line, if §2.12's required names are missing.

``batchgrad_spec.faults:copies_and_loop`` is right in every answer but offers ("copies", "loop").
Collected against it, no test id names "vmap"; run, the tests that compare methods with each
other or with the reference (§2.12, §2.13, and §4.7's, which hard-coded ["vmap", "loop"] until
0.2.0 + unreleased) pass with "copies" and "loop", and the one failure is the test of §2.12's
names, naming the missing "vmap". A static check finds method names written into the chapter
tests and properties instead of read from ``per_example_methods()``.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

import pytest

from batchgrad_spec.resources import ROOT

pytestmark = pytest.mark.meta

BACKEND = "batchgrad_spec.faults:copies_and_loop"
NAMES = ("vmap", "loop")
FIXED_BACKEND_USES = {("tests/test_ch7_numerics.py", "float32_and_reference"),
                      ("tests/test_ch8_contract.py", "test_contract_violations_are_clear_errors")}
"""Functions that call one fixed backend whose names are known (the numpy reference in float32;
a local broken numpy backend), not a test's target."""


def pytest_run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "CI")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "--backend", BACKEND, "--dtype", "float64", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.clause("8.9")
def test_no_test_is_generated_for_a_method_the_backend_does_not_list():
    run = pytest_run("--collect-only", "-q", *sorted(str(p.relative_to(ROOT)) for p in
                                                     (ROOT / "tests").glob("test_ch*.py")))
    assert run.returncode == 0, run.stdout + run.stderr
    ids = [line for line in run.stdout.splitlines() if "::" in line]
    assert any("copies_and_loop-cpu-float64-copies]" in i for i in ids), run.stdout
    assert any("copies_and_loop-cpu-float64-loop]" in i for i in ids), run.stdout
    assert not [i for i in ids if re.search(r"copies_and_loop[^\]]*-vmap\]", i)]


@pytest.mark.clause("8.9", "2.12", "4.7")
def test_a_backend_with_its_own_names_fails_only_the_name_requirement():
    run = pytest_run("tests/test_ch2_core.py", "tests/test_ch4_dropout_and_kinks.py", "-k",
                     "dropout_masks_passed_as_data or per_example_gradients_match or "
                     "offers_the_vectorised or reduction_of_its_own")
    out = run.stdout + run.stderr
    assert "unknown per-example method" not in out, out
    failed = re.findall(r"^FAILED (\S+)", out, re.MULTILINE)
    assert failed == ["tests/test_ch2_core.py::test_backend_offers_the_vectorised_and_the_loop_"
                      "method[copies_and_loop-cpu-float64]"], out
    assert ("per_example_methods() is ('copies', 'loop'): missing 'vmap'; §2.12 requires "
            "'vmap'") in out, out
    passed = int(re.search(r"(\d+) passed", out).group(1))  # type: ignore[union-attr]
    assert passed >= 6, out  # §2.12, §2.13, §4.7 with each of the two names (and more)


def _literal_method_names(tree: ast.AST) -> list[tuple[str, int, str]]:
    """(function, line, what) for each method name written as a literal where a backend's
    per-example method is chosen: ``method="vmap"``, ``per_example(..., "loop")``, or a list
    or tuple of the names."""
    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Call):
                args = list(node.args) + [k.value for k in node.keywords if k.arg == "method"]
                name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                for a in args:
                    if (isinstance(a, ast.Constant) and a.value in NAMES
                            and ("per_example" in name or a in [k.value for k in node.keywords])):
                        found.append((fn.name, node.lineno, f"{name}(… {a.value!r} …)"))
            if isinstance(node, ast.List | ast.Tuple) and {getattr(e, "value", None)
                                                          for e in node.elts} == set(NAMES):
                found.append((fn.name, node.lineno, "a list of the names"))
    return found


@pytest.mark.clause("8.9")
def test_chapter_tests_read_method_names_from_the_backend():
    files = sorted((ROOT / "tests").glob("test_ch*.py")) + sorted(
        (ROOT / "batchgrad_spec" / "properties").glob("*.py"))
    written = []
    for path in files:
        rel = str(path.relative_to(ROOT))
        for fn, line, what in _literal_method_names(ast.parse(path.read_text("utf-8"))):
            if (rel, fn) not in FIXED_BACKEND_USES:
                written.append(f"{rel}:{line} in {fn}: {what}")
    assert not written, "method names written instead of per_example_methods():\n" + "\n".join(
        written)


@pytest.mark.clause("8.9")
def test_the_static_check_finds_a_written_name():
    """The check of the previous test on the §4.7 test as it was in 0.2.0."""
    old = ('def test(target, problem):\n    methods = ["vmap", "loop"]\n'
           '    c.per_example(method="vmap")\n')
    assert [w[2] for w in _literal_method_names(ast.parse(old))] == [
        "a list of the names", "per_example(… 'vmap' …)"]
