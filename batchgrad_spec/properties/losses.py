"""Chapter 3's clause formulas, written out, and the properties other code runs too (the loss
meta-tests, the gallery): the general mean §3.1, the N·D mean §3.2, class weights §3.3, ignored
labels §3.4 and label smoothing §3.5. See ``batchgrad_spec.properties``.

Where a clause states a formula (a denominator, a smoothing term), the expected value is written
out here from the clause, independently of ``reference.problem.Problem.counts`` and of
``reference.ops``' loss code, so the numpy backend (the reference itself) is checked too. When a
backend is compared with the reference on a *different* problem with the same exact answer (rows
dropped, masked tokens changed, one-hot soft targets for labels), the tolerance is the backend's
bound for its problem plus the reference's own bound for the other (spec §7.2).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest
from hypothesis import Phase, given, settings

from reference.batch import Batch
from reference.bounds import error_bound
from reference.grads import batch_grad, combine, forward, per_example_grads
from reference.losses import Reduction
from reference.numerics import REFERENCE, precision
from reference.ops import log_softmax
from reference.problem import Problem

from ..harness import Check, check
from ..strategies import loss_problems
from .core import per_example_against_reference

__all__ = [
    "CE", "ELEMENTWISE", "FIND", "HERE", "NON_NEGATIVE", "Between", "against_other_problem",
    "between",
    "cross_entropy_reduction", "cross_entropy_terms", "elementwise_losses", "float32_difference",
    "kept_rows", "omega", "one_hot", "per_example_against_reference",
    "test_class_weighted_cross_entropy_mean_divides_by_the_weights_of_the_kept_labels",
    "test_ignored_rows_count_as_if_they_were_dropped_from_the_batch",
    "test_label_smoothing_averages_its_uniform_term_over_the_kept_labels_only",
    "test_the_mean_divides_the_summed_losses_by_the_total_count",
    "test_the_mean_of_an_elementwise_loss_divides_by_n_times_d", "valid_tokens",
]

CE = "softmax_cross_entropy"
ELEMENTWISE = ("squared_error", "bce_with_logits", "huber", "gaussian_nll")
NON_NEGATIVE = ("squared_error", CE, "bce_with_logits", "huber")
"""The losses that are ≥ 0 for every input (spec §3.9); Gaussian NLL is not."""

FIND = settings(max_examples=1000, database=None, deadline=None, phases=[Phase.generate])
"""``find`` for the clauses that say Hypothesis finds a counterexample: first hit, no shrinking."""

HERE = "__import__('batchgrad_spec.properties.losses').properties.losses"
"""This module, as an expression a repro snippet can evaluate."""


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


def kept_rows(problem: Problem) -> list[int]:
    """The rows whose label is not ``ignore_index`` (spec §3.4)."""
    y = problem.batch.targets
    return [i for i in range(problem.batch.size) if y[i] != problem.loss.ignore_index]


def one_hot(problem: Problem) -> Problem:
    """The same problem with each integer label y_i given as the probability row e_{y_i}."""
    y = problem.batch.targets
    q = np.eye(problem.network.out_features)[y]
    return problem.with_batch(replace(problem.batch, targets=q))


def valid_tokens(problem: Problem) -> Problem:
    """The valid tokens of a sequence batch as a batch of single predictions, under ``mean`` or
    ``sum`` as the sequence batch (its Σ ω is the sequence batch's), else ``sum``."""
    b = problem.batch
    m = b.token_mask
    flat = Batch(b.inputs[m], b.targets[m],
                 variances=None if b.variances is None else b.variances[m])
    red = problem.reduction if problem.reduction.name in ("mean", "sum") else Reduction("sum")
    return Problem(problem.network, problem.loss, red, problem.params, flat)


# -- comparisons ----------------------------------------------------------------------------------
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


def against_other_problem(c: Check, problem: Problem, expected: Problem, *, expect: str,
                          what: str, expr: str = "problem") -> None:
    """Backend L and ∇L of ``problem`` (written ``expr`` in the repro snippet) against the
    reference's for ``expected`` (same answer)."""
    __tracebackhide__ = True
    loss, grads = c.loss_and_grad(problem, expr=expr)
    ref_loss, ref_grads = batch_grad(expected)
    tol = between(c, problem, expected)
    c.close(loss, ref_loss, tol.loss, what=f"L {what}", expect=f"{expect}[0]")
    c.close(grads, ref_grads, tol.batch_grads, what=f"∇L {what}", expect=f"{expect}[1]")


def float32_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray],
                       tol_a: dict[str, np.ndarray], tol_b: dict[str, np.ndarray]) -> bool:
    """Whether two reference gradients differ by more than both float32 tolerances together: a
    difference no float32 (or float64) backend's rounding could explain."""
    return any(np.any(np.abs(a[k] - b[k]) > tol_a[k] + tol_b[k]) for k in a)


def cross_entropy_reduction(c: Check, what_loss: str, what_grads: str) -> None:
    """Backend L and ∇L of a cross-entropy with integer labels against Σ ℓ_i and Σ g_i, divided
    under ``mean`` by Σ over kept labels of w[y_i] (``cross_entropy_terms``, spec §3.3–§3.5)."""
    __tracebackhide__ = True
    loss, grads = c.loss_and_grad()
    losses, denominator = cross_entropy_terms(c.problem)
    mean = c.problem.reduction.name == "mean"
    scale = 1.0 / denominator if mean else 1.0
    _, ref_grads = per_example_grads(c.problem)
    tol = c.tol()
    n = c.problem.batch.size
    expr = f"{HERE}.cross_entropy_terms(problem)"
    c.close(loss, float(losses.sum()) * scale, tol.loss, what=what_loss,
            expect=f"float({expr}[0].sum())" + (f" / {expr}[1]" if mean else ""))
    c.close(grads, combine(ref_grads, np.full(n, scale)), tol.batch_grads, what=what_grads,
            expect=f"combine(per_example_grads(problem)[1], np.full({n}, "
                   + (f"1.0 / {expr}[1]))" if mean else "1.0))"))


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
                expect=f"float(per_example_grads(problem)[0].sum()) / {HERE}.omega(problem).sum()")
        c.close(grads, combine(ref_grads, np.full(c.problem.batch.size, 1.0 / total)),
                tol.batch_grads, what="∇L = Σ g_i / Σ ω_i",
                expect=f"combine(per_example_grads(problem)[1], np.full(problem.batch.size, "
                       f"1.0 / {HERE}.omega(problem).sum()))")


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
                expect=f"float({HERE}.elementwise_losses(problem).sum()) / "
                       f"({n} * {d})")
        c.close(grads, combine(ref_grads, np.full(n, 1.0 / n)), tol.batch_grads,
                what="∇L = (1/N) Σ g_i",
                expect=f"combine(per_example_grads(problem)[1], np.full({n}, 1.0 / {n}))")


# -- §3.3 class-weighted cross-entropy ------------------------------------------------------------
@pytest.mark.clause("3.3")
@given(problem=loss_problems(losses=(CE,), class_weights=True, label_smoothing=False,
                             soft_targets=False, reductions=("mean", "sum")))
def test_class_weighted_cross_entropy_mean_divides_by_the_weights_of_the_kept_labels(
        target, problem):
    with check(target, problem) as c:
        how = "/ Σ_kept w[y_i]" if c.problem.reduction.name == "mean" else ""
        cross_entropy_reduction(c, f"L = Σ w[y_i] nll_i {how}", f"∇L = Σ g_i {how}")


# -- §3.4 ignored labels --------------------------------------------------------------------------
@pytest.mark.clause("3.4")
@given(problem=loss_problems(losses=(CE,), ignored="some", reductions=("mean", "sum")))
def test_ignored_rows_count_as_if_they_were_dropped_from_the_batch(target, problem):
    with check(target, problem) as c:
        keep = kept_rows(c.problem)
        out = sorted(set(range(c.problem.batch.size)) - set(keep))
        dropped = c.problem.with_batch(c.problem.batch.take(keep))
        against_other_problem(c, c.problem, dropped,
                              expect=f"batch_grad(problem.with_batch(problem.batch.take({keep})))",
                              what=f"with rows {out} ignored vs dropped")


# -- §3.5 label smoothing -------------------------------------------------------------------------
@pytest.mark.clause("3.5")
@given(problem=loss_problems(losses=(CE,), label_smoothing=True, soft_targets=False,
                             reductions=("mean", "sum")))
def test_label_smoothing_averages_its_uniform_term_over_the_kept_labels_only(target, problem):
    with check(target, problem) as c:
        how = " / Σ_kept w[y_i]" if c.problem.reduction.name == "mean" else ""
        cross_entropy_reduction(
            c, "L = Σ_kept [(1−ε) w[y_i] nll_i + (ε/C) Σ_k w_k (−log p_ik)]" + how, "∇L")
