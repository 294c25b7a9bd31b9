"""Chapter 3's properties catch wrong loss reductions, each by the clause it violates.

The machinery of ``test_faulty_backends.py``: each faulty backend of ``faulty_losses.py`` (and
``faulty.mse_summed_over_outputs``) is run through the property test of its clause under the
``ci`` profile (derandomised, at most 100 examples, no shrinking). Each case asserts that the
property fails with ``ClauseFailure`` of that clause, naming the backend and dtype, with a repro
snippet; that the first failure comes within the profile's ``max_examples`` (printed with
``-s``); and that the correct ``numpy`` backend passes every example the faulty run tried.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from batchgrad_spec.catching import (
    MAX_EXAMPLES,
    assert_correct_backend_passes,
    leaves,
    make_target,
    run_property,
)
from batchgrad_spec.harness import ClauseFailure
from tests import test_ch3_losses as ch3

pytestmark = pytest.mark.meta

DTYPES = ["float64", "float32"]

CASES: dict[str, tuple[str, Callable[..., Any], str, tuple[str, ...]]] = {
    # backend: (module, property, clause, one of these must appear in a failure)
    "class_weighted_mean_over_n": (
        "batchgrad_spec.faults.losses",
        ch3.test_class_weighted_cross_entropy_mean_divides_by_the_weights_of_the_kept_labels,
        "3.3", ("L = Σ w[y_i] nll_i / Σ_kept w[y_i]", "∇L = Σ g_i / Σ_kept w[y_i]")),
    "ignored_targets_counted": (
        "batchgrad_spec.faults.losses",
        ch3.test_ignored_rows_count_as_if_they_were_dropped_from_the_batch,
        "3.4", ("ignored vs dropped",)),
    "smoothing_over_ignored_rows": (
        "batchgrad_spec.faults.losses",
        ch3.test_label_smoothing_averages_its_uniform_term_over_the_kept_labels_only,
        "3.5", ("L = Σ_kept [(1−ε) w[y_i] nll_i", "\n  ∇L[")),
    "mse_summed_over_outputs": (
        "batchgrad_spec.faults",
        ch3.test_the_mean_of_an_elementwise_loss_divides_by_n_times_d,
        "3.2", ("L = Σ_i Σ_d ℓ_id / (N·D)", "∇L = (1/N) Σ g_i")),
}


def assert_caught(fault: str, dtype: str) -> list[ClauseFailure]:
    """Run ``fault``'s property against it: every failure is a ClauseFailure of its clause,
    the first within the ci budget, and the numpy backend passes the same examples."""
    __tracebackhide__ = True
    module, test, clause, message = CASES[fault]
    target = make_target(f"{module}:{fault}", clause, dtype, None)
    out = run_property(test, target)
    assert out.error is not None, f"{fault} passed §{clause} on {dtype} ({out.calls} examples)"
    failures = leaves(out.error)
    for f in failures:
        if not isinstance(f, ClauseFailure):
            raise AssertionError(f"{fault}: not a ClauseFailure: {f!r}") from f
        assert f.clause == clause, f"{fault}: failed §{f.clause}, expected §{clause}"
        text = str(f)
        assert text.startswith(f"§{clause} "), text
        assert f"backend={fault} " in text and f"dtype={dtype}" in text, text
        assert any(n.startswith(f"# Reproduce §{clause} ") for n in f.__notes__), f.__notes__
    assert any(m in str(f) for f in failures for m in message), (
        f"no failure of {fault} says any of {message}: {[str(f) for f in failures]}")
    assert out.first_failure is not None and out.first_failure <= MAX_EXAMPLES
    assert out.stats_examples >= out.first_failure
    print(f"\n{fault:<29} {dtype:<8} caught by §{clause} at example {out.first_failure:>3} of "
          f"<= {MAX_EXAMPLES} ({len(failures)} distinct failure{'s' * (len(failures) > 1)})",
          end="")
    assert_correct_backend_passes(test, target, out.tried + out.failing[-len(failures):])
    return failures  # type: ignore[return-value]


@pytest.mark.clause("3.3")
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_class_weighted_mean_divided_by_n_is_caught_by_the_class_weight_clause(dtype):
    assert_caught("class_weighted_mean_over_n", dtype)


@pytest.mark.clause("3.4")
@pytest.mark.parametrize("dtype", DTYPES)
def test_ignored_labels_counted_in_the_mean_are_caught_by_the_ignore_index_clause(dtype):
    assert_caught("ignored_targets_counted", dtype)


@pytest.mark.clause("3.5")
@pytest.mark.parametrize("dtype", DTYPES)
def test_smoothing_over_ignored_rows_is_caught_by_the_label_smoothing_clause(dtype):
    assert_caught("smoothing_over_ignored_rows", dtype)


@pytest.mark.clause("3.2")
@pytest.mark.parametrize("dtype", DTYPES)
def test_an_mse_mean_divided_by_n_is_caught_by_the_n_times_d_clause(dtype):
    assert_caught("mse_summed_over_outputs", dtype)


@pytest.mark.clause("3.3", "3.4", "3.5")
@pytest.mark.parametrize("fault", ["class_weighted_mean_over_n", "ignored_targets_counted",
                                   "smoothing_over_ignored_rows"])
def test_each_loss_fault_is_exactly_right_where_its_feature_is_absent(fault):
    """A fault's backend must agree with the numpy backend wherever its fault cannot show (no
    class weights / no ignored label / no smoothing): the failures above are the fault's alone.
    Checked with §3.1's property on cross-entropy problems that lack the feature."""
    module, _, clause, _ = CASES[fault]
    absent = {"class_weighted_mean_over_n": {"class_weights": False},
              "ignored_targets_counted": {"ignore_index": False},
              "smoothing_over_ignored_rows": {"label_smoothing": False}}[fault]
    out = run_property(ch3.test_the_mean_divides_the_summed_losses_by_the_total_count,
                       make_target(f"{module}:{fault}", "3.1", "float64", None),
                       problem=ch3.loss_problems(losses=(ch3.CE,), reductions=("mean",),
                                                 **absent))
    assert out.error is None, f"{fault} failed §3.1 without its feature: {out.error}"
    assert out.calls == MAX_EXAMPLES
