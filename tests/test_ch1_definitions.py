"""Spec chapter 1: definitions — per-example loss, reductions, per-example gradient, conventions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from batchgrad_spec.harness import check
from batchgrad_spec.properties.definitions import (  # noqa: F401 — run here, also by the gallery
    test_per_example_losses_match_the_reference,
    test_relu_slope_at_zero_is_zero,
)
from batchgrad_spec.strategies import networks, problems
from reference.activations import Activation
from reference.batch import Batch
from reference.bounds import error_bound
from reference.grads import (
    batch_grad,
    finite_difference_grad,
    forward,
    per_example_grads,
    per_example_losses,
    scaled_per_example_grads,
)
from reference.layers import Dense, Network
from reference.losses import Loss, Reduction
from reference.numerics import REFERENCE
from reference.ops import ACTIVATIONS
from reference.problem import Problem
from reference.types import ProblemError


@pytest.mark.clause("1.2")
@given(problem=problems())
def test_batch_loss_is_the_reduction_of_the_per_example_losses(target, problem):
    with check(target, problem) as c:
        loss, _ = c.loss_and_grad()
        expected = float(np.sum(c.problem.coefficients * per_example_losses(c.problem)))
        c.close(loss, expected, c.tol().loss, what="L",
                expect="float(np.sum(problem.coefficients * per_example_losses(problem)))")


SMOOTH = ("identity", "tanh", "sigmoid", "softplus", "gelu", "gelu_tanh")


@pytest.mark.clause("1.3")
@given(problem=problems(nets=networks(max_depth=3, max_width=4), max_batch=3), data=st.data())
def test_reference_per_example_gradients_match_central_differences(problem, data):
    """g_i = ∇_θ ℓ_i: the hand-written backward pass against (ℓ_i(θ+h) − ℓ_i(θ−h))/2h.

    Error of the difference quotient (spec §1.3): rounding ≤ (e_ℓ(θ+h) + e_ℓ(θ−h) +
    u·max|ℓ(θ±h)|)/(2h) with e_ℓ the reference's own error bound; the steps θ_j ± h are
    themselves rounded, off by ≤ u(|θ_j| + h) each, which scales the quotient by up to
    u(|θ_j| + h)/h; truncation ≤ h²/6 · |∂³ℓ|, with |∂³ℓ| estimated from the analytic gradient's
    second difference at step δ = 10⁻³ (an estimate, so doubled). Points within 10⁻⁴ of a relu
    kink are not differentiable there and are skipped.
    """
    i = data.draw(st.integers(0, problem.batch.size - 1), label="i")
    p = problem.with_batch(problem.batch.take([i]))
    trace = forward(p)
    for k, layer in enumerate(p.network.layers):
        if isinstance(layer, Activation) and layer.name == "relu":
            assume(np.all(np.abs(trace.inputs[k]) > 1e-4))
    h, delta = 2.0**-20, 1e-3
    _, g = per_example_grads(p)
    loss_of = lambda th: float(per_example_losses(p.with_params(th))[0])  # noqa: E731
    fd = finite_difference_grad(loss_of, p.params, h)

    def shifted(name: str, j: tuple, step: float) -> Problem:
        th = {k: v.copy() for k, v in p.params.items()}
        th[name][j] += step
        return p.with_params(th)

    for name, value in p.params.items():
        for j in np.ndindex(value.shape):
            # rounding: both evaluations ℓ(θ ± h) err by their own bound e_ℓ(θ ± h), and the
            # subtraction by u·max|ℓ(θ ± h)|; all divided by 2h.
            ends = [shifted(name, j, s) for s in (h, -h)]
            e_ends = sum(float(error_bound(q, REFERENCE).losses[0]) for q in ends)
            big = max(abs(float(per_example_losses(q)[0])) for q in ends)
            g_plus, g_minus = (per_example_grads(shifted(name, j, s))[1][name][0][j]
                               for s in (delta, -delta))
            third = 2 * abs(g_plus - 2 * g[name][0][j] + g_minus) / delta**2
            step = REFERENCE.u * (abs(value[j]) + h) / h * abs(fd[name][j])
            tol = (e_ends + REFERENCE.u * big) / (2 * h) + step + h * h / 6 * third
            assert abs(fd[name][j] - g[name][0][j]) <= tol, (
                f"§1.3 reference g_i[{name}]{j}: analytic {g[name][0][j]!r}, central difference "
                f"{fd[name][j]!r}, |difference| {abs(fd[name][j] - g[name][0][j]):.3g} > {tol:.3g}")


@pytest.mark.clause("1.4")
@given(problem=problems())
def test_scaled_convention_sums_to_the_batch_gradient(problem):
    """κ_i g_i (g_i/N under mean) sums to ∇L, while Σ g_i = N ∇L under mean (spec §1.4)."""
    _, g = per_example_grads(problem)
    scaled = scaled_per_example_grads(problem)
    _, batch = batch_grad(problem)
    bound = error_bound(problem, REFERENCE)
    for k in batch:
        assert np.all(np.abs(scaled[k].sum(0) - batch[k]) <= 2 * bound.batch_grads[k]), k
        if problem.reduction.name == "mean":
            n = problem.batch.size
            assert np.all(np.abs(g[k].sum(0) - n * batch[k]) <= 2 * n * bound.batch_grads[k]), k


@pytest.mark.clause("1.5")
@pytest.mark.parametrize("name", SMOOTH)
def test_activation_slopes_match_central_differences(name):
    f, df = ACTIVATIONS[name]
    z = np.linspace(-12, 12, 4801)
    h = 2.0**-20
    fd = (f(z + h) - f(z - h)) / (2 * h)
    slope = df(z, f(z))
    # truncation h²/6·|σ'''| ≤ h² (|σ'''| ≤ 6 for these), rounding ≤ 4u|σ|/h.
    tol = h * h + 4 * REFERENCE.u * (np.abs(f(z)) + 1) / h
    assert np.all(np.abs(fd - slope) <= tol), (name, float(np.max(np.abs(fd - slope) - tol)))


@pytest.mark.clause("1.6")
def test_problem_rejects_inconsistent_descriptions():
    net = Network((Dense(2, 3), Activation("relu"), Dense(3, 2)))
    params = {k: np.zeros(s) for k, s in net.param_shapes().items()}
    assert sorted(params) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    x, y = np.zeros((4, 2)), np.zeros((4, 2))
    Problem(net, Loss("squared_error"), Reduction("mean"), params, Batch(x, y))
    bad = [
        lambda: Network((Dense(2, 3), Dense(4, 1))),
        lambda: Activation("swish"),
        lambda: Problem(net, Loss("squared_error"), Reduction("mean"),
                        {**params, "0.weight": np.zeros((2, 3))}, Batch(x, y)),
        lambda: Problem(net, Loss("squared_error"), Reduction("weighted"), params, Batch(x, y)),
        lambda: Problem(net, Loss("softmax_cross_entropy"), Reduction("mean"), params,
                        Batch(x, np.array([0, 1, 2, 0]))),
        lambda: Problem(net, Loss("squared_error"), Reduction("mean"), params,
                        Batch(np.zeros((0, 2)), np.zeros((0, 2)))),
    ]
    for make in bad:
        with pytest.raises(ProblemError):
            make()


@pytest.mark.clause("1.6")
@given(problem=problems())
def test_problem_repr_is_a_runnable_snippet(problem):
    from reference import Activation, Batch, Dense, Loss, Network, Problem, Reduction  # noqa: F401

    again = eval(repr(problem))
    assert repr(again) == repr(problem)
    assert np.array_equal(per_example_losses(again), per_example_losses(problem))
