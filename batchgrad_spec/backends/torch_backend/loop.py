"""The optional training loop (spec chapter 10, §8.10) as PyTorch users write it by hand.

One epoch over the micro-batches of a ``reference.loop.Loop``; every window of K micro-batches
is one ``optimizer.step()``:

    optimizer.zero_grad()
    for each micro-batch (and each rank's shard of it):
        (S · loss_k).backward()           loss_k = local sum / Ω_window (the window's example or
                                          token count, as the Trainer's num_items_in_batch), or
                                          the local mean · Ω_k/Ω for the other reductions
    if S: p.grad.mul_(1/S); skip the step if any gradient is not finite
    torch.nn.utils.clip_grad_norm_(model.parameters(), c)
    optimizer.step()

Data parallelism over R ranks is simulated in one process: each rank's shard of a micro-batch
runs its own ``backward()`` into the same ``.grad``, which is the all-reduce's sum. DP-SGD
(``per_example_clip`` C): per-example gradients by ``torch.func.vmap(torch.func.grad(...))``,
factors ``(C / (norms + 1e-6)).clamp(max=1.0)`` as Opacus computes them, Σ_i factor_i g_i / B
written into ``.grad``. The reported loss is the sum of the micro-batch losses as differentiated
(without S): the window's mean. The step counter is Adam's ``state["step"]``; plain SGD has none,
so the steps taken are counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from reference.accumulation import count_weighted, global_normaliser, micro_batches
from reference.batch import Batch
from reference.contract import Config
from reference.loop import window_problem
from reference.parallel import even_sizes
from reference.problem import Problem

from .data import extra_tensors, map_extra, tensors, to_numpy
from .losses import per_example_loss, reduced_loss
from .modules import Net, build_model
from .precision import precision_region
from .training import _backward, torch_optimizer

__all__ = ["train_loop"]


def _plan(window: Problem, sizes: Sequence[int]) -> Any:
    if window.reduction.name in ("mean", "weighted_mean"):
        return global_normaliser(window, sizes)
    return count_weighted(window, sizes)


def _dp_sgd(window: Problem, config: Config, model: Net, c: float, b: int) -> float:
    """.grad ← Σ_i min(1, C/(‖g_i‖ + 10⁻⁶)) g_i / B by vmap; returns the window's loss."""
    x, y, _ = tensors(window, config)
    extra = extra_tensors(window, config)
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss_one(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor,
                 ei: dict[str, Any]) -> torch.Tensor:
        ei = map_extra(lambda a: a.unsqueeze(0), ei)
        out = torch.func.functional_call(model, p, (xi.unsqueeze(0), ei.get("drop")))
        return per_example_loss(window, out, yi.unsqueeze(0), ei, vmapped=True)[0]

    with precision_region(config):
        grads = torch.func.vmap(torch.func.grad(loss_one), in_dims=(None, 0, 0, 0))(
            params, x, y, extra)
        norms = torch.stack([g.reshape(g.shape[0], -1).norm(2, dim=1) for g in grads.values()],
                            dim=1).norm(2, dim=1)
        factor = (c / (norms + 1e-6)).clamp(max=1.0)
        for n, p in model.named_parameters():
            g = grads[n]
            p.grad = torch.einsum("i,i...->...", factor, g) / b
        with torch.no_grad():
            xw, yw, cw = tensors(window, config)
            return float(reduced_loss(window, model(xw, extra.get("drop")), yw, cw, extra))


def train_loop(problem: Problem, config: Config, loop: Any, batches: Sequence[Batch]) -> dict:
    """One epoch of ``loop`` from ``problem.params`` over ``batches`` (module docstring)."""
    model = build_model(problem, config)
    params = list(model.parameters())
    opt = torch_optimizer(params, loop.optimizer)
    scale = loop.loss_scale
    losses: list[float] = []
    skipped: list[int] = []
    taken = 0
    for w, idx in enumerate(loop.windows):
        opt.zero_grad(set_to_none=True)
        window = window_problem(problem, batches, idx)
        if loop.per_example_clip is not None:
            loss = _dp_sgd(window, config, model, loop.per_example_clip,
                           loop.expected_batch_size)
        else:
            sizes = [s for i in idx for s in even_sizes(loop.micro_batches[i], loop.ranks)]
            plan = _plan(window, sizes)
            loss = 0.0
            for part, s in zip(micro_batches(window, plan), plan.scales, strict=True):
                differentiated = _backward(part, config, model, scale=s * (scale or 1.0))
                loss += float(differentiated.detach()) / (scale or 1.0)
        if scale is not None:
            if not all(bool(torch.isfinite(p.grad).all()) for p in params if p.grad is not None):
                skipped.append(w)
                losses.append(math.nan)
                continue
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(1.0 / scale)
        if loop.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, loop.clip_norm)
        opt.step()
        taken += 1
        losses.append(loss)
    counters = [int(s["step"]) for s in opt.state.values() if "step" in s]
    return {"params": {n: to_numpy(p) for n, p in model.named_parameters()},
            "optimizer_steps": max(counters) if counters else taken,
            "skipped": tuple(skipped), "reported_losses": tuple(losses)}
