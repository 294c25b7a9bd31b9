"""Chapter 4's properties that other code runs too (the layer meta-tests): train-mode BatchNorm's
batch gradient (§4.2), per-example gradients through it raising ``Undefined`` (§4.3), leaky_relu's
slope at an exact zero (§4.6); and the identities every per-example layer's tests check. See
``batchgrad_spec.properties``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given

from reference.grads import batch_grad, combine, per_example_grads
from reference.types import Undefined

from ..harness import BATCH_CALL, PER_EXAMPLE_CALL, Check, check
from ..strategies import layer_problems, networks, problems
from .core import per_example_against_reference
from .definitions import first_layer_zeroed

__all__ = [
    "ACTS", "TRAIN_BN", "batch_against_reference", "per_example_identities",
    "test_leaky_relu_slope_at_an_exact_zero_preactivation_is_the_negative_slope",
    "test_per_example_gradients_through_train_mode_batchnorm_raise_undefined",
    "test_train_mode_batchnorm_batch_gradient_matches_the_reference",
]

ACTS = ("identity", "relu", "elu", "tanh")
"""Activations of the layer clauses' networks. leaky_relu is §4.6's: its kink is where JAX
deviates, and its own tests (with per-example layers) cover it away from the kink."""
TRAIN_BN = layer_problems(require=("batch_norm",), activations=ACTS)


def per_example_identities(c: Check) -> None:
    """Backend ℓ_i, g_i against the reference's, and Σ κ_i g_i (backend) against its own ∇L."""
    __tracebackhide__ = True
    _, grads = per_example_against_reference(c)
    _, batch = c.loss_and_grad()
    c.close(combine(grads, c.problem.coefficients), batch, c.tol(twice=True).batch_grads,
            what="Σ κ_i g_i (backend) vs ∇L (backend)",
            call=f"combine({PER_EXAMPLE_CALL}[1], problem.coefficients)", expect=f"{BATCH_CALL}[1]")


def batch_against_reference(c: Check, what_loss: str, what_grads: str) -> None:
    """Backend L and ∇L against the reference's ``batch_grad`` (a coupled batch included)."""
    __tracebackhide__ = True
    loss, grads = c.loss_and_grad()
    ref_loss, ref = batch_grad(c.problem)
    tol = c.tol()
    c.close(loss, ref_loss, tol.loss, what=what_loss, expect="batch_grad(problem)[0]")
    c.close(grads, ref, tol.batch_grads, what=what_grads, expect="batch_grad(problem)[1]")


# -- §4.2 train-mode BatchNorm: ∇L is defined -----------------------------------------------------
@pytest.mark.clause("4.2.1")
@given(problem=TRAIN_BN)
def test_train_mode_batchnorm_batch_gradient_matches_the_reference(target, problem):
    with check(target, problem) as c:
        batch_against_reference(c, "L (batch statistics)", "∇L through the batch statistics")


# -- §4.3 per-example gradients through train-mode BatchNorm are undefined -------------------------
@pytest.mark.clause("4.3")
@given(problem=TRAIN_BN)
def test_per_example_gradients_through_train_mode_batchnorm_raise_undefined(
        target, method, problem):
    with check(target, problem) as c:
        try:
            c.per_example()
        except Undefined as exc:
            if "§4.3" not in str(exc):
                c.fail(f"raised Undefined, but its message does not cite §4.3: {exc}")
            return
        c.fail("returned per-example gradients through a train-mode BatchNorm, where ℓ_i depends "
               "on every example; the contract requires reference.contract.Undefined citing §4.3",
               snippet=(PER_EXAMPLE_CALL, "'reference.contract.Undefined'"))


# -- §4.6 kinks ------------------------------------------------------------------------------------
@pytest.mark.clause("4.6")
@given(problem=problems(nets=networks(min_depth=2, activations=("leaky_relu",))))
def test_leaky_relu_slope_at_an_exact_zero_preactivation_is_the_negative_slope(
        target, method, problem):
    """As §1.5's relu test: the first Dense layer zeroed, so every first pre-activation is 0.
    Only examples where the slope there matters are kept (some gradient of layer 0 non-zero)."""
    p = first_layer_zeroed(problem)
    with check(target, p) as c:
        _, ref = per_example_grads(c.problem)
        assume(any(np.any(v) for k, v in ref.items() if k.startswith("0.")))
        _, grads = c.per_example()
        c.close(grads, ref, c.tol().grads, what="g_i with z = 0 at the first leaky_relu",
                expect="per_example_grads(problem)[1]")
