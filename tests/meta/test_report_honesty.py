"""What the summary and the conformance report say about runs that did not end in a verdict, and
where the largest ratio of a run came from (spec §8.8).

Each test runs pytest in a subprocess from the repository root, as a user would, against a
backend of ``batchgrad_spec/faults/reporting.py``:

* ``interrupts`` raises ``KeyboardInterrupt`` inside a clause (Ctrl-C): exit status 2, the clause
  "interrupted" in the record and the summary — before §8.8 the record called it "skip";
* ``undefined_answer`` raises an exception that is not a clause failure: "error", not "fail",
  "pass" or "skip";
* ``error_grows_with_inputs`` errs most on examples Hypothesis tries during its search, not on the
  shrunk counterexample: the summary says so and prints the worst example's repro snippet, which
  reproduces the ratio it states.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from batchgrad_spec.harness import mismatch_report
from batchgrad_spec.repro import reproductions
from batchgrad_spec.resources import ROOT
from reference.bounds import problem_tolerance

pytestmark = pytest.mark.meta

MEAN = "test_gradient_of_the_mean_loss_is_the_mean_of_per_example_gradients"


def run_suite(backend: str, tmp: Path, *args: str) -> tuple[subprocess.CompletedProcess[str],
                                                            dict]:
    """pytest on chapter 2's tests against ``backend`` (float64), with a conformance report."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "CI")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    report = tmp / "run.json"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_ch2_core.py", "-p", "no:cacheprovider",
         "--backend", f"batchgrad_spec.faults:{backend}", "--dtype", "float64",
         "--conformance-report", str(report), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    return run, json.loads(report.read_text(encoding="utf-8"))


def outcomes(record: dict) -> dict[str, str]:
    return {r["clause"]: r["outcome"] for r in record["results"]}


@pytest.mark.clause("8.8")
def test_an_interrupted_clause_is_reported_interrupted_never_skip(tmp_path):
    run, record = run_suite("interrupts", tmp_path, "-k", MEAN)
    out = run.stdout + run.stderr
    assert run.returncode == pytest.ExitCode.INTERRUPTED, out
    assert record["interrupted"] is True and record["exitstatus"] == 2
    assert outcomes(record) == {"2.1": "interrupted"}, record["results"]
    assert re.search(r"interrupted: 1 test item on interrupts cpu float64 strict did not "
                     r"finish: the run was interrupted while it ran; its clause is not "
                     rf"certified .*{MEAN}\[interrupts-cpu-float64\]", out), out
    md = (tmp_path / "run.md").read_text(encoding="utf-8")
    assert "| ⏸️ interrupted |" in md and "2 (interrupted)" in md, md
    assert "➖" not in md.split("## Results")[1].split("\n\n")[0], md  # no skip cell


@pytest.mark.clause("8.8")
def test_a_clause_that_errors_is_reported_error_never_fail_pass_or_skip(tmp_path):
    run, record = run_suite("undefined_answer", tmp_path, "-k", f"{MEAN} or worked_example")
    out = run.stdout + run.stderr
    assert run.returncode == pytest.ExitCode.TESTS_FAILED, out
    assert outcomes(record) == {"2.1": "error", "2.11": "error"}, record["results"]
    assert re.search(r"error: 3 test items on undefined_answer cpu float64 strict raised an "
                     r"error that is not a clause failure; their clause is not certified", out)
    assert "Undefined: undefined_answer: no batch gradient" in out, out


@pytest.mark.clause("8.8")
def test_a_clause_failure_is_still_a_fail_not_an_error(tmp_path):
    """The other side of the line: a backend that raises inside the contract breaks it (§8.3), a
    clause failure."""
    run, record = run_suite("raises", tmp_path, "-k", MEAN)
    assert run.returncode == pytest.ExitCode.TESTS_FAILED
    assert outcomes(record) == {"2.1": "fail"}, record["results"]
    assert "raised an error that is not a clause failure" not in run.stdout


@pytest.mark.clause("8.8")
def test_the_largest_ratio_is_traced_to_its_example(tmp_path):
    """The summary's largest ratio was met during Hypothesis's search, on another example than
    the shrunk counterexample: the summary says so, gives both ratios, and prints the worst
    example's snippet; run, that snippet shows the very ratio the summary states. The record
    stores the same snippet for the cell."""
    run, record = run_suite("error_grows_with_inputs", tmp_path, "-k", MEAN,
                            "--hypothesis-profile", "ci")
    out = run.stdout + run.stderr
    m = re.search(r"error_grows_with_inputs cpu float64 strict: the largest error/tolerance "
                  r"(\S+) \(∇L\['(\S+)'\]\) was seen during Hypothesis's search on another "
                  r"example than the shrunk counterexample printed with the failure \(which "
                  r"shows (\S+)\); that example:", out)
    assert m, out
    worst, name, shrunk = float(m.group(1)), m.group(2), float(m.group(3))
    assert worst > shrunk > 1
    failure, summary = reproductions(out, "2.1")[0], reproductions(out, "2.1")[-1]
    assert failure != summary
    (cell,) = record["results"]
    assert cell["outcome"] == "fail" and float(cell["max_ratio"]) == pytest.approx(worst, 1e-2)
    assert cell["worst_example"] == summary
    namespace: dict = {}
    exec(compile(summary, "<worst example>", "exec"), namespace)  # noqa: S102 — our own snippet
    tol = problem_tolerance(namespace["problem"], "float64").batch_grads[name]
    _, ratio = mismatch_report(np.asarray(namespace["observed"]),
                               np.asarray(namespace["expected"]), tol)
    assert ratio == pytest.approx(worst, rel=5e-3), (ratio, worst)
