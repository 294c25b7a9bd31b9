"""Chapter 2's properties that other code runs too (the meta-tests, the gallery, the bench): the
reduction identities §2.1–§2.4, one θ for every g_i (§2.5), and g_i against the reference (§2.12).
See ``batchgrad_spec.properties``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from reference.grads import per_example_grads
from reference.types import Grads

from ..harness import Check, check, reduction_identity
from ..strategies import problems

__all__ = [
    "per_example_against_reference",
    "test_backend_per_example_gradients_match_the_reference",
    "test_every_per_example_gradient_is_taken_at_the_same_parameters",
    "test_gradient_of_a_weighted_mean_is_the_normalised_weighted_sum",
    "test_gradient_of_a_weighted_sum_is_the_weighted_sum_of_gradients",
    "test_gradient_of_the_mean_loss_is_the_mean_of_per_example_gradients",
    "test_gradient_of_the_summed_loss_is_the_sum_of_per_example_gradients",
]


def per_example_against_reference(c: Check) -> tuple[np.ndarray, Grads]:
    """Backend ℓ_i and g_i against the reference's (spec §2.12); returns the backend's."""
    __tracebackhide__ = True
    losses, grads = c.per_example()
    ref_losses, ref_grads = per_example_grads(c.problem)
    tol = c.tol()
    c.close(losses, ref_losses, tol.losses, what="ℓ_i", expect="per_example_grads(problem)[0]")
    c.close(grads, ref_grads, tol.grads, what="g_i", expect="per_example_grads(problem)[1]")
    return losses, grads


@pytest.mark.clause("2.1")
@given(problem=problems(reductions=("mean",)))
def test_gradient_of_the_mean_loss_is_the_mean_of_per_example_gradients(target, problem):
    with check(target, problem) as c:
        reduction_identity(c)


@pytest.mark.clause("2.2")
@given(problem=problems(reductions=("sum",)))
def test_gradient_of_the_summed_loss_is_the_sum_of_per_example_gradients(target, problem):
    with check(target, problem) as c:
        reduction_identity(c)


@pytest.mark.clause("2.3")
@given(problem=problems(reductions=("weighted",)))
def test_gradient_of_a_weighted_sum_is_the_weighted_sum_of_gradients(target, problem):
    with check(target, problem) as c:
        reduction_identity(c)


@pytest.mark.clause("2.4")
@given(problem=problems(reductions=("weighted_mean",)))
def test_gradient_of_a_weighted_mean_is_the_normalised_weighted_sum(target, problem):
    with check(target, problem) as c:
        reduction_identity(c)


@pytest.mark.clause("2.5")
@given(problem=problems())
def test_every_per_example_gradient_is_taken_at_the_same_parameters(target, method, problem):
    with check(target, problem) as c:
        before = {k: v.copy() for k, v in c.problem.params.items()}
        losses, grads = c.per_example()
        ref_losses, ref_grads = per_example_grads(c.problem)
        tol = c.tol()
        c.close(grads, ref_grads, tol.grads, what="g_i at θ",
                expect="per_example_grads(problem)[1]")
        for k, v in before.items():
            if not np.array_equal(c.problem.params[k], v):
                c.fail(f"the backend modified θ[{k!r}] in place: a batch is evaluated at one θ")


@pytest.mark.clause("2.12")
@given(problem=problems())
def test_backend_per_example_gradients_match_the_reference(target, method, problem):
    with check(target, problem) as c:
        per_example_against_reference(c)
