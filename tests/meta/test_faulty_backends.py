"""The property suite catches wrong backends, each by the clause it violates.

Every backend of ``tests/meta/faulty.py`` is run through the property test of the clause that
should catch it, with the ``ci`` Hypothesis profile (derandomised, so the examples — and the
numbers printed here — are the same on every run). Each case asserts that

* the property fails with ``ClauseFailure`` of the expected clause (every sub-failure, when
  Hypothesis reports several distinct ones as an ``ExceptionGroup``), whose message names the
  backend and dtype and whose note is the repro snippet;
* the first failure came within the profile's ``max_examples`` (the count is printed; run with
  ``-s`` to see it);
* every example the faulty run tried, up to and including its first failure, and every reported
  counterexample pass the same property for the correct ``numpy`` backend on the same dtype and
  method: the failure is the fault's.

The property tests are re-wrapped with ``@given`` under the ``ci`` settings rather than called as
imported: a ``@given`` test's settings are fixed when its module is imported (by whichever profile
was loaded then), and re-wrapping leaves the imported function untouched for the real suite. The
re-wrapped test has the original's source and signature, so it draws the very examples the ``ci``
profile draws for it in ``pytest --backend ... --hypothesis-profile ci``. Shrinking is skipped to
keep this module fast (the first failure is what is measured); ``test_contract_errors.py`` shows
a shrunk report end to end. ``harness.STATS`` is restored after each run, so these deliberate
failures do not appear in the session's summary of real backends.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import Phase, given, settings

from reference.contract import Config
from reference.problem import Problem
from tests import harness, test_ch2_core
from tests.harness import ClauseFailure, Target
from tests.strategies import problems

pytestmark = pytest.mark.meta

CI = settings(settings.get_profile("ci"), database=None,
              phases=[Phase.explicit, Phase.reuse, Phase.generate])
MAX_EXAMPLES = CI.max_examples

T2_1 = test_ch2_core.test_gradient_of_the_mean_loss_is_the_mean_of_per_example_gradients
T2_5 = test_ch2_core.test_every_per_example_gradient_is_taken_at_the_same_parameters
T2_12 = test_ch2_core.test_backend_per_example_gradients_match_the_reference


@dataclass
class Outcome:
    """A property run: what it raised, and after how many examples it first failed."""

    error: BaseException | None
    first_failure: int | None = None  # 1-based index of the first example that failed
    calls: int = 0  # calls of the test body
    stats_examples: int = 0  # what harness.STATS counted for this target during the run
    tried: list[Problem] = field(default_factory=list)  # up to and including the first failure
    failing: list[Problem] = field(default_factory=list)  # every failing example, in order


def make_target(spec: str, clause: str, dtype: str, method: str | None) -> Target:
    return Target(spec, harness.load(spec), Config("cpu", dtype), clause=clause, method=method)


def run_property(test: Callable[..., Any], target: Target, *, profile: settings = CI,
                 **strategies: Any) -> Outcome:
    """Run the @given property ``test`` against ``target`` under the ``ci`` settings (or
    ``profile``, e.g. with shrinking), with its own strategies unless ``strategies`` replaces
    some."""
    inner = test.hypothesis.inner_test  # type: ignore[attr-defined]
    strategies = {**test.hypothesis._given_kwargs, **strategies}  # type: ignore[attr-defined]
    out = Outcome(None)

    @functools.wraps(inner)  # same source and signature: the same derandomised examples
    def counted(**kwargs: Any) -> Any:
        out.calls += 1
        if out.first_failure is None:
            out.tried.append(kwargs["problem"])
        try:
            return inner(**kwargs)
        except Exception:
            out.first_failure = out.first_failure or out.calls
            out.failing.append(kwargs["problem"])
            raise

    prop = given(**strategies)(profile(counted))
    key = (target.clause, target.backend.name, target.config.device, target.config.dtype,
           target.config.precision)
    saved = copy.deepcopy(harness.STATS)
    kwargs: dict[str, Any] = {"target": target}
    if target.method is not None:
        kwargs["method"] = target.method
    try:
        prop(**kwargs)
    except BaseException as exc:  # noqa: B036  (an ExceptionGroup included; inspected below)
        out.error = exc
    finally:
        out.stats_examples = harness.STATS[key].examples if key in harness.STATS else 0
        harness.STATS.clear()
        harness.STATS.update(saved)
    return out


def leaves(exc: BaseException) -> list[BaseException]:
    """The individual failures of a (possibly nested) exception group (3.10: the backport)."""
    if isinstance(getattr(exc, "exceptions", None), tuple):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


def assert_correct_backend_passes(test: Callable[..., Any], faulty: Target,
                                  problems: list[Problem]) -> None:
    """The property holds for the numpy backend on each of ``problems`` (same dtype, method)."""
    __tracebackhide__ = True
    control = make_target("numpy", faulty.clause, faulty.config.dtype, faulty.method)
    inner = test.hypothesis.inner_test  # type: ignore[attr-defined]
    kwargs: dict[str, Any] = {"target": control}
    if control.method is not None:
        kwargs["method"] = control.method
    saved = copy.deepcopy(harness.STATS)
    try:
        for problem in problems:
            inner(problem=problem, **kwargs)
    finally:
        harness.STATS.clear()
        harness.STATS.update(saved)


def assert_caught(fault: str, test: Callable[..., Any], clause: str, dtype: str,
                  method: str | None, message: tuple[str, ...] = (),
                  **strategies: Any) -> list[ClauseFailure]:
    """Run ``test`` against ``tests.meta.faulty:<fault>``: it must fail with §``clause``, and
    one of the failures must contain one of ``message``."""
    __tracebackhide__ = True
    target = make_target(f"tests.meta.faulty:{fault}", clause, dtype, method)
    out = run_property(test, target, **strategies)
    assert out.error is not None, (
        f"{fault} passed §{clause} on {dtype} {method or ''} ({out.calls} examples)")
    failures = leaves(out.error)
    for f in failures:
        if not isinstance(f, ClauseFailure):
            raise AssertionError(f"{fault}: not a ClauseFailure: {f!r}") from f
        assert f.clause == clause, f"{fault}: failed §{f.clause}, expected §{clause}"
        text = str(f)
        assert text.startswith(f"§{clause} "), text
        assert f"backend={fault} " in text and f"dtype={dtype}" in text, text
        assert any(n.startswith(f"# Reproduce §{clause} ") for n in f.__notes__), f.__notes__
    if message:
        assert any(m in str(f) for f in failures for m in message), (
            f"no failure of {fault} says any of {message}: {[str(f) for f in failures]}")
    assert out.first_failure is not None and out.first_failure <= MAX_EXAMPLES
    assert out.stats_examples >= out.first_failure  # harness.STATS counted them too
    where = " (N >= 2)" if strategies else ""
    print(f"\n{fault + where:<29} {dtype:<8} {method or '-':<5} caught by §{clause:<4} at example "
          f"{out.first_failure:>3} of <= {MAX_EXAMPLES} ({len(failures)} distinct "
          f"failure{'s' if len(failures) > 1 else ''})", end="")
    assert_correct_backend_passes(test, target, out.tried + out.failing[-len(failures):])
    return failures  # type: ignore[return-value]


DTYPES = ["float64", "float32"]
METHODS = ["vmap", "loop"]


COMPARISON_21 = ("\n  ∇L[", "\n  L (shape")  # the mean identity's comparison with the reference


@pytest.mark.clause("2.1")
@pytest.mark.parametrize("dtype", DTYPES)
def test_mean_over_n_minus_1_is_caught_by_the_mean_identity(dtype):
    # Hypothesis tries the smallest problem first: N = 1, where N − 1 = 0 gives inf or NaN,
    # which the contract's validation reports as a failure of the clause under test...
    assert_caught("mean_over_n_minus_1", T2_1, "2.1", dtype, None,
                  message=(f"loss_and_grad on cpu-{dtype}-strict returned non-finite ",))
    # ...and with N >= 2, where the wrong normaliser is finite, the comparison itself fails.
    assert_caught("mean_over_n_minus_1", T2_1, "2.1", dtype, None, message=COMPARISON_21,
                  problem=problems(reductions=("mean",), min_batch=2))


@pytest.mark.clause("2.1")
@pytest.mark.parametrize("dtype", DTYPES)
def test_last_example_only_is_caught_by_the_mean_identity(dtype):
    assert_caught("last_example_only", T2_1, "2.1", dtype, None, message=COMPARISON_21)


@pytest.mark.clause("2.5")
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_sequential_updates_are_caught_by_the_same_parameters_clause(dtype, method):
    assert_caught("sequential_updates", T2_5, "2.5", dtype, method, message=("\n  g_i at θ[",))


@pytest.mark.clause("2.5")
@pytest.mark.parametrize("method", METHODS)
def test_params_modified_in_place_are_caught_by_the_same_parameters_clause(method):
    assert_caught("mutates_params", T2_5, "2.5", "float64", method,
                  message=(f"per_example(method={method!r}) on cpu-float64-strict modified "
                           f"problem.params[",))


@pytest.mark.clause("2.12")
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fault", ["sequential_updates", "per_example_scaled"])
def test_wrong_per_example_gradients_are_caught_by_the_reference_comparison(fault, dtype,
                                                                           method):
    # ℓ_i are compared before g_i: sequential updates show in the losses already.
    assert_caught(fault, T2_12, "2.12", dtype, method, message=("\n  ℓ_i (shape", "\n  g_i["))


@pytest.mark.clause("8.3")
@pytest.mark.parametrize("fault, test, clause, method, message", [
    ("wrong_shape", T2_1, "2.1", None,
     "loss_and_grad on cpu-float64-strict returned gradient '0.weight' of shape"),
    ("wrong_shape", T2_12, "2.12", "vmap",
     "per_example(method='vmap') on cpu-float64-strict returned gradient '0.weight' of shape"),
    ("returns_nan", T2_1, "2.1", None,
     "loss_and_grad on cpu-float64-strict returned non-finite gradient '0.weight' (NaN"),
    ("raises", T2_1, "2.1", None,
     "loss_and_grad on cpu-float64-strict raised RuntimeError: boom"),
], ids=["wrong_shape-loss_and_grad", "wrong_shape-per_example", "returns_nan", "raises"])
def test_contract_breaches_fail_the_clause_under_test(fault, test, clause, method, message):
    failures = assert_caught(fault, test, clause, "float64", method,
                             message=(f"the backend broke the contract: backend {fault!r} "
                                      f"{message}",))
    assert len(failures) == 1  # one fault, one failure: from the first example on
