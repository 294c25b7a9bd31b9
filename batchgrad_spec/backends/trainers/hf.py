"""Hugging Face ``transformers.Trainer``: ``--backend batchgrad_spec.backends.trainers.hf:backend``.

The problem's network is a plain ``nn.Module`` (``TokenLossModel``, no hub download, no config):
its ``forward(x, labels, …, num_items_in_batch=None, **kwargs)`` returns ``{"loss": …}``, the
micro-batch's *summed* loss (over examples, or valid tokens of a sequence) divided by
``num_items_in_batch`` — the way the library's own causal-LM loss (``ForCausalLMLoss``) does
since transformers#34191. Because ``forward`` takes ``**kwargs``, the Trainer sets
``model_accepts_loss_kwargs`` and, per optimizer step, counts ``labels != -100`` over all the
micro-batches of the step (``Trainer._get_num_items_in_batch``) and does not divide by
``gradient_accumulation_steps`` again (transformers 5.23.0, ``Trainer.training_step``).

The Trainer runs one epoch with ``gradient_accumulation_steps=K``, ``per_device_train_batch_size
=1`` over a dataset whose items are whole micro-batches (the collator unwraps them), in order
(``train_sampling_strategy="sequential"``), on the CPU, with the problem's ``torch.optim``
optimiser and a constant schedule, ``max_grad_norm`` the loop's ``clip_norm`` (0 = off; the
default 1.0 would clip), ``logging_steps=1``: the logged ``loss`` of each step is the reported
loss. The last window of the epoch may be shorter: the Trainer takes fewer micro-batches then.
``MEAN`` is the other model a user writes: ``forward`` without ``**kwargs`` returning the
micro-batch's mean; the Trainer then divides it by the number of micro-batches of the step.
Under the "weighted_mean" reduction the Trainer's public hook ``get_batch_samples`` is overridden
to return Σ c_i of the step as ``num_items_in_batch`` (``_weighted_trainer``).
"""

from __future__ import annotations

import gc
import tempfile
from typing import Any

import torch
from torch import nn

from reference.contract import Config
from reference.problem import Problem

from ..torch_backend import extra_tensors, reduced_loss, tensors, torch_optimizer
from .common import (
    SUMMED,
    TrainerBackend,
    Windows,
    adam_step_count,
    loop_result,
    model_for,
)

__all__ = ["UNSUPPORTED", "HFTrainerBackend", "TokenLossModel", "backend", "mean"]

UNSUPPORTED = ("reduction:sequence_mean", "loss:class_weights", "loss:ignore_index",
               "loss:soft_targets", "loss:gaussian_nll")
"""What the Trainer's ``num_items_in_batch`` cannot normalise: it counts ``labels != -100``, so a
mean by class weights, per sequence, with another ignore index, or over probability targets'
elements is not a mean over what it counts; gaussian_nll's variances are no label."""


def _weighted_trainer() -> type:
    """``Trainer`` whose public hook ``get_batch_samples`` (the micro-batches of one optimizer
    step and their ``num_items_in_batch``) counts Σ c_i of the step's examples instead of its
    labels, for the example-weighted mean: how a user of per-example weights normalises."""
    from transformers import Trainer

    class WeightedTrainer(Trainer):
        def get_batch_samples(self, epoch_iterator: Any, num_batches: int,
                              device: Any) -> tuple[list, Any]:
            batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
            return batches, sum(b["c"].sum() for b in batches) if batches else None

    return WeightedTrainer


class TokenLossModel(nn.Module):
    """The network with its loss, as a model the Trainer calls with a micro-batch's items."""

    def __init__(self, net: nn.Module, problem: Problem, token_loss: bool) -> None:
        super().__init__()
        self.net, self.problem, self.token_loss = net, problem, token_loss

    def _loss(self, x: torch.Tensor, labels: torch.Tensor, extra: dict[str, Any],
              num_items_in_batch: Any) -> dict[str, torch.Tensor]:
        out, c = self.net(x, extra.get("drop")), extra.get("c")
        if not self.token_loss:
            return {"loss": reduced_loss(self.problem, out, labels, c, extra)}
        summed = SUMMED[self.problem.reduction.name]
        total = reduced_loss(self.problem.with_reduction(summed), out, labels, c, extra)
        reduction = self.problem.reduction.name
        if summed == reduction or num_items_in_batch is None:
            return {"loss": total}
        if reduction == "mean" and self.problem.loss.elementwise:
            total = total * out.shape[-1]  # Σ over the label elements the Trainer counts
        return {"loss": total / num_items_in_batch}


class _Kwargs(TokenLossModel):
    def forward(self, x: torch.Tensor, labels: torch.Tensor,
                num_items_in_batch: Any = None, **extra: Any) -> dict[str, torch.Tensor]:
        return self._loss(x, labels, extra, num_items_in_batch)


class _NoKwargs(TokenLossModel):
    def forward(self, x: torch.Tensor, labels: torch.Tensor, mask: Any = None,
                drop: Any = None, c: Any = None) -> dict[str, torch.Tensor]:
        extra = {k: v for k, v in (("mask", mask), ("drop", drop), ("c", c)) if v is not None}
        return self._loss(x, labels, extra, None)


def _items(windows: Windows, config: Config) -> list[dict[str, Any]]:
    """One dataset item per micro-batch: x, labels (−100 at masked tokens), mask, drop."""
    items = []
    for window in windows:
        for part in window:
            if part.batch.sequence and part.loss.elementwise:
                raise ValueError("hf: a sequence of an elementwise loss has no −100 labels to "
                                 "count; token losses here are cross-entropy")
            x, y, c = tensors(part, config)
            weights = {} if c is None else {"c": c}
            items.append({"x": x, "labels": y, **weights, **extra_tensors(part, config)})
    return items


def run(problem: Problem, config: Config, loop: Any, windows: Windows,
        token_loss: bool = True) -> dict[str, Any]:
    """One epoch of ``transformers.Trainer``; the ``train_loop`` answer."""
    from transformers import PrinterCallback, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    net = model_for(problem, config)
    model = (_Kwargs if token_loss else _NoKwargs)(net, problem, token_loss)
    opt = torch_optimizer(model.parameters(), loop.optimizer)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    clip = getattr(loop, "clip_norm", None)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=1, num_train_epochs=1,
            gradient_accumulation_steps=loop.accumulation_steps,
            max_grad_norm=0.0 if clip is None else float(clip), logging_steps=1,
            logging_strategy="steps", save_strategy="no", report_to="none", use_cpu=True,
            disable_tqdm=True, train_sampling_strategy="sequential", dataloader_num_workers=0,
            remove_unused_columns=False)  # keep the items the model takes through **kwargs
        cls = _weighted_trainer() if problem.reduction.name == "weighted_mean" else Trainer
        trainer = cls(model=model, args=args, train_dataset=_items(windows, config),
                      data_collator=lambda items: items[0], optimizers=(opt, schedule))
        trainer.remove_callback(PrinterCallback)
        # Trainer.train() starts with accelerator.free_memory(), a full gc.collect(): over the
        # test session's heap that is ~0.6 s per run. Objects that exist before the run are
        # frozen for its duration (gc.freeze: the collection skips them), then unfrozen.
        gc.freeze()
        try:
            trainer.train()
        finally:
            gc.unfreeze()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    steps = adam_step_count(opt) if loop.optimizer.adam else trainer.state.global_step
    return loop_result(net, steps, (), losses)


class HFTrainerBackend(TrainerBackend):
    """``transformers.Trainer`` with ``gradient_accumulation_steps`` and ``num_items_in_batch``
    (``token_loss``), or with a model that returns its micro-batch mean."""

    def __init__(self, token_loss: bool = True) -> None:
        super().__init__(name="hf_trainer" if token_loss else "hf_trainer_mean",
                         loop_features=("loop:clip_norm", "loop:reported_loss"),
                         unsupported=UNSUPPORTED)
        self.token_loss = token_loss

    def versions(self) -> dict[str, str]:
        import accelerate
        import transformers

        return {"torch": torch.__version__, "transformers": transformers.__version__,
                "accelerate": accelerate.__version__}

    def train_loop(self, problem: Problem, config: Config, loop: Any,
                   batches: Any) -> dict[str, Any]:
        from .schedule import windows_of

        windows = windows_of(problem, loop, batches, self.name)
        return run(problem, config, loop, windows, self.token_loss)


backend = HFTrainerBackend()
mean = HFTrainerBackend(token_loss=False)
