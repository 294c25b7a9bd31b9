"""From a ``reference.loop.Loop`` and its data to the optimizer-step windows a trainer runs:
each window the micro-batch problems of one optimizer step, in order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reference.batch import Batch
from reference.problem import Problem

from .common import Windows

__all__ = ["windows_of"]


def windows_of(problem: Problem, loop: Any, batches: Sequence[Any], trainer: str) -> Windows:
    """The windows of the run: ``batches`` holds, per optimizer step, its micro-batches (a
    sequence of ``Batch``) — or one ``Batch`` per step, split by the loop's micro-batch sizes."""
    out = []
    for step, item in enumerate(batches):
        if isinstance(item, Batch):
            sizes = loop.micro_batches[step]
            bounds = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
            parts = [item.take(list(range(a, b))) for a, b in zip(bounds, bounds[1:])]
        else:
            parts = list(item)
        out.append(tuple(problem.with_batch(b) for b in parts))
    return tuple(out)
