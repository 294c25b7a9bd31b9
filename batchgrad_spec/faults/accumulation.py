"""Deliberately wrong ``accumulate`` implementations: the gradient-accumulation bugs spec §5.1–§5.4
exist to catch.

Each wraps the numpy reference backend (``reference.accumulation.accumulate`` in the dtype), wrong
in one way, as real training loops have been:

* ``divides_by_k``                the micro-batch gradients averaged over the K micro-batches
  whatever the plan's scales: (1/K) Σ_k ∇L_k, the mean of micro-batch means (an accumulation
  divided by K instead of weighted by n_k/N); caught by §5.1 once the sizes differ
* ``per_micro_batch_token_mean``  asked for the token-level scheme (local token sums over the
  whole batch's token count), each micro-batch normalised by its own valid tokens and divided by
  K: (1/K) Σ_k ∇(token mean)_k, the 2024 gradient-accumulation bug of Hugging Face transformers
  and others (spec/appendix-b-pitfalls.md#p3: huggingface/blog#2414, transformers#34191); caught by
  §5.2
* ``penalty_per_micro_batch``     the L2 penalty (λ/2)‖θ‖² added to every micro-batch's loss when
  the plan adds it once per step: Kλθ instead of λθ (spec/appendix-b-pitfalls.md#p15: keras#19990);
  caught by §5.4

Loadable as ``--backend batchgrad_spec.faults.accumulation:<name>``;
``tests/meta/test_accumulation_faults.py`` checks that each is caught by its clause.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from reference.accumulation import Accumulation, accumulate
from reference.contract import Config
from reference.problem import Problem
from reference.types import Grads

from .base import Faulty

__all__ = ["divides_by_k", "penalty_per_micro_batch", "per_micro_batch_token_mean"]


class _FaultyAccumulate(Faulty):
    """The reference's accumulation, run with the plan ``wrong`` makes of the given one."""

    def wrong(self, problem: Problem, plan: Accumulation) -> Accumulation:
        raise NotImplementedError

    def accumulate(self, problem: Problem, config: Config, plan: Accumulation,
                   method: str = "sum") -> Grads:
        return accumulate(problem, self.wrong(problem, plan), np.dtype(config.dtype), method)


class DividesByK(_FaultyAccumulate):
    """s_k = 1/K for every micro-batch, whatever the plan says."""

    fault = "micro-batch gradients averaged over K"

    def wrong(self, problem: Problem, plan: Accumulation) -> Accumulation:
        return replace(plan, scales=(1.0 / plan.k,) * plan.k)


class PerMicroBatchTokenMean(_FaultyAccumulate):
    """Token sums over the global token count replaced by per-micro-batch token means / K."""

    fault = "each micro-batch normalised by its own tokens, divided by K"

    def wrong(self, problem: Problem, plan: Accumulation) -> Accumulation:
        if not (problem.batch.sequence and plan.reduction == "sum"):
            return plan
        return replace(plan, scales=(1.0 / plan.k,) * plan.k, reduction="mean")


class PenaltyPerMicroBatch(_FaultyAccumulate):
    """The penalty added to every micro-batch's loss (t_k = max t for all k)."""

    fault = "L2 penalty added to every micro-batch loss"

    def wrong(self, problem: Problem, plan: Accumulation) -> Accumulation:
        if not plan.penalties:
            return plan
        return replace(plan, penalties=(max(plan.penalties),) * plan.k)


divides_by_k = DividesByK("divides_by_k")
per_micro_batch_token_mean = PerMicroBatchTokenMean("per_micro_batch_token_mean")
penalty_per_micro_batch = PenaltyPerMicroBatch("penalty_per_micro_batch")
