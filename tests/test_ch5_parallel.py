"""Spec chapter 5, data parallelism (§5.6–§5.11): one batch gradient computed by R ranks.

Each test sends a drawn problem, split into R = 3 consecutive shards, to the *data-parallel
engine* of the backend under test (``tests/distributed``): for ``--backend torch`` R processes in
one gloo process group (``DistributedDataParallel``, ``torch.distributed.all_reduce``), for
``--backend jax`` R host CPU devices under ``jax.shard_map`` (``lax.pmean``/``psum``), for
``--backend numpy`` the reference simulated rank by rank; other backends, devices other than the
CPU and precision modes other than ``strict`` skip with a one-line reason. Engines start once per
session and are stopped when this module is done. Every rank's gradient is compared, under the
derived tolerance of ``reference.parallel.combination_tolerance`` (spec §5.6, chapter 7), with the
float64 reference: the full-batch gradient where the clause says the two are equal, R × it where
it says they are not, and in every case every rank must hold bitwise the same gradient.

Cost and examples (2-core machine shared with other jobs, load 2.5, ``--hypothesis-profile ci``;
spec chapter 5, "Data parallelism", has the table): the gloo cluster starts in 7–9 s (three
interpreters importing torch, a warm-up DDP), the JAX worker in 0.5–1.5 s plus ~5 s to compile
its program per dtype and batch bucket the first time (~1 s from the jax backend's persistent
compilation cache after); a job costs 11–16 ms (torch) or 9–14 ms (jax), and drawing the example
and computing its tolerance ~10 ms more. ``EXAMPLES`` is ``SHARE`` = 30 % of the profile's
``max_examples`` (ci: 30 per test and dtype), which keeps the file at 27 s (torch), 22 s (jax,
warm cache; ~40 s cold) and 20 s (numpy); 61 s / 41 s / 20 s at load 5.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from batchgrad_spec.distributed import (
    WORLD_SIZE,
    Engine,
    EngineError,
    Job,
    NoEngine,
    engine_for,
    shutdown,
)
from batchgrad_spec.harness import Check, Target
from batchgrad_spec.strategies import loss_problems, problems
from reference.batch import Batch
from reference.bounds import error_bound
from reference.grads import batch_grad
from reference.layers import Dense, Network
from reference.losses import Loss, Reduction
from reference.numerics import REFERENCE
from reference.parallel import Combination, data_parallel
from reference.problem import Problem
from reference.types import Grads

R = WORLD_SIZE

SHARE = 30
"""Percent of the profile's ``max_examples`` each property test runs (see the module docstring)."""


def examples(profile: settings) -> int:
    return max(2, profile.max_examples * SHARE // 100)


EXAMPLES = examples(settings.default)
"""Examples per test and dtype: 30 under ``ci`` (6 under ``dev``, 300 under ``thorough``)."""
DP = settings(max_examples=EXAMPLES,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much])
FIND_CALLS = 40
"""Engine calls a ``find`` may spend (generating, then shrinking); past them the predicate
answers False without a call, so shrinking stops where it is (the counterexample stays valid)."""
FIND = settings(max_examples=200, derandomize=True, database=None, deadline=None,
                phases=[Phase.generate, Phase.shrink],
                suppress_health_check=list(HealthCheck))

INJECTED: dict[str, Engine] = {}
"""Engines by ``Target.spec`` that replace the backend's own (the meta-tests' faulty engines)."""


def engine_of(target: Target) -> Engine:
    if target.spec in INJECTED:
        return INJECTED[target.spec]
    return engine_for(target.backend.name, target.config.device)


@pytest.fixture(autouse=True)
def _needs_an_engine(request: pytest.FixtureRequest) -> None:
    """Skip, in one line, a target without a data-parallel engine (before any example)."""
    callspec = getattr(request.node, "callspec", None)
    target = callspec.params.get("target") if callspec else None
    if target is None or target.spec in INJECTED:
        return
    marker = request.node.get_closest_marker("clause")
    if marker is not None and "5.9" in marker.args and target.backend.name != "jax":
        pytest.skip("§5.9 is about jax.shard_map; it runs with --backend jax")
    if target.config.precision != "strict":
        pytest.skip(f"data-parallel engines compute in strict precision, not "
                    f"{target.config.precision!r}")
    try:
        engine_for(target.backend.name, target.config.device).reset()
    except NoEngine as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module", autouse=True)
def _stop_engines() -> Iterator[None]:
    yield
    shutdown()


# -- strategies --------------------------------------------------------------------------------
def _sizes(n: int, cuts: list[int]) -> tuple[int, ...]:
    bounds = [0, *sorted(cuts), n]
    return tuple(int(b - a) for a, b in zip(bounds[:-1], bounds[1:], strict=True))


@st.composite
def equal_shards(draw: st.DrawFn, problem_strategy: st.SearchStrategy[Problem]
                 ) -> tuple[Problem, tuple[int, ...]]:
    """A problem with N = R·n examples (the drawn batch cut to a multiple of R), n per rank."""
    p = draw(problem_strategy)
    n = p.batch.size // R * R
    return p.with_batch(p.batch.take(np.arange(n))), (n // R,) * R


@st.composite
def any_shards(draw: st.DrawFn, problem_strategy: st.SearchStrategy[Problem], *,
               unequal: bool = False) -> tuple[Problem, tuple[int, ...]]:
    """A problem and R consecutive shards of any sizes ≥ 1 (``unequal``: not all the same)."""
    p = draw(problem_strategy)
    n = p.batch.size
    if unequal and n % R == 0:  # n >= 2R here (UNEQUAL draws N > R), so n - 1 > R
        n -= 1
        p = p.with_batch(p.batch.take(np.arange(n)))
    cuts = draw(st.lists(st.integers(1, n - 1), min_size=R - 1, max_size=R - 1, unique=True),
                label="cuts")
    return p, _sizes(n, cuts)


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


def _call(c: Check, job: Job) -> str:
    """The engine call that produced a result, as the repro snippet writes it."""
    extra = (f", lam={job.lam!r}, penalty_ranks={job.penalty_ranks!r}"
             if job.penalty_ranks else "")
    return (f"engine_for({c.target.backend.name!r}).run(Job(problem, {job.dtype!r}, "
            f"sizes={job.sizes!r}, scheme={job.scheme!r}{extra}))")


def _full_tolerance(c: Check, pl: Combination, factor: float = 1.0) -> dict[str, np.ndarray]:
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
                       snippet=(_call(c, job) + "[" + str(r) + "]", _call(c, job) + "[0]"))
    return grads


def _compare(c: Check, job: Job, expected: Grads, tol: dict[str, np.ndarray], what: str,
             expect: str) -> Grads:
    __tracebackhide__ = True
    grads = _run(c, job)
    c.close(grads[0], expected, tol, what=f"{engine_of(c.target).name} rank 0: {what}; G",
            call=_call(c, job) + "[0]", expect=expect)
    return grads[0]


def _with_penalty(grads: Grads, theta: Grads, coefficient: float) -> Grads:
    return {k: v + coefficient * theta[k] for k, v in grads.items()}


# -- §5.6 equal shards -------------------------------------------------------------------------
@pytest.mark.clause("5.6")
@DP
@given(case=equal_shards(MEAN))
def test_rank_averaged_gradient_over_equal_shards_is_the_full_batch_gradient(target, case):
    problem, sizes = case
    with DPCheck(target, problem) as c:
        job = Job(c.problem, target.config.dtype, sizes, "rank_mean")
        pl = data_parallel(c.problem, sizes, "rank_mean")
        _compare(c, job, batch_grad(c.problem)[1], _full_tolerance(c, pl),
                 "(1/R) Σ_r ∇L_r over equal shards = ∇L", "batch_grad(problem)[1]")


def _rank_average_differs(target: Target, seen: list[Problem]
                          ) -> Callable[[tuple[Problem, tuple[int, ...]]], bool]:
    """The ``find`` predicate: the engine's rank average differs from the full-batch gradient
    by more than the tolerance. At most FIND_CALLS engine calls; answers are remembered, so a
    replayed example gets the same answer (Hypothesis checks that)."""
    answers: dict[str, bool] = {}

    def differs(case: tuple[Problem, tuple[int, ...]]) -> bool:
        problem, sizes = case
        key = f"{problem!r} {sizes}"
        if key not in answers:
            if len(seen) >= FIND_CALLS:
                return False
            seen.append(problem)
            p = problem.rounded(target.config.dtype)
            pl = data_parallel(p, sizes, "rank_mean")
            grads = engine_of(target).run(Job(p, target.config.dtype, sizes, "rank_mean"))[0]
            full = batch_grad(p)[1]
            tol = pl.combination_tolerance(target.config.dtype)
            whole = error_bound(p, REFERENCE).batch_grads
            answers[key] = any(np.any(np.abs(grads[k] - full[k]) > tol[k] + whole[k])
                               for k in full)
        return answers[key]

    return differs


# -- §5.7 unequal shards -----------------------------------------------------------------------
@pytest.mark.clause("5.7")
def test_rank_averaging_over_unequal_shards_is_not_the_full_batch_gradient(target):
    """Hypothesis looks for a problem and unequal shards on which the engine's rank average is
    not the full-batch gradient; it must find one, and the engine's value there must be the
    rank average (1/R) Σ_r ∇L_r of the reference."""
    seen: list[Problem] = []  # the problems the engine was asked about

    differs = _rank_average_differs(target, seen)

    try:
        problem, sizes = find(any_shards(UNEQUAL, unequal=True), differs, settings=FIND)
    except EngineError as exc:
        with DPCheck(target, seen[-1] if seen else VARIANT_PROBLEM) as c:
            c.fail(f"the data-parallel engine failed: {exc}")
        return
    except NoSuchExample as exc:
        with DPCheck(target, seen[-1] if seen else VARIANT_PROBLEM) as c:
            c.fail(f"no problem among {len(seen)} had a rank-averaged gradient over unequal "
                   f"shards that differs from the full-batch gradient ({exc!r})")
        return
    with DPCheck(target, problem) as c:
        pl = data_parallel(c.problem, sizes, "rank_mean")
        job = Job(c.problem, target.config.dtype, sizes, "rank_mean")
        print(f"\n§5.7 counterexample after {len(seen)} engine calls: N={c.problem.batch.size}, "
              f"shards {sizes}, {c.problem.network!r}, {c.problem.loss!r}")
        _compare(c, job, pl.expected(), pl.combination_tolerance(target.config.dtype),
                 "(1/R) Σ_r ∇L_r over unequal shards (≠ ∇L)",
                 f"plan(problem, {sizes!r}, 'rank_mean').expected()")


@pytest.mark.clause("5.7")
@DP
@given(case=any_shards(MEAN))
def test_count_weighted_all_reduce_over_any_shards_is_the_full_batch_gradient(target, case):
    problem, sizes = case
    with DPCheck(target, problem) as c:
        job = Job(c.problem, target.config.dtype, sizes, "count_weighted")
        pl = data_parallel(c.problem, sizes, "count_weighted")
        _compare(c, job, batch_grad(c.problem)[1], _full_tolerance(c, pl),
                 "Σ_r (N_r/N) ∇L_r = ∇L", "batch_grad(problem)[1]")


@pytest.mark.clause("5.7")
@DP
@given(case=any_shards(MEAN))
def test_summed_sum_losses_over_the_global_count_are_the_full_batch_gradient(target, case):
    problem, sizes = case
    with DPCheck(target, problem) as c:
        job = Job(c.problem, target.config.dtype, sizes, "global_normaliser")
        pl = data_parallel(c.problem, sizes, "global_normaliser")
        _compare(c, job, batch_grad(c.problem)[1], _full_tolerance(c, pl),
                 "Σ_r ∇(Σ_{i∈r} ℓ_i) / N = ∇L", "batch_grad(problem)[1]")


# -- §5.8 summed without dividing --------------------------------------------------------------
@pytest.mark.clause("5.8")
@DP
@given(case=equal_shards(MEAN))
def test_summing_rank_gradients_without_dividing_gives_R_times_the_gradient(target, case):
    problem, sizes = case
    with DPCheck(target, problem) as c:
        job = Job(c.problem, target.config.dtype, sizes, "summed")
        pl = data_parallel(c.problem, sizes, "summed")
        full = batch_grad(c.problem)[1]
        _compare(c, job, {k: R * v for k, v in full.items()}, _full_tolerance(c, pl, R),
                 f"Σ_r ∇L_r over equal shards = {R} ∇L",
                 f"{{k: {R} * v for k, v in batch_grad(problem)[1].items()}}")


# -- §5.9 jax.shard_map ------------------------------------------------------------------------
VARIANT_PROBLEM = Problem(
    Network((Dense(2, 1, bias=False),)), Loss("squared_error"), Reduction("mean"),
    {"0.weight": np.array([[1.0, -2.0]])},
    Batch(np.arange(12.0).reshape(6, 2) / 8, (np.arange(6.0) / 4)[:, None]))
"""§5.9's table: least squares f(x) = w·x, w = (1, −2), x_i = (2i, 2i + 1)/8, y_i = i/4, N = 6
over R = 3 devices (two examples each); every number is exact in float32."""

FULL, SHARD0 = "full", "shard0"
VARIANTS = {  # idiom → (what it equals, factor): ∇L of the batch, or ∇L_0 of device 0's shard
    "shard_map(check_vma=True): grad inside, then pmean": (FULL, R),
    "shard_map(check_vma=True): grad inside, then psum": (FULL, R * R),
    "shard_map(check_vma=True): grad inside, no collective": (FULL, R),
    "shard_map(check_vma=True): grad inside of pmean(loss)": (FULL, 1),
    "shard_map(check_vma=True): grad inside of psum(loss)": (FULL, R),
    "shard_map(check_vma=True): pcast θ to varying, grad inside, then pmean": (FULL, 1),
    "shard_map(check_vma=True): grad outside of pmean(loss)": (FULL, 1),
    "experimental.shard_map(check_rep=True): grad inside, then pmean": (FULL, R),
    "shard_map(check_vma=False): grad inside, then pmean": (FULL, 1),
    "shard_map(check_vma=False): grad inside, then psum": (FULL, R),
    "shard_map(check_vma=False): grad inside, no collective": (SHARD0, 1),
    "shard_map(check_vma=False): grad inside of pmean(loss)": (SHARD0, 1),
    "shard_map(check_vma=False): grad inside of psum(loss)": (SHARD0, R),
    "shard_map(check_vma=False): pcast θ to varying, grad inside, then pmean": (FULL, 1),
    "shard_map(check_vma=False): grad outside of pmean(loss)": (FULL, 1),
    "experimental.shard_map(check_rep=False): grad inside, then pmean": (FULL, 1),
    "pmap: grad inside, then pmean": (FULL, 1),
}


@pytest.mark.clause("5.9")
def test_shard_map_gradient_of_replicated_parameters_is_already_summed_over_devices(target):
    """The table of spec §5.9, exactly: under check_vma=True the gradient taken inside the body
    with respect to replicated θ is Σ_r ∇L_r, so the textbook pmean returns R × ∇L."""
    engine = engine_of(target)
    with DPCheck(target, VARIANT_PROBLEM) as c:
        sizes = (2,) * R
        try:
            answers = engine.variants(Job(c.problem, target.config.dtype, sizes, "rank_mean"))
        except EngineError as exc:
            c.fail(f"the jax shard_map engine failed: {exc}")
        parts = data_parallel(c.problem, sizes, "rank_mean").parts
        full = batch_grad(c.problem)[1]["0.weight"]
        shard0 = batch_grad(parts[0])[1]["0.weight"]
        missing = sorted(set(VARIANTS) - set(answers))
        if missing:
            c.fail(f"the jax worker did not run {missing}")
        # every idiom computes a sum of at most R² shard gradients: factor × the tolerance of
        # Σ_r ∇L_r (and of the reference's own ∇L) bounds each
        summed = _full_tolerance(c, data_parallel(c.problem, sizes, "summed"))["0.weight"]
        for name, (kind, factor) in VARIANTS.items():
            got = answers[name]
            if isinstance(got, str):
                c.fail(f"{name} raised {got}")
            base = full if kind == FULL else shard0
            c.close(got, factor * base, factor * summed, what=f"{name} = {factor} × ∇L"
                    + ("" if kind == FULL else "_0 (device 0's own shard)"),
                    call=f"engine_for('jax').variants(Job(problem, {target.config.dtype!r}, "
                         f"{sizes!r}, 'rank_mean'))[{name!r}]",
                    expect=f"{factor} * batch_grad(problem)[1]['0.weight']" if kind == FULL
                    else f"{factor} * batch_grad(shards(problem, {sizes!r})[0])[1]['0.weight']")
        print(f"\n§5.9 on jax {answers['jax']}: " + "; ".join(
            f"{name}: {factor}×{'∇L' if kind == FULL else '∇L_0'}"
            for name, (kind, factor) in VARIANTS.items()))


@pytest.mark.clause("5.9")
@DP
@given(case=equal_shards(MEAN))
def test_textbook_pmean_of_gradients_taken_inside_shard_map_is_R_times_the_gradient(
        target, case):
    problem, sizes = case
    with DPCheck(target, problem) as c:
        job = Job(c.problem, target.config.dtype, sizes, "shard_map_textbook")
        pl = data_parallel(c.problem, sizes, "summed")  # what it computes: Σ_r ∇L_r
        full = batch_grad(c.problem)[1]
        _compare(c, job, {k: R * v for k, v in full.items()}, _full_tolerance(c, pl, R),
                 f"lax.pmean(jax.grad(L_r)(θ)) = Σ_r ∇L_r = {R} ∇L",
                 f"{{k: {R} * v for k, v in batch_grad(problem)[1].items()}}")


# -- §5.10 the L2 penalty ----------------------------------------------------------------------
@pytest.mark.clause("5.10")
@DP
@given(case=equal_shards(MEAN), lam=LAMBDAS)
def test_l2_penalty_added_on_every_rank_counts_once_when_the_ranks_average(target, case, lam):
    problem, sizes = case
    with DPCheck(target, problem) as c:
        every = (1.0,) * R
        job = Job(c.problem, target.config.dtype, sizes, "rank_mean", lam, every)
        pl = data_parallel(c.problem, sizes, "rank_mean", lam=lam, penalty_ranks=every)
        expected = _with_penalty(batch_grad(c.problem)[1], c.problem.params, lam)
        _compare(c, job, expected, _full_tolerance(c, pl),
                 "(1/R) Σ_r ∇(L_r + (λ/2)‖θ‖²) = ∇L + λθ",
                 f"{{k: v + {lam!r} * problem.params[k] "
                 f"for k, v in batch_grad(problem)[1].items()}}")


@pytest.mark.clause("5.10")
@DP
@given(case=any_shards(MEAN), lam=LAMBDAS,
       adds=st.lists(st.booleans(), min_size=R, max_size=R).filter(any))
def test_l2_penalty_under_a_sum_all_reduce_counts_once_per_rank_that_adds_it(
        target, case, lam, adds):
    problem, sizes = case
    a = tuple(float(x) for x in adds)
    with DPCheck(target, problem) as c:
        job = Job(c.problem, target.config.dtype, sizes, "global_normaliser", lam, a)
        pl = data_parallel(c.problem, sizes, "global_normaliser", lam=lam, penalty_ranks=a)
        k = sum(a)
        expected = _with_penalty(batch_grad(c.problem)[1], c.problem.params, k * lam)
        _compare(c, job, expected, _full_tolerance(c, pl),
                 f"Σ_r ∇(Σ_(i∈r) ℓ_i / N + a_r (λ/2)‖θ‖²) = ∇L + {k:g}λθ (a = {a})",
                 f"{{k: v + {k * lam!r} * problem.params[k] "
                 f"for k, v in batch_grad(problem)[1].items()}}")


# -- §5.11 the global normaliser ---------------------------------------------------------------
@pytest.mark.clause("5.11")
@DP
@given(case=any_shards(WEIGHTED_MEAN))
def test_weighted_mean_over_shards_with_the_global_normaliser_is_the_full_batch_gradient(
        target, case):
    problem, sizes = case
    with DPCheck(target, problem) as c:
        job = Job(c.problem, target.config.dtype, sizes, "global_normaliser")
        pl = data_parallel(c.problem, sizes, "global_normaliser")
        _compare(c, job, batch_grad(c.problem)[1], _full_tolerance(c, pl),
                 "Σ_r ∇(Σ_(i∈r) c_i ℓ_i) / Σ_i c_i = ∇L", "batch_grad(problem)[1]")


@pytest.mark.clause("5.11")
@DP
@given(case=any_shards(TOKEN_MEAN))
def test_token_mean_over_shards_with_the_global_token_count_is_the_full_batch_gradient(
        target, case):
    problem, sizes = case
    with DPCheck(target, problem) as c:
        job = Job(c.problem, target.config.dtype, sizes, "global_normaliser")
        pl = data_parallel(c.problem, sizes, "global_normaliser")
        _compare(c, job, batch_grad(c.problem)[1], _full_tolerance(c, pl),
                 "Σ_r ∇(Σ_(tokens of r) ℓ_t) / (Σ valid tokens) = ∇L", "batch_grad(problem)[1]")


@pytest.mark.clause("5.11")
def test_averaging_local_weighted_means_over_equal_shards_is_not_the_full_batch_gradient(
        target):
    """Equal shard sizes do not help when the normalisers differ: Hypothesis must find a
    weighted mean whose rank average over equal shards is not the full-batch gradient."""
    seen: list[Problem] = []  # the problems the engine was asked about

    differs = _rank_average_differs(target, seen)

    try:
        problem, sizes = find(equal_shards(WEIGHTED_MEAN), differs, settings=FIND)
    except EngineError as exc:
        with DPCheck(target, seen[-1] if seen else VARIANT_PROBLEM) as c:
            c.fail(f"the data-parallel engine failed: {exc}")
        return
    except NoSuchExample as exc:
        with DPCheck(target, seen[-1] if seen else VARIANT_PROBLEM) as c:
            c.fail(f"no weighted mean among {len(seen)} had a rank-averaged gradient over equal "
                   f"shards that differs from the full-batch gradient ({exc!r})")
        return
    with DPCheck(target, problem) as c:
        pl = data_parallel(c.problem, sizes, "rank_mean")
        job = Job(c.problem, target.config.dtype, sizes, "rank_mean")
        print(f"\n§5.11 counterexample after {len(seen)} engine calls: "
              f"N={c.problem.batch.size}, weights {c.problem.batch.weights}")
        _compare(c, job, pl.expected(), pl.combination_tolerance(target.config.dtype),
                 "(1/R) Σ_r ∇L_r with local Σ c_i (≠ ∇L)",
                 f"plan(problem, {sizes!r}, 'rank_mean').expected()")
