"""The chapter-4 strategies (spec §1.6, §4.1–§4.7): ``layer_networks`` and ``layer_problems``
reach every coupling layer, placement, width-1 norm, dropout rate and running-variance bound,
draw valid bounded problems (N ≥ 2 with a train-mode BatchNorm), and shrink to a width-one
LayerNorm before one Dense layer; ``problems()`` draws no chapter-4 layer (opt-in)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from batchgrad_spec.strategies import (
    LAYER_KINDS,
    MAX_DROPOUT_P,
    MIN_RUNNING_VAR,
    layer_kind,
    layer_networks,
    layer_problems,
    minimal,
    problems,
    reaches,
)
from reference.activations import CORE_ACTIVATIONS as _CORE_ACTS
from reference.activations import Activation
from reference.grads import batch_grad, forward, per_example_grads
from reference.layers import Dense, Dropout, Network
from reference.norms import BatchNorm, LayerNorm
from reference.problem import Problem
from reference.types import Undefined

pytestmark = pytest.mark.meta


def _activations(net: Network) -> set[str]:
    return {layer.name for layer in net.layers if isinstance(layer, Activation)}


def _kinds(net: Network) -> set[str]:
    return {kind for kind in map(layer_kind, net.layers) if kind is not None}


def _leaky_zero(p: Problem) -> bool:
    trace = forward(p)
    return any(np.any(trace.inputs[k] == 0) for k, la in enumerate(p.network.layers)
               if isinstance(la, Activation) and la.name == "leaky_relu")


LAYER_FEATURES = {
    **{f"layer {kind}": (lambda p, kind=kind: kind in _kinds(p.network)) for kind in LAYER_KINDS},
    **{f"activation {a}": (lambda p, a=a: a in _activations(p.network))
       for a in ("leaky_relu", "elu")},
    "a coupling layer before the first Dense": lambda p: not isinstance(p.network.layers[0],
                                                                        (Dense, Activation)),
    "a coupling layer after the last Dense": lambda p: not isinstance(p.network.layers[-1],
                                                                      (Dense, Activation)),
    "three coupling layers": lambda p: len(_kinds(p.network)) >= 1 and sum(
        not isinstance(la, (Dense, Activation)) for la in p.network.layers) == 3,
    "a LayerNorm of width 1 (x̂ = 0)": lambda p: any(
        isinstance(la, LayerNorm) and la.features == 1 for la in p.network.layers),
    "a dropout mask with a kept and a dropped unit": lambda p: p.batch.dropout is not None and any(
        np.any(m == 0) and np.any(m == 1) for m in p.batch.dropout.values()),
    "dropout p = 0": lambda p: any(isinstance(la, Dropout) and la.p == 0
                                   for la in p.network.layers),
    f"dropout p = {MAX_DROPOUT_P}": lambda p: any(isinstance(la, Dropout) and la.p == MAX_DROPOUT_P
                                                  for la in p.network.layers),
    f"running variance {MIN_RUNNING_VAR}": lambda p: any(
        isinstance(la, BatchNorm) and not la.training and MIN_RUNNING_VAR in (la.running_var or ())
        for la in p.network.layers),
    "cross-entropy with a norm after the last Dense": lambda p: p.loss.name ==
    "softmax_cross_entropy" and isinstance(p.network.layers[-1], (LayerNorm, BatchNorm)),
    "an exact-zero pre-activation of a leaky_relu (the kink, §4.6)": _leaky_zero,
}


@pytest.mark.clause("1.6")
@pytest.mark.parametrize("feature", list(LAYER_FEATURES))
def test_layer_problems_reach(feature):
    reaches(layer_problems(), LAYER_FEATURES[feature])


@pytest.mark.clause("1.6")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=layer_problems())
def test_layer_problems_are_valid_bounded_and_train_mode_batchnorm_has_two_examples(problem):
    """Every drawn problem runs in the reference in float64 and float32 without overflow, has
    N ≥ 2 when it has a train-mode BatchNorm (§4.2), the documented ranges of p and running
    variances, and per-example gradients exactly when no train-mode BatchNorm couples it."""
    net = problem.network
    if net.couples_examples:
        assert problem.batch.size >= 2
    for la in net.layers:
        if isinstance(la, Dropout):
            assert 0.0 <= la.p <= MAX_DROPOUT_P
        if isinstance(la, BatchNorm) and not la.training:
            assert all(MIN_RUNNING_VAR <= v <= 4.0 for v in la.running_var or ())
    assert np.all(np.abs(forward(problem).output) < 1e7)
    for dtype in (np.float64, np.float32):
        loss, grads = batch_grad(problem.rounded(np.dtype(dtype).name), dtype)
        assert math.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads.values())
    try:
        losses, grads = per_example_grads(problem)
        assert not net.couples_examples
        assert np.all(np.isfinite(losses)) and all(np.all(np.isfinite(g)) for g in grads.values())
    except Undefined:
        assert net.couples_examples


@pytest.mark.clause("1.6")
def test_layer_networks_shrink_to_a_width_one_layernorm_before_one_dense_layer():
    assert minimal(layer_networks()) == Network((LayerNorm(1), Dense(1, 1)))
    p = minimal(layer_problems(require=("batch_norm",)))
    assert p.network == Network((BatchNorm(1), Dense(1, 1))) and p.batch.size == 2


@pytest.mark.clause("1.6")
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems())
def test_default_strategies_draw_no_chapter_4_layer_or_activation(problem):
    """Chapter 4 is opt-in: ``problems()`` and ``networks()`` draw what they drew before it."""
    assert all(isinstance(la, (Dense, Activation)) for la in problem.network.layers)
    assert _activations(problem.network) <= set(_CORE_ACTS)
    assert problem.batch.dropout is None
    assert set(problem.params) == set(problem.network.param_shapes())
