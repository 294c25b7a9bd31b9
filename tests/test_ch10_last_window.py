"""Spec chapter 10, the last, shorter window under per-example clipping: DP-SGD divides the last
window's clipped sum by the expected batch size B too (§10.2 with §10.5).

Every loop drawn here has a shorter last window (``loops(..., uneven=True)``), so a backend that
divides that window by its own count (Opacus's ``expected_batch_size × accumulated_iterations``,
docs/findings/opacus-last-window-divisor.md) fails on every run, which a strict xfail needs; the
general §10.2 property draws either kind of epoch.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchgrad_spec.loops import LoopCheck, loops
from batchgrad_spec.properties.loops import needs
from batchgrad_spec.strategies import problems


@pytest.mark.clause("10.2")
@given(problem=problems(min_batch=3), data=st.data())
def test_dp_sgd_divides_a_shorter_last_window_by_the_expected_batch_size(target, problem, data):
    needs(target, ["loop:per_example_clip"])
    loop = data.draw(loops(problem, per_example_clip=True, uneven=True), label="loop")
    with LoopCheck(target, problem) as c:
        c.epoch(loop, what="θ of DP-SGD (noise 0) with a shorter last window")
