"""Chapter 6's update-step properties that the meta-tests run too: one SGD step (§6.1), online
steps followed step by step (§6.2), the optimiser's step counter (§6.6). See
``batchgrad_spec.properties``; the other update tests are in ``tests/test_ch6_update.py``, the
check that follows a backend's run step by step in ``batchgrad_spec.updates``.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference.update import Optimizer

from ..strategies import networks, problems
from ..updates import SMOOTH, UpdateCheck, gentle, optimizers, rates, singles, whole

__all__ = [
    "ONLINE",
    "test_one_sgd_step_on_a_batch_is_theta_minus_rate_times_the_batch_gradient",
    "test_online_sgd_steps_follow_the_reference_step_by_step",
    "test_the_step_counter_advances_once_per_optimiser_step",
]

ONLINE = problems(nets=networks(activations=SMOOTH), reductions=("mean",), min_batch=2)
"""Smooth networks (spec §6.2), the mean reduction, N ≥ 2: online steps differ from a batch step."""


@pytest.mark.clause("6.1")
@given(problem=problems(), lr=rates(), momentum=st.sampled_from((0.0, 0.9)))
def test_one_sgd_step_on_a_batch_is_theta_minus_rate_times_the_batch_gradient(
        target, problem, lr, momentum):
    # The first step of SGD with momentum is the plain step too (the buffer starts as g).
    opt = Optimizer("sgd", lr, momentum=momentum)
    with UpdateCheck(target, problem) as c:
        batches, src = whole(c.problem, 1)
        c.trajectory(opt, batches, src, what="θ − η∇L(θ)")


@pytest.mark.clause("6.2")
@given(problem=ONLINE, lr=rates())
def test_online_sgd_steps_follow_the_reference_step_by_step(target, problem, lr):
    n = problem.batch.size
    with UpdateCheck(target, problem) as c:
        batches, src = singles(c.problem)
        c.trajectory(gentle(Optimizer("sgd", lr / n), c.problem), batches, src,
                     what="θ online")


@pytest.mark.clause("6.6")
@given(problem=problems(), opt=optimizers(), data=st.data())
def test_the_step_counter_advances_once_per_optimiser_step(target, problem, opt, data):
    n = problem.batch.size
    k = data.draw(st.integers(1, 3), label="steps")
    subsets = [sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1), label=f"batch {j}"))
               for j in range(k)]
    with UpdateCheck(target, problem) as c:
        batches = [c.problem.batch.take(s) for s in subsets]
        src = f"[problem.batch.take(s) for s in {subsets}]"
        c.trajectory(gentle(opt, c.problem), batches, src, what=f"θ ({opt.name})")
