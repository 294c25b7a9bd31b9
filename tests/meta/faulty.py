"""Deliberately wrong backends: the mistakes the property suite exists to catch.

Each is a small wrapper around the reference's ``NumpyBackend`` (fast, and exactly right except
for the one documented fault), loadable as ``--backend tests.meta.faulty:<name>``. They are the
subjects of ``tests/meta/test_faulty_backends.py`` (which property catches which fault) and
``tests/meta/test_contract_errors.py`` (what the user sees).

Semantic faults (the answers are well-formed but wrong):

* ``mean_over_n_minus_1``  ``mean`` reduction normalised by N − 1 (§2.1)
* ``sequential_updates``   g_i taken after an SGD step on each earlier example (§2.5, §2.12)
* ``last_example_only``    L and ∇L of the last example only (§2.1)
* ``per_example_scaled``   per-example gradients in the scaled convention κ_i g_i (§2.12, §1.4)
* ``mutates_params``       an SGD step applied to ``problem.params`` in place (§2.5)

Contract faults (spec §8.3: the contract's validation turns them into clause failures):

* ``wrong_shape``    the first gradient has an extra trailing axis
* ``returns_nan``    NaN in the first batch gradient
* ``raises``         ``loss_and_grad`` raises ``RuntimeError("boom")``
* ``not_a_backend``  an object lacking most of the contract (rejected at load, spec §8.2)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from reference.contract import Config, Grads
from reference.grads import batch_grad, combine, per_example_grads
from reference.numpy_backend import NumpyBackend
from reference.problem import Problem

PerExample = tuple[np.ndarray, Grads]

LEARNING_RATE = 0.1
"""η of the SGD steps that ``sequential_updates`` and ``mutates_params`` take."""


class _Faulty(NumpyBackend):
    """The numpy reference backend under another name; subclasses override one thing."""

    fault = ""

    def __init__(self, name: str) -> None:
        self.name = name

    def versions(self) -> Mapping[str, str]:
        return {**super().versions(), "fault": self.fault}


def _first(grads: Grads) -> str:
    return next(iter(grads))


class MeanOverNMinus1(_Faulty):
    """Under ``mean``, L and ∇L are Σ ℓ_i/(N − 1) and Σ g_i/(N − 1) (the unbiased-variance
    normaliser); at N = 1 that is x/0: inf, or NaN where the sum is 0."""

    fault = "mean divides by N-1"

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        loss, grads = super().loss_and_grad(problem, config)
        if problem.reduction.name != "mean":
            return loss, grads
        n = problem.batch.size
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.float64(n) / np.float64(n - 1)
            return float(loss * scale), {k: v * v.dtype.type(scale) for k, v in grads.items()}


class SequentialUpdates(_Faulty):
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


class LastExampleOnly(_Faulty):
    """L and ∇L are those of the last example processed alone, {x_N} under the same reduction:
    ℓ_N and g_N for mean, sum and weighted_mean, c_N ℓ_N and c_N g_N for weighted. Per-example
    results are right. Right only when N = 1 or the examples' contributions coincide."""

    fault = "batch gradient of the last example only"

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        last = problem.with_batch(problem.batch.take([problem.batch.size - 1]))
        return batch_grad(last, np.dtype(config.dtype))


class PerExampleScaled(_Faulty):
    """``per_example`` returns κ_i g_i (g_i/N under mean, the terms that sum to ∇L) instead of
    g_i (spec §1.4); losses ℓ_i and the batch results are right."""

    fault = "per-example gradients scaled by kappa_i"

    def per_example(self, problem: Problem, config: Config, method: str) -> PerExample:
        losses, grads = super().per_example(problem, config, method)
        kappa = problem.coefficients
        return losses, {k: v * kappa.reshape((-1,) + (1,) * (v.ndim - 1)).astype(v.dtype)
                        for k, v in grads.items()}


class MutatesParams(_Faulty):
    """``per_example`` returns the right ℓ_i and g_i, and then takes an SGD step on the caller's
    θ in place: ``problem.params[k] -= η Σ κ_i g_i`` (an optimizer step hidden in a query)."""

    fault = "per_example updates problem.params in place"

    def per_example(self, problem: Problem, config: Config, method: str) -> PerExample:
        losses, grads = super().per_example(problem, config, method)
        step = combine(grads, problem.coefficients)
        for k, v in problem.params.items():
            v -= LEARNING_RATE * step[k]
        return losses, grads


class WrongShape(_Faulty):
    """The first parameter's gradient has an extra trailing axis: (*shape, 1) from
    ``loss_and_grad`` and (N, *shape, 1) from ``per_example``. Values are right."""

    fault = "gradient with an extra axis"

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        loss, grads = super().loss_and_grad(problem, config)
        k = _first(grads)
        return loss, {**grads, k: grads[k][..., None]}

    def per_example(self, problem: Problem, config: Config, method: str) -> PerExample:
        losses, grads = super().per_example(problem, config, method)
        k = _first(grads)
        return losses, {**grads, k: grads[k][..., None]}


class ReturnsNaN(_Faulty):
    """``loss_and_grad`` returns NaN as the first element of the first parameter's gradient."""

    fault = "NaN in a gradient"

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        loss, grads = super().loss_and_grad(problem, config)
        k = _first(grads)
        bad = np.array(grads[k], copy=True)
        bad.flat[0] = np.nan
        return loss, {**grads, k: bad}


class Raises(_Faulty):
    """``loss_and_grad`` raises ``RuntimeError("boom")`` (a crash inside the framework)."""

    fault = "loss_and_grad raises"

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        raise RuntimeError("boom")


class NotABackend:
    """Has a name, versions and loss_and_grad, but not devices, dtypes, per_example_methods or
    per_example: ``load_backend`` must refuse it, naming what is missing."""

    name = "not_a_backend"

    def versions(self) -> Mapping[str, str]:
        return {}

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        return batch_grad(problem)


mean_over_n_minus_1 = MeanOverNMinus1("mean_over_n_minus_1")
sequential_updates = SequentialUpdates("sequential_updates")
last_example_only = LastExampleOnly("last_example_only")
per_example_scaled = PerExampleScaled("per_example_scaled")
mutates_params = MutatesParams("mutates_params")
wrong_shape = WrongShape("wrong_shape")
returns_nan = ReturnsNaN("returns_nan")
raises = Raises("raises")
not_a_backend = NotABackend()
