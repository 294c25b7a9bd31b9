"""Spec chapter 3: the options of cross-entropy — class weights (§3.3), ignored labels (§3.4),
label smoothing (§3.5) and probability targets (§3.6).

Expected values follow the clauses' formula for PyTorch's ``F.cross_entropy`` (class weights,
``ignore_index``, ``label_smoothing``), written out in ``batchgrad_spec.properties.losses``, which
also holds the §3.3–§3.5 properties the loss meta-tests and the gallery run.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import find, given

from batchgrad_spec.harness import Check, check
from batchgrad_spec.properties.core import per_example_against_reference
from batchgrad_spec.properties.losses import (  # noqa: F401 — run here, also by the meta-tests
    CE,
    FIND,
    HERE,
    against_other_problem,
    cross_entropy_terms,
    float32_difference,
    kept_rows,
    one_hot,
    test_class_weighted_cross_entropy_mean_divides_by_the_weights_of_the_kept_labels,
    test_ignored_rows_count_as_if_they_were_dropped_from_the_batch,
    test_label_smoothing_averages_its_uniform_term_over_the_kept_labels_only,
)
from batchgrad_spec.strategies import loss_problems
from reference.bounds import problem_tolerance
from reference.grads import batch_grad, combine, per_example_grads
from reference.problem import Problem


def per_example_cross_entropy(c: Check, what: str) -> None:
    """Backend ℓ_i and g_i against the reference's, and ℓ_i against the clauses' formula."""
    __tracebackhide__ = True
    losses, _ = per_example_against_reference(c)
    c.close(losses, cross_entropy_terms(c.problem)[0], c.tol().losses, what=what,
            expect=f"{HERE}.cross_entropy_terms(problem)[0]")


TORCH_ALL_IGNORED = (
    "§3.4: PyTorch's reduction='mean' over only ignored labels is NaN (0/0), with an exactly zero "
    "gradient, by design since pytorch/pytorch#64572; "
    "https://github.com/pytorch/pytorch/issues/70348 (open), #116349")


# -- §3.3 class-weighted cross-entropy ------------------------------------------------------------
@pytest.mark.clause("3.3")
@given(problem=loss_problems(losses=(CE,), class_weights=True, label_smoothing=False,
                             soft_targets=False))
def test_class_weighted_per_example_loss_is_the_label_weight_times_its_cross_entropy(
        target, method, problem):
    with check(target, problem) as c:
        per_example_cross_entropy(c, "ℓ_i = w[y_i] (−log p_i,y_i)")


# -- §3.4 ignored labels --------------------------------------------------------------------------
@pytest.mark.clause("3.4")
@given(problem=loss_problems(losses=(CE,), ignored="some"))
def test_an_ignored_row_has_zero_loss_and_zero_gradient(target, method, problem):
    with check(target, problem) as c:
        losses, grads = per_example_against_reference(c)
        out = sorted(set(range(c.problem.batch.size)) - set(kept_rows(c.problem)))
        tol = c.tol()
        c.close(losses[out], np.zeros(len(out)), tol.losses[out], what=f"ℓ_i of ignored rows {out}",
                call=f"checked_per_example(backend, problem, config, method)[0][{out}]",
                expect=f"np.zeros({len(out)})")
        c.close({k: v[out] for k, v in grads.items()},
                {k: np.zeros_like(v[out]) for k, v in grads.items()},
                {k: v[out] for k, v in tol.grads.items()}, what=f"g_i of ignored rows {out}",
                call=f"{{k: v[{out}] for k, v in "
                     f"checked_per_example(backend, problem, config, method)[1].items()}}",
                expect=f"{{k: np.zeros_like(v[{out}]) for k, v in "
                       f"per_example_grads(problem)[1].items()}}")


def _zero_loss_and_gradient(c: Check) -> None:
    __tracebackhide__ = True
    loss, grads = c.loss_and_grad()
    tol = c.tol()
    c.close(loss, 0.0, tol.loss, what="L (every label ignored)",
            expect="0.0")
    c.close(grads, {k: np.zeros_like(v) for k, v in grads.items()}, tol.batch_grads,
            what="∇L (every label ignored)",
            expect="{k: np.zeros_like(v) for k, v in batch_grad(problem)[1].items()}")


@pytest.mark.clause("3.4")
def test_a_mean_over_only_ignored_labels_is_zero_with_zero_gradient(target, request):
    if target.backend.name == "torch":
        request.applymarker(pytest.mark.xfail(strict=True, reason=TORCH_ALL_IGNORED))
    _all_ignored_mean(target)


@given(problem=loss_problems(losses=(CE,), ignored="all", reductions=("mean",)))
def _all_ignored_mean(target, problem):
    with check(target, problem) as c:
        _zero_loss_and_gradient(c)


@pytest.mark.clause("3.4")
@given(problem=loss_problems(losses=(CE,), ignored="all", reductions=("sum",)))
def test_a_sum_over_only_ignored_labels_is_zero_with_zero_gradient(target, problem):
    with check(target, problem) as c:
        _zero_loss_and_gradient(c)


@pytest.mark.clause("3.4")
@pytest.mark.parametrize("options", [{}, {"weight": [2.0, 0.5, 1.0]}, {"label_smoothing": 0.1},
                                     {"weight": [2.0, 0.5, 1.0], "label_smoothing": 0.25}],
                         ids=["plain", "weight", "label_smoothing", "weight+label_smoothing"])
def test_torch_cross_entropy_mean_over_only_ignored_labels_is_nan_with_zero_gradient(options):
    """The finding behind the torch xfail above, pinned: PyTorch's documented behaviour."""
    torch = pytest.importorskip("torch")
    f = torch.nn.functional
    if "weight" in options:
        options = {**options, "weight": torch.tensor(options["weight"], dtype=torch.float64)}
    logits = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]], dtype=torch.float64,
                          requires_grad=True)
    labels = torch.tensor([-100, -100])
    mean = f.cross_entropy(logits, labels, ignore_index=-100, reduction="mean", **options)
    mean.backward()
    assert torch.isnan(mean).item()
    assert logits.grad is not None and torch.equal(logits.grad, torch.zeros_like(logits))
    logits.grad = None
    total = f.cross_entropy(logits, labels, ignore_index=-100, reduction="sum", **options)
    total.backward()
    assert total.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


# -- §3.5 label smoothing -------------------------------------------------------------------------
@pytest.mark.clause("3.5")
@given(problem=loss_problems(losses=(CE,), label_smoothing=True, soft_targets=False))
def test_label_smoothed_per_example_loss_mixes_the_label_and_the_uniform_term(
        target, method, problem):
    with check(target, problem) as c:
        per_example_cross_entropy(c, "ℓ_i = (1−ε) w[y_i] nll_i + (ε/C) Σ_k w_k (−log p_ik)")


# -- §3.6 probability (soft) targets --------------------------------------------------------------
@pytest.mark.clause("3.6")
@given(problem=loss_problems(losses=(CE,), soft_targets=True, reductions=("mean", "sum")))
def test_soft_target_mean_divides_by_n_whatever_the_class_weights(target, problem):
    with check(target, problem) as c:
        loss, grads = c.loss_and_grad()
        losses, denominator = cross_entropy_terms(c.problem)
        n = c.problem.batch.size
        assert denominator == n
        scale = 1.0 / n if c.problem.reduction.name == "mean" else 1.0
        _, ref_grads = per_example_grads(c.problem)
        tol = c.tol()
        c.close(loss, float(losses.sum()) * scale, tol.loss,
                what=f"L = Σ_i −Σ_k w_k q̃_ik log p_ik × {scale:g}",
                expect=f"float({HERE}.cross_entropy_terms(problem)[0].sum()) * {scale!r}")
        c.close(grads, combine(ref_grads, np.full(n, scale)), tol.batch_grads,
                what=f"∇L = {scale:g} × Σ g_i",
                expect=f"combine(per_example_grads(problem)[1], np.full({n}, {scale!r}))")


@pytest.mark.clause("3.6")
@given(problem=loss_problems(losses=(CE,), class_weights=False, ignore_index=False,
                             soft_targets=False, reductions=("mean", "sum")))
def test_one_hot_soft_targets_equal_hard_labels_without_class_weights(target, problem):
    with check(target, problem) as c:
        against_other_problem(c, one_hot(c.problem), c.problem,
                              expr=f"{HERE}.one_hot(problem)",
                              expect="batch_grad(problem)", what="(one-hot soft targets)")


@pytest.mark.clause("3.6")
def test_hypothesis_finds_one_hot_soft_targets_that_differ_from_hard_labels_when_weighted():
    """With class weights the hard-label mean divides by Σ w[y_i], the soft one by N: the same
    targets written two ways give different losses and gradients (Hypothesis finds one differing
    by more than any float32 backend's tolerance)."""

    def differ(p: Problem) -> bool:
        hard = p.rounded("float32")
        soft = one_hot(hard)
        tol_h = problem_tolerance(hard, "float32").batch_grads
        tol_s = problem_tolerance(soft, "float32").batch_grads
        return float32_difference(batch_grad(hard)[1], batch_grad(soft)[1], tol_h, tol_s)

    p = find(loss_problems(losses=(CE,), class_weights=True, ignore_index=False,
                           soft_targets=False, reductions=("mean",)), differ, settings=FIND)
    assert p.counts.sum() != p.batch.size, p
