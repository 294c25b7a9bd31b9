"""Chapter 1's properties that other code runs too (the gallery): per-example losses (§1.1) and
the slope of relu at an exact zero (§1.5). See ``batchgrad_spec.properties``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from reference.grads import per_example_grads, per_example_losses
from reference.problem import Problem

from ..harness import check
from ..strategies import networks, problems

__all__ = ["first_layer_zeroed", "test_per_example_losses_match_the_reference",
           "test_relu_slope_at_zero_is_zero"]


@pytest.mark.clause("1.1")
@given(problem=problems())
def test_per_example_losses_match_the_reference(target, method, problem):
    with check(target, problem) as c:
        losses, _ = c.per_example()
        c.close(losses, per_example_losses(c.problem), c.tol().losses, what="ℓ_i",
                expect="per_example_losses(problem)")


def first_layer_zeroed(problem: Problem) -> Problem:
    """The same problem with the first Dense layer zeroed, so every first pre-activation is 0."""
    params = dict(problem.params)
    params["0.weight"] = np.zeros_like(params["0.weight"])
    if "0.bias" in params:
        params["0.bias"] = np.zeros_like(params["0.bias"])
    return problem.with_params(params)


@pytest.mark.clause("1.5")
@given(problem=problems(nets=networks(min_depth=2, activations=("relu",))))
def test_relu_slope_at_zero_is_zero(target, method, problem):
    """At z = 0 exactly, relu'(0) = 0 (spec §1.5): with it, every gradient below layer 1 is 0."""
    p = first_layer_zeroed(problem)
    with check(target, p) as c:
        _, grads = c.per_example()
        _, ref = per_example_grads(c.problem)
        assert not np.any(ref["0.weight"])  # the convention, in the reference
        c.close(grads, ref, c.tol().grads, what="g_i with z = 0 at the first relu",
                expect="per_example_grads(problem)[1]")
