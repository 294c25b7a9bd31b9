"""Faults in the per-example results: ℓ_i and g_i taken at the wrong parameters, in the wrong
convention or order, or with a side effect (spec §1.4, §2.5, §2.12), each a small wrapper of the
numpy reference backend:

* ``sequential_updates``      g_i taken after an SGD step on each earlier example (§2.5, §2.12)
* ``per_example_scaled``      per-example gradients in the scaled convention κ_i g_i (§2.12, §1.4)
* ``mutates_params``          an SGD step applied to ``problem.params`` in place (§2.5)
* ``per_example_reversed``    per-example gradients returned in reverse order, losses in order
  (§2.12)
"""

from __future__ import annotations

import numpy as np

from reference.contract import Config
from reference.grads import combine, per_example_grads
from reference.problem import Problem
from reference.types import Grads

from .base import Faulty, PerExample

__all__ = ["LEARNING_RATE", "mutates_params", "per_example_reversed", "per_example_scaled",
           "sequential_updates"]

LEARNING_RATE = 0.1
"""η of the SGD steps that ``sequential_updates`` and ``mutates_params`` take."""


class SequentialUpdates(Faulty):
    """Per-example gradients taken one after another with an SGD step in between (both methods):
    g_1 at θ_1 = θ, θ_{i+1} = θ_i − η g_i, g_{i+1} at θ_{i+1}, … ; ℓ_i likewise at θ_i. The batch
    loss and gradient are Σ κ_i ℓ_i and Σ κ_i g_i of those. Right only when N = 1 or the steps
    are zero; steep problems can make the steps diverge to inf/NaN (a contract failure)."""

    fault = "per-example gradients after sequential SGD steps"

    def per_example(self, problem: Problem, config: Config, method: str) -> PerExample:
        if method not in self.per_example_methods():
            raise ValueError(f"unknown per-example method {method!r}")
        dtype = np.dtype(config.dtype)
        theta = {k: v.copy() for k, v in problem.params.items()}
        losses, grads = [], []
        with np.errstate(all="ignore"):  # the steps may diverge: non-finite answers are reported
            for i in range(problem.batch.size):
                one = problem.with_batch(problem.batch.take([i])).with_params(theta)
                loss_i, g_i = per_example_grads(one, dtype)
                losses.append(loss_i)
                grads.append(g_i)
                theta = {k: theta[k] - LEARNING_RATE * g_i[k][0] for k in theta}
        return (np.concatenate(losses),
                {k: np.concatenate([g[k] for g in grads]) for k in grads[0]})

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        losses, grads = self.per_example(problem, config, "loop")
        kappa = problem.coefficients
        return float(np.sum(kappa * losses)), combine(grads, kappa)


class PerExampleScaled(Faulty):
    """``per_example`` returns κ_i g_i (g_i/N under mean, the terms that sum to ∇L) instead of
    g_i (spec §1.4); losses ℓ_i and the batch results are right."""

    fault = "per-example gradients scaled by kappa_i"

    def per_example(self, problem: Problem, config: Config, method: str) -> PerExample:
        losses, grads = super().per_example(problem, config, method)
        kappa = problem.coefficients
        return losses, {k: v * kappa.reshape((-1,) + (1,) * (v.ndim - 1)).astype(v.dtype)
                        for k, v in grads.items()}


class MutatesParams(Faulty):
    """``per_example`` returns the right ℓ_i and g_i, and then takes an SGD step on the caller's
    θ in place: ``problem.params[k] -= η Σ κ_i g_i`` (an optimizer step hidden in a query)."""

    fault = "per_example updates problem.params in place"

    def per_example(self, problem: Problem, config: Config, method: str) -> PerExample:
        losses, grads = super().per_example(problem, config, method)
        step = combine(grads, problem.coefficients)
        for k, v in problem.params.items():
            v -= LEARNING_RATE * step[k]
        return losses, grads


class PerExampleReversed(Faulty):
    """``per_example`` returns ℓ_i in order but the gradients in reverse order (g_{N−1−i} at index
    i, as a stack-based loop would): every gradient is some example's, labelled as another's. Sums
    are unchanged (§2.13 holds); right when N = 1 or the gradients are symmetric."""

    fault = "per-example gradients in reverse order"

    def per_example(self, problem: Problem, config: Config, method: str) -> PerExample:
        losses, grads = super().per_example(problem, config, method)
        return losses, {k: v[::-1].copy() for k, v in grads.items()}


sequential_updates = SequentialUpdates("sequential_updates")
per_example_scaled = PerExampleScaled("per_example_scaled")
mutates_params = MutatesParams("mutates_params")
per_example_reversed = PerExampleReversed("per_example_reversed")
