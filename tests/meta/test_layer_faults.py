"""The chapter-4 properties catch the chapter-4 faults (``batchgrad_spec/faults/layers.py``).

As ``test_faulty_backends.py`` does for chapter 2: each property test is re-run under the ``ci``
settings (derandomised, at most 100 examples, no shrinking) against a faulty backend; it must fail
with a ``ClauseFailure`` of its own clause, naming the backend and dtype and carrying a repro
snippet, within the profile; and the correct ``numpy`` backend must pass every example the faulty
run tried, on the same dtype and method. Unlike chapter 2's, some of these properties keep only
the examples where the clause has something to say (``assume``): examples Hypothesis rejects count
neither as tried nor as failed, and the control run replays the accepted ones inside Hypothesis.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
from hypothesis import Phase, example, given, settings
from hypothesis.errors import UnsatisfiedAssumption

from batchgrad_spec import stats
from batchgrad_spec.catching import CI, MAX_EXAMPLES, Outcome, leaves, make_target
from batchgrad_spec.harness import ClauseFailure, Target
from reference.problem import Problem
from tests import test_ch4_layers as ch4

pytestmark = pytest.mark.meta

DTYPES = ["float64", "float32"]
METHODS = ["vmap", "loop"]


def run_property(test: Any, target: Target) -> Outcome:
    """``test`` against ``target`` under the ci settings; ``Outcome.tried`` holds the accepted
    examples up to the first failure (rejections by ``assume`` are not counted)."""
    inner = test.hypothesis.inner_test
    out = Outcome(None)

    @functools.wraps(inner)  # same source and signature: the same derandomised examples
    def counted(**kwargs: Any) -> Any:
        try:
            result = inner(**kwargs)
        except UnsatisfiedAssumption:
            raise
        except Exception:
            out.calls += 1
            if out.first_failure is None:
                out.tried.append(kwargs["problem"])
            out.first_failure = out.first_failure or out.calls
            out.failing.append(kwargs["problem"])
            raise
        out.calls += 1
        if out.first_failure is None:
            out.tried.append(kwargs["problem"])
        return result

    prop = given(**test.hypothesis._given_kwargs)(CI(counted))
    kwargs: dict[str, Any] = {"target": target}
    if target.method is not None:
        kwargs["method"] = target.method
    with stats.preserved():
        try:
            prop(**kwargs)
        except BaseException as exc:  # noqa: B036  (an ExceptionGroup included)
            out.error = exc
    return out


def assert_correct_backend_passes(test: Any, faulty: Target, problems: list[Problem]) -> None:
    """The property holds for the numpy backend on each of ``problems``, replayed as explicit
    examples of the property (so that ``assume`` runs inside Hypothesis)."""
    __tracebackhide__ = True
    control = make_target("numpy", faulty.clause, faulty.config.dtype, faulty.method)
    prop = test.hypothesis.inner_test
    for p in problems:
        prop = example(problem=p)(prop)
    prop = settings(CI, phases=[Phase.explicit])(given(**test.hypothesis._given_kwargs)(prop))
    kwargs: dict[str, Any] = {"target": control}
    if control.method is not None:
        kwargs["method"] = control.method
    with stats.preserved():
        prop(**kwargs)


def assert_caught(fault: str, test: Any, clause: str, dtype: str, method: str | None,
                  message: tuple[str, ...]) -> list[ClauseFailure]:
    """``test`` against ``batchgrad_spec.faults.layers:<fault>`` fails with §``clause`` within the
    ci profile, one failure saying one of ``message``; numpy passes the examples tried."""
    __tracebackhide__ = True
    target = make_target(f"batchgrad_spec.faults.layers:{fault}", clause, dtype, method)
    out = run_property(test, target)
    assert out.error is not None, (
        f"{fault} passed §{clause} on {dtype} {method or ''} ({out.calls} examples)")
    failures = leaves(out.error)
    for f in failures:
        if not isinstance(f, ClauseFailure):
            raise AssertionError(f"{fault}: not a ClauseFailure: {f!r}") from f
        text = str(f)
        assert f.clause == clause and text.startswith(f"§{clause} "), text
        assert f"backend={fault} " in text and f"dtype={dtype}" in text, text
        assert any(n.startswith(f"# Reproduce §{clause} ") for n in f.__notes__), f.__notes__
    assert any(m in str(f) for f in failures for m in message), (
        f"no failure of {fault} says any of {message}: {[str(f) for f in failures]}")
    assert out.first_failure is not None and out.first_failure <= MAX_EXAMPLES
    print(f"\n{fault:<29} {dtype:<8} {method or '-':<5} caught by §{clause:<4} at example "
          f"{out.first_failure:>3} of <= {MAX_EXAMPLES}", end="")
    assert_correct_backend_passes(test, target, out.tried + out.failing[-len(failures):])
    return failures  # type: ignore[return-value]


@pytest.mark.clause("4.2")
@pytest.mark.parametrize("dtype", DTYPES)
def test_detached_batchnorm_statistics_are_caught_by_the_train_mode_batch_gradient(dtype):
    assert_caught("bn_detached_statistics",
                  ch4.test_train_mode_batchnorm_batch_gradient_matches_the_reference, "4.2",
                  dtype, None, message=("\n  ∇L through the batch statistics[",))


@pytest.mark.clause("4.3")
@pytest.mark.parametrize("method", METHODS)
def test_batch_of_one_per_example_gradients_are_caught_by_the_undefined_clause(method):
    assert_caught("bn_batch_of_one_per_example",
                  ch4.test_per_example_gradients_through_train_mode_batchnorm_raise_undefined,
                  "4.3", "float64", method,
                  message=("returned per-example gradients through a train-mode BatchNorm",))


@pytest.mark.clause("4.6")
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_leaky_relu_slope_one_at_zero_is_caught_by_the_kink_clause(dtype, method):
    assert_caught("leaky_relu_slope_one_at_zero",
                  ch4.test_leaky_relu_slope_at_an_exact_zero_preactivation_is_the_negative_slope,
                  "4.6", dtype, method, message=("\n  g_i with z = 0 at the first leaky_relu[",))
