"""Spec chapter 3: reductions — the general mean (§3.1), the N·D mean of elementwise losses (§3.2)
and the token and sequence means of sequences (§3.7).

A test cites its clause with ``@pytest.mark.clause`` and is named by its sentence; the expected
denominators (Σ ω_i, N·D, Σ T_i) come from ``batchgrad_spec.properties.losses``, which also holds
the §3.1 and §3.2 properties the meta-tests run (imported below under their test names).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import assume, find, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from batchgrad_spec.harness import check
from batchgrad_spec.properties.core import per_example_against_reference
from batchgrad_spec.properties.losses import (  # noqa: F401 — run here, also by the meta-tests
    CE,
    ELEMENTWISE,
    FIND,
    HERE,
    against_other_problem,
    float32_difference,
    test_the_mean_divides_the_summed_losses_by_the_total_count,
    test_the_mean_of_an_elementwise_loss_divides_by_n_times_d,
    valid_tokens,
)
from batchgrad_spec.strategies import VARIANCE_RANGE, floats, loss_problems
from reference.bounds import problem_tolerance
from reference.grads import batch_grad, combine, per_example_grads, per_example_losses
from reference.problem import Problem


# -- §3.1 the general mean ------------------------------------------------------------------------
@pytest.mark.clause("3.1")
def test_hypothesis_finds_a_class_weighted_mean_whose_gradient_is_not_the_mean_of_the_g_i():
    """(1/N) Σ g_i − ∇L = (1/N − 1/Σ ω_i) Σ g_i: not zero once Σ ω_i ≠ N. Hypothesis finds a
    class-weighted problem where the two differ by more than any float32 backend's tolerance."""

    def differ(p: Problem) -> bool:
        p = p.rounded("float32")
        _, g = per_example_grads(p)
        _, grad = batch_grad(p)
        mean_of_g = combine(g, np.full(p.batch.size, 1.0 / p.batch.size))
        tol = problem_tolerance(p, "float32").batch_grads
        return float32_difference(mean_of_g, grad, tol, tol)

    p = find(loss_problems(losses=(CE,), class_weights=True, ignore_index=False,
                           reductions=("mean",)), differ, settings=FIND)
    assert p.counts.sum() != p.batch.size, p


# -- §3.2 elementwise losses: the mean over N·D outputs -------------------------------------------
@pytest.mark.clause("3.2")
@given(problem=loss_problems(losses=ELEMENTWISE, reductions=("mean",)))
def test_n_times_the_elementwise_mean_gradient_is_the_sum_of_the_per_example_gradients(
        target, problem):
    with check(target, problem) as c:
        _, grads = c.loss_and_grad()
        n = c.problem.batch.size
        _, ref_grads = per_example_grads(c.problem)
        tol = c.tol()
        c.close({k: n * v for k, v in grads.items()}, {k: v.sum(0) for k, v in ref_grads.items()},
                {k: n * v for k, v in tol.batch_grads.items()}, what="N × ∇L = Σ g_i",
                call=f"{{k: {n} * v for k, v in "
                     f"checked_loss_and_grad(backend, problem, config)[1].items()}}",
                expect="{k: v.sum(0) for k, v in per_example_grads(problem)[1].items()}")


@pytest.mark.clause("3.2")
def test_hypothesis_finds_unequal_valid_elements_where_n_times_the_mean_gradient_is_not_the_sum():
    """With masked tokens, examples have T_i·D valid elements: the element mean is
    Σ ℓ_i / Σ T_i, and N ∇L differs from Σ_i ∇(ℓ_i/T_i), the sum of the per-example means'
    gradients, unless every T_i is the same (then Σ T_i = N T)."""

    def differ(p: Problem) -> bool:
        p = p.rounded("float32")
        n, tokens = p.batch.size, p.tokens
        assert tokens is not None
        _, grad = batch_grad(p)
        _, g = per_example_grads(p)
        means = combine(g, 1.0 / tokens)
        tol = problem_tolerance(p, "float32").batch_grads
        per_mean = problem_tolerance(p.with_reduction("sequence_mean"), "float32").batch_grads
        return float32_difference({k: n * v for k, v in grad.items()}, means,
                                  {k: n * v for k, v in tol.items()},
                                  {k: n * v for k, v in per_mean.items()})

    p = find(loss_problems(losses=("squared_error",), sequences=True, reductions=("mean",),
                           empty_sequences=False), differ, settings=FIND)
    assert len(set(p.tokens.tolist())) > 1, p


# -- §3.7 sequences -------------------------------------------------------------------------------
@pytest.mark.clause("3.7.1")
@given(problem=loss_problems(sequences=True, reductions=("mean",)))
def test_the_token_mean_is_the_mean_over_the_valid_tokens(target, problem):
    with check(target, problem) as c:
        against_other_problem(c, c.problem, valid_tokens(c.problem),
                              expect=f"batch_grad({HERE}.valid_tokens(problem))",
                              what="(token mean) vs the mean over the valid tokens")


@pytest.mark.clause("3.7.2")
@given(problem=loss_problems(sequences=True, reductions=("sequence_mean",)))
def test_the_sequence_mean_is_the_mean_of_per_sequence_token_means(target, problem):
    with check(target, problem) as c:
        loss, grads = c.loss_and_grad()
        ref_losses, ref_grads = per_example_grads(c.problem)
        tokens = c.problem.batch.token_mask.sum(axis=1)
        n = c.problem.batch.size
        tol = c.tol()
        c.close(loss, float(np.mean(ref_losses / tokens)), tol.loss, what="L = (1/N) Σ ℓ_i/T_i",
                expect="float(np.mean(per_example_grads(problem)[0] / "
                       "problem.batch.token_mask.sum(axis=1)))")
        c.close(grads, combine(ref_grads, 1.0 / (n * tokens)), tol.batch_grads,
                what="∇L = (1/N) Σ g_i/T_i",
                expect=f"combine(per_example_grads(problem)[1], 1.0 / ({n} * "
                       f"problem.batch.token_mask.sum(axis=1)))")


@pytest.mark.clause("3.7.2")
@given(problem=loss_problems(sequences=True, equal_lengths=True, class_weights=False,
                             reductions=("mean",)))
def test_token_mean_and_sequence_mean_agree_when_every_sequence_has_as_many_valid_tokens(
        target, problem):
    with check(target, problem) as c:
        against_other_problem(c, c.problem, c.problem.with_reduction("sequence_mean"),
                              expect="batch_grad(problem.with_reduction('sequence_mean'))",
                              what="(token mean) vs sequence_mean, equal T_i")


@pytest.mark.clause("3.7.2")
def test_hypothesis_finds_unequal_valid_tokens_where_token_mean_and_sequence_mean_differ():
    def differ(p: Problem) -> bool:
        p = p.rounded("float32")
        q = p.with_reduction("sequence_mean")
        return float32_difference(batch_grad(p)[1], batch_grad(q)[1],
                                  problem_tolerance(p, "float32").batch_grads,
                                  problem_tolerance(q, "float32").batch_grads)

    p = find(loss_problems(sequences=True, class_weights=False, empty_sequences=False,
                           reductions=("mean",)), differ, settings=FIND)
    assert p.tokens is not None and len(set(p.tokens.tolist())) > 1, p


@pytest.mark.clause("3.7.3")
@given(problem=loss_problems(sequences=True), data=st.data())
def test_masked_tokens_contribute_nothing(target, problem, data):
    assume(not problem.batch.token_mask.all())
    with check(target, problem) as c:
        b = c.problem.batch
        m = b.token_mask
        elements = (st.integers(0, c.problem.network.out_features - 1)
                    if c.problem.loss.name == CE else st.floats(0.0, 1.0, width=32)
                    if c.problem.loss.name == "bce_with_logits" else floats())
        x = data.draw(hnp.arrays(np.float64, b.inputs.shape, elements=floats()), label="inputs")
        y = data.draw(hnp.arrays(b.targets.dtype, b.targets.shape, elements=elements),
                      label="targets")
        per_token = m if b.targets.ndim == 2 else m[..., None]
        changed = replace(b, inputs=np.where(m[..., None], b.inputs, x),
                          targets=np.where(per_token, b.targets, y))
        if b.variances is not None:
            v = data.draw(hnp.arrays(np.float64, b.variances.shape, elements=st.floats(
                *VARIANCE_RANGE, width=32)), label="variances")
            changed = replace(changed, variances=np.where(m[..., None], b.variances, v))
        other = c.problem.with_batch(changed)
        against_other_problem(c, other, c.problem,
                              expr=f"{other!r}",
                              expect="batch_grad(problem)", what="(masked tokens changed)")


@pytest.mark.clause("3.7")
@given(problem=loss_problems(sequences=True))
def test_the_per_example_loss_of_a_sequence_is_the_sum_over_its_valid_tokens(
        target, method, problem):
    with check(target, problem) as c:
        losses, _ = per_example_against_reference(c)
        b = c.problem.batch
        token = per_example_losses(valid_tokens(c.problem))
        owner = np.nonzero(b.token_mask)[0]
        summed = np.bincount(owner, weights=token, minlength=b.size)
        c.close(losses, summed, c.tol().losses, what="ℓ_i = Σ_t m_it ℓ_it",
                expect=f"np.bincount(np.nonzero(problem.batch.token_mask)[0], weights="
                       f"per_example_losses({HERE}.valid_tokens(problem)), "
                       f"minlength={b.size})")


# -- §3.7.4 a sequence with no valid token --------------------------------------------------------
def _empty(problem: Problem) -> np.ndarray:
    return ~problem.batch.token_mask.any(axis=1)


@pytest.mark.clause("3.7.4")
@given(problem=loss_problems(sequences=True, empty_sequences=True, reductions=("mean", "sum")))
def test_a_sequence_without_valid_tokens_has_zero_loss_and_gradient_and_counts_nothing(
        target, method, problem):
    with check(target, problem) as c:
        empty = _empty(c.problem)
        where = np.flatnonzero(empty).tolist()
        losses, grads = c.per_example()
        c.close(losses[empty], np.zeros(len(where)), 0.0, what=f"ℓ_i of the empty sequences "
                f"{where} (exactly 0)", call=f"{c.call_of(losses)}[{where}]",
                expect=f"np.zeros({len(where)})")
        c.close({k: v[empty] for k, v in grads.items()},
                {k: np.zeros((len(where), *v.shape[1:])) for k, v in grads.items()},
                {k: 0.0 for k in grads}, what=f"g_i of the empty sequences {where} (exactly 0)",
                call=f"{{k: v[{where}] for k, v in {c.call_of(grads)}.items()}}",
                expect=f"{{k: np.zeros(({len(where)}, *v.shape)) for k, v in "
                       f"problem.params.items()}}")
        kept = np.flatnonzero(~empty).tolist()
        against_other_problem(c, c.problem, c.problem.with_batch(c.problem.batch.take(kept)),
                              expect=f"batch_grad(problem.with_batch(problem.batch.take({kept})))",
                              what="vs the batch without its empty sequences")


TORCH_ALL_EMPTY = (
    "§3.7.4: the torch backend's token mean, (loss * mask).sum() / mask.sum() or F.cross_entropy "
    "with masked tokens labelled -100, is NaN (0/0) for a "
    "batch whose every sequence is empty, like PyTorch's all-ignored mean (§3.4)")


@pytest.mark.clause("3.7.4")
def test_a_token_mean_over_only_empty_sequences_is_zero_with_zero_gradient(target, request):
    if target.backend.name == "torch":
        request.applymarker(pytest.mark.xfail(strict=True, reason=TORCH_ALL_EMPTY))
    _all_empty_token_mean(target)


@given(problem=loss_problems(sequences=True, reductions=("mean",)))
def _all_empty_token_mean(target, problem):
    b = problem.batch
    nothing = problem.with_batch(replace(b, mask=np.zeros_like(b.token_mask)))
    with check(target, nothing) as c:
        loss, grads = c.loss_and_grad()
        c.close(loss, 0.0, 0.0, what="L of a batch without valid tokens (exactly 0)",
                expect="0.0")
        c.close(grads, {k: np.zeros_like(v) for k, v in c.problem.params.items()},
                {k: 0.0 for k in grads}, what="∇L of a batch without valid tokens (exactly 0)",
                expect="{k: np.zeros_like(v) for k, v in problem.params.items()}")
