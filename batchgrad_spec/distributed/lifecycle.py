"""The lifecycle of an engine whose ranks live in worker processes (``workers.Pool``), shared by
the torch DDP and the JAX shard_map engines.

Started on first use and reused by every job; a job's answers are awaited with a timeout; any
failure (a worker that did not start, raised, hung or died) stops the workers and is remembered,
so that until ``reset`` (called before each test) every job fails at once with the same message —
a failing test then shrinks in seconds, without a restart per example. The next test starts
fresh workers. ``close`` stops them politely, then by force.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from . import EngineError, Job
from .workers import Pool, WorkerError

__all__ = ["PooledEngine"]


class PooledEngine:
    """Start, job loop, reply, shutdown and timeouts of a pool-backed engine. A subclass names
    its worker ``module``, what a worker is called (``label``), the engine and its workers in
    messages (``title``, ``workers_text``, ``stopped_text``), its timeouts, and may override
    ``_pool_size``, ``_pool_env``, ``_prepare`` (before the workers start: returns the extra
    command-line arguments of worker i) and ``_release`` (after they stop)."""

    name: str
    module: str
    label: str
    title: str
    stopped_text: str
    start_timeout_s: float
    reply_timeout_s: float

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.startup_s: float | None = None
        self.jobs = 0
        self.failure: str | None = None
        self._pool: Pool | None = None

    # -- what a subclass may change ---------------------------------------------------------------
    @property
    def workers_text(self) -> str:
        """The workers, as the message of a failed start names them."""
        return f"the {self.world_size} workers"

    def _pool_size(self) -> int:
        return self.world_size

    def _pool_env(self) -> dict[str, str]:
        return {}

    def _prepare(self) -> Callable[[int], list[str]]:
        return lambda _: ["--world", str(self.world_size)]

    def _release(self) -> None:
        pass

    # -- the lifecycle ----------------------------------------------------------------------------
    def _start(self) -> None:
        t0 = time.perf_counter()
        args = self._prepare()
        pool = Pool(self.module, self._pool_size(), env=self._pool_env(), label=self.label)
        try:
            pool.start(self.start_timeout_s, args)
        except WorkerError as exc:
            raise self._failed(f"{self.title}: {self.workers_text} did not start: {exc}",
                               exc) from exc
        self._pool = pool
        self.startup_s = time.perf_counter() - t0

    def reset(self) -> None:
        """Forget a failure: the next job (re)starts the workers if they are not running."""
        self.failure = None

    def _failed(self, message: str, cause: Exception) -> EngineError:
        """Stop the workers and remember why: until ``reset`` every job fails at once with the
        same message (a failing test then shrinks in seconds, without a restart per example)."""
        self.close()
        self.failure = message
        err = EngineError(message)
        err.__cause__ = cause
        return err

    def close(self) -> None:
        """Stop the workers (politely, then by force) and what ``_prepare`` started."""
        if self._pool is not None:
            self._pool.close()
        self._pool = None
        self._release()

    def _request(self, job: Job, payloads: list[Any]) -> list[Any]:
        """Send payload i to worker i (starting the workers if they are not running) and return
        their answers; ``EngineError`` on any failure, remembered until ``reset``."""
        if self.failure is not None:
            raise EngineError(f"{self.failure}\n(not retried until the next test)")
        if self._pool is None or not self._pool.alive:
            self.close()
            self._start()
        assert self._pool is not None
        try:
            answers = self._pool.request(payloads, self.reply_timeout_s)
        except WorkerError as exc:
            raise self._failed(f"{self.title} failed on {job!r}; {self.stopped_text} was stopped "
                               f"(it restarts for the next test): {exc}", exc) from exc
        self.jobs += 1
        return answers
