"""What PyTorch training code does with gradients: the batch gradient (``backward()``), gradient
accumulation into ``.grad`` over micro-batches (spec §5.1–§5.5) and ``torch.optim`` update steps
(spec chapter 6).

Each forward/backward runs in its own precision region (``precision_region``) with
``batch_of_one`` turning train-mode BatchNorm's refusal of one example into a §4.2 error; an
optimiser step runs outside the region: autocast caches its bfloat16 copies of the weights until
its region ends, so a loop inside one region would run every forward with the first step's
weights (§7.4).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from reference.batch import Batch
from reference.contract import Config
from reference.problem import Problem
from reference.types import Grads

from .data import extra_tensors, tensors, to_numpy
from .losses import reduced_loss
from .modules import Net, batch_of_one, build_model
from .precision import precision_region

__all__ = ["accumulate", "loss_and_grad", "torch_optimizer", "train"]


def _backward(problem: Problem, config: Config, model: Net, scale: float | None = None,
              penalty: float | None = None) -> torch.Tensor:
    """Backward of the problem's reduced loss L (``reduced_loss``) through ``model`` in one
    precision region, as ``(L * scale + penalty * sum(p.pow(2).sum() ...)).backward()`` with the
    factor and the term only where given; the loss differentiated."""
    x, y, c = tensors(problem, config)
    extra = extra_tensors(problem, config)
    with precision_region(config), batch_of_one(problem):
        loss = reduced_loss(problem, model(x, extra.get("drop")), y, c, extra)
        if scale is not None:
            loss = loss * scale
        if penalty is not None:
            loss = loss + penalty * sum(p.pow(2).sum() for p in model.parameters())
        loss.backward()
    return loss


def _grads(model: Net) -> Grads:
    return {n: to_numpy(p.grad) for n, p in model.named_parameters() if p.grad is not None}


def loss_and_grad(problem: Problem, config: Config) -> tuple[float, Grads]:
    """L and ∇L: the reduced loss of the whole batch, ``backward()``, the ``.grad``s."""
    model = build_model(problem, config)
    loss = _backward(problem, config, model)
    return float(loss.detach()), _grads(model)


def accumulate(problem: Problem, config: Config, plan: Any, method: str = "sum") -> Grads:
    """Gradient accumulation as PyTorch users write it: ``zero_grad`` once, then for each
    micro-batch k of the ``reference.accumulation.Accumulation`` plan
    ``(loss_k * s_k + t_k * (l2 / 2) * sum(p.pow(2).sum() ...)).backward()``, loss_k the
    micro-batch's ``reduced_loss`` (PyTorch's own ``reduction=``, under ``plan.reduction``);
    ``backward()`` adds into ``.grad`` — a summing accumulator that divides by nothing
    (spec §5.5) — and the accumulated ``.grad`` is returned. No optimiser step in between:
    every micro-batch is differentiated at the same θ. A train-mode BatchNorm normalises each
    micro-batch with its own statistics, as it does in PyTorch."""
    from reference.accumulation import micro_batches

    if method != "sum":
        raise ValueError(f"torch backend: accumulator {method!r}; PyTorch's .grad sums "
                         f"(method 'sum')")
    model = build_model(problem, config)
    model.zero_grad(set_to_none=True)
    parts = micro_batches(problem, plan)
    for part, s, t in zip(parts, plan.scales, plan.penalty_scales, strict=True):
        _backward(part, config, model, scale=s, penalty=t * (plan.l2 / 2) if t else None)
    return _grads(model)


def torch_optimizer(params: Any, opt: Any) -> torch.optim.Optimizer:
    """The ``torch.optim`` object realising a ``reference.update.Optimizer`` (spec §6.1)."""
    if opt.name == "sgd":
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, dampening=0.0,
                               weight_decay=opt.weight_decay, nesterov=False)
    cls = torch.optim.Adam if opt.name == "adam" else torch.optim.AdamW
    return cls(params, lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay)


def train(problem: Problem, config: Config, optimizer: Any, batches: Sequence[Batch]) -> Grads:
    """One ``torch.optim`` step per batch from ``problem.params``; the final parameters.

    ``optimizer`` is a ``reference.update.Optimizer``: "sgd" → ``torch.optim.SGD`` (dampening
    0, nesterov False, ``weight_decay`` = L2), "adam" → ``torch.optim.Adam`` (L2),
    "adamw" → ``torch.optim.AdamW`` (decoupled). Each step: ``zero_grad``, the batch's
    reduced loss (``reduced_loss``, the problem's reduction), ``backward()``, ``step()``.
    A train-mode BatchNorm updates its running statistics as a side effect, which does not
    change the returned parameters.
    """
    model = build_model(problem, config)
    opt = torch_optimizer(model.parameters(), optimizer)
    for batch in batches:
        opt.zero_grad(set_to_none=True)
        _backward(problem.with_batch(batch), config, model)  # the step outside its region
        opt.step()
    return {n: to_numpy(p) for n, p in model.named_parameters()}
