"""Chapter 5's gradient-accumulation properties that the meta-tests run too (§5.1, §5.2, §5.4),
and what every accumulation test shares: the check that calls a backend's
``accumulate``, and the comparison of its G with the whole batch's gradient. See
``batchgrad_spec.properties``; the other accumulation tests are in
``tests/test_ch5_accumulation.py``.

A backend's optional ``accumulate(problem, config, plan, method)`` differentiates, at one θ, each
micro-batch objective J_k = s_k L_k + t_k (λ/2)‖θ‖² of a ``reference.accumulation.Accumulation``
plan and combines the gradients with its accumulator ("sum", "average"). Exactness properties
compare its G with the reference's gradient of the *whole* batch (``full_batch_gradient``) under
``full_batch_tolerance``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference.accumulation import (
    Accumulation,
    accumulate,
    accumulation_tolerance,
    count_weighted,
    full_batch_gradient,
    full_batch_tolerance,
    global_normaliser,
    with_l2,
)
from reference.contract import BackendError, checked_accumulate
from reference.problem import Problem
from reference.types import Grads

from ..harness import Check, Target
from ..strategies import loss_problems, problems, splits

__all__ = [
    "LAMBDAS",
    "MEAN",
    "TOKENS",
    "AccumulationCheck",
    "Scheme",
    "split_matches_full_batch",
    "test_an_l2_penalty_added_once_per_step_contributes_lambda_theta_whatever_k",
    "test_micro_batch_means_weighted_by_n_k_over_n_accumulate_to_the_full_batch_mean_gradient",
    "test_token_level_accumulation_divides_summed_token_losses_by_the_whole_batch_token_count",
]

Scheme = Callable[[Problem, tuple[int, ...]], Accumulation]
"""An accumulation scheme: the plan it makes of a problem split into micro-batches of sizes."""


# -- the check ------------------------------------------------------------------------------------
class AccumulationCheck(Check):
    """``Check`` with the backend's ``accumulate`` and repro snippets that can call it."""

    def __init__(self, target: Target, problem: Problem) -> None:
        super().__init__(target, problem)
        self.last: tuple[str, str] | None = None

    def __exit__(self, typ: type | None, exc: BaseException | None, tb: object) -> None:
        __tracebackhide__ = True
        if isinstance(exc, BackendError) and exc.call == "accumulate" and self.last:
            self.fail(f"the backend broke the contract: {exc}", snippet=self.last)
        super().__exit__(typ, exc, tb)

    def accumulate(self, plan: Accumulation, method: str = "sum",
                   problem: Problem | None = None, on: str = "problem") -> Grads:
        """The backend's G for ``plan`` (on ``problem``, written ``on`` in the snippet); the
        check remembers the call, for ``close`` and ``call_of``."""
        call = f"checked_accumulate(backend, {on}, config, {plan!r}, {method!r})"
        self.last = (call, f"accumulate({on}, {plan!r})")
        g = checked_accumulate(self.target.backend, problem or self.problem,
                               self.target.config, plan, method)
        self._made.append(g)  # as Check._remember, for a call that returns one value
        self._call_of[id(g)] = call
        return g

    def matches_full_batch(self, plan: Accumulation, method: str = "sum", times: float = 1.0,
                           what: str = "G") -> None:
        """The backend's G equals times × ∇L of the whole batch (+ λθ Σ t_k)."""
        __tracebackhide__ = True
        g = self.accumulate(plan, method)
        cfg = self.target.config
        tol = full_batch_tolerance(self.problem, plan, cfg.dtype, cfg.precision, method, times)
        self.close(g, full_batch_gradient(self.problem, plan, times), tol, what=what,
                   expect=f"full_batch_gradient(problem, {plan!r}, {times!r})")

    def differs_from_full_batch(self, plan: Accumulation, method: str = "sum",
                                what: str = "G") -> None:
        """The backend computes the scheme (G within tolerance of the plan's exact value) and
        that G lies farther than the tolerance from the whole batch's gradient."""
        __tracebackhide__ = True
        g = self.accumulate(plan, method)
        cfg = self.target.config
        self.close(g, accumulate(self.problem, plan),
                   accumulation_tolerance(self.problem, plan, cfg.dtype, cfg.precision, method),
                   what=f"{what} (the scheme's own value)",
                   expect=f"accumulate(problem, {plan!r})")
        full = full_batch_gradient(self.problem, plan)
        tol = full_batch_tolerance(self.problem, plan, cfg.dtype, cfg.precision, method)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = max(float(np.max(np.where(g[k] == full[k], 0.0,
                                              np.abs(g[k] - full[k]) / tol[k]))) for k in full)
        if ratio <= 1:
            self.fail(f"{what} matches the full-batch gradient within the tolerance (largest "
                      f"error/tolerance {ratio:.3g}) on the counterexample Hypothesis found; the "
                      f"clause says this scheme differs from it",
                      snippet=(self.call_of(g), f"full_batch_gradient(problem, {plan!r})"))

    def repro(self, call: str, expect: str) -> str:
        lines = super().repro(call, expect).split("\n")
        at = lines.index("from reference import *") + 1
        lines[at:at] = ["from reference.accumulation import *",
                        "from reference.contract import checked_accumulate"]
        return "\n".join(lines)


def split_matches_full_batch(target: Target, problem: Problem, data: st.DataObject,
                             scheme: Scheme, what: str, *, equal: bool = False,
                             method: str = "sum", scaled: bool = False) -> None:
    """The body of an exactness property: draw micro-batch sizes (``equal``: n/K each), and the
    backend's G for ``scheme`` over them is the whole batch's gradient (``scaled``: K times it)."""
    __tracebackhide__ = True
    sizes = data.draw(splits(problem.batch.size, equal=equal), label="sizes")
    with AccumulationCheck(target, problem) as c:
        c.matches_full_batch(scheme(c.problem, sizes), method=method,
                             times=float(len(sizes)) if scaled else 1.0, what=what)


# -- the properties the meta-tests run too ---------------------------------------------------------
MEAN = problems(reductions=("mean",))
TOKENS = loss_problems(sequences=True, reductions=("mean",))
LAMBDAS = st.floats(2.0**-10, 1.0, width=32)
"""λ of the L2 penalty: float32 numbers (λ/2 exact in both dtypes)."""


@pytest.mark.clause("5.1")
@given(problem=MEAN, data=st.data())
def test_micro_batch_means_weighted_by_n_k_over_n_accumulate_to_the_full_batch_mean_gradient(
        target, problem, data):
    split_matches_full_batch(target, problem, data, count_weighted, "Σ_k (n_k/N) ∇mean_k")


@pytest.mark.clause("5.2")
@given(problem=TOKENS, data=st.data())
def test_token_level_accumulation_divides_summed_token_losses_by_the_whole_batch_token_count(
        target, problem, data):
    split_matches_full_batch(target, problem, data, global_normaliser, "Σ_k ∇(sum_k)/Ω")


@pytest.mark.clause("5.4")
@given(problem=MEAN, lam=LAMBDAS, data=st.data())
def test_an_l2_penalty_added_once_per_step_contributes_lambda_theta_whatever_k(
        target, problem, lam, data):
    split_matches_full_batch(target, problem, data,
                             lambda p, sizes: with_l2(count_weighted(p, sizes), lam, "once"),
                             "Σ_k (n_k/N) ∇mean_k + λθ")
