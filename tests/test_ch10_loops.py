"""Spec chapter 10: training loops — clipping, per-example clipping, loss scaling and skipped
steps, the reported loss, the uneven last window.

A backend's optional ``train_loop(problem, config, loop, batches)`` (spec §8.10) runs one epoch
of its framework's training loop as a ``reference.loop.Loop`` describes it; backends without it
skip this chapter (one line says so). Each optimizer step is compared with the reference's step
from the parameters the backend itself reached, under the derived tolerance of
``reference.loop_bounds.loop_tolerance`` (``batchgrad_spec.loops.LoopCheck``). The properties are
defined in ``batchgrad_spec.properties.loops`` (the meta-tests and the trainer adapters run them
too) and collected here.
"""

from __future__ import annotations

import numpy as np
import pytest

from batchgrad_spec.catching import make_target
from batchgrad_spec.loops import LoopCheck
from batchgrad_spec.properties.loops import (  # noqa: F401 — run here and by meta-tests
    test_a_step_with_a_non_finite_gradient_is_skipped_and_advances_nothing,
    test_clipping_by_global_norm_acts_once_per_optimizer_step,
    test_clipping_under_data_parallelism_uses_the_norm_of_the_all_reduced_gradient,
    test_gradients_are_unscaled_before_they_are_clipped,
    test_per_example_clipping_clips_each_gradient_then_sums_and_divides_by_the_expected_size,
    test_the_last_shorter_window_is_one_step_over_its_own_examples,
    test_the_reported_loss_is_the_mean_over_all_examples_of_the_optimizer_step,
)
from reference import Batch, Dense, Loss, Network, Problem, Reduction
from reference.loop import Loop
from reference.update import Optimizer


# -- findings -------------------------------------------------------------------------------------
@pytest.mark.clause("10.3")
@pytest.mark.xfail(strict=True, reason=(
    "§10.3 finding (bug): optax.MultiSteps resets its accumulator as (1 - emit) * acc, so the NaN "
    "of a skipped window stays and every later window is skipped too; "
    "docs/findings/optax-multisteps-nonfinite-accumulator.md"))
def test_optax_multisteps_keeps_a_non_finite_accumulator():
    # the built-in jax loop without its workaround, on the smallest case: window 1 overflows,
    # window 2 must be an ordinary Adam step (it is skipped too)
    pytest.importorskip("optax")
    target = make_target("batchgrad_spec.backends.jax_backend:multisteps_as_is", "10.3",
                         "float64", None)
    problem = Problem(network=Network((Dense(1, 1),)), loss=Loss("squared_error"),
                      reduction=Reduction("mean"),
                      params={"0.weight": np.array([[0.5]]), "0.bias": np.array([0.0])},
                      batch=Batch(np.array([[1.0], [2.0]]), np.array([[1.0], [0.0]])))
    loop = Loop(Optimizer("adam", 0.0625), (1, 1), loss_scale=256.0, overflow=(0,))
    with LoopCheck(target, problem) as c:
        c.epoch(loop, what="θ with a skipped first window")
