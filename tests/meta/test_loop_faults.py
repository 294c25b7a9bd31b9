"""Chapter 10 catches wrong training loops, each by its clause (faulty backends of
``batchgrad_spec/faults/loops.py``), with the machinery of ``batchgrad_spec.catching``: the
property of ``batchgrad_spec.properties.loops`` is run under the ``ci`` profile (derandomised, at
most 100 examples) and must fail with a ``ClauseFailure`` of the expected clause, while the
correct ``numpy`` backend passes the same property under the same profile — the same examples,
which do not depend on the backend. float64 only: each fault is wrong in its logic, not in its
rounding (all six were also caught in float32 at the same example when this was written), and a
run costs about 20 s (the faulty backend, then the correct one over the same examples).
"""

from __future__ import annotations

import pytest

from batchgrad_spec.catching import assert_caught_by_a_rerun
from batchgrad_spec.properties import loops

pytestmark = pytest.mark.meta


def _caught(fault: str, test, clause: str, dtype: str) -> int:
    __tracebackhide__ = True
    return assert_caught_by_a_rerun(f"batchgrad_spec.faults.loops:{fault}", test, clause, dtype)


@pytest.mark.clause("10.1")
@pytest.mark.parametrize("dtype", ["float64"])
def test_clipping_each_micro_batch_is_caught_by_the_clipping_clause(dtype):
    _caught("clip_per_micro_batch", loops.test_clipping_by_global_norm_acts_once_per_optimizer_step,
            "10.1", dtype)


@pytest.mark.clause("10.1")
@pytest.mark.parametrize("dtype", ["float64"])
def test_clipping_each_rank_by_its_local_norm_is_caught_by_the_clipping_clause(dtype):
    _caught("clip_per_rank_local_norm",
            loops.test_clipping_under_data_parallelism_uses_the_norm_of_the_all_reduced_gradient,
            "10.1", dtype)


@pytest.mark.clause("10.2")
@pytest.mark.parametrize("dtype", ["float64"])
def test_clipping_the_sum_instead_of_each_example_is_caught_by_the_dp_sgd_clause(dtype):
    _caught("dp_clip_after_sum", loops.
            test_per_example_clipping_clips_each_gradient_then_sums_and_divides_by_the_expected_size,
            "10.2", dtype)


@pytest.mark.clause("10.3")
@pytest.mark.parametrize("dtype", ["float64"])
def test_clipping_before_unscaling_is_caught_by_the_loss_scaling_clause(dtype):
    _caught("clip_before_unscaling", loops.test_gradients_are_unscaled_before_they_are_clipped,
            "10.3", dtype)


@pytest.mark.clause("10.3")
@pytest.mark.parametrize("dtype", ["float64"])
def test_a_skipped_step_that_advances_adams_counter_is_caught_by_the_loss_scaling_clause(dtype):
    _caught("skipped_step_advances_adam",
            loops.test_a_step_with_a_non_finite_gradient_is_skipped_and_advances_nothing,
            "10.3", dtype)


@pytest.mark.clause("10.4")
@pytest.mark.parametrize("dtype", ["float64"])
def test_micro_batch_means_divided_by_k_are_caught_by_the_reported_loss_clause(dtype):
    _caught("micro_batch_mean_over_k",
            loops.test_the_reported_loss_is_the_mean_over_all_examples_of_the_optimizer_step,
            "10.4", dtype)
