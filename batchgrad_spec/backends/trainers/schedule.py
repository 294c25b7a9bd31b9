"""From a ``reference.loop.Loop`` and its micro-batches to the optimizer-step windows a trainer
runs: each window the micro-batch problems of one optimizer step, in order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reference.batch import Batch
from reference.problem import Problem

from .common import Windows

__all__ = ["windows_of"]


def windows_of(problem: Problem, loop: Any, batches: Sequence[Batch], trainer: str) -> Windows:
    """The windows of ``loop.windows`` (K = ``loop.accumulation_steps`` micro-batches each, the
    last possibly fewer) over ``batches``, the loop's micro-batches
    (``reference.loop.loop_batches``). A trainer here is one process: ``loop.ranks`` > 1 is a
    ValueError naming the trainer."""
    if getattr(loop, "ranks", 1) != 1:
        raise ValueError(f"{trainer}: ranks={loop.ranks}: this trainer backend runs one process "
                         f"(data parallelism is not run here)")
    return tuple(tuple(problem.with_batch(batches[i]) for i in idx) for idx in loop.windows)
