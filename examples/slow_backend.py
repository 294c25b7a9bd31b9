"""A slow framework, simulated: the numpy reference backend that waits like a framework which
compiles a kernel per new shape (spec §8.6, Appendix A "Slow frameworks").

    python -m pytest --backend examples.slow_backend:compiling --shape-buckets \\
        --hypothesis-profile certify-slow --conformance-report reports/slow.json

* ``slow``: waits ``BATCHGRAD_SLOW_SECONDS`` (default 0.5) on every call of ``loss_and_grad``
  and ``per_example`` — a framework that needs that long per call whatever it is asked;
* ``compiling``: waits that long only on a call whose program is new to it — the same network
  architecture, batch shape, loss, reduction, call, method and dtype as an earlier call reuse
  the "kernel" — and ``BATCHGRAD_SLOW_RUN_SECONDS`` (default 0.005) on every call.

Both answer exactly what the reference answers; ``compiles`` counts the programs compiled,
``calls`` the calls (appended to ``$BATCHGRAD_SLOW_LOG`` at exit when set). The report of a run
names the delay (``versions()``).
"""

from __future__ import annotations

import atexit
import json
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from reference.contract import Config
from reference.numpy_backend import NumpyBackend
from reference.problem import Problem
from reference.types import Grads

__all__ = ["SlowBackend", "compiling", "program", "slow"]


def program(problem: Problem, config: Config, call: str) -> tuple[Any, ...]:
    """What a compile-per-shape framework would key its kernel cache on: the architecture with
    its widths, the shapes of the batch's arrays, the loss, the reduction, the call, dtype."""
    b = problem.batch
    arrays = tuple(None if a is None else a.shape for a in (b.inputs, b.targets, b.weights,
                                                             b.mask, b.variances))
    drop = tuple(sorted((k, v.shape) for k, v in (b.dropout or {}).items()))
    return (repr(problem.network), arrays, drop, repr(problem.loss), problem.reduction.name,
            call, config.dtype)


class SlowBackend(NumpyBackend):
    """The numpy reference, waiting per call (``per_call``) or per new program."""

    def __init__(self, name: str, per_call: bool) -> None:
        self.name = name
        self.per_call = per_call
        self.seen: set[tuple[Any, ...]] = set()
        self.calls = 0

    @property
    def delay(self) -> float:
        return float(os.environ.get("BATCHGRAD_SLOW_SECONDS", "0.5"))

    @property
    def compiles(self) -> int:
        return len(self.seen)

    def versions(self) -> Mapping[str, str]:
        how = "per call" if self.per_call else "per new program"
        return {**super().versions(), "simulated delay": f"{self.delay} s {how}"}

    def _wait(self, problem: Problem, config: Config, call: str) -> None:
        self.calls += 1
        key = program(problem, config, call)
        if self.per_call or key not in self.seen:
            time.sleep(self.delay)
        else:
            time.sleep(float(os.environ.get("BATCHGRAD_SLOW_RUN_SECONDS", "0.005")))
        self.seen.add(key)

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        self._wait(problem, config, "loss_and_grad")
        return super().loss_and_grad(problem, config)

    def per_example(self, problem: Problem, config: Config,
                    method: str) -> tuple[np.ndarray, Grads]:
        self._wait(problem, config, f"per_example/{method}")
        return super().per_example(problem, config, method)


slow = SlowBackend("slow", per_call=True)
compiling = SlowBackend("compiling", per_call=False)


@atexit.register
def _log() -> None:
    """Append this process's calls and compiled programs to ``$BATCHGRAD_SLOW_LOG`` if set."""
    path = os.environ.get("BATCHGRAD_SLOW_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            for b in (slow, compiling):
                if b.calls:
                    f.write(json.dumps({"backend": b.name, "calls": b.calls,
                                        "programs": sorted(map(repr, b.seen))}) + "\n")
