"""Spec chapter 5, gradient accumulation: §5.1–§5.5.

A backend's optional ``accumulate(problem, config, plan, method)`` differentiates, at one θ, each
micro-batch objective J_k = s_k L_k + t_k (λ/2)‖θ‖² of a ``reference.accumulation.Accumulation``
plan and combines the gradients with its accumulator ("sum": PyTorch's ``.grad``, a tree of adds
in JAX; "average": ``optax.MultiSteps``). Backends without it skip this chapter in one line;
backends without an averaging accumulator skip the tests that need one.

Exactness properties compare the backend's G with the reference's gradient of the *whole* batch
(``full_batch_gradient``) under ``full_batch_tolerance``: the combination bound of
``reference.parallel.combination_tolerance`` (each micro-batch's chapter-7 bound, the scales'
and the penalty's roundings, the K-term sum; the running mean's rounding for "average") plus the
reference's own bound on ∇L. The schemes that are *not* exact are shown by a counterexample that
Hypothesis finds (``hypothesis.find``) on the float64 reference — a difference larger than the
tolerance at the backend's dtype — and that the backend then reproduces: its G matches the
scheme's own exact value, and differs from the full-batch gradient by more than the tolerance.

The check, the micro-batch splits and the properties the meta-tests run too (§5.1, §5.2, §5.4)
are in ``batchgrad_spec.properties.accumulation``; they are collected here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st

from batchgrad_spec.harness import Target
from batchgrad_spec.properties.accumulation import (  # noqa: F401 — run here and by meta-tests
    LAMBDAS,
    AccumulationCheck,
    Scheme,
    split_matches_full_batch,
    test_an_l2_penalty_added_once_per_step_contributes_lambda_theta_whatever_k,
    test_micro_batch_means_weighted_by_n_k_over_n_accumulate_to_the_full_batch_mean_gradient,
    test_token_level_accumulation_divides_summed_token_losses_by_the_whole_batch_token_count,
)
from batchgrad_spec.strategies import (
    MAX_PARTS,
    loss_problems,
    networks,
    problems,
    split_cases,
    splits,
)
from reference.accumulation import (
    Accumulation,
    accumulate,
    accumulation_tolerance,
    count_weighted,
    full_batch_gradient,
    full_batch_tolerance,
    global_normaliser,
    naive,
    summed,
    with_l2,
)
from reference.contract import accumulation_methods, implements
from reference.numerics import REFERENCE
from reference.parallel import shards
from reference.problem import Problem


# -- skipping backends without the optional method ------------------------------------------------
def averaging(test: Callable[..., Any]) -> Callable[..., Any]:
    """Marks a test that needs the averaging accumulator ("average")."""
    test.accumulator = "average"  # type: ignore[attr-defined]
    return test


@pytest.fixture(autouse=True)
def _needs_accumulate(request: pytest.FixtureRequest) -> None:
    """Skip, in one line, a backend without ``accumulate`` (or without the accumulator a test
    needs)."""
    callspec = getattr(request.node, "callspec", None)
    target = callspec.params.get("target") if callspec else None
    if target is None:
        return
    b = target.backend
    if not implements(b, "accumulate"):
        pytest.skip(f"backend {b.name} does not implement the optional accumulate()")
    need = getattr(request.function, "accumulator", "sum")
    if need not in accumulation_methods(b):
        pytest.skip(f"backend {b.name} has no {need!r} accumulator (it offers "
                    f"{accumulation_methods(b)})")


def exceeds(problem: Problem, plan: Accumulation, dtype: str, mode: str,
            method: str = "sum") -> bool:
    """Whether the plan's exact G (float64 reference) lies farther from the whole batch's
    gradient than the tolerance at (dtype, mode): a counterexample any conforming backend at
    that precision, or a finer one, shows."""
    g = accumulate(problem, plan)
    full = full_batch_gradient(problem, plan)
    if all(np.array_equal(g[k], full[k]) for k in full):
        return False  # (most of what the shrinker tries) no need for the tolerance
    tol = full_batch_tolerance(problem, plan, dtype, mode, method)
    return any(bool(np.any(np.abs(g[k] - full[k]) > tol[k])) for k in full)


FIND = settings(database=None, derandomize=True, max_examples=500,
                phases=[Phase.generate, Phase.shrink], deadline=None)
"""``hypothesis.find``: derandomised (the same counterexample on every run), shrunk."""

SMALL = networks(max_depth=2, max_width=3)
"""The networks counterexamples are searched among (small: every evaluation and shrink step
computes chapter-7 bounds)."""

_FOUND: dict[tuple[str, str, str], tuple[Problem, tuple[int, ...]]] = {}


def found(strategy: st.SearchStrategy[tuple[Problem, tuple[int, ...]]],
          scheme: Scheme, target: Target,
          method: str = "sum", key: str = "") -> tuple[Problem, tuple[int, ...]]:
    """The smallest (problem, sizes) Hypothesis finds where ``scheme`` is not the full-batch
    gradient (``hypothesis.find`` raises NoSuchExample if there is none).

    Searched once per session and precision mode (``key`` names the search), at float32's
    tolerance, which bounds float64's too: the strategies draw float32 numbers, so a problem is
    the same in both dtypes, and a difference beyond the float32 tolerance is beyond the float64
    one. Every backend and dtype is then asked about the same counterexample."""
    mode = target.config.precision
    if (key, method, mode) not in _FOUND:
        def differs(case: tuple[Problem, tuple[int, ...]]) -> bool:
            p = case[0].rounded("float32")
            return exceeds(p, scheme(p, case[1]), "float32", mode, method)

        _FOUND[(key, method, mode)] = find(strategy, differs, settings=FIND)
    problem, sizes = _FOUND[(key, method, mode)]
    print(f"\ncounterexample ({key}, {method}): sizes={sizes} {problem!r}", end="")
    return problem, sizes


# -- §5.1 any split, weighted by n_k/N ------------------------------------------------------------
@pytest.mark.clause("5.1")
@given(problem=problems(reductions=("mean",), min_batch=2), data=st.data())
def test_the_mean_of_micro_batch_mean_gradients_is_the_full_batch_gradient_for_equal_sizes(
        target, problem, data):
    split_matches_full_batch(target, problem, data, naive, "(1/K) Σ_k ∇mean_k", equal=True)


@pytest.mark.clause("5.1")
def test_hypothesis_finds_unequal_micro_batches_where_the_mean_of_their_means_is_wrong(target):
    problem, sizes = found(split_cases(problems(nets=SMALL, reductions=("mean",), min_batch=2,
                                          max_batch=4)), naive, target, key="5.1")
    assert len(set(sizes)) > 1, f"equal sizes {sizes} are exact (§5.1), yet differ"
    with AccumulationCheck(target, problem) as c:
        c.differs_from_full_batch(naive(c.problem, sizes), what="(1/K) Σ_k ∇mean_k")


# -- §5.2 token-level losses ----------------------------------------------------------------------
@pytest.mark.clause("5.2")
@given(problem=loss_problems(sequences=True, reductions=("mean",), empty_sequences=False),
       data=st.data())
def test_local_token_means_weighted_by_their_share_of_the_tokens_give_the_full_gradient(
        target, problem, data):
    split_matches_full_batch(target, problem, data, count_weighted,
                             "Σ_k (Ω_k/Ω) ∇(token mean)_k")


@pytest.mark.clause("5.2")
@given(problem=loss_problems(sequences=True, reductions=("mean",), empty_sequences=True),
       data=st.data())
def test_a_micro_batch_without_valid_tokens_contributes_exactly_zero(target, problem, data):
    n = problem.batch.size  # the last sequence has no valid token
    sizes = data.draw(splits(n - 1, max_parts=MAX_PARTS - 1), label="sizes") + (1,)
    with AccumulationCheck(target, problem) as c:
        plan = global_normaliser(c.problem, sizes)
        empty = c.problem.with_batch(c.problem.batch.take([n - 1]))
        alone = Accumulation((1,), plan.scales[-1:], plan.reduction)
        g = c.accumulate(alone, problem=empty,
                         on=f"problem.with_batch(problem.batch.take([{n - 1}]))")
        zero = {k: np.zeros_like(v) for k, v in g.items()}
        c.close(g, zero, zero, what="∇(sum)/Ω of a micro-batch without valid tokens",
                expect="{k: np.zeros_like(v) for k, v in problem.params.items()}")
        c.matches_full_batch(plan, what="Σ_k ∇(sum_k)/Ω with an empty micro-batch")


@pytest.mark.clause("5.2")
def test_hypothesis_finds_that_per_micro_batch_token_means_are_wrong_even_for_equal_sizes(target):
    # cross-entropy without class weights: a language model's token loss (§5.3 has the weights)
    tokens = loss_problems(nets=SMALL, losses=("softmax_cross_entropy",), class_weights=False,
                           sequences=True, reductions=("mean",), empty_sequences=False,
                           min_batch=2, max_length=3)
    problem, sizes = found(split_cases(tokens, equal=True), naive, target, key="5.2")
    counts = [float(np.sum(p.counts)) for p in shards(problem, sizes)]
    assert len(set(counts)) > 1, f"equal token counts {counts} are exact, yet differ"
    with AccumulationCheck(target, problem) as c:
        c.differs_from_full_batch(naive(c.problem, sizes), what="(1/K) Σ_k ∇(token mean)_k")


# -- §5.3 class-weighted cross-entropy ------------------------------------------------------------
WEIGHTED = loss_problems(losses=("softmax_cross_entropy",), class_weights=True,
                         reductions=("mean",))


@pytest.mark.clause("5.3")
@given(problem=WEIGHTED, data=st.data())
def test_class_weighted_accumulation_divides_by_the_whole_batch_sum_of_label_weights(
        target, problem, data):
    split_matches_full_batch(target, problem, data, global_normaliser, "Σ_k ∇(sum_k)/Σ w[y_i]")


@pytest.mark.clause("5.3")
@given(problem=loss_problems(losses=("softmax_cross_entropy",), class_weights=True,
                             ignore_index=False, reductions=("mean",)), data=st.data())
def test_local_weighted_means_weighted_by_their_share_of_label_weight_give_the_full_gradient(
        target, problem, data):
    split_matches_full_batch(target, problem, data, count_weighted, "Σ_k (Ω_k/Ω) ∇mean_k")


def by_examples(problem: Problem, sizes: tuple[int, ...]) -> Accumulation:
    """Local reduced losses weighted by their share of the examples, s_k = n_k/N."""
    n = problem.batch.size
    return Accumulation(sizes, tuple(m / n for m in sizes))


@pytest.mark.clause("5.3")
def test_hypothesis_finds_that_local_weighted_means_weighted_by_n_k_over_n_are_wrong(target):
    hard = loss_problems(nets=SMALL, losses=("softmax_cross_entropy",), class_weights=True,
                         ignore_index=False, soft_targets=False, reductions=("mean",),
                         min_batch=2, max_batch=4)
    problem, sizes = found(split_cases(hard), by_examples, target, key="5.3")
    with AccumulationCheck(target, problem) as c:
        c.differs_from_full_batch(by_examples(c.problem, sizes), what="Σ_k (n_k/N) ∇mean_k")


# -- §5.4 the penalty -----------------------------------------------------------------------------
@pytest.mark.clause("5.4")
@given(problem=problems(reductions=("mean",), min_batch=2), lam=LAMBDAS, data=st.data())
def test_an_l2_penalty_added_to_every_micro_batch_loss_contributes_k_lambda_theta(
        target, problem, lam, data):
    sizes = data.draw(splits(problem.batch.size, min_parts=2), label="sizes")
    k = len(sizes)
    with AccumulationCheck(target, problem) as c:
        cfg = c.target.config
        once = with_l2(count_weighted(c.problem, sizes), lam, "once")
        each = with_l2(count_weighted(c.problem, sizes), lam, "each")
        g_once, g_each = c.accumulate(once), c.accumulate(each)
        theta = c.problem.params
        u = REFERENCE.u  # (K − 1)·λ·θ formed in float64: two roundings
        t_once = accumulation_tolerance(c.problem, once, cfg.dtype, cfg.precision)
        t_each = accumulation_tolerance(c.problem, each, cfg.dtype, cfg.precision)
        tol = {n: a + b + 2 * u * np.abs((k - 1) * lam * theta[n])
               for (n, a), b in zip(t_once.items(), t_each.values(), strict=True)}
        c.close({n: g_each[n] - g_once[n] for n in theta},
                {n: (k - 1) * lam * theta[n] for n in theta}, tol,
                what="G(penalty in each micro-batch) − G(penalty once)",
                call=f"{{n: {c.call_of(g_each)}[n] - {c.call_of(g_once)}[n] "
                     f"for n in problem.params}}",
                expect=f"{{n: {k - 1} * {lam!r} * v for n, v in problem.params.items()}}")


# -- §5.5 averaging and summing accumulators ------------------------------------------------------
@averaging
@pytest.mark.clause("5.5.2", "5.5.4")
@given(problem=problems(reductions=("mean",), min_batch=2), data=st.data())
def test_an_averaging_accumulator_fed_micro_batch_mean_gradients_is_exact_for_equal_sizes(
        target, problem, data):
    split_matches_full_batch(target, problem, data, naive, "running mean of ∇mean_k",
                             equal=True, method="average")


@averaging
@pytest.mark.clause("5.5.2")
def test_hypothesis_finds_unequal_micro_batches_where_an_averaging_accumulator_is_wrong(target):
    problem, sizes = found(split_cases(problems(nets=SMALL, reductions=("mean",), min_batch=2,
                                          max_batch=4)), naive, target, "average", key="5.5.2")
    with AccumulationCheck(target, problem) as c:
        c.differs_from_full_batch(naive(c.problem, sizes), method="average",
                                  what="running mean of ∇mean_k")


@averaging
@pytest.mark.clause("5.5.3")
@given(problem=problems(reductions=("mean",), min_batch=2), lam=LAMBDAS, data=st.data())
def test_an_averaging_accumulator_turns_a_penalty_in_every_micro_batch_loss_into_one_lambda_theta(
        target, problem, lam, data):
    split_matches_full_batch(  # fed ∇(mean_k + P)
        target, problem, data,
        lambda p, sizes: with_l2(naive(p, sizes), lam, (1.0 / len(sizes),) * len(sizes)),
        "running mean of ∇(mean_k + λ/2‖θ‖²)", equal=True, method="average")


@pytest.mark.clause("5.5.1")
@given(problem=problems(reductions=("mean",), min_batch=2), data=st.data())
def test_a_summing_accumulator_divides_by_nothing_k_micro_batch_means_give_k_times_the_gradient(
        target, problem, data):
    split_matches_full_batch(target, problem, data, summed, "Σ_k ∇mean_k", equal=True,
                             scaled=True)


@pytest.mark.clause("5.5.4")
def test_optax_multisteps_default_float32_accumulator_rounds_a_float64_accumulation():
    # optax 0.2.8: MultiSteps(accumulator_dtype=jnp.float32) by default. Fed float64 gradients,
    # it stores the running mean in float32 after every micro-step but the last.
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    from reference.accumulation import running_mean_error
    from reference.numerics import PRECISIONS

    jax.config.update("jax_enable_x64", True)
    fed = [{"w": np.array([1 / 3, 0.1])}, {"w": np.array([0.0, 0.7])}]
    theta = {"w": np.zeros(2)}
    exact = {"w": (fed[0]["w"] + fed[1]["w"]) / 2}
    emitted = {}
    for name, kwargs in (("default", {}), ("float64", {"accumulator_dtype": np.float64})):
        multi = optax.MultiSteps(optax.identity(), every_k_schedule=2, **kwargs)
        state = multi.init(theta)
        for g in fed:
            updates, state = multi.update(g, state, theta)
        emitted[name] = np.asarray(updates["w"], dtype=np.float64)
        assert np.asarray(updates["w"]).dtype == np.float64
    f64 = PRECISIONS[("float64", "strict")]
    f32 = PRECISIONS[("float32", "strict")]
    bound64 = running_mean_error(fed, f64.u, f64.tiny)["w"]
    bound32 = running_mean_error(fed, f32.u, f32.tiny)["w"]
    assert np.all(np.abs(emitted["float64"] - exact["w"]) <= bound64)
    error = np.abs(emitted["default"] - exact["w"])
    assert np.any(error > bound64), f"default accumulator within float64 rounding: {error}"
    assert np.all(error <= bound32 + np.abs(exact["w"]) * f32.u), (
        f"default accumulator off by more than float32 rounding: {error}")
