"""Chapter 6 catches wrong update steps, each by its clause (faulty backends of
``batchgrad_spec/faults/update.py``), with the machinery of ``batchgrad_spec.catching``: the
property of ``batchgrad_spec.properties.update`` is run under the ``ci`` profile (derandomised,
at most 100 examples) and must fail with a ``ClauseFailure`` of the expected clause, while the
correct ``numpy`` backend passes the same property under the same profile — the same examples,
which do not depend on the backend.
"""

from __future__ import annotations

import pytest

from batchgrad_spec.catching import assert_caught_by_a_rerun
from batchgrad_spec.properties import update

pytestmark = pytest.mark.meta

T6_1 = update.test_one_sgd_step_on_a_batch_is_theta_minus_rate_times_the_batch_gradient
T6_2 = update.test_online_sgd_steps_follow_the_reference_step_by_step
T6_6 = update.test_the_step_counter_advances_once_per_optimiser_step


def _caught(fault: str, test, clause: str, dtype: str, precision: str = "strict",
            control: str = "numpy") -> int:
    __tracebackhide__ = True
    return assert_caught_by_a_rerun(f"batchgrad_spec.faults.update:{fault}", test, clause, dtype,
                                    precision=precision, control=control)


@pytest.mark.clause("6.1")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_an_optimiser_step_per_example_inside_the_batch_is_caught_by_the_one_update_clause(
        dtype):
    _caught("online_within_batch", T6_1, "6.1", dtype)


@pytest.mark.clause("6.6")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_an_adam_counter_advanced_per_example_is_caught_by_the_step_counter_clause(dtype):
    _caught("adam_counter_per_example", T6_6, "6.6", dtype)


@pytest.mark.clause("6.2")
def test_a_training_loop_inside_one_autocast_region_is_caught_by_the_online_steps_clause():
    # torch.autocast caches its bfloat16 copies of the weights until its region ends: a loop of
    # forward/backward/step inside one region runs every forward with the first step's weights.
    pytest.importorskip("torch")
    _caught("torch_autocast_around_the_loop", T6_2, "6.2", "float32", "bf16_autocast",
            control="torch")
