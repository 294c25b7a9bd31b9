"""Spec chapter 7: the tolerance (§7.2) and kinks within rounding (§7.3).

The tolerance model (``reference/numerics.py``, ``reference/bounds.py``) is itself under test
here, in both directions:
it never raises a false alarm on a correct float32 computation (§7.1, §7.2) and still catches a
wrong gradient (§7.2), and it accepts either branch of a relu only within rounding of the kink
(§7.3). The model's assumptions are measured in ``tests/test_ch7_kernels.py``; its rules for
losses, normalisation, dropout and sequences in ``tests/test_ch7_layers_and_losses.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import reference.activations as activations
from batchgrad_spec import harness, stats
from batchgrad_spec.harness import Check, ClauseFailure, Target, check
from batchgrad_spec.strategies import networks, problems
from reference.activations import Activation
from reference.batch import Batch
from reference.bounds import problem_tolerance
from reference.contract import Config
from reference.grads import batch_grad, forward, per_example_grads
from reference.layers import Dense, Network
from reference.losses import Loss, Reduction
from reference.numpy_backend import backend as numpy_backend
from reference.problem import Problem
from reference.types import Grads

MANY = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
"""For the tests that measure the model itself on the numpy backend: many cheap examples."""


@contextmanager
def unrecorded() -> Iterator[None]:
    """Deliberately wrong results are not backend results: keep them out of the run summary."""
    with stats.preserved():
        yield


def caught(c: Check, observed: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray],
           tol: Mapping[str, np.ndarray], what: str) -> bool:
    """Whether ``c.close`` rejects ``observed`` (without counting it in the summary)."""
    with unrecorded():
        try:
            c.close(observed, expected, tol, what=what, call="(deliberately wrong)",
                    expect="batch_grad(problem)[1]")
        except ClauseFailure:
            return True
    return False



# -- §7.1/§7.2 the bound is a bound ---------------------------------------------------------------
@st.composite
def cancelling_problems(draw: st.DrawFn) -> Problem:
    """Problems built to cancel: the first layer's two input columns meet weights w and −w(1 + ε)
    on equal inputs, so every first pre-activation is a difference of near-equal products; and a
    weighted batch of two whose weights (ℓ₂, −ℓ₁) make L = 0 up to rounding (§2.10)."""
    kind = draw(st.sampled_from(["pre-activation", "loss"]), label="cancellation")
    if kind == "pre-activation":
        p = draw(problems(nets=networks(in_features=2)))
        eps = draw(st.integers(-64, 64)) * 2.0**-20
        w = p.params["0.weight"].copy()
        w[:, 1] = (-w[:, 0] * (1 + eps)).astype(np.float32)
        x = p.batch.inputs.copy()
        x[:, 1] = x[:, 0]
        return Problem(p.network, p.loss, p.reduction, {**p.params, "0.weight": w},
                       Batch(x, p.batch.targets, p.batch.weights))
    p = draw(problems(min_batch=2, max_batch=2, reductions=("weighted",)))
    losses, _ = per_example_grads(p.rounded("float32"))
    w = np.array([losses[1], -losses[0]]).astype(np.float32).astype(np.float64)
    return p.with_reduction("weighted", weights=w)


NUMPY32 = Target("numpy", numpy_backend, Config("cpu", "float32"), clause="7.2")


def float32_and_reference(c: Check) -> tuple[tuple[float, Grads], tuple[np.ndarray, Grads],
                                             tuple[float, Grads], tuple[np.ndarray, Grads]]:
    """(L, ∇L) and (ℓ_i, g_i) of the check's backend (vmap), then the reference's."""
    return (c.loss_and_grad(), c.per_example(method="vmap"), batch_grad(c.problem),
            per_example_grads(c.problem))


@pytest.mark.clause("7.1", "7.1.1", "7.1.6", "7.2")
def test_numpy_float32_never_exceeds_the_tolerance():
    """No false alarm: the numpy backend in float32 (a real float32 computation) against the
    float64 reference, over 300+ drawn problems including cancelling ones, stays within the
    tolerance elementwise, for L, ∇L, ℓ_i and g_i. The largest error/tolerance is printed."""
    largest = {"ratio": 0.0, "what": "", "examples": 0}

    @MANY
    @given(problem=st.one_of(problems(), cancelling_problems()))
    def run(problem: Problem) -> None:
        largest["examples"] += 1
        with check(NUMPY32, problem) as c:
            (loss, grads), (losses, per_ex), (ref_loss, ref_grads), (ref_losses, ref_per_ex) = (
                float32_and_reference(c))
            tol = c.tol()
            pairs = [("L", loss, ref_loss, tol.loss, None, "batch_grad(problem)[0]"),
                     ("ℓ_i", losses, ref_losses, tol.losses, None,
                      "per_example_grads(problem)[0]")]
            pairs += [(f"∇L[{k!r}]", grads[k], ref_grads[k], tol.batch_grads[k],
                       f"{c.call_of(grads)}[{k!r}]", f"batch_grad(problem)[1][{k!r}]")
                      for k in grads]
            pairs += [(f"g_i[{k!r}]", per_ex[k], ref_per_ex[k], tol.grads[k],
                       f"{c.call_of(per_ex)}[{k!r}]", f"per_example_grads(problem)[1][{k!r}]")
                      for k in per_ex]
            for what, obs, exp, t, call, expect in pairs:
                ratio = harness.mismatch_report(np.asarray(obs), np.asarray(exp),
                                                np.asarray(t))[1]
                if ratio > largest["ratio"]:
                    largest.update(ratio=ratio, what=what)
                c.close(obs, exp, t, what=what, call=call, expect=expect)

    run()
    print(f"\n§7.2 numpy float32: largest error/tolerance {largest['ratio']:.3g} "
          f"({largest['what']}) over {largest['examples']} examples")
    assert largest["ratio"] <= 1.0


# -- §7.1.5 inputs are exact -----------------------------------------------------------------------
def _float32_exact(p: Problem) -> bool:
    arrays = [*p.params.values(), p.batch.inputs, p.batch.targets]
    arrays += [] if p.batch.weights is None else [p.batch.weights]
    return all(np.array_equal(a, np.asarray(a).astype(np.float32)) for a in arrays
               if np.asarray(a).dtype.kind == "f")


@pytest.mark.clause("7.1.5")
@settings(max_examples=50, deadline=None)
@given(problem=problems(reductions=("weighted",)))
def test_a_problem_is_rounded_to_the_dtype_before_either_side_computes(problem):
    """Values off the float32 grid (θ, x and c times 1 + 2⁻³⁰) are rounded to float32 before
    the float32 backend and the reference compute: both see the same numbers, and the backend is
    within the tolerance of the reference on the rounded problem."""
    off = Problem(problem.network, problem.loss, problem.reduction,
                  {k: v * (1 + 2.0**-30) for k, v in problem.params.items()},
                  Batch(problem.batch.inputs * (1 + 2.0**-30), problem.batch.targets,
                        problem.batch.weights * (1 + 2.0**-30)))
    assume(not _float32_exact(off))
    with check(NUMPY32, off) as c:
        rounded = off.rounded("float32")
        assert _float32_exact(c.problem) and all(
            np.array_equal(c.problem.params[k], rounded.params[k]) for k in rounded.params)
        checked_gradient(c, "∇L of the rounded problem")


# -- §7.1.2 flush to zero ------------------------------------------------------------------------
TINY32 = float(np.finfo(np.float32).tiny)
FTZ = "batchgrad_spec.faults.precision:flush_to_zero"
FLUSHING = [FTZ] + (["jax"] if "jax" in harness.available_builtins() else [])
"""Backends that flush subnormals: the numpy emulation always, jax (XLA on the CPU) where
installed."""


def _flush_cases() -> dict[str, Problem]:
    """A weight c = tiny (float32's smallest normal) whose seed c·(1/D) is subnormal: the
    reproduced §2.3 false alarm (∂L/∂W2[1,0] = 16c), and issue #12's four identity-connected
    layers (∂L/∂b = 3c)."""
    ident = Activation("identity")
    two = Problem(Network((Dense(2, 1), ident, Dense(1, 2))), Loss("squared_error"),
                  Reduction("weighted"), {"0.weight": [[1.0, 1.0]], "0.bias": [0.0],
                                          "2.weight": [[0.0], [1.0]], "2.bias": [0.0, 0.0]},
                  Batch([[2.0, 2.0]], [[0.0, 0.0]], weights=[TINY32]))
    layers = (Dense(1, 1), ident, Dense(1, 1), ident, Dense(1, 1), ident, Dense(1, 2))
    params = {f"{k}.{n}": v for k in (0, 2, 4) for n, v in (("weight", [[1.0]]), ("bias", [0.0]))}
    params |= {"6.weight": [[0.0], [1.0]], "6.bias": [0.0, 0.0]}
    four = Problem(Network(layers), Loss("squared_error"), Reduction("weighted"), params,
                   Batch([[3.0]], [[0.0, 0.0]], weights=[TINY32]))
    return {"2.3-false-alarm": two, "issue-12-four-layers": four}


def _flush_target(spec: str) -> Target:
    return Target(spec, harness.load(spec), Config("cpu", "float32"), clause="7.1.2")


@pytest.mark.clause("7.1.2")
@pytest.mark.parametrize("case", sorted(_flush_cases()))
@pytest.mark.parametrize("spec", FLUSHING)
def test_a_flushed_subnormal_intermediate_of_the_backward_pass_is_within_the_bound(
        spec, case, monkeypatch):
    """The backend flushes c·(1/D) and returns 0 where the gradient is a normal multiple of c;
    the model covers it (spec §7.1.2). Without the seed's flush term (0.1.0's model) the same
    comparison is a false alarm."""
    with check(_flush_target(spec), _flush_cases()[case]) as c:
        _, grads = c.loss_and_grad()
        _, ref = batch_grad(c.problem)
        assert any(np.any((grads[k] == 0) & (ref[k] >= TINY32)) for k in ref), "nothing flushed"
        c.close(grads, ref, c.tol().batch_grads, what="∇L with a flushed seed",
                expect="batch_grad(problem)[1]")
        import reference.bounds as bounds
        import reference.losses as losses
        for module in (bounds, losses):
            monkeypatch.setattr(module, "cotangent_factors",
                                lambda loss, b, out: (0, 0, np.zeros(out.v.shape)))
        assert caught(c, grads, ref, problem_tolerance(c.problem, "float32").batch_grads,
                      what="∇L without the seed's flush term")


@st.composite
def near_underflow(draw: st.DrawFn) -> Problem:
    """Chapter-2 problems with weights c_i within 64× of tiny, and sometimes inputs too."""
    p = draw(problems(reductions=("weighted",)))
    n = p.batch.size
    c = draw(st.lists(st.floats(TINY32, 64 * TINY32, width=32), min_size=n, max_size=n))
    x = p.batch.inputs
    if draw(st.booleans(), label="inputs near tiny"):
        x = (x * np.float32(2.0**-120)).astype(np.float32).astype(np.float64)
    return p.with_batch(Batch(x, p.batch.targets, np.asarray(c)))


@pytest.mark.clause("7.1.2")
@pytest.mark.parametrize("spec", FLUSHING)
@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(problem=near_underflow())
def test_problems_near_the_underflow_threshold_stay_within_the_bound_when_subnormals_are_flushed(
        spec, problem):
    with check(_flush_target(spec), problem) as c:
        checked_gradient(c, "∇L near the underflow threshold")


# -- §7.2 The tolerance: a wrong gradient is caught ----------------------------------------------
def checked_gradient(c: Check, what: str = "∇L") -> tuple[Grads, Grads, dict[str, np.ndarray]]:
    """The backend's ∇L, checked against the reference's within the tolerance: (∇L, the
    reference's ∇L, the tolerance)."""
    __tracebackhide__ = True
    _, grads = c.loss_and_grad()
    _, ref = batch_grad(c.problem)
    tol = c.tol().batch_grads
    c.close(grads, ref, tol, what=what, expect="batch_grad(problem)[1]")
    return grads, ref, tol


@pytest.mark.clause("7.2")
@given(problem=problems(), data=st.data())
def test_a_gradient_element_off_by_ten_tolerances_is_caught(target, problem, data):
    with check(target, problem) as c:
        grads, ref, tol = checked_gradient(c)
        name = data.draw(st.sampled_from(sorted(grads)), label="parameter")
        ix = data.draw(st.tuples(*(st.integers(0, s - 1) for s in grads[name].shape)),
                       label="element")
        wrong = {k: v.copy() for k, v in grads.items()}
        t = tol[name][ix]
        # 10× the element's tolerance; where it is 0 (all exact zeros) any change is wrong
        wrong[name][ix] = grads[name][ix] + 10 * t if t > 0 else np.nextafter(grads[name][ix],
                                                                                np.inf)
        assert wrong[name][ix] != grads[name][ix]
        assert caught(c, wrong, ref, tol, what=f"∇L with {name}{list(ix)} + 10 × tolerance")


def _perturbed_by_1_over_n(grads: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The N − 1 denominator bug makes ∇L wrong by a relative 1/(N − 1); 1/N is smaller still,
    so catching (1 + 1/N)·∇L catches it (and N = 1 is included)."""
    return {k: v * (1 + 1 / n) for k, v in grads.items()}


@pytest.mark.clause("7.2")
@given(problem=problems(reductions=("mean",)))
def test_a_mean_gradient_off_by_a_relative_1_over_n_is_caught(target, problem):
    """Wherever the 1/N perturbation certainly exceeds the tolerance (some element with
    (|∇L| − tol)/N > 2·tol, so |(1 + 1/N)R − E| > tol whatever R within tol of E), it is caught."""
    with check(target, problem) as c:
        _, ref = batch_grad(c.problem)
        tol = c.tol().batch_grads
        n = c.problem.batch.size
        assume(any(np.any((np.abs(ref[k]) - tol[k]) / n > 2 * tol[k]) for k in ref))
        grads, ref, tol = checked_gradient(c)
        assert caught(c, _perturbed_by_1_over_n(grads, n), ref, tol, what="(1 + 1/N) ∇L")


@pytest.mark.clause("7.2")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_tolerance_is_tight_enough_to_catch_a_1_over_n_error(dtype):
    """Over 300 drawn problems with the mean reduction and N ≤ 8, (1 + 1/N)·∇L of the numpy
    backend is rejected in ≥ 95% of those whose gradient is not identically zero (a relative
    error of an all-zero gradient is no error: all-zero inputs and parameters are common draws).
    The fraction is printed, with the fraction of all problems."""
    target = Target("numpy", numpy_backend, Config("cpu", dtype), clause="7.2")
    outcome: list[bool | None] = []

    @MANY
    @given(problem=problems(reductions=("mean",), max_batch=8))
    def run(problem: Problem) -> None:
        with check(target, problem) as c:
            _, grads = c.loss_and_grad()
            _, ref = batch_grad(c.problem)
            if all(not np.any(v) for v in ref.values()):
                outcome.append(None)
                return
            wrong = _perturbed_by_1_over_n(grads, c.problem.batch.size)
            outcome.append(caught(c, wrong, ref, c.tol().batch_grads, what="(1 + 1/N) ∇L"))

    run()
    nonzero = [o for o in outcome if o is not None]
    fraction = sum(nonzero) / len(nonzero)
    print(f"\n§7.2 numpy {dtype}: (1 + 1/N)∇L caught in {sum(nonzero)}/{len(nonzero)} = "
          f"{fraction:.1%} of problems with a non-zero gradient ({sum(nonzero)}/{len(outcome)} "
          f"= {sum(nonzero) / len(outcome):.1%} of all)")
    assert fraction >= 0.95


@pytest.mark.clause("7.2")
def test_an_override_replaces_the_bound():
    p = _kink_problem()[0]
    for dtype in ("float32", "float64"):
        derived = problem_tolerance(p, dtype)
        one = problem_tolerance(p, dtype, override=1e-3)
        both = problem_tolerance(p, dtype, override={"loss": 2e-3, "grad": 5e-4})
        assert one.loss == 1e-3 and np.all(one.losses == 1e-3)
        assert both.loss == 2e-3 and np.all(both.losses == 2e-3)
        for k, v in derived.batch_grads.items():
            assert one.batch_grads[k].shape == v.shape and np.all(one.batch_grads[k] == 1e-3)
            assert np.all(one.grads[k] == 1e-3) and one.grads[k].shape == derived.grads[k].shape
            assert np.all(both.batch_grads[k] == 5e-4) and np.all(both.grads[k] == 5e-4)
        assert not np.all(derived.batch_grads["0.weight"] == 1e-3)
    target = Target("numpy", numpy_backend, Config("cpu", "float32"), clause="7.2")
    c = Check(target, p, override=0.5)
    assert c.tol().loss == 0.5 and all(np.all(v == 0.5) for v in c.tol().batch_grads.values())


# -- §7.3 Kinks within rounding --------------------------------------------------------------------
KINK_NET = Network((Dense(1, 1), Activation("gelu"), Dense(1, 1), Activation("relu"), Dense(1, 1)))


def _kink_problem() -> tuple[Problem, dict]:
    """Widths [1, 1, 1, 1], gelu then relu, x = −2: a relu pre-activation z = w·gelu(−2) + b that
    is exactly 0 in the numpy backend's float32 arithmetic and positive in float64.

    With first layer 1·x + 0, the gelu sees exactly −2. b = −w·g₃₂ with g₃₂ the float32 gelu(−2)
    (so w·g₃₂ + b = 0 exactly in float32) and w = ±1 chosen so that w·(g₆₄ − g₃₂) > 0: float64
    takes relu' = 1, float32 relu'(0) = 0.
    """
    def problem(w: float, b: float) -> Problem:
        params = {"0.weight": np.array([[1.0]]), "0.bias": np.array([0.0]),
                  "2.weight": np.array([[w]]), "2.bias": np.array([b]),
                  "4.weight": np.array([[1.0]]), "4.bias": np.array([0.0])}
        return Problem(KINK_NET, Loss("squared_error"), Reduction("mean"), params,
                       Batch(np.array([[-2.0]]), np.array([[1.0]])))

    base = problem(1.0, 0.0)
    g32 = forward(base, np.float32).outputs[1][0, 0]
    g64 = forward(base).outputs[1][0, 0]
    w = 1.0 if g64 > g32 else -1.0
    p = problem(w, float(np.float32(-w * g32)))
    z32 = forward(p, np.float32).inputs[3][0, 0]
    z64 = forward(p).inputs[3][0, 0]
    return p, {"gelu32": float(g32), "gelu64": float(g64), "w": w, "b": p.params["2.bias"][0],
               "z32": float(z32), "z64": float(z64)}


@pytest.mark.clause("7.3")
def test_the_kink_problem_puts_float32_and_float64_on_different_branches():
    p, v = _kink_problem()
    assert p.rounded("float32").params["2.bias"][0] == v["b"]  # b is float32-representable
    assert v["gelu32"] != v["gelu64"]
    _assert_on_different_branches(v)  # float32: relu'(0) = 0; float64: relu' = 1
    ref, f32 = batch_grad(p)[1], batch_grad(p, np.float32)[1]
    assert abs(f32["0.weight"][0, 0] - ref["0.weight"][0, 0]) > 0.1  # the whole slope jump


def _assert_on_different_branches(v: dict) -> None:
    assert v["z32"] == 0.0 and v["z64"] > 0.0, f"the kink construction failed: {v}"


@pytest.mark.clause("7.3")
def test_either_branch_within_rounding_of_the_kink_is_accepted(target):
    """The relu's pre-activation lies within float32 rounding of 0, so a float32 backend may take
    either branch and its gradients — which then differ from float64's by the full slope jump
    times the upstream cotangent — pass; float64 backends must take float64's branch (the float64
    margin is ≈ 10⁻¹⁷, far below z = 3·10⁻¹⁰).

    Found this way in the wild (spec §7.3): widths [5, 1, 1, 1], gelu then relu, x = −2 gives
    the relu a pre-activation of +7.6·10⁻²³ in float64 and the other branch in float32.
    """
    p, v = _kink_problem()
    _assert_on_different_branches(v)
    with check(target, p) as c:
        checked_gradient(c, "∇L at the kink")
        for method in target.backend.per_example_methods():
            _, per_ex = c.per_example(method=method)
            _, ref_per_ex = per_example_grads(c.problem)
            c.close(per_ex, ref_per_ex, c.tol().grads, what=f"g_i at the kink ({method})",
                    expect="per_example_grads(problem)[1]")


@pytest.mark.clause("7.3")
def test_without_the_kink_term_the_float32_branch_is_a_false_alarm(monkeypatch):
    """The relu slope's jump is what covers the difference: with KINKS emptied, the same
    comparison rejects the numpy float32 backend, on the batch and the per-example gradients."""
    p, v = _kink_problem()
    _assert_on_different_branches(v)
    with check(NUMPY32, p) as c:
        (_, grads), (_, per_ex), (_, ref_grads), (_, ref_per_ex) = float32_and_reference(c)
        tol = c.tol()
        assert not caught(c, grads, ref_grads, tol.batch_grads, what="∇L")
        monkeypatch.setattr(activations, "KINKS", {})
        no_kink = problem_tolerance(c.problem, "float32")
        assert caught(c, grads, ref_grads, no_kink.batch_grads, what="∇L without KINKS")
        assert caught(c, per_ex, ref_per_ex, no_kink.grads, what="g_i without KINKS")
