"""Chapter 3's properties catch wrong loss reductions, each by the clause it violates.

The machinery of ``test_faulty_backends.py`` (``batchgrad_spec.catching``): each faulty backend of
``batchgrad_spec/faults/losses.py`` (and ``faults.mse_summed_over_outputs``) is run through the
property test of its clause under the ``ci`` profile (derandomised, at most 100 examples, no
shrinking). Each case asserts that the property fails with ``ClauseFailure`` of that clause,
naming the backend and dtype, with a repro snippet; that the first failure comes within the
profile's ``max_examples`` (printed with ``-s``); and that the correct ``numpy`` backend passes
every example the faulty run tried.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from batchgrad_spec.catching import MAX_EXAMPLES, assert_caught, make_target, run_property
from batchgrad_spec.properties import losses
from batchgrad_spec.strategies import loss_problems

pytestmark = pytest.mark.meta

DTYPES = ["float64", "float32"]

CASES: dict[str, tuple[Callable[..., Any], str, tuple[str, ...]]] = {
    # backend of batchgrad_spec.faults: (property, clause, one of these must appear in a failure)
    "class_weighted_mean_over_n": (
        losses.test_class_weighted_cross_entropy_mean_divides_by_the_weights_of_the_kept_labels,
        "3.3", ("L = Σ w[y_i] nll_i / Σ_kept w[y_i]", "∇L = Σ g_i / Σ_kept w[y_i]")),
    "ignored_targets_counted": (
        losses.test_ignored_rows_count_as_if_they_were_dropped_from_the_batch,
        "3.4", ("ignored vs dropped",)),
    "smoothing_over_ignored_rows": (
        losses.test_label_smoothing_averages_its_uniform_term_over_the_kept_labels_only,
        "3.5", ("L = Σ_kept [(1−ε) w[y_i] nll_i", "\n  ∇L[")),
    "mse_summed_over_outputs": (
        losses.test_the_mean_of_an_elementwise_loss_divides_by_n_times_d,
        "3.2", ("L = Σ_i Σ_d ℓ_id / (N·D)", "∇L = (1/N) Σ g_i")),
}


def caught(fault: str, dtype: str) -> None:
    __tracebackhide__ = True
    test, clause, message = CASES[fault]
    assert_caught(fault, test, clause, dtype, None, message=message)


@pytest.mark.clause("3.3")
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_class_weighted_mean_divided_by_n_is_caught_by_the_class_weight_clause(dtype):
    caught("class_weighted_mean_over_n", dtype)


@pytest.mark.clause("3.4")
@pytest.mark.parametrize("dtype", DTYPES)
def test_ignored_labels_counted_in_the_mean_are_caught_by_the_ignore_index_clause(dtype):
    caught("ignored_targets_counted", dtype)


@pytest.mark.clause("3.5")
@pytest.mark.parametrize("dtype", DTYPES)
def test_smoothing_over_ignored_rows_is_caught_by_the_label_smoothing_clause(dtype):
    caught("smoothing_over_ignored_rows", dtype)


@pytest.mark.clause("3.2")
@pytest.mark.parametrize("dtype", DTYPES)
def test_an_mse_mean_divided_by_n_is_caught_by_the_n_times_d_clause(dtype):
    caught("mse_summed_over_outputs", dtype)


@pytest.mark.clause("3.3", "3.4", "3.5")
@pytest.mark.parametrize("fault", ["class_weighted_mean_over_n", "ignored_targets_counted",
                                   "smoothing_over_ignored_rows"])
def test_each_loss_fault_is_exactly_right_where_its_feature_is_absent(fault):
    """A fault's backend must agree with the numpy backend wherever its fault cannot show (no
    class weights / no ignored label / no smoothing): the failures above are the fault's alone.
    Checked with §3.1's property on cross-entropy problems that lack the feature."""
    absent = {"class_weighted_mean_over_n": {"class_weights": False},
              "ignored_targets_counted": {"ignore_index": False},
              "smoothing_over_ignored_rows": {"label_smoothing": False}}[fault]
    out = run_property(losses.test_the_mean_divides_the_summed_losses_by_the_total_count,
                       make_target(f"batchgrad_spec.faults.losses:{fault}", "3.1", "float64",
                                   None),
                       problem=loss_problems(losses=(losses.CE,), reductions=("mean",),
                                             **absent))
    assert out.error is None, f"{fault} failed §3.1 without its feature: {out.error}"
    assert out.calls == MAX_EXAMPLES
