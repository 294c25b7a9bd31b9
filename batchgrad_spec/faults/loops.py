"""Deliberately wrong ``train_loop`` implementations: the training-loop bugs chapter 10 exists to
catch (issue #14), each caught by its clause in ``tests/meta/test_loop_faults.py``.

Each is the reference's epoch (``reference.loop.run_loop``, in the dtype) with one thing wrong:

* ``clip_per_micro_batch``     ``clip_grad_norm_`` after every micro-batch's ``backward()``, on the
  partly accumulated gradient (accelerate#641, transformers#1563): caught by §10.1
* ``clip_per_rank_local_norm``  each rank clips its own gradient by its local norm before the
  all-reduce: caught by §10.1
* ``clip_before_unscaling``    the loss-scaled gradient S·G clipped at c, then unscaled
  (Lightning#9599, pytorch/examples#1196): caught by §10.3
* ``skipped_step_advances_adam``  a skipped (non-finite) step leaves θ alone but still advances
  the optimizer's step counter (NVIDIA/apex#1512): caught by §10.3
* ``dp_clip_after_sum``        DP-SGD that clips the summed gradient instead of each example's:
  caught by §10.2
* ``micro_batch_mean_over_k``  each micro-batch's (token) mean divided by K and added, the loss
  reported the same way (transformers#34191 before ``num_items_in_batch``): caught by §10.4

Loadable as ``--backend batchgrad_spec.faults.loops:<name>``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from reference.accumulation import count_weighted, micro_gradients
from reference.batch import Batch
from reference.contract import Config
from reference.grads import batch_grad, per_example_grads
from reference.loop import (
    Loop,
    LoopResult,
    clip_factor,
    global_norm,
    loop_batches,
    window_gradient,
    window_problem,
)
from reference.parallel import even_sizes
from reference.problem import Problem
from reference.types import Grads
from reference.update import State, step

from .base import Faulty

__all__ = ["clip_before_unscaling", "clip_per_micro_batch", "clip_per_rank_local_norm",
           "dp_clip_after_sum", "micro_batch_mean_over_k", "skipped_step_advances_adam"]


def _clip(g: Grads, c: float, dt: np.dtype) -> Grads:
    phi = dt.type(clip_factor(global_norm(g), c))
    return {k: v * phi for k, v in g.items()}


def _parts(at: Problem, sizes: Sequence[int], dt: np.dtype) -> list[Grads]:
    """s_k ∇L_k of consecutive parts (count-weighted scales: Σ_k is the window's ∇L)."""
    return micro_gradients(at, count_weighted(at, tuple(sizes)), dt)


class _FaultyLoop(Faulty):
    """``run_loop`` with a hook for the window's gradient and one for a skipped window."""

    def window(self, at: Problem, loop: Loop, idx: Sequence[int], dt: np.dtype
               ) -> tuple[float, Grads]:
        return window_gradient(at, loop, dt)

    def skip(self, state: State) -> None:
        """What a skipped window does to the optimizer state: nothing."""

    def train_loop(self, problem: Problem, config: Config, loop: Loop,
                   batches: Sequence[Batch]) -> LoopResult:
        dt = np.dtype(config.dtype)
        batches = loop_batches(problem, loop)
        theta = {k: v.astype(dt) for k, v in problem.params.items()}
        state, losses, skipped = State(), [], loop.skipped()
        with np.errstate(all="ignore"):
            for w, idx in enumerate(loop.windows):
                if w in skipped:
                    losses.append(math.nan)
                    self.skip(state)
                    continue
                at = window_problem(problem.with_params(theta), batches, idx)
                loss, g = self.window(at, loop, idx, dt)
                losses.append(loss)
                theta, state = step(loop.optimizer, theta, g, state, dt)
        return LoopResult({k: v.astype(np.float64) for k, v in theta.items()}, state.t, skipped,
                          tuple(losses))


class ClipPerMicroBatch(_FaultyLoop):
    fault = "clip_grad_norm_ after every micro-batch"

    def window(self, at: Problem, loop: Loop, idx: Sequence[int], dt: np.dtype
               ) -> tuple[float, Grads]:
        if loop.clip_norm is None or loop.per_example_clip is not None:
            return super().window(at, loop, idx, dt)
        running: Grads = {}
        for g in _parts(at, [loop.micro_batches[i] for i in idx], dt):
            running = {k: running.get(k, 0) + v for k, v in g.items()}
            running = _clip(running, loop.clip_norm, dt)
        return batch_grad(at, dt)[0], running


class ClipPerRankLocalNorm(_FaultyLoop):
    fault = "each rank clips its gradient by its local norm"

    def window(self, at: Problem, loop: Loop, idx: Sequence[int], dt: np.dtype
               ) -> tuple[float, Grads]:
        if loop.clip_norm is None or loop.ranks == 1 or loop.per_example_clip is not None:
            return super().window(at, loop, idx, dt)
        # rank r holds shard r of every micro-batch: order the window's examples by rank
        ranks: list[list[int]] = [[] for _ in range(loop.ranks)]
        start = 0
        for i in idx:
            for r, m in enumerate(even_sizes(loop.micro_batches[i], loop.ranks)):
                ranks[r].extend(range(start, start + m))
                start += m
        order = [j for r in ranks for j in r]
        by_rank = at.with_batch(at.batch.take(order))
        plan = count_weighted(by_rank, tuple(len(r) for r in ranks))
        total: Grads = {}
        for g, s in zip(micro_gradients(by_rank, plan, dt), plan.scales, strict=True):
            local = {k: v / dt.type(s) for k, v in g.items()} if s else g
            phi = dt.type(clip_factor(global_norm(local), loop.clip_norm))
            total = {k: total.get(k, 0) + v * phi for k, v in g.items()}
        return batch_grad(at, dt)[0], total


class ClipBeforeUnscaling(_FaultyLoop):
    fault = "clips the loss-scaled gradient, then unscales"

    def window(self, at: Problem, loop: Loop, idx: Sequence[int], dt: np.dtype
               ) -> tuple[float, Grads]:
        if loop.clip_norm is None or loop.loss_scale is None:
            return super().window(at, loop, idx, dt)
        loss, g = batch_grad(at, dt)
        scale = dt.type(loop.loss_scale)
        clipped = _clip({k: v * scale for k, v in g.items()}, loop.clip_norm, dt)
        return loss, {k: v / scale for k, v in clipped.items()}


class SkippedStepAdvancesAdam(_FaultyLoop):
    fault = "a skipped step still advances the step counter"

    def skip(self, state: State) -> None:
        state.t += 1


class DpClipAfterSum(_FaultyLoop):
    fault = "DP-SGD clips the summed gradient"

    def window(self, at: Problem, loop: Loop, idx: Sequence[int], dt: np.dtype
               ) -> tuple[float, Grads]:
        if loop.per_example_clip is None:
            return super().window(at, loop, idx, dt)
        loss = batch_grad(at, dt)[0]
        per = per_example_grads(at, dt)[1]
        b = dt.type(loop.expected_batch_size)
        g = _clip({k: v.sum(axis=0) for k, v in per.items()}, loop.per_example_clip, dt)
        g = {k: v / b for k, v in g.items()}
        if loop.clip_norm is not None:
            g = _clip(g, loop.clip_norm, dt)
        return loss, g


class MicroBatchMeanOverK(_FaultyLoop):
    fault = "each micro-batch's mean divided by K"

    def window(self, at: Problem, loop: Loop, idx: Sequence[int], dt: np.dtype
               ) -> tuple[float, Grads]:
        if loop.per_example_clip is not None:
            return super().window(at, loop, idx, dt)
        k = dt.type(loop.accumulation_steps)
        loss, total = 0.0, {}
        start = 0
        for i in idx:
            m = loop.micro_batches[i]
            part = at.with_batch(at.batch.take(list(range(start, start + m))))
            start += m
            lk, gk = batch_grad(part, dt)
            loss += float(lk) / float(k)
            total = {n: total.get(n, 0) + v / k for n, v in gk.items()}
        if loop.clip_norm is not None:
            total = _clip(total, loop.clip_norm, dt)
        return loss, total


clip_per_micro_batch = ClipPerMicroBatch("clip_per_micro_batch")
clip_per_rank_local_norm = ClipPerRankLocalNorm("clip_per_rank_local_norm")
clip_before_unscaling = ClipBeforeUnscaling("clip_before_unscaling")
skipped_step_advances_adam = SkippedStepAdvancesAdam("skipped_step_advances_adam")
dp_clip_after_sum = DpClipAfterSum("dp_clip_after_sum")
micro_batch_mean_over_k = MicroBatchMeanOverK("micro_batch_mean_over_k")
