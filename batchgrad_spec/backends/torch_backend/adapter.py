"""``TorchBackend``: the backend contract (``reference.contract``) answered by PyTorch, each
method a call into the room that does the work (``training``, ``per_example``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from reference.batch import Batch
from reference.capabilities import DEFAULT_CAPABILITIES
from reference.contract import Config
from reference.problem import Problem
from reference.types import Grads

from . import per_example as _per_example
from . import training

__all__ = ["TorchBackend", "backend"]


class TorchBackend:
    name = "torch"

    def versions(self) -> Mapping[str, str]:
        return {"torch": torch.__version__}

    def devices(self) -> Sequence[str]:
        return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)

    def dtypes(self) -> Sequence[str]:
        return ("float64", "float32")

    def per_example_methods(self) -> Sequence[str]:
        return tuple(_per_example.METHODS)

    def capabilities(self) -> frozenset[str]:
        """The 0.2.0 vocabulary: every layer type of ``modules._BUILDERS``, every activation,
        loss with its options, reduction, and sequences with masks (spec §8.6)."""
        return DEFAULT_CAPABILITIES

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        return training.loss_and_grad(problem, config)

    def per_example(
        self, problem: Problem, config: Config, method: str
    ) -> tuple[np.ndarray, Grads]:
        return _per_example.per_example(problem, config, method)

    # -- the optional update step (spec chapter 6) ------------------------------------------------
    def train(self, problem: Problem, config: Config, optimizer: Any,
              batches: Sequence[Batch]) -> Grads:
        """One ``torch.optim`` step per batch (``training.train``); the final parameters."""
        return training.train(problem, config, optimizer, batches)

    # -- the optional gradient accumulation (spec §5.1–§5.5) --------------------------------------
    def accumulation_methods(self) -> Sequence[str]:
        return ("sum",)

    def accumulate(self, problem: Problem, config: Config, plan: Any,
                   method: str = "sum") -> Grads:
        """Micro-batch ``backward()``s summed into ``.grad`` (``training.accumulate``)."""
        return training.accumulate(problem, config, plan, method)


backend = TorchBackend()
