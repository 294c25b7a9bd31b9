"""Data parallelism as PyTorch runs it: R processes, one gloo process group, 127.0.0.1 only.

One cluster per test session. ``TorchDDPEngine`` starts it on first use: a ``TCPStore`` in this
process binds a free loopback port itself (port 0, so no other process can take the port between
choosing and binding it), R worker processes (``python -m batchgrad_spec.distributed.torch_ddp
--worker r``,
see ``batchgrad_spec/distributed/workers.py``) connect to it and join
``torch.distributed.init_process_group("gloo")`` with gloo's transport bound to 127.0.0.1. Every
Hypothesis example then sends its ``Job`` to the R workers; each builds the model and its shard's
loss with the torch backend's own ``build_model``/``_tensors``/``reduced_loss`` (so the per-shard
loss is exactly what ``--backend torch`` computes, for every loss it supports), differentiates,
all-reduces, and answers with its gradients as numpy arrays.

Schemes (``reference.parallel.SCHEMES``):

* ``rank_mean``: ``DistributedDataParallel(model)``; its reducer averages the gradients over ranks
  (each divided by the world size, then all-reduced with SUM)
* ``count_weighted``: DDP, each rank's loss multiplied by R·Ω_r/Ω, Ω the all-reduced sum of the
  ranks' normalisers (``dist.all_reduce`` of a tensor: the count is a collective too)
* ``global_normaliser``: no DDP; the loss is the shard's sum-type loss divided by the all-reduced
  Ω, and every gradient is ``dist.all_reduce``d with ``ReduceOp.SUM``
* ``summed``: no DDP; the shard's own loss, gradients all-reduced with SUM and not divided

Failures never hang the suite: answers are awaited with a timeout, collectives have gloo's
timeout, a worker exits when its parent is gone (its socket closes), and any failure stops the
whole cluster (the next job starts a fresh one) with an ``EngineError`` that says which rank
failed and how.
"""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from reference.contract import Config
from reference.parallel import normaliser, shards, sum_type
from reference.problem import Problem
from reference.types import Grads

from . import Job
from .lifecycle import PooledEngine
from .workers import serve

__all__ = ["TorchDDPEngine", "main"]

START_TIMEOUT_S = 120.0
"""Start-up: spawning R interpreters that import torch (1.5–2 s each on 2 cores) and joining."""
REPLY_TIMEOUT_S = 60.0
"""Longest wait for a job's replies; a job takes milliseconds."""
COLLECTIVE_TIMEOUT_S = 30.0
"""gloo's timeout for a collective: a rank whose peers died stops waiting after this long."""


# -- the worker process ----------------------------------------------------------------------------
def _loopback_options(dist: Any) -> Any:
    """gloo options binding its transport to 127.0.0.1 (never a public interface)."""
    try:
        opts = dist.ProcessGroupGloo._Options()
        opts._devices = [dist.ProcessGroupGloo.create_device(hostname="127.0.0.1")]
        return opts
    except AttributeError:  # a torch without these internals: use the environment instead
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        return None


def _setup(rank: int, world: int, store_port: int) -> int:
    import torch.distributed as dist

    store = dist.TCPStore("127.0.0.1", store_port, world_size=None, is_master=False,
                          timeout=datetime.timedelta(seconds=START_TIMEOUT_S))
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S),
                            pg_options=_loopback_options(dist))
    # warm up: the first DistributedDataParallel, backward and all-reduce of a process take
    # seconds (lazy initialisation); pay for them in the start-up, not in the first example
    import torch
    from torch.nn.parallel import DistributedDataParallel

    import batchgrad_spec.backends.torch_backend  # noqa: F401  (threads, imports)

    model = DistributedDataParallel(torch.nn.Linear(1, 1))
    model(torch.ones(1, 1)).sum().backward()
    dist.all_reduce(torch.ones(1))
    return rank


def _local_loss(forward: Any, problem: Problem, config: Config) -> tuple[Any, Any, Any]:
    """(L, x, c): the shard's reduced loss exactly as ``TorchBackend.loss_and_grad`` computes it
    (``_tensors``, ``_extra``, ``reduced_loss`` of the torch backend; keep in step with it),
    through ``forward`` (the model, or its DistributedDataParallel wrapper)."""
    from batchgrad_spec.backends import torch_backend as tb

    x, y, c = tb._tensors(problem, config)
    if hasattr(tb, "_extra"):  # sequences, masks, variances, dropout masks
        extra = tb._extra(problem, config)
        return tb.reduced_loss(problem, forward(x, extra.get("drop")), y, c, extra), x, c
    return tb.reduced_loss(problem, forward(x), y, c), x, c


def _run(rank: int, job: Job | tuple) -> Any:
    """This rank's part of ``job``: its shard's loss, backward, the all-reduce; its gradients.
    A tuple is a spec idiom block instead (``batchgrad_spec/distributed/idioms.py``)."""
    if isinstance(job, tuple):
        from .idioms import run_torch

        return run_torch(rank, *job)
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from batchgrad_spec.backends import torch_backend as tb

    world = dist.get_world_size()
    config = Config("cpu", job.dtype)
    own = shards(job.problem, job.sizes)[rank]
    local = sum_type(own) if job.scheme == "global_normaliser" else own
    model = tb.build_model(local, config)
    ddp = job.scheme in ("rank_mean", "count_weighted")
    forward = DistributedDataParallel(model) if ddp else model
    with tb._strict(config):
        loss, x, c = _local_loss(forward, local, config)
        if job.scheme in ("count_weighted", "global_normaliser"):
            # Ω_r: Σ c_i computed from the data (weighted_mean), else the shard's count (N_r,
            # or its valid tokens); Ω is their sum over the ranks, all-reduced like the gradients
            if own.reduction.name == "weighted_mean":
                assert c is not None
                omega_r = c.sum().detach()
            else:
                omega_r = torch.tensor(normaliser(own), dtype=x.dtype)
            omega = omega_r.clone()
            dist.all_reduce(omega, op=dist.ReduceOp.SUM)
            if job.scheme == "count_weighted":
                loss = loss * (world * float(omega_r) / float(omega))
            else:
                loss = loss / omega
        if job.penalty_ranks and job.penalty_ranks[rank]:
            penalty = 0.5 * job.lam * sum((p * p).sum() for p in model.parameters())
            loss = loss + job.penalty_ranks[rank] * penalty
        loss.backward()
    if not ddp:
        for p in model.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
    return {n: p.grad.detach().to(torch.float64).numpy().copy()
            for n, p in model.named_parameters() if p.grad is not None}


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="a rank of the torch DDP engine (internal)")
    parser.add_argument("--worker", type=int, required=True)
    parser.add_argument("--world", type=int, required=True)
    parser.add_argument("--store-port", type=int, required=True)
    args = parser.parse_args(argv)
    serve(args.worker, lambda: _setup(args.worker, args.world, args.store_port), _run)


# -- the engine (this process) ---------------------------------------------------------------------
class TorchDDPEngine(PooledEngine):
    """``torch.distributed`` (gloo) over R local processes, started once and reused
    (``lifecycle.PooledEngine``: start, timeouts, failures); the ``TCPStore`` lives here."""

    name = "torch"
    module = "batchgrad_spec.distributed.torch_ddp"
    label = "torch DDP rank"
    title = "torch DDP"
    stopped_text = "the cluster"
    start_timeout_s = START_TIMEOUT_S
    reply_timeout_s = REPLY_TIMEOUT_S

    def __init__(self, world_size: int) -> None:
        super().__init__(world_size)
        self._store: Any = None

    @property
    def workers_text(self) -> str:
        return f"the gloo cluster of {self.world_size} ranks on 127.0.0.1"

    def _prepare(self) -> Callable[[int], list[str]]:
        import torch.distributed as dist

        self._store = dist.TCPStore("127.0.0.1", 0, world_size=None, is_master=True,
                                    timeout=datetime.timedelta(seconds=START_TIMEOUT_S),
                                    wait_for_workers=False)
        port = str(self._store.port)
        return lambda r: ["--world", str(self.world_size), "--store-port", port]

    def _release(self) -> None:
        self._store = None

    def run(self, job: Job) -> list[Grads]:
        if len(job.sizes) != self.world_size:
            raise ValueError(f"job has {len(job.sizes)} shards; the cluster has "
                             f"{self.world_size} ranks")
        if job.scheme == "shard_map_textbook":
            raise ValueError("shard_map_textbook is a JAX idiom; torch has no counterpart")
        answers = self._request(job, [job] * self.world_size)
        return [{k: np.asarray(v) for k, v in a.items()} for a in answers]

    def idiom(self, idiom: Any, problem: Problem, sizes: tuple[int, ...], dtype: str
              ) -> list[np.ndarray]:
        """Every rank's ``grad`` of a spec idiom block (``idioms.run_torch``)."""
        return self._request(Job(problem, dtype, sizes, "rank_mean"),
                             [(idiom, problem, sizes, dtype)] * self.world_size)


if __name__ == "__main__":
    main(sys.argv[1:])
