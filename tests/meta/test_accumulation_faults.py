"""Spec §5.1–§5.4 catch wrong gradient accumulation, each bug by its clause (faulty backends of
``batchgrad_spec/faults/accumulation.py``), with the machinery of ``batchgrad_spec.catching``: the
property is run under the ``ci`` profile (derandomised, at most 100 examples) and must fail with a
``ClauseFailure`` of the expected clause, naming the backend and dtype and carrying the repro
snippet, while the correct ``numpy`` backend passes the same property under the same profile —
the same examples, which do not depend on the backend (``batchgrad_spec.catching``). The
properties are those of ``batchgrad_spec.properties.accumulation``.
"""

from __future__ import annotations

import pytest

from batchgrad_spec.catching import assert_caught_by_a_rerun
from batchgrad_spec.properties import accumulation as acc

pytestmark = pytest.mark.meta

T5_1 = acc.test_micro_batch_means_weighted_by_n_k_over_n_accumulate_to_the_full_batch_mean_gradient
T5_2 = acc.test_token_level_accumulation_divides_summed_token_losses_by_the_whole_batch_token_count
T5_4 = acc.test_an_l2_penalty_added_once_per_step_contributes_lambda_theta_whatever_k


def _caught(fault: str, test, clause: str, dtype: str, message: str) -> int:
    __tracebackhide__ = True
    return assert_caught_by_a_rerun(f"batchgrad_spec.faults.accumulation:{fault}", test, clause,
                                    dtype, message=(message,), repro="checked_accumulate(")


@pytest.mark.clause("5.1")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_accumulation_divided_by_k_instead_of_by_n_is_caught_by_the_any_split_clause(dtype):
    _caught("divides_by_k", T5_1, "5.1", dtype, "\n  Σ_k (n_k/N) ∇mean_k[")


@pytest.mark.clause("5.2")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_per_micro_batch_token_normalisation_is_caught_by_the_token_level_clause(dtype):
    _caught("per_micro_batch_token_mean", T5_2, "5.2", dtype, "\n  Σ_k ∇(sum_k)/Ω[")


@pytest.mark.clause("5.4")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_penalty_added_per_micro_batch_is_caught_by_the_once_per_step_clause(dtype):
    _caught("penalty_per_micro_batch", T5_4, "5.4", dtype, "\n  Σ_k (n_k/N) ∇mean_k + λθ[")
