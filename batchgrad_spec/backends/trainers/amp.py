"""``torch.amp.GradScaler`` in the training loop PyTorch's AMP recipe writes ("Working with
unscaled gradients", "Gradient accumulation"): ``--backend batchgrad_spec.backends.trainers.amp``.

Per optimizer step (window of micro-batches): ``scaler.scale(loss).backward()`` for each
micro-batch, ``loss`` its sum-reduced loss divided by the window's normaliser (so the step's
gradient is that of the mean over all the window's examples or tokens, whatever the micro-batch
sizes); then ``scaler.unscale_(opt)``, ``clip_grad_norm_`` on the unscaled gradient,
``scaler.step(opt)`` — which skips ``opt.step()`` when the gradient is not finite, so Adam's
``state['step']`` does not advance — and ``scaler.update()``. GradScaler runs on the CPU
(``torch.amp.GradScaler("cpu")``, float32 and float64 parameters). A step was skipped when
``update()`` lowered the scale (it multiplies by ``backoff_factor`` < 1 only then).
"""

from __future__ import annotations

from typing import Any

import torch

from reference.contract import Config
from reference.problem import Problem

from ..torch_backend import torch_optimizer
from .common import (
    SUMMED,
    TrainerBackend,
    Windows,
    adam_step_count,
    loop_result,
    micro_loss,
    model_for,
    window_normaliser,
)

__all__ = ["AmpBackend", "backend", "grad_scaler", "run"]


def grad_scaler(loop: Any) -> torch.amp.GradScaler | None:
    """The ``GradScaler`` realising ``loop.loss_scale`` (None without loss scaling): its initial
    scale, with PyTorch's dynamic defaults (halve on a non-finite step, double after
    ``growth_interval`` finite ones) unless the loop names its own."""
    scale = getattr(loop, "loss_scale", None)
    if scale is None:
        return None
    kwargs = {k: getattr(loop, k) for k in ("growth_factor", "backoff_factor", "growth_interval")
              if getattr(loop, k, None) is not None}
    return torch.amp.GradScaler("cpu", init_scale=float(scale), **kwargs)


def run(problem: Problem, config: Config, loop: Any, windows: Windows) -> dict[str, Any]:
    """The AMP recipe's loop over ``windows``; the ``train_loop`` answer."""
    model = model_for(problem, config)
    opt = torch_optimizer(model.parameters(), loop.optimizer)
    scaler = grad_scaler(loop)
    clip = getattr(loop, "clip_norm", None)
    taken, skipped = 0, []
    for w, window in enumerate(windows):
        opt.zero_grad(set_to_none=True)
        n = window_normaliser(window)
        for part in window:
            loss = micro_loss(model, part, config, SUMMED[part.reduction.name]) / n
            (loss if scaler is None else scaler.scale(loss)).backward()
        if scaler is not None:
            scaler.unscale_(opt)
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        if scaler is None:
            opt.step()
            taken += 1
            continue
        before = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        if scaler.get_scale() < before:
            skipped.append(w)
        else:
            taken += 1
    steps = adam_step_count(opt) if loop.optimizer.adam else taken
    return loop_result(model, steps, skipped)


class AmpBackend(TrainerBackend):
    """A plain PyTorch loop with ``torch.amp.GradScaler`` (loss scaling, clipping)."""

    def __init__(self) -> None:
        super().__init__(name="torch_amp",
                         loop_features=("loop:clip_norm", "loop:loss_scale"))

    def train_loop(self, problem: Problem, config: Config, loop: Any,
                   batches: Any) -> dict[str, Any]:
        from .schedule import windows_of

        return run(problem, config, loop, windows_of(problem, loop, batches, self.name))


backend = AmpBackend()
