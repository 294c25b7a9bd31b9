"""Deliberately wrong backends for chapter 4 (coupling layers and kinks).

Each wraps the reference's ``NumpyBackend`` and gets exactly one thing wrong; loadable as
``--backend batchgrad_spec.faults.layers:<name>``, and the subjects of
``tests/meta/test_layer_faults.py``:

* ``bn_detached_statistics``       train-mode BatchNorm differentiated with its batch statistics
  μ_B, v_B treated as constants: the backward pass is ā = s x̂̄ (the eval-mode rule) instead of
  s(x̂̄ − mean x̂̄ − x̂ mean(x̂̄ x̂)) (§4.2). A classic of hand-written backward passes, and what
  "freezing the statistics" gives. Right where nothing below the BatchNorm has parameters, or
  where the two terms cancel.
* ``bn_batch_of_one_per_example``  ``per_example`` through a train-mode BatchNorm returns the
  gradient of each example as a batch of one — what ``jax.vmap(jax.grad(…))`` of a one-example
  loss silently computes — instead of raising ``Undefined`` (§4.3).
* ``leaky_relu_slope_one_at_zero`` leaky_relu'(0) = 1 (``jnp.where(x >= 0, …)``, the
  convention of ``jax.nn.leaky_relu``) instead of the negative slope 0.01 (§4.6).

The faults are injected by swapping one rule of the reference for the duration of the backend's
own call (``unittest.mock.patch``, restored on exit; the suite is single-threaded per process):
the reference's ``vjp_normalize`` for the statistics' axis 0, and the slope of ``leaky_relu`` in
``reference.ops.ACTIVATIONS``. Expected values and tolerances are computed outside these calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from unittest import mock

import numpy as np

from reference import norms as reference_norms
from reference.contract import Config
from reference.grads import batch_grad
from reference.ops import ACTIVATIONS, LEAKY_SLOPE, vjp_normalize
from reference.problem import Problem
from reference.types import Grads

from .base import Faulty, PerExample

__all__ = ["bn_batch_of_one_per_example", "bn_detached_statistics",
           "leaky_relu_slope_one_at_zero"]


class _Patched(Faulty):
    """The numpy reference backend computing under ``patched()``: one rule of the reference
    swapped for the duration of each call."""

    def patched(self) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext()

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        with self.patched():
            return super().loss_and_grad(problem, config)

    def per_example(self, problem: Problem, config: Config, method: str) -> PerExample:
        with self.patched():
            return super().per_example(problem, config, method)


def _detached_vjp_normalize(dx: np.ndarray, xhat: np.ndarray, s: np.ndarray,
                            axis: int) -> np.ndarray:
    """Batch statistics (axis 0) held constant: ā = s x̂̄. LayerNorm (axis −1) stays right."""
    if axis == 0:
        return dx * s
    return vjp_normalize(dx, xhat, s, axis)


class BNDetachedStatistics(_Patched):
    """Train-mode BatchNorm's backward pass without the terms of μ_B and v_B (see module)."""

    fault = "BatchNorm batch statistics detached in backward"

    def patched(self) -> contextlib.AbstractContextManager[object]:
        return mock.patch.object(reference_norms, "vjp_normalize", _detached_vjp_normalize)


class BNBatchOfOnePerExample(Faulty):
    """``per_example`` returns (ℓ({x_i}), ∇L({x_i})) of each example alone when the network has
    a train-mode BatchNorm, instead of raising ``Undefined``; otherwise right."""

    fault = "per-example gradients through train-mode BatchNorm as batches of one"

    def per_example(self, problem: Problem, config: Config, method: str) -> PerExample:
        if not problem.network.couples_examples:
            return super().per_example(problem, config, method)
        dtype = np.dtype(config.dtype)
        rows = [batch_grad(problem.with_batch(problem.batch.take([i])).with_reduction("sum"),
                           dtype) for i in range(problem.batch.size)]
        return (np.array([loss for loss, _ in rows]),
                {k: np.stack([g[k] for _, g in rows]) for k in rows[0][1]})


def _leaky_relu_slope_one_at_zero(z: np.ndarray, a: np.ndarray) -> np.ndarray:
    return np.where(z >= 0, 1.0, LEAKY_SLOPE).astype(z.dtype)


class LeakyReluSlopeOneAtZero(_Patched):
    """leaky_relu'(0) = 1 instead of 0.01 (see module); right wherever no leaky_relu
    pre-activation is exactly 0."""

    fault = "leaky_relu'(0) = 1"

    @contextlib.contextmanager
    def patched(self) -> Iterator[object]:
        f, _ = ACTIVATIONS["leaky_relu"]
        with mock.patch.dict(ACTIVATIONS, {"leaky_relu": (f, _leaky_relu_slope_one_at_zero)}):
            yield


bn_detached_statistics = BNDetachedStatistics("bn_detached_statistics")
bn_batch_of_one_per_example = BNBatchOfOnePerExample("bn_batch_of_one_per_example")
leaky_relu_slope_one_at_zero = LeakyReluSlopeOneAtZero("leaky_relu_slope_one_at_zero")
