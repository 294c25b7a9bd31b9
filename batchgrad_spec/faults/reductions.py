"""Faults in the reduction: the batch loss L and gradient ∇L are wrong, the per-example results
right (spec chapter 2, §2.1–§2.4). The classic mistakes of training loops, each a small wrapper of
the numpy reference backend (``Faulty``), or for ``torch_mse_sum_over_elements`` of PyTorch's:

* ``mean_over_n_minus_1``     ``mean`` reduction normalised by N − 1 (§2.1)
* ``last_example_only``       L and ∇L of the last example only (§2.1)
* ``sum_instead_of_mean``     ``mean`` computed as the sum (§2.1)
* ``weighted_mean_over_n``    ``weighted_mean`` divided by N instead of Σ c_i (§2.4)
* ``weights_ignored``         weighted reductions computed without the weights (§2.3)
* ``dropped_example``         an off-by-one loop leaves the last example out of L and ∇L (§2.2)
* ``micro_batch_means``       the mean of micro-batch means, micro-batches of 2 (§2.1)
* ``uneven_shard_means``      two shards of unequal size, their means averaged equally (§2.1)
* ``mse_summed_over_outputs`` squared error under ``mean`` divided by N, not N·D (§2.1)
* ``torch_mse_sum_over_elements``  PyTorch ``mse_loss(reduction="sum")`` taken as Σ ℓ_i: D × it
  (§2.2; needs torch, built on first use)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from reference.contract import Config
from reference.grads import batch_grad
from reference.problem import Problem
from reference.types import Grads

from .base import Fault, Faulty, lazy_attributes

__all__ = ["dropped_example", "last_example_only", "mean_over_n_minus_1", "micro_batch_means",
           "mse_summed_over_outputs", "sum_instead_of_mean", "uneven_shard_means",
           "weighted_mean_over_n", "weights_ignored"]  # and torch_mse_sum_over_elements, lazily


class MeanOverNMinus1(Faulty):
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


class LastExampleOnly(Faulty):
    """L and ∇L are those of the last example processed alone, {x_N} under the same reduction:
    ℓ_N and g_N for mean, sum and weighted_mean, c_N ℓ_N and c_N g_N for weighted. Per-example
    results are right. Right only when N = 1 or the examples' contributions coincide."""

    fault = "batch gradient of the last example only"

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        last = problem.with_batch(problem.batch.take([problem.batch.size - 1]))
        return batch_grad(last, np.dtype(config.dtype))


class SumInsteadOfMean(Faulty):
    """Under ``mean``, L and ∇L are those of ``sum``: Σ ℓ_i and Σ g_i, N times too large (a
    ``reduction="sum"`` where the training loop meant ``"mean"``). Right when N = 1."""

    fault = "mean computed as sum"

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        if problem.reduction.name == "mean":
            problem = problem.with_reduction("sum")
        return super().loss_and_grad(problem, config)


class WeightedMeanOverN(Faulty):
    """``weighted_mean`` is Σ c_i ℓ_i / N instead of Σ c_i ℓ_i / Σ c_i (the weights enter the sum
    but the normaliser is the batch size). Right only when Σ c_i = N."""

    fault = "weighted mean divided by N"

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        if problem.reduction.name != "weighted_mean":
            return super().loss_and_grad(problem, config)
        loss, grads = super().loss_and_grad(problem.with_reduction("weighted"), config)
        n = problem.batch.size
        return loss / n, {k: v / v.dtype.type(n) for k, v in grads.items()}


class WeightsIgnored(Faulty):
    """Weighted reductions computed without their weights: ``weighted`` as ``sum`` and
    ``weighted_mean`` as ``mean`` (``losses.sum()`` where ``(c * losses).sum()`` was meant).
    Right only when every c_i = 1."""

    fault = "per-example weights ignored"

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        plain = {"weighted": "sum", "weighted_mean": "mean"}.get(problem.reduction.name)
        if plain is not None:
            problem = problem.with_reduction(plain)
        return super().loss_and_grad(problem, config)


class DroppedExample(Faulty):
    """L and ∇L leave the last example out (``for i in range(n - 1)``, an off-by-one), each other
    example keeping its κ_i: Σ_{i<N} κ_i ℓ_i and Σ_{i<N} κ_i g_i. At N = 1 both are 0."""

    fault = "last example dropped from the batch"

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        kappa = problem.coefficients.copy()
        kappa[-1] = 0.0
        return self.reduced_by(problem, config, kappa)


class _GroupMeans(Faulty):
    """Under ``mean``, (1/K) Σ_k mean_{i ∈ group k} of the K groups ``groups(N)`` gives: every
    group weighs the same, whatever its size. Other reductions are right."""

    def groups(self, n: int) -> list[np.ndarray]:
        raise NotImplementedError

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        if problem.reduction.name != "mean":
            return super().loss_and_grad(problem, config)
        groups = self.groups(problem.batch.size)
        kappa = np.zeros(problem.batch.size)
        for g in groups:
            kappa[g] = 1.0 / (len(groups) * len(g))
        return self.reduced_by(problem, config, kappa)


class MicroBatchMeans(_GroupMeans):
    """Gradient accumulation normalised per micro-batch: under ``mean``, the batch is cut into
    micro-batches of ``MICRO_BATCH`` = 2 examples (the last one shorter when N is odd), each
    contributes its own mean loss and gradient, and the K results are averaged equally:
    (1/K) Σ_k (1/|B_k|) Σ_{i ∈ B_k} g_i. Right when every micro-batch has the same size."""

    fault = "mean of micro-batch means"
    MICRO_BATCH = 2

    def groups(self, n: int) -> list[np.ndarray]:
        return [np.arange(s, min(s + self.MICRO_BATCH, n)) for s in range(0, n, self.MICRO_BATCH)]


class UnevenShardMeans(_GroupMeans):
    """Data parallelism averaging shard means equally: under ``mean``, the batch is split into
    ``SHARDS`` = 2 contiguous shards as ``np.array_split`` does (sizes ⌈N/2⌉ and ⌊N/2⌋), each
    "device" computes its shard's mean, and the means are averaged (an all-reduce mean) as if the
    shards were equal. Right when N is even (or 1)."""

    fault = "shard means averaged equally"
    SHARDS = 2

    def groups(self, n: int) -> list[np.ndarray]:
        return [s for s in np.array_split(np.arange(n), self.SHARDS) if len(s)]


class MseSummedOverOutputs(Faulty):
    """Squared error under ``mean`` divided by N instead of N·D: ``((f − y)**2).sum() / N``, i.e.
    each example's loss summed over its D outputs rather than averaged (§1.1, §1.2): L and ∇L are
    D times too large. Right when D = 1."""

    fault = "squared error mean divided by N, not N*D"

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        loss, grads = super().loss_and_grad(problem, config)
        if problem.loss.name != "squared_error" or problem.reduction.name != "mean":
            return loss, grads
        d = problem.network.out_features
        return loss * d, {k: v * v.dtype.type(d) for k, v in grads.items()}


def _torch_mse_sum_over_elements() -> Any:
    """PyTorch backend whose ``sum`` reduction of squared error is ``F.mse_loss(out, y,
    reduction="sum")`` itself, Σ_i Σ_d (f_id − y_id)² = D Σ ℓ_i, not divided by D
    (spec/appendix-b-pitfalls.md#p2: ``mse_loss`` reduces over elements, and ℓ_i is the mean over
    outputs, §1.2)."""
    import torch.nn.functional as F

    from batchgrad_spec.backends import torch_backend as tb

    class TorchMseSumOverElements(Fault, tb.TorchBackend):
        name = "torch_mse_sum_over_elements"
        fault = "torch mse_loss(reduction='sum') taken as the sum of per-example losses"

        def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
            if problem.loss.name != "squared_error" or problem.reduction.name != "sum":
                return super().loss_and_grad(problem, config)
            with tb.precision_region(config):
                model = tb.build_model(problem, config)
                x, y, _ = tb.tensors(problem, config)
                loss = F.mse_loss(model(x), y, reduction="sum")  # Σ_i Σ_d, not Σ_i ℓ_i
                loss.backward()
                return float(loss.detach()), {n: tb.to_numpy(p.grad)
                                              for n, p in model.named_parameters()}

    return TorchMseSumOverElements()


mean_over_n_minus_1 = MeanOverNMinus1("mean_over_n_minus_1")
last_example_only = LastExampleOnly("last_example_only")
sum_instead_of_mean = SumInsteadOfMean("sum_instead_of_mean")
weighted_mean_over_n = WeightedMeanOverN("weighted_mean_over_n")
weights_ignored = WeightsIgnored("weights_ignored")
dropped_example = DroppedExample("dropped_example")
micro_batch_means = MicroBatchMeans("micro_batch_means")
uneven_shard_means = UnevenShardMeans("uneven_shard_means")
mse_summed_over_outputs = MseSummedOverOutputs("mse_summed_over_outputs")

_LAZY: Mapping[str, Any] = {"torch_mse_sum_over_elements": _torch_mse_sum_over_elements}
__getattr__ = lazy_attributes(__name__, _LAZY)
