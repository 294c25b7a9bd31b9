"""The reference itself as a backend: ``--backend numpy``.

float64 runs the reference; float32 runs the same code on float32 arrays, a real float32
computation whose rounding the error bound of spec chapter 7 must cover (no false alarms). Its
"vmap" method is the vectorised ``per_example_grads``; "loop" takes one example at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .accumulation import ACCUMULATORS, Accumulation, accumulate
from .batch import Batch
from .capabilities import REQUESTS, VOCABULARY
from .contract import Config
from .grads import batch_grad, per_example_grads
from .problem import Problem
from .types import Grads
from .update import Optimizer, train

__all__ = ["NumpyBackend", "backend"]


class NumpyBackend:
    name = "numpy"

    def versions(self) -> Mapping[str, str]:
        return {"numpy": np.__version__}

    def devices(self) -> Sequence[str]:
        return ("cpu",)

    def dtypes(self) -> Sequence[str]:
        return ("float64", "float32")

    def per_example_methods(self) -> Sequence[str]:
        return ("vmap", "loop")

    def capabilities(self) -> frozenset[str]:
        """Every feature the reference registers (it is the reference), no request (§8.6)."""
        return frozenset(VOCABULARY) - REQUESTS

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        return batch_grad(problem, np.dtype(config.dtype))

    def per_example(
        self, problem: Problem, config: Config, method: str
    ) -> tuple[np.ndarray, Grads]:
        dtype = np.dtype(config.dtype)
        if method == "vmap":
            return per_example_grads(problem, dtype)
        if method != "loop":
            raise ValueError(f"unknown per-example method {method!r}; numpy has vmap, loop")
        rows = [per_example_grads(problem.with_batch(problem.batch.take([i])), dtype)
                for i in range(problem.batch.size)]
        losses = np.concatenate([r[0] for r in rows])
        return losses, {k: np.concatenate([r[1][k] for r in rows]) for k in rows[0][1]}

    def train(self, problem: Problem, config: Config, optimizer: Optimizer,
              batches: Sequence[Batch]) -> Grads:
        """The optional update step (spec chapter 6): ``reference.update.train`` in the dtype."""
        return train(problem, optimizer, batches, np.dtype(config.dtype))

    def accumulation_methods(self) -> Sequence[str]:
        return ACCUMULATORS

    def accumulate(self, problem: Problem, config: Config, plan: Accumulation,
                   method: str = "sum") -> Grads:
        """The optional gradient accumulation (spec §5.1–§5.5): ``reference.accumulation.
        accumulate`` in the dtype, with the summing or the running-mean ("average") accumulator."""
        return accumulate(problem, plan, np.dtype(config.dtype), method)


backend = NumpyBackend()
