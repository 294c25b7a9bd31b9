"""Chapter 10's training-loop properties, which the meta-tests and the trainer adapters' envs run
too: clipping once per optimizer step (§10.1), DP-SGD per-example clipping (§10.2), loss scaling
and skipped steps (§10.3), the reported loss (§10.4), the uneven last window (§10.5). Collected in
``tests/test_ch10_loops.py``; the check that follows an epoch window by window is
``batchgrad_spec.loops.LoopCheck``.

Examples: a tenth of the profile's, at least 10 (``examples``: 10 under ``dev`` and ``ci``, 100
under ``thorough``), because one example runs the backend's epoch once per window and once more,
and the chapter-7 bound of every window; the meta-tests (``tests/meta/test_loop_faults.py``) run
these properties under the full ``ci`` profile (100 examples) against the faulty loops.

Every property runs only on a backend with the optional ``train_loop`` (spec §8.10) that declares
the loop features it needs (``needs``): a backend without one skips, in one line.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.contract import capabilities_of, implements

from ..declared import not_supported
from ..harness import Target
from ..loops import LoopCheck, loops
from ..strategies import problems

__all__ = [
    "LOOP_PROBLEMS", "examples", "needs",
    "test_a_step_with_a_non_finite_gradient_is_skipped_and_advances_nothing",
    "test_clipping_by_global_norm_acts_once_per_optimizer_step",
    "test_clipping_under_data_parallelism_uses_the_norm_of_the_all_reduced_gradient",
    "test_gradients_are_unscaled_before_they_are_clipped",
    "test_per_example_clipping_clips_each_gradient_then_sums_and_divides_by_the_expected_size",
    "test_the_last_shorter_window_is_one_step_over_its_own_examples",
    "test_the_reported_loss_is_the_mean_over_all_examples_of_the_optimizer_step",
]

def examples() -> settings:
    """The settings of a chapter-10 property: the loaded profile's, with a tenth of its examples
    (at least 10, at most the profile's)."""
    n = settings.default.max_examples
    return settings(max_examples=min(n, max(10, n // 10)))


LOOP_PROBLEMS = problems(min_batch=2)
"""Problems of chapters 1–2 (dense networks, squared error and cross-entropy, the four
reductions) with N ≥ 2: at least two micro-batches."""

RANKED_PROBLEMS = problems(min_batch=4)
"""N ≥ 4: two micro-batches of at least two examples, each split over two ranks."""


def needs(target: Target, features: Iterable[str]) -> None:
    """Skip unless the backend implements ``train_loop`` and declares ``features`` (spec §8.6:
    the loop features are not in the 0.2.0 vocabulary a backend without a declaration gets)."""
    backend = target.backend
    if not implements(backend, "train_loop"):
        pytest.skip(f"backend {backend.name} does not implement the optional train_loop()")
    have = capabilities_of(backend)
    for f in features:
        if f not in have:
            raise not_supported(f"not supported: {backend.name} does not declare {f}", f)


@pytest.mark.clause("10.1")
@examples()
@given(problem=LOOP_PROBLEMS, data=st.data())
def test_clipping_by_global_norm_acts_once_per_optimizer_step(target, problem, data):
    needs(target, ["loop:clip_norm"])
    loop = data.draw(loops(problem, clip_norm=True), label="loop")
    with LoopCheck(target, problem) as c:
        c.epoch(loop, what="θ clipped by global norm")


@pytest.mark.clause("10.1")
@examples()
@given(problem=RANKED_PROBLEMS, data=st.data())
def test_clipping_under_data_parallelism_uses_the_norm_of_the_all_reduced_gradient(
        target, problem, data):
    needs(target, ["loop:clip_norm"])
    loop = data.draw(loops(problem, clip_norm=True, ranks=2), label="loop")
    with LoopCheck(target, problem) as c:
        c.epoch(loop, what="θ clipped by the global norm over 2 ranks")


@pytest.mark.clause("10.2")
@examples()
@given(problem=LOOP_PROBLEMS, data=st.data())
def test_per_example_clipping_clips_each_gradient_then_sums_and_divides_by_the_expected_size(
        target, problem, data):
    needs(target, ["loop:per_example_clip"])
    loop = data.draw(loops(problem, per_example_clip=True), label="loop")
    with LoopCheck(target, problem) as c:
        c.epoch(loop, what="θ of DP-SGD (noise 0)")


@pytest.mark.clause("10.3")
@examples()
@given(problem=LOOP_PROBLEMS, data=st.data())
def test_gradients_are_unscaled_before_they_are_clipped(target, problem, data):
    needs(target, ["loop:loss_scale", "loop:clip_norm"])
    loop = data.draw(loops(problem, clip_norm=True, loss_scale=True), label="loop")
    with LoopCheck(target, problem) as c:
        c.epoch(loop, what="θ with loss scaling and clipping")


@pytest.mark.clause("10.3")
@examples()
@given(problem=LOOP_PROBLEMS, data=st.data())
def test_a_step_with_a_non_finite_gradient_is_skipped_and_advances_nothing(
        target, problem, data):
    needs(target, ["loop:loss_scale"])
    loop = data.draw(loops(problem, overflow=True, min_windows=2,
                           names=("adam", "adamw", "sgd")), label="loop")
    with LoopCheck(target, problem) as c:
        c.epoch(loop, what="θ with skipped steps")


@pytest.mark.clause("10.4")
@examples()
@given(problem=LOOP_PROBLEMS, data=st.data())
def test_the_reported_loss_is_the_mean_over_all_examples_of_the_optimizer_step(
        target, problem, data):
    needs(target, ["loop:reported_loss"])
    loop = data.draw(loops(problem), label="loop")
    with LoopCheck(target, problem) as c:
        c.epoch(loop, params=False, steps=False, losses=True)


@pytest.mark.clause("10.5")
@examples()
@given(problem=problems(min_batch=3), data=st.data())
def test_the_last_shorter_window_is_one_step_over_its_own_examples(target, problem, data):
    needs(target, [])
    loop = data.draw(loops(problem, uneven=True), label="loop")
    with LoopCheck(target, problem) as c:
        c.epoch(loop, what="θ with a shorter last window")
