"""Spec chapter 3: kinds of loss — BCE with logits, Huber and Gaussian NLL (§3.8), and the
sign of a loss (§3.9).

The elementwise losses' definitions are written out in ``batchgrad_spec.properties.losses``;
§3.9's clauses use Gaussian NLL, the one loss here that can be negative.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import assume, find, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from batchgrad_spec.harness import check, reduction_identity
from batchgrad_spec.properties.core import per_example_against_reference
from batchgrad_spec.properties.losses import FIND, HERE, NON_NEGATIVE, elementwise_losses
from batchgrad_spec.strategies import HUBER_DELTAS, floats, loss_problems, networks
from reference.batch import Batch
from reference.bounds import problem_tolerance
from reference.grads import batch_grad, forward, per_example_grads, per_example_losses
from reference.layers import Dense, Network
from reference.losses import Loss, Reduction
from reference.numerics import REFERENCE
from reference.problem import Problem


# -- §3.8 BCE with logits, Huber, Gaussian NLL ----------------------------------------------------
@pytest.mark.clause("3.8")
@given(problem=loss_problems(losses=("bce_with_logits", "huber", "gaussian_nll"),
                             sequences=None))
def test_bce_huber_and_gaussian_nll_per_example_losses_and_gradients_match_the_reference(
        target, method, problem):
    with check(target, problem) as c:
        losses, _ = per_example_against_reference(c)
        if not c.problem.batch.sequence:
            d = c.problem.network.out_features
            c.close(losses, elementwise_losses(c.problem).mean(axis=1), c.tol().losses,
                    what="ℓ_i = (1/D) Σ_d ℓ_id",
                        expect=f"{HERE}.elementwise_losses(problem).sum(axis=1) / {d}")


@st.composite
def large_logit_problems(draw: st.DrawFn) -> Problem:
    """BCE with logits on one Dense(d, D), d ≤ 2, whose biases reach ±80: logits up to ±88."""
    d_in, d_out, n = draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    net = Network((Dense(d_in, d_out),))
    big = st.one_of(st.sampled_from((80.0, -80.0, 40.0, -40.0)), st.floats(-80, 80, width=32))
    params = {"0.weight": draw(hnp.arrays(np.float64, (d_out, d_in), elements=floats())),
              "0.bias": draw(hnp.arrays(np.float64, (d_out,), elements=big))}
    x = draw(hnp.arrays(np.float64, (n, d_in), elements=floats()))
    y = draw(hnp.arrays(np.float64, (n, d_out), elements=st.floats(0.0, 1.0, width=32)))
    reduction = Reduction(draw(st.sampled_from(("mean", "sum"))))
    return Problem(net, Loss("bce_with_logits"), reduction, params, Batch(x, y))


@pytest.mark.clause("3.8")
@given(problem=large_logit_problems())
def test_bce_with_logits_is_finite_and_accurate_for_logits_up_to_80(target, problem):
    with check(target, problem) as c:
        reduction_identity(c)


@st.composite
def huber_at_delta_problems(draw: st.DrawFn) -> Problem:
    """Huber problems whose residuals r = f − y are exactly ±δ or 0: one Dense layer with zero
    weights (f = b), targets y = b − s δ with s ∈ {1, −1, 0} per output (exact in float64; in
    float32 the rounded target puts r within rounding of ±δ, on either side)."""
    p = draw(loss_problems(losses=("huber",), nets=networks(max_depth=1),
                           reductions=("mean", "sum")))
    params = {k: (np.zeros_like(v) if k.endswith("weight") else v) for k, v in p.params.items()}
    p = p.with_params(params)
    f = forward(p).output
    s = draw(hnp.arrays(np.float64, f.shape, elements=st.sampled_from((1.0, -1.0, 0.0))))
    return p.with_batch(replace(p.batch, targets=f - s * p.loss.delta))


@pytest.mark.clause("3.8")
@given(problem=huber_at_delta_problems())
def test_the_huber_gradient_is_continuous_where_the_residual_meets_delta(target, method,
                                                                          problem):
    with check(target, problem) as c:
        reduction_identity(c)
        per_example_against_reference(c)


@pytest.mark.clause("3.8")
@pytest.mark.parametrize("delta", HUBER_DELTAS)
def test_the_reference_huber_slopes_agree_on_both_sides_of_delta(delta):
    """h_δ'(r) = r for |r| ≤ δ and δ sign(r) beyond: both are δ at r = δ. The one-sided
    difference quotients of the reference's Huber loss at ±δ, step h = 2⁻²⁰, agree with each
    other and with ±δ to within h (h_δ'' ≤ 1: truncation ≤ h/2 per side) plus rounding."""
    h = 2.0**-20
    for sign in (1.0, -1.0):
        at = sign * delta
        values = {s: float(per_example_losses(_huber_point(at + s * h, delta))[0])
                  for s in (-1, 0, 1)}
        left = (values[0] - values[-1]) / h
        right = (values[1] - values[0]) / h
        rounding = 4 * REFERENCE.u * max(abs(v) for v in values.values()) / h
        assert abs(left - at) <= h / 2 + rounding and abs(right - at) <= h / 2 + rounding, (
            f"§3.8 Huber slope at r = {at}: left {left!r}, right {right!r}")


def _huber_point(residual: float, delta: float) -> Problem:
    net = Network((Dense(1, 1),))
    return Problem(net, Loss("huber", delta=delta), Reduction("sum"),
                   {"0.weight": np.zeros((1, 1)), "0.bias": np.array([residual])},
                   Batch(np.zeros((1, 1)), np.zeros((1, 1))))


# -- §3.9 the sign of a loss ----------------------------------------------------------------------
@pytest.mark.clause("3.9")
@given(problem=loss_problems(losses=NON_NEGATIVE, sequences=None))
def test_non_negative_losses_are_never_below_zero_beyond_rounding(target, method, problem):
    with check(target, problem) as c:
        losses, _ = c.per_example()
        tol = c.tol().losses
        c.close(np.minimum(losses, 0.0), np.zeros_like(losses), tol, what="min(ℓ_i, 0)",
                call="np.minimum(checked_per_example(backend, problem, config, method)[0], 0)",
                expect=f"np.zeros({losses.size})")


@pytest.mark.clause("3.9")
def test_hypothesis_finds_a_negative_gaussian_nll():
    def negative(p: Problem) -> bool:
        p = p.rounded("float32")
        return bool(np.any(per_example_losses(p) < -problem_tolerance(p, "float32").losses))

    p = find(loss_problems(losses=("gaussian_nll",)), negative, settings=FIND)
    assert np.min(per_example_losses(p)) < 0, p


@st.composite
def mixed_sign_problems(draw: st.DrawFn) -> Problem:
    """Gaussian NLL batches whose first example is predicted exactly (y_0 = f(x_0)) with variance
    ¼: ℓ_0 = ½ log ¼ < 0; the others as drawn (mostly positive)."""
    p = draw(loss_problems(losses=("gaussian_nll",), min_batch=2, sequences=None))
    f = forward(p).output.astype(np.float32).astype(np.float64)
    b = p.batch
    y, v = b.targets.copy(), b.variances.copy()
    y[0], v[0] = f[0], 0.25
    return p.with_batch(replace(b, targets=y, variances=v))


@pytest.mark.clause("3.9")
@given(problem=mixed_sign_problems())
def test_the_identities_hold_for_losses_of_either_sign(target, problem):
    with check(target, problem) as c:
        losses = per_example_losses(c.problem)
        tol = c.tol().losses
        assume(np.any(losses < -tol) and np.any(losses > tol))
        reduction_identity(c)


def plus_minus_two_problem() -> Problem:
    """Two examples of f(x) = w x (w = 1) under Gaussian NLL, ℓ = ½(log v + r²/v):
    example 1: x = 2, y = 0, v = 1: r = 2, ℓ_1 = 2, g_1 = (r/v) x = 4;
    example 2: x = −1, v = e⁻⁵, y = −1 − e^{−5/2}: r = e^{−5/2} = √v, ℓ_2 = ½(−5 + 1) = −2,
    g_2 = (r/v) x = −e^{5/2} ≈ −12.18. The mean loss is 0; the mean gradient ≈ −4.09."""
    v2 = float(np.exp(-5.0))
    return Problem(Network((Dense(1, 1, bias=False),)), Loss("gaussian_nll"), Reduction("mean"),
                   {"0.weight": np.array([[1.0]])},
                   Batch(np.array([[2.0], [-1.0]]), np.array([[0.0], [-1.0 - np.sqrt(v2)]]),
                         variances=np.array([[1.0], [v2]])))


@pytest.mark.clause("3.9")
def test_losses_2_and_minus_2_average_to_0_yet_both_examples_move_the_weights(target, method):
    p = plus_minus_two_problem()
    # the construction (float64): ℓ = (2, −2) up to the rounding of e^{−5} and of its root
    assert np.allclose(per_example_losses(p), [2.0, -2.0], rtol=0, atol=1e-14)
    with check(target, p) as c:
        per_example_against_reference(c)
        reduction_identity(c)
        _, g = per_example_grads(c.problem)
        _, grad = batch_grad(c.problem)
        tol = c.tol()
        # Both examples move the weight, and their mean does too: none of these is zero.
        for what, value, bound in (("g_1", g["0.weight"][0], tol.grads["0.weight"][0]),
                                   ("g_2", g["0.weight"][1], tol.grads["0.weight"][1]),
                                   ("∇L", grad["0.weight"], tol.batch_grads["0.weight"])):
            assert np.all(np.abs(value) > bound), f"{what} = {value} is within rounding of 0"
