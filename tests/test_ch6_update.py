"""Spec chapter 6: the update step.

A backend's optional ``train(problem, config, optimizer, batches)`` runs its framework's own
optimiser objects (``torch.optim``, ``optax``), one step per batch, and returns the final
parameters; backends without it skip this chapter (one line says so). Each step is compared with
the reference's update (``reference.update``) from the parameters the backend itself reached, under
the derived tolerance of ``reference.numerics.update_tolerance`` (the chapter-7 gradient bound
propagated through the update and the optimiser state); see ``batchgrad_spec/updates.py``. The
properties the meta-tests run too (§6.1, §6.2, §6.6) are in ``batchgrad_spec.properties.update``;
they are collected here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from batchgrad_spec.properties.update import (  # noqa: F401 — run here and by meta-tests
    ONLINE,
    test_one_sgd_step_on_a_batch_is_theta_minus_rate_times_the_batch_gradient,
    test_online_sgd_steps_follow_the_reference_step_by_step,
    test_the_step_counter_advances_once_per_optimiser_step,
)
from batchgrad_spec.strategies import problems
from batchgrad_spec.updates import (
    UpdateCheck,
    largest,
    optimizers,
    rates,
    singles,
    whole,
)
from reference.bounds import error_bound
from reference.contract import implements
from reference.grads import batch_grad, per_example_grads
from reference.numerics import REFERENCE
from reference.types import Grads
from reference.update import Optimizer, sgd_decoupled_step, train, update_tolerance

TRAINING_CLAUSES = {"6.1", "6.2", "6.3", "6.4", "6.5", "6.6"}
"""Clauses that need the optional ``train``; §6.7 uses it only where the backend has it."""


@pytest.fixture(autouse=True)
def _needs_train(request: pytest.FixtureRequest) -> None:
    """Skip, in one line, a backend that does not implement the optional ``train`` (§6.1)."""
    callspec = getattr(request.node, "callspec", None)
    target = callspec.params.get("target") if callspec else None
    marker = request.node.get_closest_marker("clause")
    if target is None or marker is None or not TRAINING_CLAUSES & set(marker.args):
        return
    if not implements(target.backend, "train"):
        pytest.skip(f"backend {target.backend.name} does not implement the optional train()")


def _steps(before: Grads, after: Grads) -> Grads:
    return {k: after[k] - before[k] for k in before}


# -- §6.2 online vs batch -------------------------------------------------------------------------
ETA_BASE = 2.0**-10
"""η of the online/batch comparison is ETA_BASE / max(1, G), G the largest per-example gradient
element: every step moves θ by at most 2⁻¹⁰ per element, small enough for the O(η³) remainder to
be below 1/8 of the O(η²) term on every smooth problem of the strategies (spec §6.2)."""
ROUNDING_MARGIN = 100
"""Examples are kept only where the smaller difference exceeds 100× the rounding bound of the
runs, so that rounding moves the measured ratio by at most ≈ 2% (spec §6.2)."""


@pytest.mark.clause("6.2")
@given(problem=ONLINE)
def test_online_and_batch_sgd_differ_at_second_order_in_the_rate(target, problem):
    if target.config.dtype != "float64":
        pytest.skip("the η² scaling is measured in float64: in float32 it is at rounding level")
    n = problem.batch.size
    with UpdateCheck(target, problem) as c:
        p = c.problem
        g = largest(per_example_grads(p)[1])
        eta = ETA_BASE / max(1.0, g)
        ones, src = singles(p)

        def difference(rate: float) -> tuple[float, float]:
            online, batch = Optimizer("sgd", rate / n), Optimizer("sgd", rate)
            theta_online = c.train(online, ones)
            theta_batch = c.train(batch, [p.batch])
            # rounding level: the per-step bounds of both runs (reference's own trajectory)
            path = [p.params]
            for b in ones[:-1]:
                path.append(train(p.with_params(path[-1]), online, [b]))
            tol = (update_tolerance(p, online, ones, path, "float64")
                   + update_tolerance(p, batch, [p.batch], [p.params], "float64"))
            rounding = sum(largest(t) for t in tol)
            return largest(_steps(theta_batch, theta_online)), rounding

        (d1, r1), (d2, r2) = difference(eta), difference(eta / 2)
        assume(d2 > ROUNDING_MARGIN * (r1 + r2))  # not degenerate: above rounding level
        ratio = d1 / d2
        c.batches_src = src
        if not 3.0 <= ratio <= 5.0:
            c.fail(f"online (N = {n} steps at η/N) vs batch (one step at η): the difference at "
                   f"η = {eta:.3g} is {d1:.3g}, at η/2 it is {d2:.3g}: ratio {ratio:.3f}, "
                   f"expected ≈ 4 (O(η²)) in [3, 5]")


# -- §6.3 sum at η is mean at Nη ------------------------------------------------------------------
@pytest.mark.clause("6.3")
@given(problem=problems(reductions=("sum",)), lr=rates(high=2.0**-4),
       momentum=st.sampled_from((0.0, 0.9)))
def test_sgd_on_the_summed_loss_at_rate_eta_is_sgd_on_the_mean_loss_at_rate_n_eta(
        target, problem, lr, momentum):
    n = problem.batch.size
    with UpdateCheck(target, problem) as c:
        batches, src = whole(c.problem, 1)
        summed = c.trajectory(Optimizer("sgd", lr, momentum=momentum), batches, src,
                              what="θ (sum, η)")[-1]
        mean = UpdateCheck(target, c.problem.with_reduction("mean"))
        rate = Optimizer("sgd", n * lr, momentum=momentum)
        averaged = mean.trajectory(rate, batches, src, what="θ (mean, Nη)")[-1]
        tol = [update_tolerance(x.problem, o, batches, [x.problem.params],
                                c.target.config.dtype, c.target.config.precision)[0]
               for x, o in ((c, Optimizer("sgd", lr, momentum=momentum)), (mean, rate))]
        c.close(averaged, summed, {k: tol[0][k] + tol[1][k] for k in summed},
                what="θ (mean, Nη) vs θ (sum, η)",
                call=f"checked_train(backend, problem.with_reduction('mean'), config, "
                     f"Optimizer('sgd', {n} * {lr!r}, momentum={momentum!r}), batches)",
                expect="checked_train(backend, problem, config, optimizer, batches)")


# -- §6.4 Adam and the scale of the loss ----------------------------------------------------------
ADAM = optimizers(("adam",)).map(lambda o: Optimizer("adam", o.lr, betas=o.betas, eps=o.eps))


@pytest.mark.clause("6.4")
@given(problem=problems(reductions=("sum",)), opt=ADAM)
def test_adam_on_the_summed_loss_is_adam_on_the_mean_loss_with_eps_over_n(target, problem, opt):
    n = problem.batch.size
    with UpdateCheck(target, problem) as c:
        batches, src = whole(c.problem, 1)
        summed = c.trajectory(opt, batches, src, what="θ (sum, ε)")[-1]
        mean = UpdateCheck(target, c.problem.with_reduction("mean"))
        small = Optimizer("adam", opt.lr, betas=opt.betas, eps=opt.eps / n)
        averaged = mean.trajectory(small, batches, src, what="θ (mean, ε/N)")[-1]
        tol = [update_tolerance(x.problem, o, batches, [x.problem.params],
                                c.target.config.dtype, c.target.config.precision)[0]
               for x, o in ((c, opt), (mean, small))]
        c.close(averaged, summed, {k: tol[0][k] + tol[1][k] for k in summed},
                what="θ (mean, ε/N) vs θ (sum, ε)",
                call=f"checked_train(backend, problem.with_reduction('mean'), config, "
                     f"Optimizer('adam', {opt.lr!r}, betas={opt.betas!r}, eps={opt.eps!r} / {n}),"
                     f" batches)",
                expect="checked_train(backend, problem, config, optimizer, batches)")


@pytest.mark.clause("6.4")
@given(problem=problems(reductions=("mean",)), opt=ADAM)
def test_adam_steps_for_sum_and_mean_differ_by_at_most_eta_eps_over_the_gradient(
        target, problem, opt):
    n = problem.batch.size
    with UpdateCheck(target, problem) as c:
        batches, src = whole(c.problem, 1)
        theta = c.problem.params
        mean_step = _steps(theta, c.trajectory(opt, batches, src, what="θ (mean)")[-1])
        summed = UpdateCheck(target, c.problem.with_reduction("sum"))
        sum_step = _steps(theta, summed.trajectory(opt, batches, src, what="θ (sum)")[-1])
        g = batch_grad(c.problem)[1]
        e = error_bound(c.problem, REFERENCE).batch_grads
        tol = [update_tolerance(x.problem, opt, batches, [theta], c.target.config.dtype,
                                c.target.config.precision)[0] for x in (c, summed)]
        # |Δ_sum − Δ_mean| = η|g|(1 − 1/N)ε / ((|g| + ε/N)(|g| + ε)) ≤ η(1 − 1/N)ε/(|g| + ε):
        # what exceeds that must be rounding, within both runs' tolerances
        gap = {k: opt.lr * (1 - 1 / n) * opt.eps / (np.maximum(np.abs(g[k]) - e[k], 0.0)
                                                     + opt.eps) for k in g}
        excess = {k: np.maximum(np.abs(sum_step[k] - mean_step[k]) - gap[k], 0.0) for k in g}
        c.close(excess, {k: np.zeros_like(v) for k, v in excess.items()},
                {k: tol[0][k] + tol[1][k] for k in g},
                what="|Δ(sum) − Δ(mean)| beyond η(1 − 1/N)ε/(|g| + ε)",
                call="(checked_train(backend, problem.with_reduction('sum'), config, optimizer, "
                     "batches), checked_train(backend, problem, config, optimizer, batches))",
                expect="'within η(1 − 1/N)ε/(|∇L| + ε) of each other'")


@pytest.mark.clause("6.4")
@given(problem=problems(reductions=("mean",)), opt=ADAM)
def test_adam_step_shrinks_where_the_gradient_is_below_epsilon(target, problem, opt):
    # Scale the loss by s (weights c_i = s/N) so that the largest gradient element is ε: there
    # the first step is η·ε/(ε + ε) = η/2, not the ≈ η of the unscaled loss; smaller elements
    # move η|g|/(|g| + ε) < η/2.
    p = problem.rounded(target.config.dtype)
    n = p.batch.size
    g = batch_grad(p)[1]
    top = largest(g)
    bound = error_bound(p, REFERENCE).batch_grads
    assume(top > 0 and all(np.all(bound[k] < 1e-3 * top) for k in g))
    s = opt.eps / top
    weights = np.full(n, s / n).astype(target.config.dtype).astype(np.float64)
    assume(np.all(weights > 0))
    scaled = p.with_reduction("weighted", weights=weights)
    with UpdateCheck(target, scaled) as c:
        batches, src = whole(c.problem, 1)
        step = _steps(c.problem.params, c.trajectory(opt, batches, src, what="θ (loss × s)")[-1])
        tol = update_tolerance(c.problem, opt, batches, [c.problem.params],
                               c.target.config.dtype, c.target.config.precision)[0]
        x = largest(batch_grad(c.problem)[1])  # = ε up to the rounding of the weights
        cap = opt.lr * x / (x + opt.eps)  # η/2: the step of the largest element
        c.close({k: np.maximum(np.abs(v) - cap, 0.0) for k, v in step.items()},
                {k: np.zeros_like(v) for k, v in step.items()}, tol,
                what=f"the excess of |Δθ| over η·|s·g|/(|s·g| + ε) = {cap / opt.lr:.4g}·η",
                call=f"{{k: np.maximum(np.abs(v - problem.params[k]) - {cap!r}, 0) for k, v in "
                     f"checked_train(backend, problem, config, optimizer, batches).items()}}",
                expect="{k: np.zeros_like(v) for k, v in problem.params.items()}")


# -- §6.5 weight decay ----------------------------------------------------------------------------
@pytest.mark.clause("6.5")
@given(problem=problems(), lr=rates(high=2.0**-2), decay=st.floats(2.0**-10, 0.5, width=32))
def test_l2_and_decoupled_weight_decay_coincide_for_one_sgd_step(target, problem, lr, decay):
    opt = Optimizer("sgd", lr, weight_decay=decay)
    with UpdateCheck(target, problem) as c:
        batches, src = whole(c.problem, 1)
        c.optimizer, c.batches_src = opt, src
        theta = c.train(opt, batches)
        expected = sgd_decoupled_step(c.problem.params, batch_grad(c.problem)[1], lr, decay)
        tol = update_tolerance(c.problem, opt, batches, [c.problem.params],
                               c.target.config.dtype, c.target.config.precision)[0]
        c.close(theta, expected, tol, what="θ − η(∇L + λθ) vs θ(1 − ηλ) − η∇L",
                expect=f"sgd_decoupled_step(problem.params, batch_grad(problem)[1], {lr!r}, "
                       f"{decay!r})")


@pytest.mark.clause("6.5")
@given(problem=problems(), opt=ADAM, decay=st.floats(2.0**-4, 0.5, width=32))
def test_l2_and_decoupled_weight_decay_differ_for_adam(target, problem, opt, decay):
    l2 = Optimizer("adam", opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=decay)
    decoupled = Optimizer("adamw", opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=decay)
    p = problem.rounded(target.config.dtype)
    batches = [p.batch]
    ref_l2, ref_w = train(p, l2, batches), train(p, decoupled, batches)
    tol = [update_tolerance(p, o, batches, [p.params], target.config.dtype,
                            target.config.precision)[0] for o in (l2, decoupled)]
    # keep true instances: the two rules' results differ by more than twice both tolerances
    assume(any(np.any(np.abs(ref_l2[k] - ref_w[k]) > 2 * (tol[0][k] + tol[1][k]))
               for k in ref_l2))
    with UpdateCheck(target, p) as c:
        a = c.trajectory(l2, batches, "[problem.batch]", what="θ (Adam, L2)")[-1]
        w = c.trajectory(decoupled, batches, "[problem.batch]", what="θ (AdamW)")[-1]
        apart = [k for k in a if np.any(np.abs(a[k] - w[k]) > tol[0][k] + tol[1][k])]
        if not apart:
            c.fail("Adam with L2 weight decay and AdamW gave the same parameters within "
                   "tolerance, where the reference rules differ")


# -- §6.7 runs repeat bitwise --------------------------------------------------------------------
def _bits(x: Grads | np.ndarray | float) -> dict[str, bytes]:
    if isinstance(x, dict):
        return {k: np.ascontiguousarray(v, np.float64).tobytes() for k, v in x.items()}
    return {"": np.ascontiguousarray(x, np.float64).tobytes()}


def _repeat(c: UpdateCheck, method: str) -> list[tuple[str, object, object]]:
    """Every answer of the contract, asked twice: (call, first, second)."""
    out: list[tuple[str, object, object]] = []
    first, second = c.loss_and_grad(), c.loss_and_grad()
    out += [("loss_and_grad: L", first[0], second[0]), ("loss_and_grad: ∇L", first[1], second[1])]
    a, b = c.per_example(method=method), c.per_example(method=method)
    out += [(f"per_example({method!r}): ℓ", a[0], b[0]),
            (f"per_example({method!r}): g", a[1], b[1])]
    if implements(c.target.backend, "train"):
        opt = Optimizer("adam", 2.0**-6)
        batches = [c.problem.batch] * 2
        out.append(("train (Adam, 2 steps)", c.train(opt, batches), c.train(opt, batches)))
    return out


def _assert_bitwise(c: UpdateCheck, method: str) -> None:
    __tracebackhide__ = True
    for call, x, y in _repeat(c, method):
        bx, by = _bits(x), _bits(y)  # type: ignore[arg-type]
        diff = [k for k in bx if bx[k] != by[k]]
        if diff:
            c.fail(f"{call} differs between two identical calls in {diff} (not bitwise equal)")


@pytest.mark.clause("6.7")
@given(problem=problems())
def test_cpu_runs_repeat_bitwise(target, method, problem):
    if target.config.device != "cpu":
        pytest.skip("CPU repeatability is checked on cpu targets")
    with UpdateCheck(target, problem) as c:
        _assert_bitwise(c, method)


@contextlib.contextmanager
def _deterministic(target) -> Iterator[None]:
    """PyTorch's deterministic algorithms (and cuBLAS workspace) for the duration of a call."""
    if target.backend.name != "torch":
        yield
        return
    import torch

    old = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old)


@pytest.mark.clause("6.7")
@given(problem=problems())
def test_gpu_runs_repeat_bitwise_under_deterministic_algorithms(target, method, problem):
    if target.config.device == "cpu":
        pytest.skip("GPU repeatability is checked on cuda/gpu targets only")
    if target.backend.name != "torch":
        pytest.skip(f"{target.backend.name}: deterministic GPU kernels must be chosen before the "
                    f"framework starts (XLA_FLAGS=--xla_gpu_deterministic_ops=true)")
    if os.environ.get("CUBLAS_WORKSPACE_CONFIG") not in (":4096:8", ":16:8"):
        pytest.skip("deterministic cuBLAS needs CUBLAS_WORKSPACE_CONFIG=:4096:8 set before the "
                    "run starts")
    with UpdateCheck(target, problem) as c, _deterministic(target):
        _assert_bitwise(c, method)
