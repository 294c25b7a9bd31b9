"""Spec chapter 3: losses and reductions frameworks differ on.

Each test names its clause with ``@pytest.mark.clause``; its name is the clause's sentence. Backend
results are compared with the float64 reference under the derived tolerance of spec chapter 7.
Where a clause states a formula (a denominator, a smoothing term), the expected value is written
out here from the clause, independently of ``reference.problem.Problem.counts`` and of
``reference.ops``' loss code, so the numpy backend (the reference itself) is checked too.

When a backend is compared with the reference on a *different* problem with the same exact answer
(rows dropped, masked tokens changed, one-hot soft targets for labels), the tolerance is the
backend's bound for its problem plus the reference's own bound for the other (spec §7.2).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest
from hypothesis import Phase, assume, find, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from batchgrad_spec.harness import Check, check, reduction_identity
from batchgrad_spec.strategies import (
    HUBER_DELTAS,
    VARIANCE_RANGE,
    floats,
    loss_problems,
    networks,
)
from reference.batch import Batch
from reference.bounds import error_bound, problem_tolerance
from reference.grads import batch_grad, combine, forward, per_example_grads, per_example_losses
from reference.layers import Dense, Network
from reference.losses import Loss, Reduction
from reference.numerics import REFERENCE, precision
from reference.ops import log_softmax
from reference.problem import Problem

CE = "softmax_cross_entropy"
ELEMENTWISE = ("squared_error", "bce_with_logits", "huber", "gaussian_nll")
NON_NEGATIVE = ("squared_error", CE, "bce_with_logits", "huber")
"""The losses that are ≥ 0 for every input (spec §3.9); Gaussian NLL is not."""

HERE = "__import__('tests.test_ch3_losses').test_ch3_losses"
"""This module, as an expression a repro snippet can evaluate (it imports only ``reference``)."""

FIND = settings(max_examples=1000, database=None, deadline=None, phases=[Phase.generate])
"""``find`` for the clauses that say Hypothesis finds a counterexample: first hit, no shrinking."""

TORCH_ALL_IGNORED = (
    "§3.4: PyTorch's reduction='mean' over only ignored labels is NaN (0/0), with an exactly zero "
    "gradient, by design since pytorch/pytorch#64572; "
    "https://github.com/pytorch/pytorch/issues/70348 (open), #116349")


# -- the clauses' formulas, written out -----------------------------------------------------------
def omega(problem: Problem) -> np.ndarray:
    """ω_i, what example i counts in the ``mean`` (spec §3.1), from the clauses: w[y_i] for a kept
    label of a cross-entropy (w = 1 without class weights), 0 for an ignored one; summed over the
    valid tokens of a sequence (for other losses: T_i, the valid tokens); 1 otherwise (soft
    targets included, §3.6)."""
    b, loss = problem.batch, problem.loss
    c = problem.network.out_features
    w = np.ones(c) if loss.class_weights is None else np.asarray(loss.class_weights)
    mask = b.token_mask if b.sequence else np.ones((b.size, 1), bool)
    if loss.name == CE and b.targets.dtype.kind in "iu":
        y = b.targets if b.sequence else b.targets[:, None]
        kept = mask & (y != loss.ignore_index)
        return np.array([sum(w[y[i, t]] for t in range(y.shape[1]) if kept[i, t])
                         for i in range(b.size)], dtype=np.float64)
    return mask.sum(axis=1).astype(np.float64)


def cross_entropy_terms(problem: Problem) -> tuple[np.ndarray, float]:
    """(ℓ_i, the mean's denominator) of PyTorch's ``F.cross_entropy(weight=w,
    ignore_index=…, label_smoothing=ε)`` for a batch of single predictions (spec §3.3–§3.6):

    integer labels: ℓ_i = (1 − ε) w[y_i] (−log p_i,y_i) + (ε/C) Σ_k w_k (−log p_ik), 0 when y_i is
    ignored; the mean divides by Σ over kept labels of w[y_i].
    probability rows q_i: ℓ_i = −Σ_k w_k q̃_ik log p_ik with q̃ = (1 − ε) q + ε/C; the mean
    divides by N.
    """
    loss, y = problem.loss, problem.batch.targets
    logp = log_softmax(forward(problem).output)
    n, c = logp.shape
    w = np.ones(c) if loss.class_weights is None else np.asarray(loss.class_weights)
    eps = loss.label_smoothing
    if y.dtype.kind == "f":
        q = (1 - eps) * y + eps / c
        return -(q * w * logp).sum(axis=1), float(n)
    kept = y != loss.ignore_index
    label = np.where(kept, y, 0)
    nll = -logp[np.arange(n), label]
    uniform = -(w * logp).sum(axis=1) / c
    losses = np.where(kept, (1 - eps) * w[label] * nll + eps * uniform, 0.0)
    return losses, float(w[label][kept].sum())


def elementwise_losses(problem: Problem) -> np.ndarray:
    """The loss of each of the N·D outputs, ``reduction="none"`` of PyTorch's elementwise losses
    (spec §3.2, §3.8), from the definitions: r = f − y,
    squared error r², BCE with logits max(f, 0) − f y + log(1 + e^{−|f|}), Huber ½r² (|r| ≤ δ)
    or δ(|r| − ½δ), Gaussian NLL ½(log v + r²/v)."""
    f = forward(problem).output
    y = problem.batch.targets
    r = f - y
    name = problem.loss.name
    if name == "squared_error":
        return r * r
    if name == "bce_with_logits":
        return np.maximum(f, 0) - f * y + np.log1p(np.exp(-np.abs(f)))
    if name == "huber":
        d = problem.loss.delta
        return np.where(np.abs(r) <= d, 0.5 * r * r, d * (np.abs(r) - 0.5 * d))
    v = problem.batch.variances
    assert name == "gaussian_nll" and v is not None
    return 0.5 * (np.log(v) + r * r / v)


@dataclass(frozen=True)
class Between:
    """Tolerance for |backend(P) − reference(Q)| where P and Q have the same exact answer: the
    backend's own bound for P plus the reference's own bound for Q (spec §7.2)."""

    loss: float
    batch_grads: dict[str, np.ndarray]


def between(c: Check, backend_problem: Problem, reference_problem: Problem) -> Between:
    cfg = c.target.config
    b = error_bound(backend_problem, precision(cfg.dtype, cfg.precision))
    r = error_bound(reference_problem, REFERENCE)
    return Between(b.loss + r.loss, {k: v + r.batch_grads[k] for k, v in b.batch_grads.items()})


def per_example_against_reference(c: Check) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Backend ℓ_i and g_i against the reference's; returns the backend's."""
    __tracebackhide__ = True
    losses, grads = c.per_example()
    ref_losses, ref_grads = per_example_grads(c.problem)
    tol = c.tol()
    c.close(losses, ref_losses, tol.losses, what="ℓ_i",
            call="checked_per_example(backend, problem, config, method)[0]",
            expect="per_example_grads(problem)[0]")
    c.close(grads, ref_grads, tol.grads, what="g_i",
            call="checked_per_example(backend, problem, config, method)[1]",
            expect="per_example_grads(problem)[1]")
    return losses, grads


def against_other_problem(c: Check, problem: Problem, expected: Problem, call: str,
                          expect: str, what: str) -> None:
    """Backend L and ∇L of ``problem`` against the reference's for ``expected`` (same answer)."""
    __tracebackhide__ = True
    loss, grads = c.loss_and_grad(problem)
    ref_loss, ref_grads = batch_grad(expected)
    tol = between(c, problem, expected)
    c.close(loss, ref_loss, tol.loss, what=f"L {what}", call=f"{call}[0]", expect=f"{expect}[0]")
    c.close(grads, ref_grads, tol.batch_grads, what=f"∇L {what}", call=f"{call}[1]",
            expect=f"{expect}[1]")


def float32_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray],
                       tol_a: dict[str, np.ndarray], tol_b: dict[str, np.ndarray]) -> bool:
    """Whether two reference gradients differ by more than both float32 tolerances together: a
    difference no float32 (or float64) backend's rounding could explain."""
    return any(np.any(np.abs(a[k] - b[k]) > tol_a[k] + tol_b[k]) for k in a)


# -- §3.1 the general mean ------------------------------------------------------------------------
@pytest.mark.clause("3.1")
@given(problem=loss_problems(sequences=None, reductions=("mean",)))
def test_the_mean_divides_the_summed_losses_by_the_total_count(target, problem):
    with check(target, problem) as c:
        loss, grads = c.loss_and_grad()
        ref_losses, ref_grads = per_example_grads(c.problem)
        total = float(omega(c.problem).sum())
        tol = c.tol()
        c.close(loss, float(ref_losses.sum()) / total, tol.loss, what="L = Σ ℓ_i / Σ ω_i",
                call="checked_loss_and_grad(backend, problem, config)[0]",
                expect=f"float(per_example_grads(problem)[0].sum()) / {HERE}.omega(problem).sum()")
        c.close(grads, combine(ref_grads, np.full(c.problem.batch.size, 1.0 / total)),
                tol.batch_grads, what="∇L = Σ g_i / Σ ω_i",
                call="checked_loss_and_grad(backend, problem, config)[1]",
                expect=f"combine(per_example_grads(problem)[1], np.full(problem.batch.size, "
                       f"1.0 / {HERE}.omega(problem).sum()))")


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
def test_the_mean_of_an_elementwise_loss_divides_by_n_times_d(target, problem):
    with check(target, problem) as c:
        loss, grads = c.loss_and_grad()
        n, d = c.problem.batch.size, c.problem.network.out_features
        _, ref_grads = per_example_grads(c.problem)
        tol = c.tol()
        c.close(loss, float(elementwise_losses(c.problem).sum()) / (n * d), tol.loss,
                what="L = Σ_i Σ_d ℓ_id / (N·D)",
                call="checked_loss_and_grad(backend, problem, config)[0]",
                expect=f"float({HERE}.elementwise_losses(problem).sum()) / "
                       f"({n} * {d})")
        c.close(grads, combine(ref_grads, np.full(n, 1.0 / n)), tol.batch_grads,
                what="∇L = (1/N) Σ g_i", call="checked_loss_and_grad(backend, problem, config)[1]",
                expect=f"combine(per_example_grads(problem)[1], np.full({n}, 1.0 / {n}))")


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


# -- §3.3 class-weighted cross-entropy ------------------------------------------------------------
@pytest.mark.clause("3.3")
@given(problem=loss_problems(losses=(CE,), class_weights=True, label_smoothing=False,
                             soft_targets=False, reductions=("mean", "sum")))
def test_class_weighted_cross_entropy_mean_divides_by_the_weights_of_the_kept_labels(
        target, problem):
    with check(target, problem) as c:
        loss, grads = c.loss_and_grad()
        losses, denominator = cross_entropy_terms(c.problem)
        mean = c.problem.reduction.name == "mean"
        scale = 1.0 / denominator if mean else 1.0
        _, ref_grads = per_example_grads(c.problem)
        tol = c.tol()
        n = c.problem.batch.size
        how = "/ Σ_kept w[y_i]" if mean else ""
        expr = f"{HERE}.cross_entropy_terms(problem)"
        c.close(loss, float(losses.sum()) * scale, tol.loss, what=f"L = Σ w[y_i] nll_i {how}",
                call="checked_loss_and_grad(backend, problem, config)[0]",
                expect=f"float({expr}[0].sum())" + (f" / {expr}[1]" if mean else ""))
        c.close(grads, combine(ref_grads, np.full(n, scale)), tol.batch_grads,
                what=f"∇L = Σ g_i {how}", call="checked_loss_and_grad(backend, problem, config)[1]",
                expect=f"combine(per_example_grads(problem)[1], np.full({n}, "
                       + (f"1.0 / {expr}[1]))" if mean else "1.0))"))


@pytest.mark.clause("3.3")
@given(problem=loss_problems(losses=(CE,), class_weights=True, label_smoothing=False,
                             soft_targets=False))
def test_class_weighted_per_example_loss_is_the_label_weight_times_its_cross_entropy(
        target, method, problem):
    with check(target, problem) as c:
        losses, _ = per_example_against_reference(c)
        c.close(losses, cross_entropy_terms(c.problem)[0], c.tol().losses,
                what="ℓ_i = w[y_i] (−log p_i,y_i)",
                call="checked_per_example(backend, problem, config, method)[0]",
                expect=f"{HERE}.cross_entropy_terms(problem)[0]")


# -- §3.4 ignored labels --------------------------------------------------------------------------
def kept_rows(problem: Problem) -> list[int]:
    y = problem.batch.targets
    return [i for i in range(problem.batch.size) if y[i] != problem.loss.ignore_index]


@pytest.mark.clause("3.4")
@given(problem=loss_problems(losses=(CE,), ignored="some", reductions=("mean", "sum")))
def test_ignored_rows_count_as_if_they_were_dropped_from_the_batch(target, problem):
    with check(target, problem) as c:
        keep = kept_rows(c.problem)
        out = sorted(set(range(c.problem.batch.size)) - set(keep))
        dropped = c.problem.with_batch(c.problem.batch.take(keep))
        against_other_problem(c, c.problem, dropped,
                              call="checked_loss_and_grad(backend, problem, config)",
                              expect=f"batch_grad(problem.with_batch(problem.batch.take({keep})))",
                              what=f"with rows {out} ignored vs dropped")


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
            call="checked_loss_and_grad(backend, problem, config)[0]", expect="0.0")
    c.close(grads, {k: np.zeros_like(v) for k, v in grads.items()}, tol.batch_grads,
            what="∇L (every label ignored)",
            call="checked_loss_and_grad(backend, problem, config)[1]",
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
@given(problem=loss_problems(losses=(CE,), label_smoothing=True, soft_targets=False,
                             reductions=("mean", "sum")))
def test_label_smoothing_averages_its_uniform_term_over_the_kept_labels_only(target, problem):
    with check(target, problem) as c:
        loss, grads = c.loss_and_grad()
        losses, denominator = cross_entropy_terms(c.problem)
        mean = c.problem.reduction.name == "mean"
        scale = 1.0 / denominator if mean else 1.0
        _, ref_grads = per_example_grads(c.problem)
        tol = c.tol()
        n = c.problem.batch.size
        expr = f"{HERE}.cross_entropy_terms(problem)"
        c.close(loss, float(losses.sum()) * scale, tol.loss,
                what="L = Σ_kept [(1−ε) w[y_i] nll_i + (ε/C) Σ_k w_k (−log p_ik)]"
                     + (" / Σ_kept w[y_i]" if mean else ""),
                call="checked_loss_and_grad(backend, problem, config)[0]",
                expect=f"float({expr}[0].sum())" + (f" / {expr}[1]" if mean else ""))
        c.close(grads, combine(ref_grads, np.full(n, scale)), tol.batch_grads, what="∇L",
                call="checked_loss_and_grad(backend, problem, config)[1]",
                expect=f"combine(per_example_grads(problem)[1], np.full({n}, "
                       + (f"1.0 / {expr}[1]))" if mean else "1.0))"))


@pytest.mark.clause("3.5")
@given(problem=loss_problems(losses=(CE,), label_smoothing=True, soft_targets=False))
def test_label_smoothed_per_example_loss_mixes_the_label_and_the_uniform_term(
        target, method, problem):
    with check(target, problem) as c:
        losses, _ = per_example_against_reference(c)
        c.close(losses, cross_entropy_terms(c.problem)[0], c.tol().losses,
                what="ℓ_i = (1−ε) w[y_i] nll_i + (ε/C) Σ_k w_k (−log p_ik)",
                call="checked_per_example(backend, problem, config, method)[0]",
                expect=f"{HERE}.cross_entropy_terms(problem)[0]")


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
                call="checked_loss_and_grad(backend, problem, config)[0]",
                expect=f"float({HERE}.cross_entropy_terms(problem)[0].sum()) * {scale!r}")
        c.close(grads, combine(ref_grads, np.full(n, scale)), tol.batch_grads,
                what=f"∇L = {scale:g} × Σ g_i",
                call="checked_loss_and_grad(backend, problem, config)[1]",
                expect=f"combine(per_example_grads(problem)[1], np.full({n}, {scale!r}))")


def one_hot(problem: Problem) -> Problem:
    """The same problem with each integer label y_i given as the probability row e_{y_i}."""
    y = problem.batch.targets
    q = np.eye(problem.network.out_features)[y]
    return problem.with_batch(replace(problem.batch, targets=q))


@pytest.mark.clause("3.6")
@given(problem=loss_problems(losses=(CE,), class_weights=False, ignore_index=False,
                             soft_targets=False, reductions=("mean", "sum")))
def test_one_hot_soft_targets_equal_hard_labels_without_class_weights(target, problem):
    with check(target, problem) as c:
        against_other_problem(c, one_hot(c.problem), c.problem,
                              call=f"checked_loss_and_grad(backend, {HERE}.one_hot(problem), "
                                   f"config)",
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


# -- §3.7 sequences -------------------------------------------------------------------------------
def valid_tokens(problem: Problem) -> Problem:
    """The valid tokens of a sequence batch as a batch of single predictions, under ``mean`` or
    ``sum`` as the sequence batch (its Σ ω is the sequence batch's), else ``sum``."""
    b = problem.batch
    m = b.token_mask
    flat = Batch(b.inputs[m], b.targets[m],
                 variances=None if b.variances is None else b.variances[m])
    red = problem.reduction if problem.reduction.name in ("mean", "sum") else Reduction("sum")
    return Problem(problem.network, problem.loss, red, problem.params, flat)


@pytest.mark.clause("3.7")
@given(problem=loss_problems(sequences=True, reductions=("mean",)))
def test_the_token_mean_is_the_mean_over_the_valid_tokens(target, problem):
    with check(target, problem) as c:
        against_other_problem(c, c.problem, valid_tokens(c.problem),
                              call="checked_loss_and_grad(backend, problem, config)",
                              expect=f"batch_grad({HERE}.valid_tokens(problem))",
                              what="(token mean) vs the mean over the valid tokens")


@pytest.mark.clause("3.7")
@given(problem=loss_problems(sequences=True, reductions=("sequence_mean",)))
def test_the_sequence_mean_is_the_mean_of_per_sequence_token_means(target, problem):
    with check(target, problem) as c:
        loss, grads = c.loss_and_grad()
        ref_losses, ref_grads = per_example_grads(c.problem)
        tokens = c.problem.batch.token_mask.sum(axis=1)
        n = c.problem.batch.size
        tol = c.tol()
        c.close(loss, float(np.mean(ref_losses / tokens)), tol.loss, what="L = (1/N) Σ ℓ_i/T_i",
                call="checked_loss_and_grad(backend, problem, config)[0]",
                expect="float(np.mean(per_example_grads(problem)[0] / "
                       "problem.batch.token_mask.sum(axis=1)))")
        c.close(grads, combine(ref_grads, 1.0 / (n * tokens)), tol.batch_grads,
                what="∇L = (1/N) Σ g_i/T_i", call="checked_loss_and_grad(backend, problem, "
                                                  "config)[1]",
                expect=f"combine(per_example_grads(problem)[1], 1.0 / ({n} * "
                       f"problem.batch.token_mask.sum(axis=1)))")


@pytest.mark.clause("3.7")
@given(problem=loss_problems(sequences=True, equal_lengths=True, class_weights=False,
                             reductions=("mean",)))
def test_token_mean_and_sequence_mean_agree_when_every_sequence_has_as_many_valid_tokens(
        target, problem):
    with check(target, problem) as c:
        against_other_problem(c, c.problem, c.problem.with_reduction("sequence_mean"),
                              call="checked_loss_and_grad(backend, problem, config)",
                              expect="batch_grad(problem.with_reduction('sequence_mean'))",
                              what="(token mean) vs sequence_mean, equal T_i")


@pytest.mark.clause("3.7")
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


@pytest.mark.clause("3.7")
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
                              call=f"checked_loss_and_grad(backend, {other!r}, config)",
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
                call="checked_per_example(backend, problem, config, method)[0]",
                expect=f"np.bincount(np.nonzero(problem.batch.token_mask)[0], weights="
                       f"per_example_losses({HERE}.valid_tokens(problem)), "
                       f"minlength={b.size})")


# -- §3.8 BCE with logits, Huber, Gaussian NLL ----------------------------------------------------
@pytest.mark.clause("3.8")
@given(problem=loss_problems(losses=("bce_with_logits", "huber", "gaussian_nll"),
                             sequences=None))
def test_bce_huber_and_gaussian_nll_per_example_losses_and_gradients_match_the_reference(
        target, method, problem):
    with check(target, problem) as c:
        losses, _ = per_example_against_reference(c)
        if not c.problem.batch.sequence:
            d = c.problem.network.out_features
            c.close(losses, elementwise_losses(c.problem).mean(axis=1), c.tol().losses,
                    what="ℓ_i = (1/D) Σ_d ℓ_id",
                    call="checked_per_example(backend, problem, config, method)[0]",
                    expect=f"{HERE}.elementwise_losses(problem).sum(axis=1) / {d}")


@st.composite
def large_logit_problems(draw: st.DrawFn) -> Problem:
    """BCE with logits on one Dense(d, D), d ≤ 2, whose biases reach ±80: logits up to ±88."""
    d_in, d_out, n = draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    net = Network((Dense(d_in, d_out),))
    big = st.one_of(st.sampled_from((80.0, -80.0, 40.0, -40.0)), st.floats(-80, 80, width=32))
    params = {"0.weight": draw(hnp.arrays(np.float64, (d_out, d_in), elements=floats())),
              "0.bias": draw(hnp.arrays(np.float64, (d_out,), elements=big))}
    x = draw(hnp.arrays(np.float64, (n, d_in), elements=floats()))
    y = draw(hnp.arrays(np.float64, (n, d_out), elements=st.floats(0.0, 1.0, width=32)))
    reduction = Reduction(draw(st.sampled_from(("mean", "sum"))))
    return Problem(net, Loss("bce_with_logits"), reduction, params, Batch(x, y))


@pytest.mark.clause("3.8")
@given(problem=large_logit_problems())
def test_bce_with_logits_is_finite_and_accurate_for_logits_up_to_80(target, problem):
    with check(target, problem) as c:
        reduction_identity(c)


@st.composite
def huber_at_delta_problems(draw: st.DrawFn) -> Problem:
    """Huber problems whose residuals r = f − y are exactly ±δ or 0: one Dense layer with zero
    weights (f = b), targets y = b − s δ with s ∈ {1, −1, 0} per output (exact in float64; in
    float32 the rounded target puts r within rounding of ±δ, on either side)."""
    p = draw(loss_problems(losses=("huber",), nets=networks(max_depth=1),
                           reductions=("mean", "sum")))
    params = {k: (np.zeros_like(v) if k.endswith("weight") else v) for k, v in p.params.items()}
    p = p.with_params(params)
    f = forward(p).output
    s = draw(hnp.arrays(np.float64, f.shape, elements=st.sampled_from((1.0, -1.0, 0.0))))
    return p.with_batch(replace(p.batch, targets=f - s * p.loss.delta))


@pytest.mark.clause("3.8")
@given(problem=huber_at_delta_problems())
def test_the_huber_gradient_is_continuous_where_the_residual_meets_delta(target, method,
                                                                          problem):
    with check(target, problem) as c:
        reduction_identity(c)
        per_example_against_reference(c)


@pytest.mark.clause("3.8")
@pytest.mark.parametrize("delta", HUBER_DELTAS)
def test_the_reference_huber_slopes_agree_on_both_sides_of_delta(delta):
    """h_δ'(r) = r for |r| ≤ δ and δ sign(r) beyond: both are δ at r = δ. The one-sided
    difference quotients of the reference's Huber loss at ±δ, step h = 2⁻²⁰, agree with each
    other and with ±δ to within h (h_δ'' ≤ 1: truncation ≤ h/2 per side) plus rounding."""
    h = 2.0**-20
    for sign in (1.0, -1.0):
        at = sign * delta
        values = {s: float(per_example_losses(_huber_point(at + s * h, delta))[0])
                  for s in (-1, 0, 1)}
        left = (values[0] - values[-1]) / h
        right = (values[1] - values[0]) / h
        rounding = 4 * REFERENCE.u * max(abs(v) for v in values.values()) / h
        assert abs(left - at) <= h / 2 + rounding and abs(right - at) <= h / 2 + rounding, (
            f"§3.8 Huber slope at r = {at}: left {left!r}, right {right!r}")


def _huber_point(residual: float, delta: float) -> Problem:
    net = Network((Dense(1, 1),))
    return Problem(net, Loss("huber", delta=delta), Reduction("sum"),
                   {"0.weight": np.zeros((1, 1)), "0.bias": np.array([residual])},
                   Batch(np.zeros((1, 1)), np.zeros((1, 1))))


# -- §3.9 the sign of a loss ----------------------------------------------------------------------
@pytest.mark.clause("3.9")
@given(problem=loss_problems(losses=NON_NEGATIVE, sequences=None))
def test_non_negative_losses_are_never_below_zero_beyond_rounding(target, method, problem):
    with check(target, problem) as c:
        losses, _ = c.per_example()
        tol = c.tol().losses
        c.close(np.minimum(losses, 0.0), np.zeros_like(losses), tol, what="min(ℓ_i, 0)",
                call="np.minimum(checked_per_example(backend, problem, config, method)[0], 0)",
                expect=f"np.zeros({losses.size})")


@pytest.mark.clause("3.9")
def test_hypothesis_finds_a_negative_gaussian_nll():
    def negative(p: Problem) -> bool:
        p = p.rounded("float32")
        return bool(np.any(per_example_losses(p) < -problem_tolerance(p, "float32").losses))

    p = find(loss_problems(losses=("gaussian_nll",)), negative, settings=FIND)
    assert np.min(per_example_losses(p)) < 0, p


@st.composite
def mixed_sign_problems(draw: st.DrawFn) -> Problem:
    """Gaussian NLL batches whose first example is predicted exactly (y_0 = f(x_0)) with variance
    ¼: ℓ_0 = ½ log ¼ < 0; the others as drawn (mostly positive)."""
    p = draw(loss_problems(losses=("gaussian_nll",), min_batch=2, sequences=None))
    f = forward(p).output.astype(np.float32).astype(np.float64)
    b = p.batch
    y, v = b.targets.copy(), b.variances.copy()
    y[0], v[0] = f[0], 0.25
    return p.with_batch(replace(b, targets=y, variances=v))


@pytest.mark.clause("3.9")
@given(problem=mixed_sign_problems())
def test_the_identities_hold_for_losses_of_either_sign(target, problem):
    with check(target, problem) as c:
        losses = per_example_losses(c.problem)
        tol = c.tol().losses
        assume(np.any(losses < -tol) and np.any(losses > tol))
        reduction_identity(c)


def plus_minus_two_problem() -> Problem:
    """Two examples of f(x) = w x (w = 1) under Gaussian NLL, ℓ = ½(log v + r²/v):
    example 1: x = 2, y = 0, v = 1: r = 2, ℓ_1 = 2, g_1 = (r/v) x = 4;
    example 2: x = −1, v = e⁻⁵, y = −1 − e^{−5/2}: r = e^{−5/2} = √v, ℓ_2 = ½(−5 + 1) = −2,
    g_2 = (r/v) x = −e^{5/2} ≈ −12.18. The mean loss is 0; the mean gradient ≈ −4.09."""
    v2 = float(np.exp(-5.0))
    return Problem(Network((Dense(1, 1, bias=False),)), Loss("gaussian_nll"), Reduction("mean"),
                   {"0.weight": np.array([[1.0]])},
                   Batch(np.array([[2.0], [-1.0]]), np.array([[0.0], [-1.0 - np.sqrt(v2)]]),
                         variances=np.array([[1.0], [v2]])))


@pytest.mark.clause("3.9")
def test_losses_2_and_minus_2_average_to_0_yet_both_examples_move_the_weights(target, method):
    p = plus_minus_two_problem()
    # the construction (float64): ℓ = (2, −2) up to the rounding of e^{−5} and of its root
    assert np.allclose(per_example_losses(p), [2.0, -2.0], rtol=0, atol=1e-14)
    with check(target, p) as c:
        per_example_against_reference(c)
        reduction_identity(c)
        _, g = per_example_grads(c.problem)
        _, grad = batch_grad(c.problem)
        tol = c.tol()
        # Both examples move the weight, and their mean does too: none of these is zero.
        for what, value, bound in (("g_1", g["0.weight"][0], tol.grads["0.weight"][0]),
                                   ("g_2", g["0.weight"][1], tol.grads["0.weight"][1]),
                                   ("∇L", grad["0.weight"], tol.batch_grads["0.weight"])):
            assert np.all(np.abs(value) > bound), f"{what} = {value} is within rounding of 0"
