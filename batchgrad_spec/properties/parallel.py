"""Chapter 5's data-parallel properties that the meta-tests run too (§5.6, §5.7), and what every
data-parallel test shares: the engine a target runs on (or the one a meta-test injects), shard
strategies, and the comparison of every rank's gradient with the float64 reference. See
``batchgrad_spec.properties``; the other data-parallel tests are in ``tests/test_ch5_parallel.py``
(whose docstring says what each engine is and what the tests cost).

A drawn problem, split into R = 3 consecutive shards, goes to the *data-parallel engine* of the
backend under test (``batchgrad_spec.distributed``); every rank's gradient must be bitwise the same,
and rank 0's is compared, under the derived tolerance of
``reference.parallel.combination_tolerance`` (spec §5.6, chapter 7), with the reference.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference.bounds import error_bound
from reference.grads import batch_grad
from reference.numerics import REFERENCE
from reference.parallel import Combination, data_parallel
from reference.problem import Problem
from reference.types import Grads

from ..distributed import WORLD_SIZE, Engine, EngineError, Job, engine_for
from ..harness import Check, Target
from ..strategies import any_shards, equal_shards, loss_problems, problems

__all__ = [
    "DP",
    "EXAMPLES",
    "INJECTED",
    "LAMBDAS",
    "MEAN",
    "R",
    "SHARE",
    "TOKEN_MEAN",
    "UNEQUAL",
    "WEIGHTED_MEAN",
    "DPCheck",
    "compare",
    "engine_call",
    "engine_matches",
    "engine_of",
    "examples",
    "full_tolerance",
    "test_count_weighted_all_reduce_over_any_shards_is_the_full_batch_gradient",
    "test_rank_averaged_gradient_over_equal_shards_is_the_full_batch_gradient",
]

R = WORLD_SIZE

SHARE = 30
"""Percent of the profile's ``max_examples`` each property test runs (see the module docstring
of ``tests/test_ch5_parallel.py``)."""


def examples(profile: settings) -> int:
    """Examples per test and dtype under ``profile``: SHARE % of its max_examples, at least 2."""
    return max(2, profile.max_examples * SHARE // 100)


EXAMPLES = examples(settings.default)
"""Examples per test and dtype: 30 under ``ci`` (6 under ``dev``, 300 under ``thorough``)."""
DP = settings(max_examples=EXAMPLES,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much])

INJECTED: dict[str, Engine] = {}
"""Engines by ``Target.spec`` that replace the backend's own (the meta-tests' faulty engines)."""


def engine_of(target: Target) -> Engine:
    """The engine ``target`` runs on: an injected one, or its backend's on its device."""
    if target.spec in INJECTED:
        return INJECTED[target.spec]
    return engine_for(target.backend.name, target.config.device)


MEAN = problems(reductions=("mean",), min_batch=R, max_batch=4 * R)
UNEQUAL = problems(reductions=("mean",), min_batch=R + 1, max_batch=4 * R)
WEIGHTED_MEAN = problems(reductions=("weighted_mean",), min_batch=R, max_batch=4 * R)
TOKEN_MEAN = loss_problems(sequences=True, reductions=("mean",), min_batch=R, max_batch=4,
                           empty_sequences=False)
"""Token-level means: sequences (N, T, d) with masks, L = Σ_i ℓ_i / Σ_i ω_i, ℓ_i the sum over
the valid tokens of sequence i and ω_i its valid tokens (times the class weights, spec §3.7)."""
LAMBDAS = st.floats(1 / 64, 1.0, width=32)


# -- the comparison ----------------------------------------------------------------------------
class DPCheck(Check):
    """A check whose repro snippet runs the data-parallel engine of the target's backend."""

    def repro(self, call: str, expect: str) -> str:
        t = self.target
        return "\n".join([
            f"# Reproduce §{t.clause} on {t.id} (data parallelism, R = {R}): run from the "
            f"repository root",
            "from reference import *",
            "from reference.parallel import *",
            "from batchgrad_spec.distributed import Job, engine_for",
            f"problem = {self.problem!r}",
            f"observed = {call}",
            f"expected = {expect}",
            "print('observed:', observed, 'expected:', expected, sep='\\n')",
        ])


def engine_call(c: Check, job: Job) -> str:
    """The engine call that produced a result, as the repro snippet writes it."""
    extra = (f", lam={job.lam!r}, penalty_ranks={job.penalty_ranks!r}"
             if job.penalty_ranks else "")
    return (f"engine_for({c.target.backend.name!r}).run(Job(problem, {job.dtype!r}, "
            f"sizes={job.sizes!r}, scheme={job.scheme!r}{extra}))")


def full_tolerance(c: Check, pl: Combination, factor: float = 1.0) -> dict[str, np.ndarray]:
    """The plan's tolerance, plus the float64 reference's own bound on the whole batch's
    gradient (times ``factor``): the expected value is computed from the whole batch, not from
    the parts (spec §7.2)."""
    tol = pl.combination_tolerance(c.target.config.dtype, c.target.config.precision)
    whole = error_bound(c.problem, REFERENCE).batch_grads
    return {k: v + abs(factor) * whole[k] for k, v in tol.items()}


def _run(c: Check, job: Job) -> list[Grads]:
    """The engine's answer: every rank's gradient, which must be bitwise the same on each."""
    __tracebackhide__ = True
    engine = engine_of(c.target)
    try:
        grads = engine.run(job)
    except EngineError as exc:
        c.fail(f"the data-parallel engine {engine.name} failed: {exc}")
    for r, g in enumerate(grads[1:], 1):
        for k, v in g.items():
            if not np.array_equal(v, grads[0][k]):
                c.fail(f"after the all-reduce rank {r} holds a different ∇L[{k!r}] than rank 0 "
                       f"({engine.name}, {job!r}): {v.tolist()} vs {grads[0][k].tolist()}",
                       snippet=(engine_call(c, job) + "[" + str(r) + "]",
                                engine_call(c, job) + "[0]"))
    return grads


def compare(c: Check, job: Job, expected: Grads, tol: dict[str, np.ndarray], what: str,
            expect: str) -> Grads:
    """Every rank holds the same G, and rank 0's is ``expected`` within ``tol``."""
    __tracebackhide__ = True
    grads = _run(c, job)
    c.close(grads[0], expected, tol, what=f"{engine_of(c.target).name} rank 0: {what}; G",
            call=engine_call(c, job) + "[0]", expect=expect)
    return grads[0]


def engine_matches(target: Target, case: tuple[Problem, tuple[int, ...]], scheme: str,
                   what: str, *, times: int = 1, penalty: float = 0.0, lam: float = 0.0,
                   penalty_ranks: tuple[float, ...] = (), computes: str | None = None) -> None:
    """The body of the data-parallel properties: the engine's G for ``scheme`` over the drawn
    shards is ``times`` × ∇L of the whole batch plus ``penalty`` × θ (rank r adding
    ``penalty_ranks[r]`` (λ/2)‖θ‖²); ``computes`` names the plan the scheme computes when it is
    not one of the reference's (``shard_map_textbook``: "summed")."""
    __tracebackhide__ = True
    problem, sizes = case
    with DPCheck(target, problem) as c:
        job = Job(c.problem, target.config.dtype, sizes, scheme, lam, penalty_ranks)
        pl = data_parallel(c.problem, sizes, computes or scheme, lam=lam,
                           penalty_ranks=penalty_ranks)
        full = batch_grad(c.problem)[1]
        expected, expect = full, "batch_grad(problem)[1]"
        if times != 1:
            expected = {k: times * v for k, v in full.items()}
            expect = f"{{k: {times} * v for k, v in {expect}.items()}}"
        if penalty_ranks:
            theta = c.problem.params
            expected = {k: v + penalty * theta[k] for k, v in expected.items()}
            expect = f"{{k: v + {penalty!r} * problem.params[k] for k, v in {expect}.items()}}"
        compare(c, job, expected, full_tolerance(c, pl, times), what, expect)


# -- the properties the meta-tests run too ---------------------------------------------------------
@pytest.mark.clause("5.6")
@DP
@given(case=equal_shards(MEAN, ranks=R))
def test_rank_averaged_gradient_over_equal_shards_is_the_full_batch_gradient(target, case):
    engine_matches(target, case, "rank_mean", "(1/R) Σ_r ∇L_r over equal shards = ∇L")


@pytest.mark.clause("5.7")
@DP
@given(case=any_shards(MEAN, ranks=R))
def test_count_weighted_all_reduce_over_any_shards_is_the_full_batch_gradient(target, case):
    engine_matches(target, case, "count_weighted", "Σ_r (N_r/N) ∇L_r = ∇L")
