"""Spec chapter 5, data parallelism (§5.6–§5.11): one batch gradient computed by R ranks.

Each test sends a drawn problem, split into R = 3 consecutive shards, to the *data-parallel
engine* of the backend under test (``batchgrad_spec.distributed``): for ``--backend torch`` R
processes in one gloo process group (``DistributedDataParallel``,
``torch.distributed.all_reduce``), for ``--backend jax`` R host CPU devices under
``jax.shard_map`` (``lax.pmean``/``psum``), for ``--backend numpy`` the reference simulated rank
by rank; other backends, devices other than the
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

The engines, shard strategies, the comparison and the properties the meta-tests run too (§5.6,
§5.7) are in ``batchgrad_spec.properties.parallel``; they are collected here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from batchgrad_spec.distributed import EngineError, Job, NoEngine, engine_for, shutdown
from batchgrad_spec.harness import Target
from batchgrad_spec.properties.parallel import (  # noqa: F401 — run here and by meta-tests
    DP,
    INJECTED,
    LAMBDAS,
    MEAN,
    TOKEN_MEAN,
    UNEQUAL,
    WEIGHTED_MEAN,
    DPCheck,
    R,
    compare,
    engine_matches,
    engine_of,
    full_tolerance,
    test_count_weighted_all_reduce_over_any_shards_is_the_full_batch_gradient,
    test_rank_averaged_gradient_over_equal_shards_is_the_full_batch_gradient,
)
from batchgrad_spec.strategies import any_shards, equal_shards
from reference.batch import Batch
from reference.bounds import error_bound
from reference.grads import batch_grad
from reference.layers import Dense, Network
from reference.losses import Loss, Reduction
from reference.numerics import REFERENCE
from reference.parallel import data_parallel
from reference.problem import Problem

FIND_CALLS = 40
"""Engine calls a ``find`` may spend (generating, then shrinking); past them the predicate
answers False without a call, so shrinking stops where it is (the counterexample stays valid)."""
FIND = settings(max_examples=200, derandomize=True, database=None, deadline=None,
                phases=[Phase.generate, Phase.shrink],
                suppress_health_check=list(HealthCheck))


@pytest.fixture(autouse=True)
def _needs_an_engine(request: pytest.FixtureRequest) -> None:
    """Skip, in one line, a target without a data-parallel engine (before any example)."""
    callspec = getattr(request.node, "callspec", None)
    target = callspec.params.get("target") if callspec else None
    if target is None or target.spec in INJECTED:
        return
    marker = request.node.get_closest_marker("clause")
    if (marker is not None and any(str(a).startswith("5.9") for a in marker.args)
            and target.backend.name != "jax"):
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


def rank_average_found_to_differ(target: Target,
                                 strategy: st.SearchStrategy[tuple[Problem, tuple[int, ...]]],
                                 among: str, shards: str,
                                 shown: Callable[[Problem, tuple[int, ...]], str],
                                 what: str) -> None:
    """The body of the counterexample tests: Hypothesis must ``find`` a case of ``strategy`` on
    which the engine's rank average is not the full-batch gradient, and the engine's value there
    must be the reference's rank average (1/R) Σ_r ∇L_r. ``shown`` describes the case found."""
    __tracebackhide__ = True
    seen: list[Problem] = []  # the problems the engine was asked about

    differs = _rank_average_differs(target, seen)

    try:
        problem, sizes = find(strategy, differs, settings=FIND)
    except EngineError as exc:
        with DPCheck(target, seen[-1] if seen else VARIANT_PROBLEM) as c:
            c.fail(f"the data-parallel engine failed: {exc}")
        return
    except NoSuchExample as exc:
        with DPCheck(target, seen[-1] if seen else VARIANT_PROBLEM) as c:
            c.fail(f"no {among} among {len(seen)} had a rank-averaged gradient over {shards} "
                   f"shards that differs from the full-batch gradient ({exc!r})")
        return
    with DPCheck(target, problem) as c:
        pl = data_parallel(c.problem, sizes, "rank_mean")
        job = Job(c.problem, target.config.dtype, sizes, "rank_mean")
        print(f"\n§{target.clause} counterexample after {len(seen)} engine calls: "
              f"N={c.problem.batch.size}, {shown(c.problem, sizes)}")
        compare(c, job, pl.expected(), pl.combination_tolerance(target.config.dtype), what,
                f"data_parallel(problem, {sizes!r}, 'rank_mean').expected()")


# -- §5.7 unequal shards -----------------------------------------------------------------------
@pytest.mark.clause("5.7")
def test_rank_averaging_over_unequal_shards_is_not_the_full_batch_gradient(target):
    """Hypothesis looks for a problem and unequal shards on which the engine's rank average is
    not the full-batch gradient; it must find one, and the engine's value there must be the
    rank average (1/R) Σ_r ∇L_r of the reference."""
    rank_average_found_to_differ(
        target, any_shards(UNEQUAL, ranks=R, unequal=True), "problem", "unequal",
        lambda p, sizes: f"shards {sizes}, {p.network!r}, {p.loss!r}",
        "(1/R) Σ_r ∇L_r over unequal shards (≠ ∇L)")


@pytest.mark.clause("5.7")
@DP
@given(case=any_shards(MEAN, ranks=R))
def test_summed_sum_losses_over_the_global_count_are_the_full_batch_gradient(target, case):
    engine_matches(target, case, "global_normaliser", "Σ_r ∇(Σ_{i∈r} ℓ_i) / N = ∇L")


# -- §5.8 summed without dividing --------------------------------------------------------------
@pytest.mark.clause("5.8")
@DP
@given(case=equal_shards(MEAN, ranks=R))
def test_summing_rank_gradients_without_dividing_gives_R_times_the_gradient(target, case):
    engine_matches(target, case, "summed", f"Σ_r ∇L_r over equal shards = {R} ∇L", times=R)


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


_ANSWERS: dict[str, dict] = {}
"""The jax worker's answers to §5.9's table, per dtype (one ``variants`` call serves the three
sub-clause tests)."""
CHECKED = "shard_map(check_vma=True)"
SUB_CLAUSES = {  # §5.9.1–§5.9.3: the table's rows each states
    "5.9.1": [f"{CHECKED}: grad inside, then pmean", f"{CHECKED}: grad inside, then psum",
              f"{CHECKED}: grad inside, no collective", f"{CHECKED}: grad inside of psum(loss)",
              "experimental.shard_map(check_rep=True): grad inside, then pmean"],
    "5.9.2": [f"{CHECKED}: grad inside of pmean(loss)",
              f"{CHECKED}: pcast θ to varying, grad inside, then pmean",
              f"{CHECKED}: grad outside of pmean(loss)"],
    "5.9.3": [n for n in VARIANTS if "=False" in n or n.startswith("pmap")],
}
assert sorted(n for rows in SUB_CLAUSES.values() for n in rows) == sorted(VARIANTS)


def variants_match(target: Target, clause: str) -> None:
    """The rows of spec §5.9's table that ``clause`` states, exactly: each idiom's gradient on
    the table's problem is the factor × ∇L (or × ∇L_0, device 0's own) the table gives."""
    __tracebackhide__ = True
    engine = engine_of(target)
    dtype = target.config.dtype
    with DPCheck(target, VARIANT_PROBLEM) as c:
        sizes = (2,) * R
        if dtype not in _ANSWERS:
            try:
                _ANSWERS[dtype] = engine.variants(  # type: ignore[attr-defined]
                    Job(c.problem, dtype, sizes, "rank_mean"))
            except EngineError as exc:
                c.fail(f"the jax shard_map engine failed: {exc}")
        answers = _ANSWERS[dtype]
        parts = data_parallel(c.problem, sizes, "rank_mean").parts
        full = batch_grad(c.problem)[1]["0.weight"]
        shard0 = batch_grad(parts[0])[1]["0.weight"]
        rows = SUB_CLAUSES[clause]
        missing = sorted(set(rows) - set(answers))
        if missing:
            c.fail(f"the jax worker did not run {missing}")
        # every idiom computes a sum of at most R² shard gradients: factor × the tolerance of
        # Σ_r ∇L_r (and of the reference's own ∇L) bounds each
        summed = full_tolerance(c, data_parallel(c.problem, sizes, "summed"))["0.weight"]
        for name in rows:
            kind, factor = VARIANTS[name]
            got = answers[name]
            if isinstance(got, str):
                c.fail(f"{name} raised {got}")
            base = full if kind == FULL else shard0
            c.close(got, factor * base, factor * summed, what=f"{name} = {factor} × ∇L"
                    + ("" if kind == FULL else "_0 (device 0's own shard)"),
                    call=f"engine_for('jax').variants(Job(problem, {dtype!r}, "
                         f"{sizes!r}, 'rank_mean'))[{name!r}]",
                    expect=f"{factor} * batch_grad(problem)[1]['0.weight']" if kind == FULL
                    else f"{factor} * batch_grad(shards(problem, {sizes!r})[0])[1]['0.weight']")
        print(f"\n§{clause} on jax {answers['jax']}: " + "; ".join(
            f"{name}: {VARIANTS[name][1]}×{'∇L' if VARIANTS[name][0] == FULL else '∇L_0'}"
            for name in rows))


@pytest.mark.clause("5.9.1")
def test_under_check_vma_a_gradient_of_replicated_parameters_taken_inside_the_body_is_the_device_sum(  # noqa: E501
        target):
    """§5.9.1: under check_vma=True the gradient taken inside the body with respect to
    replicated θ is Σ_r ∇L_r, so the pmap idiom returns R × ∇L and its psum R² × ∇L."""
    variants_match(target, "5.9.1")


@pytest.mark.clause("5.9.2")
def test_under_check_vma_the_gradient_of_the_device_mean_loss_or_of_a_varying_copy_is_the_gradient(  # noqa: E501
        target):
    """§5.9.2: under check_vma=True, grad of the pmean'd loss (inside or outside the body)
    and pmean of the gradient of a varying copy of θ are ∇L."""
    variants_match(target, "5.9.2")


@pytest.mark.clause("5.9.3")
def test_without_check_vma_and_in_pmap_a_gradient_taken_inside_is_the_devices_own(target):
    """§5.9.3: with check_vma=False (and check_rep=False, and in pmap) the gradient inside is
    the device's own ∇L_r: pmean of it is ∇L, grad of the pmean'd loss is ∇L_0."""
    variants_match(target, "5.9.3")


@pytest.mark.clause("5.9.1")
@DP
@given(case=equal_shards(MEAN, ranks=R))
def test_textbook_pmean_of_gradients_taken_inside_shard_map_is_R_times_the_gradient(
        target, case):
    engine_matches(target, case, "shard_map_textbook",  # it computes Σ_r ∇L_r
                   f"lax.pmean(jax.grad(L_r)(θ)) = Σ_r ∇L_r = {R} ∇L", times=R,
                   computes="summed")


# -- §5.10 the L2 penalty ----------------------------------------------------------------------
@pytest.mark.clause("5.10")
@DP
@given(case=equal_shards(MEAN, ranks=R), lam=LAMBDAS)
def test_l2_penalty_added_on_every_rank_counts_once_when_the_ranks_average(target, case, lam):
    engine_matches(target, case, "rank_mean", "(1/R) Σ_r ∇(L_r + (λ/2)‖θ‖²) = ∇L + λθ",
                   penalty=lam, lam=lam, penalty_ranks=(1.0,) * R)


@pytest.mark.clause("5.10")
@DP
@given(case=any_shards(MEAN, ranks=R), lam=LAMBDAS,
       adds=st.lists(st.booleans(), min_size=R, max_size=R).filter(any))
def test_l2_penalty_under_a_sum_all_reduce_counts_once_per_rank_that_adds_it(
        target, case, lam, adds):
    a = tuple(float(x) for x in adds)
    k = sum(a)
    engine_matches(target, case, "global_normaliser",
                   f"Σ_r ∇(Σ_(i∈r) ℓ_i / N + a_r (λ/2)‖θ‖²) = ∇L + {k:g}λθ (a = {a})",
                   penalty=k * lam, lam=lam, penalty_ranks=a)


# -- §5.11 the global normaliser ---------------------------------------------------------------
@pytest.mark.clause("5.11")
@DP
@given(case=any_shards(WEIGHTED_MEAN, ranks=R))
def test_weighted_mean_over_shards_with_the_global_normaliser_is_the_full_batch_gradient(
        target, case):
    engine_matches(target, case, "global_normaliser", "Σ_r ∇(Σ_(i∈r) c_i ℓ_i) / Σ_i c_i = ∇L")


@pytest.mark.clause("5.11")
@DP
@given(case=any_shards(TOKEN_MEAN, ranks=R))
def test_token_mean_over_shards_with_the_global_token_count_is_the_full_batch_gradient(
        target, case):
    engine_matches(target, case, "global_normaliser",
                   "Σ_r ∇(Σ_(tokens of r) ℓ_t) / (Σ valid tokens) = ∇L")


@pytest.mark.clause("5.11")
def test_averaging_local_weighted_means_over_equal_shards_is_not_the_full_batch_gradient(
        target):
    """Equal shard sizes do not help when the normalisers differ: Hypothesis must find a
    weighted mean whose rank average over equal shards is not the full-batch gradient."""
    rank_average_found_to_differ(
        target, equal_shards(WEIGHTED_MEAN, ranks=R), "weighted mean", "equal",
        lambda p, sizes: f"weights {p.batch.weights}", "(1/R) Σ_r ∇L_r with local Σ c_i (≠ ∇L)")
