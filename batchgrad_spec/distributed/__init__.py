"""Data-parallel engines for spec chapter 5 (§5.6–§5.11): the same gradient over R ranks.

An *engine* runs a ``Job`` — a problem, its shard sizes, a scheme of ``reference.parallel.SCHEMES``
and an optional L2 penalty — on R ranks, and returns the gradient every rank holds after the
all-reduce:

* ``torch``: R processes on 127.0.0.1 in one gloo process group, ``DistributedDataParallel`` and
  ``torch.distributed.all_reduce`` (``batchgrad_spec/distributed/torch_ddp.py``);
* ``jax``: R host CPU devices in one subprocess, ``jax.shard_map`` with ``lax.pmean``/``psum``
  (``batchgrad_spec/distributed/jax_shard.py``);
* ``numpy``: a simulation — the reference backend on each shard, the combination computed in the
  dtype in numpy (``SimulatedEngine``). It is what the meta-tests inject faults into.

Engines are started on first use, once per test session, reused by every Hypothesis example, and
stopped at exit (``shutdown``); the torch and jax engines share that lifecycle, with its timeouts
and failure handling (``batchgrad_spec/distributed/lifecycle.py``), and their worker processes
(``batchgrad_spec/distributed/workers.py``). ``engine_for(name)`` returns the engine of a
built-in backend, or raises ``NoEngine`` with a one-line reason.
"""

from __future__ import annotations

import atexit
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from reference.contract import Config
from reference.numpy_backend import NumpyBackend
from reference.parallel import (
    AVERAGING,
    SCHEMES,
    count_weighted_scales,
    normaliser,
    rank_mean_scales,
    shards,
    sum_type,
    summed_scales,
)
from reference.problem import Problem
from reference.types import Grads

WORLD_SIZE = 3
"""R, the number of ranks: 3, so that N examples split into shards of unequal sizes whenever
3 ∤ N (and equal ones when 3 | N)."""


class EngineError(RuntimeError):
    """A data-parallel engine failed (a worker raised, hung or died); the message says where."""


class NoEngine(Exception):
    """No data-parallel engine for this backend or device; the message is the one-line reason."""


@dataclass(frozen=True, eq=False)
class Job:
    """One data-parallel gradient: ``problem`` (already rounded to ``dtype``) split into
    consecutive shards of ``sizes``, combined by ``scheme``; rank r adds
    ``penalty_ranks[r]`` × (λ/2)‖θ‖² to its loss (no penalty when empty)."""

    problem: Problem
    dtype: str
    sizes: tuple[int, ...]
    scheme: str
    lam: float = 0.0
    penalty_ranks: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES + ("shard_map_textbook",):
            raise ValueError(f"unknown scheme {self.scheme!r}")
        if sum(self.sizes) != self.problem.batch.size or min(self.sizes) < 1:
            raise ValueError(f"shard sizes {self.sizes} do not split N={self.problem.batch.size}")
        if self.penalty_ranks and len(self.penalty_ranks) != len(self.sizes):
            raise ValueError(f"penalty_ranks {self.penalty_ranks}: one entry per rank")

    def __repr__(self) -> str:
        extra = (f", lam={self.lam!r}, penalty_ranks={self.penalty_ranks!r}"
                 if self.penalty_ranks else "")
        return (f"Job(problem, {self.dtype!r}, sizes={self.sizes!r}, scheme={self.scheme!r}"
                f"{extra})")


class Engine(Protocol):
    name: str
    world_size: int
    startup_s: float | None  # seconds its last start took (None: not started)

    def run(self, job: Job) -> list[Grads]:
        """The gradient each of the R ranks holds after the all-reduce."""
        ...

    def reset(self) -> None:
        """Forget an earlier failure (called before each test)."""
        ...

    def close(self) -> None:
        ...


# -- the numpy simulation ------------------------------------------------------------------------
Combine = Callable[[Job, list[Problem]], tuple[list[float], float]]


def _scales(job: Job, parts: list[Problem]) -> tuple[list[float], float]:
    """(S_r, post-backward factor d of the penalty) of a scheme, as the engines compute them: the
    scales of ``reference.parallel``, and d = 1/R under its averaging schemes, 1 otherwise."""
    r = len(parts)
    d = 1.0 / r if job.scheme in AVERAGING else 1.0
    if job.scheme == "rank_mean":
        return rank_mean_scales(r), d
    if job.scheme == "count_weighted":
        return count_weighted_scales(parts), d
    if job.scheme == "global_normaliser":  # reference.parallel.data_parallel forms these inline
        return [1.0 / float(np.sum([normaliser(p) for p in parts]))] * r, d
    return summed_scales(r), d


class SimulatedEngine:
    """Data parallelism simulated over the numpy backend: each rank's gradient from
    ``NumpyBackend.loss_and_grad`` of its shard in the dtype, scaled (scale rounded to the
    dtype), the penalty's λθ added, and the R contributions summed in rank order in the dtype —
    the arithmetic an all-reduce performs. ``scales`` replaces the scheme's scales (a fault)."""

    world_size = WORLD_SIZE
    startup_s: float | None = 0.0

    def __init__(self, name: str = "numpy", scales: Combine = _scales) -> None:
        self.name = name
        self._scales = scales
        self._backend = NumpyBackend()

    def run(self, job: Job) -> list[Grads]:
        if job.scheme not in SCHEMES:
            raise NoEngine(f"{self.name}: scheme {job.scheme!r} is not simulated")
        dt = np.dtype(job.dtype)
        own = shards(job.problem, job.sizes)
        parts = [sum_type(p) for p in own] if job.scheme == "global_normaliser" else own
        scales, d = self._scales(job, own)
        total: Grads = {}
        for r, part in enumerate(parts):
            _, g = self._backend.loss_and_grad(part, Config("cpu", job.dtype))
            for k, v in g.items():
                v = dt.type(scales[r]) * v.astype(dt)
                if job.penalty_ranks and job.penalty_ranks[r]:
                    lam = dt.type(d * job.penalty_ranks[r] * job.lam)
                    v = v + lam * job.problem.params[k].astype(dt)
                total[k] = v if k not in total else total[k] + v
        out = {k: v.astype(np.float64) for k, v in total.items()}
        return [out] * len(parts)

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


# -- the registry --------------------------------------------------------------------------------
_ENGINES: dict[str, Engine] = {}
SUPPORTED = ("numpy", "torch", "jax")


def engine_for(backend: str, device: str = "cpu") -> Engine:
    """The session's engine for a built-in backend, started on first use (``NoEngine`` if none)."""
    if backend not in SUPPORTED:
        raise NoEngine(f"no data-parallel engine for backend {backend!r}: chapter 5's data "
                       f"parallelism runs on torch (gloo), jax (shard_map) and numpy (simulated)")
    if device != "cpu":
        raise NoEngine(f"{backend}: data-parallel engines run on cpu ranks only, not {device!r}")
    if backend not in _ENGINES:
        if backend == "torch":
            from .torch_ddp import TorchDDPEngine

            _ENGINES[backend] = TorchDDPEngine(WORLD_SIZE)
        elif backend == "jax":
            from .jax_shard import JaxShardMapEngine

            _ENGINES[backend] = JaxShardMapEngine(WORLD_SIZE)
        else:
            _ENGINES[backend] = SimulatedEngine()
    return _ENGINES[backend]


def shutdown() -> None:
    """Stop every engine this process started (their worker processes included)."""
    for engine in list(_ENGINES.values()):
        engine.close()
    _ENGINES.clear()


atexit.register(shutdown)

__all__ = ["AVERAGING", "WORLD_SIZE", "Engine", "EngineError", "Job", "NoEngine",
           "SimulatedEngine", "engine_for", "shutdown"]
