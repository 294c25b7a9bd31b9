"""Chapter 9's properties (the structured layers, §9.1–§9.6) that the meta-tests run too, and
the identities they check. See ``batchgrad_spec.properties``.

Each clause's property draws ``structured_problems`` of its kind and checks the backend's
per-example ℓ_i and g_i against the reference's, and Σ κ_i g_i (backend) against its own ∇L
(``per_example_identities``): a per-example fault is caught by the first comparison, a batch
fault (a NaN leaking into ∇L, a scatter that overwrites) by the second.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from reference.batch import Batch
from reference.problem import Problem

from ..harness import check
from ..strategies import structured_problems
from .layers import per_example_identities

__all__ = [
    "all_masked_first",
    "test_an_all_masked_example_leaks_no_nan_into_any_gradient",
    "test_attention_gradients_match_the_reference",
    "test_conv1d_gradients_match_the_reference",
    "test_embedding_gradients_are_scatter_adds_of_the_token_cotangents",
    "test_residual_gradients_match_the_reference",
    "test_structured_per_example_gradients_are_g_i_not_scaled",
    "test_tied_parameter_gradient_is_the_sum_over_its_uses",
]


def all_masked_first(problem: Problem) -> Problem:
    """The problem with a copy of its example 0 put first, every token of the copy masked: an
    example whose every query has every key masked (§9.3.2), beside the original examples."""
    b = problem.batch
    order = [0] + list(range(b.size))
    taken = b.take(order)
    mask = taken.token_mask.copy()
    mask[0] = False
    return problem.with_batch(Batch(taken.inputs, taken.targets, taken.weights, mask,
                                    taken.variances, taken.dropout))


@pytest.mark.clause("9.1")
@given(problem=structured_problems(kinds=("embedding",)))
def test_embedding_gradients_are_scatter_adds_of_the_token_cotangents(target, method, problem):
    with check(target, problem) as c:
        per_example_identities(c)


@pytest.mark.clause("9.2")
@given(problem=structured_problems(kinds=("conv1d",)))
def test_conv1d_gradients_match_the_reference(target, method, problem):
    with check(target, problem) as c:
        per_example_identities(c)


@pytest.mark.clause("9.3.1")
@given(problem=structured_problems(kinds=("attention",)))
def test_attention_gradients_match_the_reference(target, method, problem):
    with check(target, problem) as c:
        per_example_identities(c)


@pytest.mark.clause("9.3.2")
@given(problem=structured_problems(kinds=("attention", "residual")))
def test_an_all_masked_example_leaks_no_nan_into_any_gradient(target, method, problem):
    """Example 0 has every token masked: its ℓ_0 and g_0 are 0, every other g_i and ∇L are
    finite and the reference's (a residual problem without attention has nothing to mask, and
    checks the same identities)."""
    p = all_masked_first(problem) if problem.batch.sequence else problem
    with check(target, p) as c:
        losses, grads = c.per_example()
        bad = [k for k, v in grads.items() if not np.all(np.isfinite(v))]
        if bad or not np.all(np.isfinite(losses)):
            c.fail(f"per-example results are not finite (parameters {bad}) with an all-masked "
                   f"example in the batch")
        per_example_identities(c)


@pytest.mark.clause("9.4")
@given(problem=structured_problems(kinds=("residual",)))
def test_residual_gradients_match_the_reference(target, method, problem):
    with check(target, problem) as c:
        per_example_identities(c)


@pytest.mark.clause("9.5")
@given(problem=structured_problems(kinds=("tied",)))
def test_tied_parameter_gradient_is_the_sum_over_its_uses(target, method, problem):
    with check(target, problem) as c:
        per_example_identities(c)


@pytest.mark.clause("9.6")
@given(problem=structured_problems(reductions=("mean",), max_batch=4))
def test_structured_per_example_gradients_are_g_i_not_scaled(target, method, problem):
    """Under ``mean`` the per-example gradients are g_i = ∇ℓ_i, not κ_i g_i = g_i/N (§1.4),
    for every structured layer; Σ κ_i g_i is then ∇L."""
    with check(target, problem) as c:
        per_example_identities(c)
