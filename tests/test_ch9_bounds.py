"""Spec §9.7: the error bound of the structured layers (embedding, convolution, attention,
residual, tie) — no false alarm on the reference's formulas run in float32, and tight enough to
see a relative error of 10⁻³. Problems are drawn from ``structured_problems`` by a seeded
Hypothesis run (deterministic), one kind at a time."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings

from batchgrad_spec.strategies import STRUCTURED_KINDS, structured_problems
from reference.bounds import problem_tolerance
from reference.grads import batch_grad, per_example_grads
from reference.problem import Problem

PER_KIND = 60
"""Problems per kind: 5 kinds × 60 = 300 float32 problems (and their float64 reference)."""


def _problems(kind: str) -> list[Problem]:
    out: list[Problem] = []

    @settings(max_examples=PER_KIND, derandomize=True, database=None, deadline=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(problem=structured_problems(kinds=(kind,), max_batch=4, max_tokens=4))
    def collect(problem: Problem) -> None:
        out.append(problem.rounded("float32"))

    collect()
    return out


def _ratio(err: np.ndarray | float, tol: np.ndarray | float) -> float:
    e, b = np.abs(np.asarray(err, dtype=np.float64)), np.asarray(tol, dtype=np.float64)
    return float(np.max(np.where(e == 0, 0.0, e / np.where(b > 0, b, np.inf)), initial=0.0))


@pytest.mark.clause("9.7")
@pytest.mark.parametrize("kind", STRUCTURED_KINDS)
def test_float32_structured_layers_stay_within_the_bound(kind):
    """The reference's formulas run in float32 (the numpy backend) stay within the §9.7 rules on
    every ℓ_i, g_i, L and ∇L."""
    worst = 0.0
    for p in _problems(kind):
        tol = problem_tolerance(p, "float32")
        loss, grads = batch_grad(p)
        loss32, grads32 = batch_grad(p, np.float32)
        ls, g = per_example_grads(p)
        ls32, g32 = per_example_grads(p, np.float32)
        ratios = [_ratio(loss32 - loss, tol.loss), _ratio(ls32 - ls, tol.losses)]
        ratios += [_ratio(grads32[k] - grads[k], tol.batch_grads[k]) for k in grads]
        ratios += [_ratio(g32[k] - g[k], tol.grads[k]) for k in g]
        assert max(ratios) <= 1, f"§9.7 false alarm ({max(ratios):.3g}× the tolerance): {p!r}"
        worst = max(worst, max(ratios))
    assert worst > 0  # the comparison saw rounding at all


@pytest.mark.clause("9.7")
@pytest.mark.parametrize("kind", STRUCTURED_KINDS)
def test_the_structured_bound_still_sees_a_relative_error_of_one_in_a_thousand(kind):
    """Tightness: on at least 90 % of the problems with a non-zero gradient, some element of
    size ≥ 2⁻¹⁰ max|∇L| has a float32 tolerance below 10⁻³ of it (and likewise for g_i), so a
    wrong factor 1 + 10⁻³ is visible."""
    seen = total = 0
    for p in _problems(kind):
        _, grads = batch_grad(p)
        big = max(float(np.max(np.abs(v), initial=0.0)) for v in grads.values())
        if big == 0:
            continue
        tol = problem_tolerance(p, "float32")
        _, g = per_example_grads(p)
        total += 1
        batch_ok = any(np.any((np.abs(v) >= big / 1024) & (1e-3 * np.abs(v) > tol.batch_grads[k]))
                       for k, v in grads.items())
        ex_ok = any(np.any((np.abs(v) >= big / 1024) & (1e-3 * np.abs(v) > tol.grads[k]))
                    for k, v in g.items())
        seen += batch_ok and ex_ok
    assert total and seen >= 0.9 * total, f"§9.7: only {seen}/{total} problems would show 1e-3"
