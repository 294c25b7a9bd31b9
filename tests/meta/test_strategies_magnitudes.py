"""Everything the strategies draw has bounded magnitude (spec §1.6, §7.1): widths ≤ 16, depth
≤ 4 and |θ|, |x|, |y|, |c| ≤ 2 keep every pre-activation below 2.2·10⁶ and every loss and
gradient below 10¹³, far from float32 overflow; the bound is derived from the sizes alone and
checked on the worst case and on drawn problems."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from batchgrad_spec.strategies import (
    MAX_BATCH,
    MAX_DEPTH,
    MAX_WIDTH,
    float_arrays,
    float_arrays_between,
    label_arrays,
    minimal,
    problems,
    reaches,
)
from reference.activations import Activation
from reference.batch import Batch
from reference.grads import batch_grad, forward, per_example_grads
from reference.layers import Dense, Network
from reference.losses import Loss, Reduction
from reference.ops import ACTIVATIONS
from reference.problem import Problem

pytestmark = pytest.mark.meta

MAX_MAGNITUDE = 2.0  # the strategies' default for θ, inputs, targets and weights
VALUE_GROWTH = 1.0  # |σ(z)| ≤ |z| + 1 for every activation (softplus ≤ |z| + log 2; tanh ≤ 1)
SLOPE_MAX = {"identity": 1.0, "relu": 1.0, "tanh": 1.0, "sigmoid": 0.25, "softplus": 1.0,
             "gelu": 1.13, "gelu_tanh": 1.13, "leaky_relu": 1.0, "elu": 1.0}
"""sup |σ'|: gelu' peaks at z = √2 with Φ(√2) + √2 φ(√2) ≈ 1.129 (checked below on a grid)."""


def magnitude_bounds(problem: Problem, m: float = MAX_MAGNITUDE) -> dict:
    """Worst-case magnitudes from the sizes alone, every |θ|, |x|, |y|, |c| ≤ m.

    Forward: a Dense(n_in, ·) maps |a| ≤ A to |z| ≤ n_in·m·A + m, an activation adds ≤ 1.
    Loss: squared error ≤ (F + m)², cross-entropy ≤ 2F + log C for outputs |f| ≤ F.
    Backward: the output cotangent is ≤ 2(F + m) (squared error) or ≤ 1 (softmax − one-hot);
    a Dense(·, n_out) multiplies it by n_out·m, an activation by sup|σ'|; a weight gradient is
    ≤ cotangent × input bound. The batch quantities carry Σ|κ_i| on top.
    """
    net = problem.network
    a, inputs, outputs = m, [], []
    for layer in net.layers:
        inputs.append(a)
        if isinstance(layer, Dense):
            a = layer.in_features * m * a + m
        else:
            a = a + VALUE_GROWTH
        outputs.append(a)
    f = a
    if problem.loss.name == "squared_error":
        loss, g = (f + m) ** 2, 2 * (f + m)
    else:
        loss, g = 2 * f + math.log(net.out_features), 1.0
    grads = {}
    for k in range(len(net.layers) - 1, -1, -1):
        layer = net.layers[k]
        if isinstance(layer, Dense):
            grads[f"{k}.weight"] = g * inputs[k]
            grads[f"{k}.bias"] = g
            g = layer.out_features * m * g
        else:
            g = SLOPE_MAX[layer.name] * g
    return {"outputs": outputs, "loss": loss, "grads": grads}


def _worst_case(activation: str) -> Problem:
    """Widths 16, depth 4, every θ and x equal to 2, eight examples."""
    layers: list = []
    for i in range(MAX_DEPTH):
        layers.append(Dense(MAX_WIDTH, MAX_WIDTH))
        if i < MAX_DEPTH - 1:
            layers.append(Activation(activation))
    net = Network(tuple(layers))
    n = 8
    return Problem(net, Loss("squared_error"), Reduction("mean"),
                   {k: np.full(s, 2.0) for k, s in net.param_shapes().items()},
                   Batch(np.full((n, MAX_WIDTH), 2.0), np.zeros((n, MAX_WIDTH))))


@pytest.mark.clause("1.6")
def test_the_worst_case_magnitudes_stay_far_from_float32_overflow():
    """At the caps (widths 16, depth 4, |θ|, |x| ≤ 2): |f| ≤ 2.2·10⁶ < 10⁷, losses and gradients
    ≤ 10¹³, so squares, sums and float32 (max 3.4·10³⁸) are nowhere near overflow. The forward
    bound is attained: all θ = x = 2 with identity activations give 2 164 802 exactly."""
    b = magnitude_bounds(_worst_case("softplus"))
    assert b["outputs"][-1] < 2.2e6
    assert b["loss"] < 1e13 and max(b["grads"].values()) < 1e13
    assert 2 * MAX_BATCH * b["loss"] < float(np.finfo(np.float32).max)
    attained = forward(_worst_case("identity")).output
    assert np.max(np.abs(attained)) == 2_164_802.0 <= magnitude_bounds(_worst_case("identity"))[
        "outputs"][-1]


@pytest.mark.clause("1.6")
def test_slope_bounds_used_for_magnitudes_hold():
    z = np.linspace(-20, 20, 400_001)
    for name, (f, df) in ACTIVATIONS.items():
        a = f(z)
        assert np.max(np.abs(df(z, a))) <= SLOPE_MAX[name], name
        assert np.all(np.abs(a) <= np.abs(z) + VALUE_GROWTH), name


@pytest.mark.clause("1.6")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems())
def test_drawn_values_are_finite_and_bounded(problem):
    """Every forward value, loss and gradient the reference computes is finite and within the
    size-derived bound of ``magnitude_bounds``: widths ≤ 16 (8 by default), depth ≤ 4 and
    |θ|, |x|, |y|, |c| ≤ 2 keep every pre-activation below 2.2·10⁶ < 10⁷ and every loss and
    gradient below 10¹³ (see the test above), far from float32 overflow. (Typical draws are much
    smaller: over 2000 draws the largest loss seen was 1.6·10⁵.)"""
    b = magnitude_bounds(problem)
    trace = forward(problem)
    for out, bound in zip(trace.outputs, b["outputs"], strict=True):
        assert np.all(np.isfinite(out)) and np.max(np.abs(out)) <= bound < 1e7
    losses, grads = per_example_grads(problem)
    loss, batch = batch_grad(problem)
    kappa = float(np.sum(np.abs(problem.coefficients)))
    assert np.all(np.isfinite(losses)) and np.max(np.abs(losses)) <= b["loss"]
    assert math.isfinite(loss) and abs(loss) <= kappa * b["loss"] * (1 + 1e-12)
    for name, g in grads.items():
        assert np.all(np.isfinite(g)) and np.max(np.abs(g)) <= b["grads"][name], name
        assert np.all(np.isfinite(batch[name]))
        assert np.max(np.abs(batch[name])) <= kappa * b["grads"][name] * (1 + 1e-12), name


# -- the one-step array draws (issue #15): the value set of floats(), shrinking towards zeros ----
F32_TINY = float(np.finfo(np.float32).tiny)


@pytest.mark.clause("1.6")
@pytest.mark.parametrize("m", [2.0, 0.3, 8.0])
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_float_arrays_draw_bounded_float32_normals_or_zero(m, data):
    """Every element is float32-representable, of magnitude ≤ max_magnitude, never subnormal."""
    a = data.draw(float_arrays((5, 7), max_magnitude=m))
    assert a.shape == (5, 7) and a.dtype == np.float64
    assert np.array_equal(a.astype(np.float32).astype(np.float64), a)
    assert np.max(np.abs(a)) <= m
    assert not np.any((a != 0) & (np.abs(a) < F32_TINY))


@pytest.mark.clause("1.6")
@pytest.mark.parametrize("value", [0.0, 1.0, -1.0, 2.0, -2.0, F32_TINY, -F32_TINY, 0.5])
def test_float_arrays_reach_zero_one_the_bound_and_tiny(value):
    """The edges floats() favours are reached: exact 0, ±1, ±max_magnitude, ±float32 tiny."""
    reaches(float_arrays((3, 2)), lambda a: bool(np.any(a == value)))


@pytest.mark.clause("1.6")
def test_arrays_shrink_towards_zeros():
    """Any array shrinks to all zeros (labels to 0, bounded arrays to lo); an array needing two
    non-zero elements shrinks to ones and zeros (a constant array of ones: one byte string, the
    simplest to Hypothesis, where ``hnp.arrays`` gave two ones and zeros)."""
    assert not np.any(minimal(float_arrays((4, 3))))
    assert not np.any(minimal(label_arrays((9,), classes=5)))
    assert np.all(minimal(float_arrays_between((6,), lo=0.25, hi=4.0)) == 0.25)
    two = minimal(float_arrays((10,)), lambda a: np.count_nonzero(a) >= 2)
    assert set(np.abs(two[two != 0])) == {1.0}, two


@pytest.mark.clause("1.6")
def test_bounded_and_label_arrays_stay_in_range_and_reach_the_ends():
    reaches(float_arrays_between((4,), lo=0.25, hi=4.0), lambda a: bool(np.any(a == 4.0)))
    reaches(label_arrays((4,), classes=3), lambda a: bool(np.any(a == 2)))

    @settings(max_examples=100, deadline=None)
    @given(v=float_arrays_between((3, 3), lo=1 / 64, hi=2.0), y=label_arrays((7,), classes=3))
    def check(v, y):
        assert np.all((v >= 1 / 64) & (v <= 2.0))
        assert np.array_equal(v.astype(np.float32).astype(np.float64), v)
        assert y.dtype == np.int64 and np.all((y >= 0) & (y < 3))

    check()


@pytest.mark.clause("1.6")
@pytest.mark.parametrize("call", [
    lambda: float_arrays((2, 0)), lambda: float_arrays([2, 2]),
    lambda: float_arrays((2,), max_magnitude=9.0), lambda: label_arrays((2,), classes=0),
    lambda: float_arrays_between((2,), lo=2.0, hi=1.0),
])
def test_array_strategies_reject_bad_arguments(call):
    with pytest.raises(InvalidArgument):
        call()
