"""Spec §5.1–§5.4 catch wrong gradient accumulation, each bug by its clause (faulty backends of
``batchgrad_spec/faults/accumulation.py``), with the machinery of ``test_faulty_backends.py``: the
property is run under the ``ci`` profile (derandomised, at most 100 examples) and must fail with a
``ClauseFailure`` of the expected clause, naming the backend and dtype and carrying the repro
snippet, while the correct ``numpy`` backend passes the same property under the same profile —
the same examples, which do not depend on the backend.
"""

from __future__ import annotations

import pytest

from batchgrad_spec.catching import MAX_EXAMPLES, leaves, make_target, run_property
from batchgrad_spec.harness import ClauseFailure
from tests import test_ch5_accumulation as ch5

pytestmark = pytest.mark.meta

T5_1 = ch5.test_micro_batch_means_weighted_by_n_k_over_n_accumulate_to_the_full_batch_mean_gradient
T5_2 = ch5.test_token_level_accumulation_divides_summed_token_losses_by_the_whole_batch_token_count
T5_4 = ch5.test_an_l2_penalty_added_once_per_step_contributes_lambda_theta_whatever_k


def _caught(fault: str, test, clause: str, dtype: str, message: str) -> int:
    __tracebackhide__ = True
    target = make_target(f"batchgrad_spec.faults.accumulation:{fault}", clause, dtype, None)
    out = run_property(test, target)
    assert out.error is not None, f"{fault} passed §{clause} on {dtype} ({out.calls} examples)"
    failures = leaves(out.error)
    for f in failures:
        if not isinstance(f, ClauseFailure):
            raise AssertionError(f"{fault}: not a ClauseFailure: {f!r}") from f
        text = str(f)
        assert f.clause == clause and text.startswith(f"§{clause} "), text
        assert f"backend={fault} " in text and f"dtype={dtype}" in text, text
        assert any(n.startswith(f"# Reproduce §{clause} ") and "checked_accumulate(" in n
                   for n in f.__notes__), f.__notes__
    assert any(message in str(f) for f in failures), [str(f) for f in failures]
    assert out.first_failure is not None and out.first_failure <= MAX_EXAMPLES
    # the same derandomised examples pass for the correct backend
    right = make_target("numpy", clause, dtype, None)
    passed = run_property(test, right)
    assert passed.error is None, f"numpy fails §{clause} too: {passed.error}"
    assert passed.calls >= out.first_failure
    print(f"\n{fault:<27} {dtype:<8} caught by §{clause} at example {out.first_failure}", end="")
    return out.first_failure


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
