"""What a user sees when a backend cannot be loaded or breaks the contract (spec §8.2, §8.3).

Each test runs pytest in a subprocess from the repository root, exactly as a user would from a
bare checkout (``python -m pytest --backend ...``), restricted to one property test and float64
so that each run takes a few seconds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from batchgrad_spec.repro import reproductions
from batchgrad_spec.resources import ROOT

pytestmark = pytest.mark.meta

MEAN_TEST = "gradient_of_the_mean_loss"


def run_pytest(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m pytest tests/test_ch2_core.py -p no:cacheprovider ARGS`` from the root."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "CI")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_ch2_core.py", "-p", "no:cacheprovider",
         "--dtype", "float64", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def output(run: subprocess.CompletedProcess[str]) -> str:
    return run.stdout + run.stderr


def assert_usage_error_before_tests(run: subprocess.CompletedProcess[str]) -> str:
    __tracebackhide__ = True
    out = output(run)
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, out  # 4
    assert not re.search(r"collected|\bpassed\b|\bfailed\b|test session starts", out), out
    return out


@pytest.mark.clause("8.2")
def test_unknown_backend_is_a_usage_error_naming_the_builtins():
    out = assert_usage_error_before_tests(run_pytest("--backend", "nosuch", "-k", MEAN_TEST))
    assert "--backend nosuch: unknown backend 'nosuch'" in out, out
    assert "built-in backends are jax, numpy, torch" in out, out
    assert "'package.module:attribute'" in out, out


@pytest.mark.clause("8.2")
def test_an_object_lacking_the_contract_is_a_usage_error_naming_what_is_missing():
    out = assert_usage_error_before_tests(
        run_pytest("--backend", "batchgrad_spec.faults:not_a_backend", "-k", MEAN_TEST))
    assert ("backend 'batchgrad_spec.faults:not_a_backend' (NotABackend) does not implement the "
            "contract: missing devices, dtypes, per_example_methods, per_example") in out, out


@pytest.mark.clause("8.2")
def test_a_plugged_in_backend_failing_a_clause_gets_a_report_and_a_runnable_repro():
    # mean_over_n_minus_1 is loaded by 'module:attribute' (§8.2) and fails §2.1 twice over:
    # N = 1 gives a non-finite answer (§8.3), N = 2 a wrong one; Hypothesis reports both.
    run = run_pytest("--backend", "batchgrad_spec.faults:mean_over_n_minus_1", "-k", MEAN_TEST,
                     "-x", "--hypothesis-profile", "ci")
    out = output(run)
    assert run.returncode == pytest.ExitCode.TESTS_FAILED, out
    assert "1 failed" in out, out
    for text in ("§2.1 The gradient of the mean loss is the mean of the per-example gradients",
                 "backend=mean_over_n_minus_1 ", "device=cpu", "dtype=float64", "tolerance",
                 "# Reproduce §2.1 on mean_over_n_minus_1-cpu-float64",
                 "backend = load('batchgrad_spec.faults:mean_over_n_minus_1')"):
        assert text in out, f"{text!r} missing from:\n{out}"
    assert re.search(r"(∇L\['\d+\.(weight|bias)'\]|\n\W*L) \(shape", out), out  # what differed
    assert ("the backend broke the contract: backend 'mean_over_n_minus_1' loss_and_grad on "
            "cpu-float64-strict returned non-finite loss") in out, out  # N = 1
    # The snippet of the comparison that failed runs, and shows the disagreement.
    snippets = [s for s in reproductions(out, "2.1") if "observed = None" not in s]
    assert snippets, out
    check = "\nassert not np.array_equal(np.asarray(observed), np.asarray(expected))\n"
    rerun = subprocess.run([sys.executable, "-c", snippets[0] + check], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, f"{snippets[0]}\n{rerun.stdout}{rerun.stderr}"
    assert rerun.stdout.startswith("observed:\n"), rerun.stdout


@pytest.mark.clause("8.3")
def test_a_backend_that_raises_fails_the_clause_with_a_message_naming_the_call():
    # The worked example (§2.11) is a plain test, without Hypothesis's shrinking and explaining
    # (which take ~10 s on a backend that always fails); the test above shows a contract breach
    # inside a Hypothesis property. per_example is right here; loss_and_grad raises.
    run = run_pytest("--backend", "batchgrad_spec.faults:raises", "-k", "worked_example and vmap")
    out = output(run)
    assert run.returncode == pytest.ExitCode.TESTS_FAILED, out
    assert "1 failed" in out, out
    # The failure is the clause failure saying what the backend did and the line inside the
    # backend that raised; no chained traceback from inside the harness or the contract.
    headline = out.index("batchgrad_spec.harness.ClauseFailure: §2.11 The worked example")
    assert "The above exception was the direct cause" not in out, out
    assert "reference/contract.py" not in out, out
    report = out[headline:]
    assert "raised at " in report and "faults/contract.py" in report, report
    assert "backend=raises " in report and "dtype=float64" in report, report
    assert "method=vmap" in report, report
    assert ("the backend broke the contract: backend 'raises' loss_and_grad on "
            "cpu-float64-strict raised RuntimeError: boom") in report, report
    assert "# Reproduce §2.11 on raises-cpu-float64-vmap" in report, report
