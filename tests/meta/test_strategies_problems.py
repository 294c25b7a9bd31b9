"""What ``networks()`` and ``problems()`` reach and shrink to (spec §1.6; the kink's exact zero,
§1.5): batch sizes 1 and 8, every depth, width, activation, loss and reduction, negative weights,
relu exactly at 0; the smallest problem as the minimal example."""

from __future__ import annotations

import numpy as np
import pytest

from batchgrad_spec.strategies import MAX_DEPTH, minimal, networks, problems, reaches
from reference.activations import CORE_ACTIVATIONS, Activation
from reference.grads import forward
from reference.layers import Dense, Network
from reference.losses import CORE_LOSSES, CORE_REDUCTIONS, Loss, Reduction
from reference.problem import Problem

pytestmark = pytest.mark.meta


def _activations(net: Network) -> set[str]:
    return {layer.name for layer in net.layers if isinstance(layer, Activation)}


def _widths(net: Network) -> list[int]:
    dense = [d for _, d in net.dense_layers()]
    return [dense[0].in_features] + [d.out_features for d in dense]


NETWORK_FEATURES = {
    "depth 1": lambda n: len(n.dense_layers()) == 1,
    f"depth {MAX_DEPTH}": lambda n: len(n.dense_layers()) == MAX_DEPTH,
    "width 1 inside a deep network": lambda n: len(n.dense_layers()) >= 3 and 1 in _widths(n)[1:-1],
    "width 8 (the default maximum)": lambda n: 8 in _widths(n),
    "a Dense layer without bias": lambda n: any(not d.bias for _, d in n.dense_layers()),
    **{f"activation {a}": (lambda n, a=a: a in _activations(n)) for a in CORE_ACTIVATIONS},
}


@pytest.mark.clause("1.6")
@pytest.mark.parametrize("feature", list(NETWORK_FEATURES))
def test_networks_reach(feature):
    reaches(networks(), NETWORK_FEATURES[feature])


PROBLEM_FEATURES = {
    "batch of one": lambda p: p.batch.size == 1,
    "batch of 8 (the default maximum)": lambda p: p.batch.size == 8,
    **{f"loss {name}": (lambda p, name=name: p.loss.name == name) for name in CORE_LOSSES},
    **{f"reduction {name}": (lambda p, name=name: p.reduction.name == name)
       for name in CORE_REDUCTIONS},
    "negative weights (weighted)": lambda p: p.batch.weights is not None and bool(
        np.any(p.batch.weights < 0)),
    "cross-entropy with two different labels": lambda p: p.loss.name == "softmax_cross_entropy"
    and len(set(p.batch.targets.tolist())) >= 2,
}


@pytest.mark.clause("1.6")
@pytest.mark.parametrize("feature", list(PROBLEM_FEATURES))
def test_problems_reach(feature):
    reaches(problems(), PROBLEM_FEATURES[feature])


def relu_preactivations(problem: Problem) -> list[np.ndarray]:
    """The pre-activation z (N, width) at every relu: the relu layer's input."""
    trace = forward(problem)
    return [trace.inputs[k] for k, layer in enumerate(problem.network.layers)
            if isinstance(layer, Activation) and layer.name == "relu"]


@pytest.mark.clause("1.5")
def test_problems_reach_an_exact_zero_preactivation_of_a_relu():
    """relu'(0) = 0 is only tested if some relu sees exactly 0: the default strategy gets there.

    (Hypothesis favours 0, so these zeros come from zero inputs or weights. A zero made by
    cancellation of non-zero products, w·a + b = 0 with w·a ≠ 0, is not reached in 2000 draws;
    the near-kink case that matters for float32 is constructed in test_ch7_numerics, §7.3.)
    """
    p = reaches(problems(), lambda p: any(np.any(z == 0) for z in relu_preactivations(p)))
    assert any(np.any(z == 0) for z in relu_preactivations(p))


# -- shrinking ------------------------------------------------------------------------------------
@pytest.mark.clause("1.6")
def test_problems_shrink_to_the_smallest_problem():
    """One Dense(1, 1) with bias, squared error, mean, one example, all zeros."""
    p = minimal(problems())
    assert p.network == Network((Dense(1, 1, bias=True),))
    assert (p.loss, p.reduction) == (Loss("squared_error"), Reduction("mean"))
    assert p.batch.size == 1 and p.batch.weights is None
    assert all(np.array_equal(v, np.zeros_like(v)) for v in p.params.values())
    assert np.array_equal(p.batch.inputs, [[0.0]]) and np.array_equal(p.batch.targets, [[0.0]])


@pytest.mark.clause("1.6")
def test_a_batch_size_condition_shrinks_to_exactly_that_size():
    p = minimal(problems(), lambda p: p.batch.size >= 3)
    assert p.batch.size == 3
    assert p.network == Network((Dense(1, 1),)) and p.loss == Loss("squared_error")


@pytest.mark.clause("1.6")
def test_a_two_layer_condition_shrinks_to_two_width_one_layers_and_identity():
    n = minimal(networks(), lambda n: len(n.dense_layers()) >= 2)
    assert n == Network((Dense(1, 1), Activation("identity"), Dense(1, 1)))
