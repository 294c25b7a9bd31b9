"""Hugging Face ``accelerate``: ``--backend batchgrad_spec.backends.trainers.accel:backend``.

The loop of accelerate's gradient-accumulation guide, on the CPU::

    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=K)
    model, opt, loader = accelerator.prepare(model, opt, loader)
    for batch in loader:
        with accelerator.accumulate(model):
            loss = loss_fn(model(x), y)          # the micro-batch's mean (the problem's reduction)
            accelerator.backward(loss)           # divides by K: loss / gradient_accumulation_steps
            if accelerator.sync_gradients and clip:
                accelerator.clip_grad_norm_(model.parameters(), clip)
            opt.step(); opt.zero_grad()          # no-ops until sync_gradients

(accelerate 1.15.0: ``Accelerator.backward`` divides every loss by ``gradient_accumulation_steps``;
``accumulate()`` sets ``sync_gradients`` every K-th micro-batch and at the end of a prepared
data loader; the prepared optimizer's ``step``/``zero_grad`` do nothing in between.) The loader
yields one micro-batch per item, in order. The last window of an epoch may be shorter: it is
still divided by K. ``TOKENS`` is the second idiom of the guide ("loss normalization"): each
micro-batch's summed loss divided by the window's count of examples or tokens, times K.
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

__all__ = ["AccelerateBackend", "backend", "run", "tokens"]


def _fresh_accelerator(k: int) -> Any:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return Accelerator(cpu=True, gradient_accumulation_steps=k)


def run(problem: Problem, config: Config, loop: Any, windows: Windows,
        normalise: bool = False) -> dict[str, Any]:
    """accelerate's accumulation loop over ``windows`` (``normalise``: the loss-normalisation
    idiom); the ``train_loop`` answer."""
    k = loop.accumulation_steps
    parts = [(part, w) for w, window in enumerate(windows) for part in window]
    norms = [window_normaliser(window) for window in windows]
    acc = _fresh_accelerator(k)
    model = model_for(problem, config)
    opt = torch_optimizer(model.parameters(), loop.optimizer)
    loader = torch.utils.data.DataLoader(list(range(len(parts))), batch_size=1, shuffle=False,
                                         collate_fn=lambda items: torch.tensor(items))
    model, opt, loader = acc.prepare(model, opt, loader)
    clip = getattr(loop, "clip_norm", None)
    taken = 0
    for index in loader:
        part, w = parts[int(index[0])]
        with acc.accumulate(model):
            if normalise:
                loss = micro_loss(model, part, config, SUMMED[part.reduction.name]) / norms[w] * k
            else:
                loss = micro_loss(model, part, config)
            acc.backward(loss)
            if acc.sync_gradients:
                if clip is not None:
                    acc.clip_grad_norm_(model.parameters(), clip)
                taken += 1
            opt.step()
            opt.zero_grad()
    inner = acc.unwrap_model(model)
    steps = adam_step_count(opt.optimizer) if loop.optimizer.adam else taken
    return loop_result(inner, steps)


class AccelerateBackend(TrainerBackend):
    """``accelerate.Accelerator(gradient_accumulation_steps=K)``, its ``accumulate()``,
    ``backward`` and ``clip_grad_norm_``; ``normalise`` selects the loss-normalisation idiom."""

    def __init__(self, normalise: bool = False) -> None:
        super().__init__(name="accelerate_tokens" if normalise else "accelerate",
                         loop_features=("loop:clip_norm",))
        self.normalise = normalise

    def versions(self) -> dict[str, str]:
        import accelerate

        return {"torch": torch.__version__, "accelerate": accelerate.__version__}

    def train_loop(self, problem: Problem, config: Config, loop: Any,
                   batches: Any) -> dict[str, Any]:
        from .schedule import windows_of

        windows = windows_of(problem, loop, batches, self.name)
        return run(problem, config, loop, windows, self.normalise)


backend = AccelerateBackend()
tokens = AccelerateBackend(normalise=True)
