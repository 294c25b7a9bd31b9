"""The reference's own special function and its cost (spec §1.5: gelu is z·Φ(z), Φ by erfc).

numpy has no erf, so ``reference.ops.erfc`` is the reference's own: it is checked here against
``math.erfc`` (the C library's, itself within ~5e-16) on a dense grid, at the joins of its
methods and at the special values; and the work ``problem_tolerance`` does is checked not to repeat
the reference's per-example gradients (benchmarks/README.md has the timings).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference import bounds, grads, numerics
from reference.activations import Activation
from reference.batch import Batch
from reference.bounds import problem_tolerance
from reference.layers import Dense, Network
from reference.losses import Loss, Reduction
from reference.ops import ERFC_STEP, ERFC_TAYLOR_END, SQRT_HALF, erfc, normal_cdf
from reference.problem import Problem

pytestmark = [pytest.mark.meta, pytest.mark.clause("1.5")]

RTOL = 1e-14  # the accuracy ops.erfc documents is 1e-15 (6e-16 measured against mpmath)
TINY = np.finfo(np.float64).tiny


def _rel_error(x: np.ndarray) -> np.ndarray:
    expected = np.array([math.erfc(v) for v in x])
    got = erfc(x)
    assert got.dtype == np.float64 and got.shape == x.shape
    normal = expected > TINY  # below that, erfc(x) is subnormal: no relative accuracy to ask
    return np.abs(got[normal] - expected[normal]) / expected[normal]


def test_erfc_matches_math_erfc_on_a_dense_grid():
    x = np.linspace(-7.0, 27.0, 68_001)  # step 5e-4; erfc(27) ≈ 5e-319 is subnormal
    rel = _rel_error(x)
    assert rel.max() < RTOL, (float(rel.max()), float(x[np.argmax(rel)]))


def test_erfc_is_accurate_at_the_joins_of_its_methods():
    # midpoints between Taylor centres (largest |h|), the Taylor / continued-fraction switch,
    # and the values where the old methods met (|x| = 1)
    mids = (np.arange(int(ERFC_TAYLOR_END * ERFC_STEP)) + 0.5) / ERFC_STEP
    edges = np.array([1.0, ERFC_TAYLOR_END])
    x = np.concatenate([mids, edges])
    x = np.concatenate([np.nextafter(x, -np.inf), x, np.nextafter(x, np.inf)])
    x = np.concatenate([x, -x])
    rel = _rel_error(x)
    assert rel.max() < RTOL, (float(rel.max()), float(x[np.argmax(rel)]))


def test_erfc_far_in_the_tail_is_accurate_in_relative_terms():
    # e^{−x²} evaluated naively errs by u·x² relative (5e-14 at x = 25): erfc splits x² exactly
    x = np.linspace(5.0, 26.5, 20_001)
    rel = _rel_error(x)
    assert rel.max() < 2e-15, (float(rel.max()), float(x[np.argmax(rel)]))


@given(st.floats(-30.0, 30.0, allow_nan=False))
def test_erfc_of_any_float(v):
    got = float(erfc(np.array(v)))
    expected = math.erfc(v)
    if expected > TINY:
        assert abs(got - expected) <= RTOL * expected, (v, got, expected)
    else:
        assert 0.0 <= got <= 2 * TINY, (v, got)


def test_erfc_special_values_and_shapes():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e300, -1e300, 5e-324, -5e-324])
    got = erfc(x)
    assert got[0] == got[1] == 1.0
    assert got[2] == 0.0 and got[3] == 2.0 and np.isnan(got[4])
    assert got[5] == 0.0 and got[6] == 2.0 and got[7] == got[8] == 1.0
    assert erfc(np.array(0.5)).shape == ()
    assert erfc(np.zeros((2, 0, 3))).shape == (2, 0, 3)
    assert erfc(np.array([[-1.0, 2.0]])).shape == (1, 2)


def test_erfc_keeps_float32_in_float32():
    """The numpy backend's float32 mode runs the reference's code on float32 arrays: erfc then
    computes in float32 (a real float32 computation), within a few float32 ulps."""
    x = np.linspace(-5.0, 9.0, 14_001).astype(np.float32)
    got = erfc(x)
    assert got.dtype == np.float32
    expected = erfc(x.astype(np.float64))
    normal = expected > np.finfo(np.float32).tiny
    rel = np.abs(got[normal] - expected[normal]) / expected[normal]
    assert rel.max() < 8 * 2.0**-24, float(rel.max())


def test_normal_cdf_is_accurate_far_in_the_left_tail():
    # Φ(z) = ½ erfc(−z/√2) at the argument as the reference rounds it (−z·√½ errs by u relative,
    # which moves Φ by 2t²u relative at t = −z/√2: conditioning, not the evaluation)
    z = -np.linspace(0.0, 37.0, 3_701)
    t = -z * SQRT_HALF
    expected = np.array([0.5 * math.erfc(v) for v in t])
    got = normal_cdf(z)
    normal = expected > TINY
    assert np.all(np.abs(got[normal] - expected[normal]) <= RTOL * expected[normal])


def _problem() -> Problem:
    rng = np.random.default_rng(0)
    net = Network((Dense(3, 4), Activation("gelu"), Dense(4, 2)))
    params = {k: rng.uniform(-1, 1, s) for k, s in net.param_shapes().items()}
    return Problem(net, Loss("squared_error"), Reduction("mean"), params,
                   Batch(rng.uniform(-2, 2, (5, 3)), rng.uniform(-2, 2, (5, 2))))


def test_a_tolerance_needs_no_reference_gradients(monkeypatch):
    """``problem_tolerance`` adds two bounds (backend's and reference's precision); the bound runs
    on its own R arithmetic (values and |terms| included), so it never calls the reference's
    gradient routines — which would fail for coupled problems (spec §4.3)."""
    calls = []

    def counting(problem, *args, **kwargs):
        calls.append(problem)
        raise AssertionError("the error bound must not need the reference's gradients")

    monkeypatch.setattr(grads, "per_example_grads", counting)
    monkeypatch.setattr(grads, "batch_grad", counting)
    p = _problem()
    tol = problem_tolerance(p, "float32")
    assert calls == []
    # and the bounds are those of computing it afresh for each precision
    fresh = (bounds.error_bound(p, numerics.precision("float32"))
             + bounds.error_bound(p, numerics.REFERENCE))
    assert fresh.loss == tol.loss
    for k in p.params:
        assert np.array_equal(fresh.grads[k], tol.grads[k])
        assert np.array_equal(fresh.batch_grads[k], tol.batch_grads[k])
