"""What the trainer backends share: the optimizer-step windows of a training loop, the network
and its loss as PyTorch modules (the ``torch`` backend's builders), the contract's required
methods delegated to the ``torch`` backend, and the answer of ``train_loop``.

A trainer is a real training-loop library (``transformers.Trainer``, ``accelerate``, Lightning,
Opacus, ``torch.amp.GradScaler``); what it decides is what happens *around* the backward passes:
how it scales a micro-batch's loss under accumulation, when it clips and on what, when a step is
skipped, what it reports as the loss. The gradients of one micro-batch are PyTorch's own, so the
required contract methods (``loss_and_grad``, ``per_example``, ``train``, ``accumulate``) are
the ``torch`` backend's, marked so in ``DELEGATED`` (a trainer adds nothing to them). The
chapter a trainer is checked on is chapter 10, through ``train_loop``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from reference.batch import Batch
from reference.contract import Config
from reference.problem import Problem
from reference.types import Grads

from ..torch_backend import backend as torch_backend
from ..torch_backend import extra_tensors, precision_region, reduced_loss, tensors, to_numpy
from ..torch_backend.modules import Net, build_model

__all__ = ["DELEGATED", "LOOP_FEATURES", "TrainerBackend", "Window", "Windows", "loop_result",
           "micro_loss", "model_for", "uniform_k",
           "SUMMED", "adam_step_count", "window_normaliser"]

DELEGATED = ("loss_and_grad", "per_example", "train", "accumulate")
"""The contract methods every trainer backend answers with the plain ``torch`` backend."""

LOOP_FEATURES = ("loop:clip_norm", "loop:per_example_clip", "loop:loss_scale",
                 "loop:reported_loss")
"""The training-loop capability names (issue #14); each trainer declares those it realises."""

Window = tuple[Problem, ...]
"""The micro-batches of one optimizer step, each the problem with that micro-batch's data."""
Windows = tuple[Window, ...]


def uniform_k(windows: Windows, trainer: str) -> int:
    """The K of a trainer that takes one ``gradient_accumulation_steps``: every window has K
    micro-batches except the last, which may have fewer (the uneven end of an epoch). Another
    schedule cannot be expressed with these trainers: a ValueError says so."""
    lengths = [len(w) for w in windows]
    if not lengths or min(lengths) < 1:
        raise ValueError(f"{trainer}: every optimizer step needs at least one micro-batch, "
                         f"got {lengths}")
    k = lengths[0]
    if any(n != k for n in lengths[:-1]) or lengths[-1] > k:
        raise ValueError(f"{trainer}: gradient_accumulation_steps is one K for the whole run "
                         f"(only the last window may be shorter); got micro-batches per step "
                         f"{lengths}")
    return k


def model_for(problem: Problem, config: Config) -> Net:
    """The network as ``torch.nn`` modules with the problem's θ (the torch backend's builders)."""
    return build_model(problem, config)


def micro_loss(model: torch.nn.Module, part: Problem, config: Config,
               reduction: str | None = None) -> torch.Tensor:
    """The reduced loss of one micro-batch through ``model`` with PyTorch's own ``reduction=``
    (``torch_backend.reduced_loss``), under ``reduction`` if given, else the problem's."""
    if reduction is not None:
        part = part.with_reduction(reduction)
    x, y, c = tensors(part, config)
    extra = extra_tensors(part, config)
    with precision_region(config):
        return reduced_loss(part, model(x, extra.get("drop")), y, c, extra)


def loop_result(model: torch.nn.Module, optimizer_steps: int, skipped: Sequence[int] = (),
                reported_losses: Sequence[float] | None = None) -> dict[str, Any]:
    """The answer of ``train_loop``: final θ, the optimiser's step counter (the one its bias
    correction uses), the indices of the skipped windows and, where the trainer reports one,
    its loss per step."""
    return {"params": {n: to_numpy(p) for n, p in model.named_parameters()},
            "optimizer_steps": int(optimizer_steps), "skipped": tuple(skipped),
            "reported_losses": None if reported_losses is None else
            np.asarray(reported_losses, dtype=np.float64)}


def adam_step_count(opt: torch.optim.Optimizer) -> int:
    """The largest ``state['step']`` of a ``torch.optim`` optimiser (0 before its first step);
    SGD keeps no counter, so the steps taken are counted by the caller instead."""
    steps = [int(s["step"]) for s in opt.state.values() if "step" in s]
    return max(steps, default=0)


@dataclass
class TrainerBackend:
    """A training-loop library as a backend (spec chapter 10). Subclasses set ``name``,
    ``loop_features`` (the chapter-10 capabilities it realises), ``unsupported`` (capabilities of
    the torch backend the trainer cannot express), ``versions`` and ``train_loop``; the required
    contract methods are the ``torch`` backend's (``DELEGATED``)."""

    name: str = "trainer"
    loop_features: tuple[str, ...] = ()
    unsupported: tuple[str, ...] = ()
    dtype_list: tuple[str, ...] = ("float64", "float32")
    clip_epsilon: float = 1e-6
    """The ε added to norms before clipping (spec §8.10): every trainer here clips with
    ``torch.nn.utils.clip_grad_norm_`` (transformers and accelerate through
    ``Accelerator.clip_grad_norm_``, Lightning through its precision plugin) or Opacus's
    ``C / (‖g_i‖ + 1e-6)``, both 10⁻⁶."""

    def versions(self) -> Mapping[str, str]:
        return {"torch": torch.__version__}

    def devices(self) -> Sequence[str]:
        return ("cpu",)

    def dtypes(self) -> Sequence[str]:
        return self.dtype_list

    def per_example_methods(self) -> Sequence[str]:
        return torch_backend.per_example_methods()

    def capabilities(self) -> Iterable[str]:
        """The torch backend's vocabulary (its methods answer the required calls) less what this
        trainer cannot express (``unsupported``), plus the loop features it realises."""
        from reference.capabilities import VOCABULARY, capabilities_of, register
        from reference.loop import LOOP_FEATURES as DESCRIBED

        for feature in self.loop_features:  # chapter 10's names, registered once
            if feature not in VOCABULARY:
                register(feature, DESCRIBED[feature])
        # the torch backend's own loop:* features are its hand-written loop's, not this trainer's
        return ((capabilities_of(torch_backend) - frozenset(self.unsupported)
                 - frozenset(DESCRIBED)) | frozenset(self.loop_features))

    # -- the required methods: PyTorch's own gradients, delegated ------------------------------
    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        return torch_backend.loss_and_grad(problem, config)

    def per_example(self, problem: Problem, config: Config,
                    method: str) -> tuple[np.ndarray, Grads]:
        return torch_backend.per_example(problem, config, method)

    def train(self, problem: Problem, config: Config, optimizer: Any,
              batches: Sequence[Batch]) -> Grads:
        return torch_backend.train(problem, config, optimizer, batches)

    def accumulation_methods(self) -> Sequence[str]:
        return ("sum",)

    def accumulate(self, problem: Problem, config: Config, plan: Any,
                   method: str = "sum") -> Grads:
        return torch_backend.accumulate(problem, config, plan, method)


SUMMED = {"mean": "sum", "sum": "sum", "weighted_mean": "weighted", "weighted": "weighted"}
"""Reduction → the summing one whose micro-batch terms add up to the window's (over the sum)."""


def window_normaliser(window: Window) -> float:
    """What the window's loss divides by: Σ ω_i over all its micro-batches under "mean"
    (examples, or valid tokens of sequences, ``Problem.counts``), Σ c_i under "weighted_mean",
    1 under "sum" and "weighted". The window's loss is Σ_k (``SUMMED`` loss of micro-batch k) /
    this: the reduction over the whole optimizer step."""
    reduction = window[0].reduction.name
    if reduction == "mean":
        return float(sum(part.counts.sum() for part in window))
    if reduction == "weighted_mean":
        return float(sum(np.sum(part.batch.weights) for part in window))
    if reduction in SUMMED:
        return 1.0
    raise ValueError(f"trainer backends: reduction {reduction!r} not supported "
                     f"({', '.join(SUMMED)})")
