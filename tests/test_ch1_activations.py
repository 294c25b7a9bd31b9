"""Spec §1.5, one activation at a time: each backend's activation in a small fixed network, its
loss and gradient against the reference within the derived tolerance (§7.2).

The property tests draw activations at random, so a backend whose one activation is wrong fails
many of them at once; this test names the activation in its id
(``test_…[tensorflow-cpu-float64-gelu]``), which is what a known deviation of one activation in
one dtype is declared against (``xfails/tensorflow.txt``: TensorFlow's float64 GELU)."""

from __future__ import annotations

import numpy as np
import pytest

from batchgrad_spec.harness import check
from reference.activations import ACTIVATION_NAMES, Activation
from reference.batch import Batch
from reference.grads import batch_grad, batch_loss
from reference.layers import Dense, Network
from reference.losses import Loss, Reduction
from reference.problem import Problem


def fixed_problem(name: str) -> Problem:
    """Dense(1, 64) → name → Dense(64, 1), squared error, mean over 4 examples: the first layer
    spreads the pre-activations over [−6, 6] (both tails and the middle of every activation;
    no exact zero, so no kink convention is involved: §4.6 tests those)."""
    z = np.linspace(-6.0, 6.0, 64) + 0.01
    params = {"0.weight": z[:, None], "0.bias": np.full(64, 0.03),
              "2.weight": np.linspace(-1.0, 1.0, 64)[None, :] / 8, "2.bias": np.array([0.1])}
    batch = Batch(np.array([[1.0], [0.5], [-0.75], [0.25]]),
                  np.array([[0.5], [-0.25], [1.0], [0.0]]))
    return Problem(Network((Dense(1, 64), Activation(name), Dense(64, 1))),
                   Loss("squared_error"), Reduction("mean"), params, batch)


@pytest.mark.clause("1.5")
@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_each_activation_in_a_fixed_network_matches_the_reference(target, name):
    with check(target, fixed_problem(name)) as c:
        loss, grads = c.loss_and_grad()
        tol = c.tol()
        c.close(loss, batch_loss(c.problem), tol.loss, what="L", expect="batch_loss(problem)")
        c.close(grads, batch_grad(c.problem)[1], tol.batch_grads, what="∇L",
                expect="batch_grad(problem)[1]")
