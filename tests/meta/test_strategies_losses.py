"""The chapter-3 strategies (spec §3.1–§3.9): ``loss_problems`` reaches every loss and option
(class weights, ignored rows, label smoothing, soft targets, Huber δ, BCE targets in (0, 1),
negative Gaussian NLL), sequences with empty and unequal lengths; its values are float32 numbers
in their documented ranges; it shrinks to the plainest problem."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from batchgrad_spec.strategies import (
    CLASS_WEIGHTS,
    HUBER_DELTAS,
    IGNORE_INDEX,
    LABEL_SMOOTHINGS,
    VARIANCE_RANGE,
    loss_problems,
    minimal,
    reaches,
)
from reference.grads import batch_grad, forward, per_example_grads, per_example_losses
from reference.layers import Dense, Network
from reference.losses import LOSS_NAMES as _LOSS_NAMES
from reference.losses import Loss, Reduction
from reference.problem import Problem

pytestmark = pytest.mark.meta

_CE = "softmax_cross_entropy"


def _ignored(p: Problem) -> np.ndarray:
    y = p.batch.targets
    if p.loss.ignore_index is None or y.dtype.kind == "f":
        return np.zeros(y.shape[:1], bool)
    return y == p.loss.ignore_index


_ONLY = {name: loss_problems(losses=(name,)) for name in _LOSS_NAMES}
"""The reach of each loss's options is checked where that loss is drawn."""

LOSS_FEATURES = {
    **{f"loss {name}": (loss_problems(), lambda p, name=name: p.loss.name == name)
       for name in _LOSS_NAMES},
    "class weights other than 1": (_ONLY[_CE], lambda p: p.loss.class_weights is not None
                                   and any(w != 1 for w in p.loss.class_weights)),
    "an ignored row among kept ones": (_ONLY[_CE], lambda p: bool(_ignored(p).any())),
    "label smoothing 0.1": (_ONLY[_CE], lambda p: p.loss.label_smoothing == 0.1),
    "label smoothing 1 (uniform targets)": (_ONLY[_CE], lambda p: p.loss.label_smoothing == 1.0),
    "soft targets that are not one-hot": (_ONLY[_CE], lambda p: p.batch.targets.dtype.kind == "f"
                                          and bool(np.any((p.batch.targets > 0)
                                                          & (p.batch.targets < 1)))),
    "class weights with smoothing and an ignored row": (
        _ONLY[_CE], lambda p: p.loss.class_weights is not None and p.loss.label_smoothing > 0
        and bool(_ignored(p).any())),
    "a class-weighted mean with Σ ω ≠ N": (
        _ONLY[_CE], lambda p: p.reduction.name == "mean" and p.loss.class_weights is not None
        and p.counts.sum() != p.batch.size),
    "huber delta other than 1": (_ONLY["huber"], lambda p: p.loss.delta != 1.0),
    "bce targets strictly between 0 and 1": (
        _ONLY["bce_with_logits"], lambda p: bool(np.any((p.batch.targets > 0)
                                                        & (p.batch.targets < 1)))),
    "a negative gaussian nll": (_ONLY["gaussian_nll"],
                                lambda p: bool(np.any(per_example_losses(p) < 0))),
}


@pytest.mark.clause("3.1")
@pytest.mark.parametrize("feature", list(LOSS_FEATURES))
def test_loss_problems_reach(feature):
    strategy, predicate = LOSS_FEATURES[feature]
    reaches(strategy, predicate)


SEQUENCE_FEATURES = {
    "a sequence without valid tokens": lambda p: bool(np.any(p.batch.token_mask.sum(1) == 0)),
    "unequal numbers of valid tokens": lambda p: len(set(p.batch.token_mask.sum(1))) > 1,
    "a masked token inside a sequence": lambda p: bool(np.any(
        ~p.batch.token_mask[:, :-1] & p.batch.token_mask[:, 1:])),
    "sequence_mean": lambda p: p.reduction.name == "sequence_mean",
    "four sequences of four tokens": lambda p: p.batch.inputs.shape[:2] == (4, 4),
    "cross-entropy over tokens with class weights": lambda p: p.loss.name == _CE
    and p.loss.class_weights is not None,
}


@pytest.mark.clause("3.7")
@pytest.mark.parametrize("feature", list(SEQUENCE_FEATURES))
def test_sequence_problems_reach(feature):
    reaches(loss_problems(sequences=True), SEQUENCE_FEATURES[feature])


@pytest.mark.clause("3.7")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=loss_problems(sequences=True))
def test_sequence_batches_keep_a_valid_token_where_the_reduction_needs_one(problem):
    """Every batch has a valid token; under sequence_mean every sequence has one."""
    m = problem.batch.token_mask
    assert m.any()
    if problem.reduction.name == "sequence_mean":
        assert m.any(axis=1).all()


@pytest.mark.clause("3.7")
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=loss_problems(sequences=True, equal_lengths=True))
def test_equal_lengths_give_every_sequence_as_many_valid_tokens(problem):
    counts = problem.batch.token_mask.sum(axis=1)
    assert counts.min() == counts.max() >= 1


@pytest.mark.clause("3.4")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=loss_problems(losses=(_CE,), ignore_index=True, min_batch=2))
def test_every_label_is_ignored_only_when_asked(problem):
    ignored = _ignored(problem)
    assert problem.loss.ignore_index == IGNORE_INDEX
    assert not ignored.all() and problem.counts.sum() > 0


@pytest.mark.clause("3.4")
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(all_=loss_problems(losses=(_CE,), ignored="all"),
       some=loss_problems(losses=(_CE,), ignored="some"))
def test_ignored_all_and_some_do_what_they_say(all_, some):
    assert _ignored(all_).all() and all_.counts.sum() == 0
    assert _ignored(some).any() and not _ignored(some).all()


@pytest.mark.clause("3.9")
def test_gaussian_nll_problems_reach_a_negative_loss_and_shrink_to_it_at_zero_residual():
    p = minimal(loss_problems(losses=("gaussian_nll",)), lambda p: bool(np.any(
        per_example_losses(p) < 0)))
    assert p.batch.size == 1 and float(forward(p).output[0, 0]) == p.batch.targets[0, 0]


@pytest.mark.clause("3.1")
def test_loss_problems_shrink_to_the_plainest_problem():
    """One Dense(1, 1), squared error, mean, one example, zeros; cross-entropy: two classes, no
    weights, no ignore_index, no smoothing, label 0; sequences: one token, valid."""
    p = minimal(loss_problems())
    assert p.network == Network((Dense(1, 1),)) and p.loss == Loss("squared_error")
    assert p.reduction == Reduction("mean") and p.batch.size == 1
    assert np.array_equal(p.batch.inputs, [[0.0]]) and np.array_equal(p.batch.targets, [[0.0]])
    ce = minimal(loss_problems(losses=(_CE,)))
    assert ce.loss == Loss(_CE) and ce.network.out_features == 2
    assert ce.batch.targets.dtype.kind == "i" and ce.batch.targets.tolist() == [0]
    seq = minimal(loss_problems(sequences=True))
    assert seq.batch.inputs.shape == (1, 1, 1) and seq.batch.token_mask.tolist() == [[True]]
    assert seq.loss == Loss("squared_error") and seq.reduction == Reduction("mean")


@pytest.mark.clause("3.1")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=loss_problems(sequences=None))
def test_loss_problem_values_are_float32_numbers_in_their_documented_ranges(problem):
    """Inputs, targets, weights, class weights and variances are float32 numbers (a float32
    backend sees the reference's values), |x|, |y| ≤ 2, BCE targets in [0, 1], variances in
    [¼, 4], class weights from CLASS_WEIGHTS, ε from LABEL_SMOOTHINGS, δ from HUBER_DELTAS,
    probability rows non-negative summing to 1; everything the reference computes is finite."""
    b, loss = problem.batch, problem.loss

    def f32(a: np.ndarray) -> bool:
        return bool(np.array_equal(a.astype(np.float32).astype(np.float64), a))

    assert f32(b.inputs) and np.all(np.abs(b.inputs) <= 2)
    if b.weights is not None:
        assert f32(b.weights)
    if loss.elementwise:
        assert f32(b.targets) and np.all(np.abs(b.targets) <= 2)
        if loss.name == "bce_with_logits":
            assert np.all((b.targets >= 0) & (b.targets <= 1))
        if loss.name == "gaussian_nll":
            assert b.variances is not None and f32(b.variances)
            assert np.all((b.variances >= VARIANCE_RANGE[0]) & (b.variances <= VARIANCE_RANGE[1]))
        assert loss.delta in HUBER_DELTAS
    elif b.targets.dtype.kind == "f":
        assert np.all(b.targets >= 0) and np.allclose(b.targets.sum(axis=1), 1.0)
    if loss.class_weights is not None:
        assert set(loss.class_weights) <= set(CLASS_WEIGHTS)
    assert loss.label_smoothing == 0.0 or loss.label_smoothing in LABEL_SMOOTHINGS
    losses_, grads = per_example_grads(problem)
    loss_, batch = batch_grad(problem)
    assert np.all(np.isfinite(losses_)) and np.isfinite(loss_)
    assert all(np.all(np.isfinite(g)) for g in (*grads.values(), *batch.values()))
