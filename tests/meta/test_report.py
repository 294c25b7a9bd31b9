"""§8.5: conformance reports and the xfails file of known deviations.

The command-line tests run pytest in a subprocess from the repository root, as a user would,
on small selections of ``tests/test_ch2_core.py`` (a few seconds each): the correct ``numpy``
backend, and ``batchgrad_spec.faults:mean_over_n_minus_1``, which breaks §2.1 and nothing else
that is selected here. Runs that several tests read are made once per module.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from batchgrad_spec import stats
from batchgrad_spec.catching import make_target
from batchgrad_spec.report.markdown import PROVISIONAL_MARK, markdown
from batchgrad_spec.report.record import aggregate, merge
from batchgrad_spec.report.xfails import Deviation, XfailsError, parse_xfails
from batchgrad_spec.resources import ROOT, SPEC
from reference import SPEC_VERSION

pytestmark = [pytest.mark.meta, pytest.mark.clause("8.5")]

FAULTY = "batchgrad_spec.faults:mean_over_n_minus_1"
MEAN = "test_gradient_of_the_mean_loss_is_the_mean_of_per_example_gradients"
SUM = "test_gradient_of_the_summed_loss_is_the_sum_of_per_example_gradients"
WORKED = "test_worked_example_gradients_average_componentwise"


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` from the repository root, without the caller's pytest settings."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "CI")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def run_pytest(*args: str) -> subprocess.CompletedProcess[str]:
    return run("-m", "pytest", "tests/test_ch2_core.py", "-p", "no:cacheprovider", *args)


def output(r: subprocess.CompletedProcess[str]) -> str:
    return r.stdout + r.stderr


def cells(record: dict) -> dict[tuple[str, str, str, str], dict]:
    """(clause, backend, device, dtype) → result."""
    return {(r["clause"], r["backend"], r["device"], r["dtype"]): r for r in record["results"]}


@pytest.fixture(scope="module")
def numpy_run(tmp_path_factory: pytest.TempPathFactory):
    """§2.1 and §2.11 on numpy (both dtypes), dev profile with a fixed seed."""
    path = tmp_path_factory.mktemp("numpy") / "numpy.json"
    r = run_pytest("--backend", "numpy", "-k", f"{MEAN} or {WORKED}", "--hypothesis-seed",
                   "12345", "--conformance-report", str(path))
    assert r.returncode == 0, output(r)
    return r, path


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory: pytest.TempPathFactory):
    """§2.1 on the N−1 backend, float64, ci profile (derandomized) with a seed that it ignores."""
    path = tmp_path_factory.mktemp("faulty") / "faulty.json"
    r = run_pytest("--backend", FAULTY, "--dtype", "float64", "-k", MEAN, "--hypothesis-profile",
                   "ci", "--hypothesis-seed", "3", "--conformance-report", str(path))
    assert r.returncode == pytest.ExitCode.TESTS_FAILED, output(r)
    return r, path


def test_the_record_names_the_run_and_the_backends_with_their_versions(numpy_run):
    _, path = numpy_run
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["spec_version"] == SPEC_VERSION
    assert (record["profile"], record["max_examples"], record["derandomize"], record["seed"]) \
        == ("dev", 20, False, 12345)
    env = record["environment"]
    assert env["python"] and env["platform"]
    assert env["backends"] == [{
        "spec": "numpy", "name": "numpy", "versions": {"numpy": np.__version__},
        "devices": ["cpu"], "dtypes": ["float64", "float32"],
        "per_example_methods": ["vmap", "loop"], "precision": "strict"}]
    assert record["exitstatus"] == 0 and record["created"]


def test_the_record_has_an_outcome_examples_and_ratio_per_clause_and_configuration(numpy_run):
    _, path = numpy_run
    results = cells(json.loads(path.read_text(encoding="utf-8")))
    assert set(results) == {(c, "numpy", "cpu", dt) for c in ("2.1", "2.11")
                            for dt in ("float32", "float64")}
    for (clause, *_), r in results.items():
        assert r["outcome"] == "pass" and r["precision"] == "strict", r
        assert r["tests"] == (1 if clause == "2.1" else 2), r  # §2.11 runs per method
        assert 0 < r["examples"] <= (20 if clause == "2.1" else 2), r
        assert 0 <= r["max_ratio"] <= 1 and r["worst"], r
    assert results[("2.1", "numpy", "cpu", "float64")]["title"] == (
        "The gradient of the mean loss is the mean of the per-example gradients")


def test_the_markdown_table_shows_each_clause_outcome_and_ratio(numpy_run):
    r, path = numpy_run
    md = path.with_suffix(".md").read_text(encoding="utf-8")
    assert f"numpy (numpy {np.__version__}) on cpu [float64, float32]" in md, md
    assert "| clause | numpy-cpu-float32 | numpy-cpu-float64 |" in md, md
    row = next(line for line in md.splitlines() if line.startswith("| §2.1 The gradient of"))
    assert row.count("✅ ") == 2, row
    assert f"conformance report written to {path}" in output(r)


def test_the_header_prints_backends_versions_profile_and_seed(numpy_run, faulty_run):
    out = output(numpy_run[0])
    assert ("hypothesis profile 'dev' (max_examples=20, derandomize=False), seed 12345"
            in out), out
    assert (f"backend numpy: numpy {np.__version__}; devices cpu; dtypes float64, float32"
            in out), out
    out = output(faulty_run[0])
    assert ("hypothesis profile 'ci' (max_examples=100, derandomize=True), seed derandomized "
            "(fixed per test; --hypothesis-seed ignored)") in out, out
    assert f"backend {FAULTY}: numpy {np.__version__}, fault mean divides by N-1" in out, out


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_an_absent_device_is_said_once_not_per_test_and_reported_as_skip_cells(workers, tmp_path):
    """A CPU-only run: the header says once which device is absent and how many tests that
    leaves out; the short test summary (-ra) has no line per skipped test; the final count and
    the conformance report still show the tests that did not run."""
    if workers and importlib.util.find_spec("xdist") is None:
        pytest.skip("pytest-xdist is not installed")
    path = tmp_path / "absent.json"
    r = run_pytest("--backend", "numpy", "--device", "cpu", "--device", "cuda", "--dtype",
                   "float64", "-k", f"{MEAN} or {WORKED}", "-ra", "--conformance-report",
                   str(path), *workers)
    out = output(r)
    assert r.returncode == 0, out
    said = [line for line in out.splitlines() if "not present" in line]
    assert said == ["batchgrad-spec: numpy: device 'cuda' is not present here (devices: cpu): "
                    "3 tests skipped"], out
    assert "SKIPPED" not in out and "short test summary" not in out, out
    assert "3 passed, 3 skipped" in out, out
    if not workers:  # in the header: before the first test's progress
        assert out.index(said[0]) < out.index("tests/test_ch2_core.py ."), out
    results = cells(json.loads(path.read_text(encoding="utf-8")))
    assert {k[2]: v["outcome"] for k, v in results.items() if k[0] == "2.11"} == {
        "cpu": "pass", "cuda": "skip"}
    assert results[("2.1", "numpy", "cuda", "float64")]["outcome"] == "skip"


def test_records_merge_into_a_matrix_with_a_fail_cell_and_a_heatmap(numpy_run, faulty_run,
                                                                     tmp_path):
    out = tmp_path / "matrix"
    r = run("-m", "batchgrad_spec.report", "merge", str(numpy_run[1]), str(faulty_run[1]), "--out",
            str(out))
    assert r.returncode == 0, output(r)
    matrix = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert [s["name"] for s in matrix["sources"]] == ["numpy", "faulty"]
    assert [b["name"] for s in matrix["sources"] for b in s["environment"]["backends"]] == [
        "numpy", "mean_over_n_minus_1"]
    results = cells(matrix)
    assert results[("2.1", "mean_over_n_minus_1", "cpu", "float64")]["outcome"] == "fail"
    assert results[("2.1", "mean_over_n_minus_1", "cpu", "float64")]["max_ratio"] > 1
    assert {v["outcome"] for k, v in results.items() if k[1] == "numpy"} == {"pass"}
    md = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "| clause | mean_over_n_minus_1-cpu-float64 | numpy-cpu-float32 | numpy-cpu-float64 |" \
        in md, md
    row = next(line for line in md.splitlines() if line.startswith("| §2.1 "))
    assert row.split(" | ")[1].startswith("❌"), row
    png = out.with_suffix(".png")
    if importlib.util.find_spec("matplotlib") is None:
        assert not png.exists() and "no PNG" in r.stderr
    else:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 1_000_000


def test_an_xfails_file_marks_known_deviations_strictly_and_warns_about_stale_entries(tmp_path):
    xfails = tmp_path / "xfails.txt"
    xfails.write_text("\n".join([
        "# known deviations of the N-1 backend",
        "",
        f"tests/test_ch2_core.py::{MEAN}[mean_over_n_minus_1-*]  # §2.1 divides by N-1",
        f"{SUM}[mean_over_n_minus_1-cpu-float64]  # §2.2 not a deviation: an XPASS fails",
        f"skip {WORKED}[*-vmap]  # §2.11 skipped, not run",
        "tests/test_ch2_core.py::test_no_such_test  # §2.1 matches nothing",
    ]) + "\n", encoding="utf-8")
    path = tmp_path / "xfails.json"
    r = run_pytest("--backend", FAULTY, "--dtype", "float64", "-k", f"{MEAN} or {SUM} or "
                   f"{WORKED}", "--hypothesis-profile", "ci", "--xfails-file", str(xfails),
                   "--conformance-report", str(path))
    out = output(r)
    assert r.returncode == pytest.ExitCode.TESTS_FAILED, out  # the strict XPASS, and §2.11 loop
    assert f"known deviations: {xfails} (3 xfail, 1 skip)" in out, out
    assert f"XFAIL tests/test_ch2_core.py::{MEAN}[mean_over_n_minus_1-cpu-float64] - " \
           f"§2.1 divides by N-1 ({xfails}:3)" in out, out
    assert "[XPASS(strict)] §2.2 not a deviation" in out, out
    assert ("examples of expected failures — known deviations, not counted above: "
            "mean_over_n_minus_1 cpu float64 strict") in out, out
    assert (f"--xfails-file {xfails}:6: 'tests/test_ch2_core.py::test_no_such_test' matches "
            "no collected test") in out, out
    results = cells(json.loads(path.read_text(encoding="utf-8")))
    assert results[("2.1", "mean_over_n_minus_1", "cpu", "float64")]["outcome"] == "xfail"
    assert results[("2.2", "mean_over_n_minus_1", "cpu", "float64")]["outcome"] == "fail"
    worked = results[("2.11", "mean_over_n_minus_1", "cpu", "float64")]
    assert (worked["outcome"], worked["tests"]) == ("fail", 2)  # loop fails, vmap skipped
    record = json.loads(path.read_text(encoding="utf-8"))
    assert [e["clause"] for e in record["xfails"]["entries"]] == ["2.1", "2.2", "2.11", "2.1"]


def test_an_xfails_line_citing_no_clause_is_a_usage_error(tmp_path):
    xfails = tmp_path / "xfails.txt"
    xfails.write_text(f"{MEAN}[torch-*]  # torch divides by N-1\n", encoding="utf-8")
    r = run_pytest("--backend", "numpy", "--xfails-file", str(xfails))
    out = output(r)
    assert r.returncode == pytest.ExitCode.USAGE_ERROR, out
    assert f"--xfails-file {xfails}: line 1: " in out and "cites no clause" in out, out
    assert "collected" not in out and "passed" not in out, out


# -- the pieces, in process ------------------------------------------------------------------------
def test_xfails_patterns_are_substrings_with_wildcards_and_literal_brackets():
    text = ("# comment\n\n"
            "test_x[torch-cpu-float64*]  # §2.1 reason\n"
            "skip   tests/test_ch2_core.py::test_?  # see §2.5 and upstream issue 123\n")
    d1, d2 = parse_xfails("x.txt", text)
    assert (d1.line, d1.action, d1.clause, d1.pattern) == (3, "xfail", "2.1",
                                                           "test_x[torch-cpu-float64*]")
    assert (d2.action, d2.clause, d2.reason) == ("skip", "2.5", "see §2.5 and upstream issue 123")
    assert d1.matches("tests/test_ch2_core.py::test_x[torch-cpu-float64-vmap]")
    assert d1.matches("tests/test_ch2_core.py::test_x[torch-cpu-float64]")
    assert not d1.matches("tests/test_ch2_core.py::test_x[torch-cpu-float32]")
    assert not d1.matches("tests/test_ch2_core.py::test_xt")  # [ ] are not a character class
    assert d2.matches("tests/test_ch2_core.py::test_y[numpy-cpu-float64]")
    assert isinstance(d1, Deviation)
    [sub] = parse_xfails("x.txt", "test_a_token_mean_over_only_empty*[torch-*]  # §3.7.4 NaN\n")
    assert sub.clause == "3.7.4"  # a sub-clause is cited as itself, not as §3.7
    for bad, why in [("test_x  # reason\n", "cites no clause"), ("test_x\n", "cites no clause"),
                     ("test_x  # §9.99 reason\n", "not a clause"),
                     ("test_x  # §3.7.9 reason\n", "§3.7.9, which is not a clause"),
                     ("# §2.1\nskip  # §2.1 x\n", "line 2: no test pattern")]:
        with pytest.raises(XfailsError, match=why):
            parse_xfails("x.txt", bad)


def test_a_cell_shows_the_most_severe_outcome_of_its_items():
    def item(outcome, examples=None, ratio=None):
        return {"keys": [("2.1", "b", "cpu", "float64", "strict")], "outcome": outcome,
                "examples": examples, "max_ratio": ratio, "worst": "w"}

    def one(*items):
        [cell] = aggregate(items)
        return cell["outcome"], cell["tests"], cell["examples"], cell["max_ratio"]

    assert one(item("pass", 3, 0.5), item("fail", 2, 7.0), item("xfail")) == ("fail", 3, 5, 7.0)
    assert one(item("pass", 3, 0.5), item("xfail", 1, 0.2)) == ("xfail", 2, 4, 0.5)
    assert one(item("skip"), item("pass", 1, 0.1)) == ("pass", 2, 1, 0.1)
    assert one(item("skip"), item("skip")) == ("skip", 2, None, None)
    # merging records aggregates a cell present in both the same way
    rec = {"spec_version": SPEC_VERSION, "results": aggregate([item("pass", 3, 0.5)])}
    bad = {"spec_version": SPEC_VERSION, "results": aggregate([item("xfail", 2, 9.0)])}
    matrix = merge([("a", rec), ("b", bad)])
    [cell] = matrix["results"]
    assert (cell["outcome"], cell["tests"], cell["examples"], cell["max_ratio"]) == (
        "xfail", 2, 5, 9.0)
    assert "| §2.1 The gradient of the mean loss" in markdown(matrix)
    assert "⚠️ 9.00" in markdown(matrix)


def test_the_run_statistics_keep_expected_failures_apart_and_merge_across_processes():
    target = make_target("numpy", "2.1", "float64", None)
    key, column = stats.key(target), ("numpy", "cpu", "float64", "strict")
    assert key == ("2.1", *column)
    with stats.preserved():
        before = stats.snapshot(key)
        expected = stats.expected_failures().get(column, 0)
        for ratio in (0.25, 0.5, 0.125):
            stats.count_example(target)
            stats.count_ratio(target, ratio, f"r{ratio}")
        stats.count_failure(target)
        counted = stats.since(key, before)
        assert counted is not None
        assert (counted.examples, counted.failures, counted.max_ratio, counted.worst) == (
            3, 1, 0.5, "r0.5")
        stats.set_aside(key, before)  # the item ended as an expected failure
        assert stats.snapshot(key) == before
        assert stats.expected_failures()[column] == expected + 3
        totals = stats.totals()
        stats.merge(stats.export())  # as the xdist controller adds a worker's statistics
        assert stats.expected_failures()[column] == 2 * (expected + 3)
        assert {c: s.examples for c, s in stats.totals().items()} == {
            c: 2 * s.examples for c, s in totals.items()}
    assert stats.snapshot(key) == before  # preserved() forgets what was counted inside
    assert stats.expected_failures().get(column, 0) == expected


def test_the_example_xfails_file_parses():
    assert parse_xfails(Path(ROOT, "xfails.example.txt")) == []


def test_the_spec_version_the_record_names_is_the_spec_texts():
    """The record's ``spec_version`` (``reference.SPEC_VERSION``) is the **Version** line of
    spec/README.md: a report names the text it was checked against."""
    m = re.search(r"^\*\*Version (\S+)\*\*", (SPEC / "README.md").read_text(encoding="utf-8"),
                  re.MULTILINE)
    assert m, "spec/README.md has no **Version X** line"
    assert SPEC_VERSION == m.group(1)


@pytest.mark.clause("7.4.1")
def test_a_tf32_result_is_marked_provisional(tmp_path):
    """§7.4.1, §8.5: a result certified under ``--precision tf32`` (and one of §6.7 off the
    CPU) is marked provisional in the record and in its table; a strict one is not."""
    path = tmp_path / "tf32.json"
    r = run_pytest("--backend", "numpy", "--precision", "tf32", "--dtype", "float32", "-k", MEAN,
                   "--conformance-report", str(path))
    assert r.returncode == 0, output(r)
    [cell] = json.loads(path.read_text(encoding="utf-8"))["results"]
    assert (cell["clause"], cell["precision"], cell["outcome"]) == ("2.1", "tf32", "pass")
    assert cell["provisional"] and "§7.4.1" in cell["provisional"], cell
    md = path.with_suffix(".md").read_text(encoding="utf-8")
    row = next(line for line in md.splitlines() if line.startswith("| §2.1 "))
    assert row.endswith(f"{PROVISIONAL_MARK} |"), row
    assert "## Provisional results" in md and "§7.4.1" in md, md

    def item(clause, device, precision):
        return {"keys": [(clause, "torch", device, "float32", precision)], "outcome": "pass",
                "examples": 1, "max_ratio": 0.5, "worst": "w"}

    results = aggregate([item("2.1", "cuda", "tf32"), item("2.1", "cuda", "strict"),
                         item("6.7", "cuda", "strict"), item("6.7", "cpu", "strict")])
    flags = {(c["clause"], c["device"], c["precision"]): bool(c["provisional"]) for c in results}
    assert flags == {("2.1", "cuda", "strict"): False, ("2.1", "cuda", "tf32"): True,
                     ("6.7", "cpu", "strict"): False, ("6.7", "cuda", "strict"): True}
    # merging records keeps the mark (it is recomputed from the cell, old records included)
    old = {"spec_version": "0.1.0", "results": [{k: v for k, v in c.items() if k != "provisional"}
                                                for c in results]}
    merged = merge([("old", old)])
    assert {(c["clause"], c["device"], c["precision"]): bool(c["provisional"])
            for c in merged["results"]} == flags
    table = markdown(merged)
    strict = next(line for line in table.splitlines() if line.startswith("| §2.1 "))
    assert strict.count(PROVISIONAL_MARK) == 1, strict  # the tf32 column only
