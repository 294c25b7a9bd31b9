"""Losses and reductions with ``torch.nn.functional`` and its own ``reduction=`` argument (spec
chapters 1-3).

* ``F.cross_entropy(weight=, ignore_index=, label_smoothing=, reduction=)`` for integer labels
  and probability targets, ``F.binary_cross_entropy_with_logits``, ``F.huber_loss(delta=)``,
  ``F.gaussian_nll_loss(full=False, eps=1e-6)``; "mean" and "sum" are PyTorch's own
  ``reduction=``. Where PyTorch's mean is NaN (every label ignored: spec/appendix-b-pitfalls.md#p7)
  the backend returns the NaN; it is not papered over.
* Sequences (N, T, d): masked tokens of a cross-entropy get label -100 and ``ignore_index=-100``;
  "mean" is the token mean (``F.cross_entropy(logits.reshape(-1, C), labels.reshape(-1),
  ignore_index=-100)``, the 2024 Hugging Face token-loss convention; elementwise losses
  ``(loss * mask).sum() / mask.sum()``); "sequence_mean" the mean over sequences of per-sequence
  token means; ℓ_i = Σ_t m_it ℓ_it.
* ``F.gaussian_nll_loss`` cannot run under ``torch.func.vmap`` with per-example variances: it
  checks ``torch.any(var < 0)`` in Python, data-dependent control flow that vmap rejects
  (RuntimeError "vmap: It looks like you're either (1) calling .item() on a Tensor or (2)
  attempting to use a Tensor in some data-dependent control flow ..."). The "vmap" method
  therefore writes its formula out as torch.func users must, with the same operations in the
  same order (``_gaussian_nll_by_hand``); "loop" and ``loss_and_grad`` call ``F.gaussian_nll_loss``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from reference.problem import Problem

__all__ = ["GAUSSIAN_NLL_EPS", "IGNORE", "per_example_loss", "reduced_loss"]

GAUSSIAN_NLL_EPS = 1e-6
"""``F.gaussian_nll_loss``'s default ``eps`` (variances are clamped below it; the suite's are far
above it)."""
IGNORE = -100
"""PyTorch's default ``ignore_index``: the label given to masked tokens of a sequence."""


def _weight_dtype(out: torch.Tensor) -> torch.dtype:
    return out.dtype if out.dtype in (torch.float32, torch.float64) else torch.float32


def _ce_kwargs(problem: Problem, out: torch.Tensor) -> dict[str, Any]:
    """``F.cross_entropy``'s own arguments for the problem's loss (their defaults when unset)."""
    loss = problem.loss
    weight = (None if loss.class_weights is None else
              torch.as_tensor(loss.class_weights, dtype=_weight_dtype(out), device=out.device))
    ignore = IGNORE if loss.ignore_index is None else loss.ignore_index
    return {"weight": weight, "ignore_index": ignore, "label_smoothing": loss.label_smoothing}


def _gaussian_nll_by_hand(out: torch.Tensor, y: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """``F.gaussian_nll_loss(out, y, var, full=False, eps=1e-6, reduction="none")`` with its
    operations in its order, minus the ``torch.any(var < 0)`` check vmap cannot run (module
    docstring): ``var.clamp(min=eps)`` (no gradient through it), ½(log v + (f − y)²/v)."""
    v = var.clamp(min=GAUSSIAN_NLL_EPS).detach()
    return 0.5 * (torch.log(v) + (out - y) ** 2 / v)


def _elementwise(problem: Problem, out: torch.Tensor, y: torch.Tensor,
                 extra: Mapping[str, Any], reduction: str, vmapped: bool = False) -> torch.Tensor:
    """The elementwise loss of ``torch.nn.functional`` with ``reduction=`` (over all elements)."""
    loss = problem.loss
    if loss.name == "squared_error":
        return F.mse_loss(out, y, reduction=reduction)
    if loss.name == "bce_with_logits":
        return F.binary_cross_entropy_with_logits(out, y, reduction=reduction)
    if loss.name == "huber":
        return F.huber_loss(out, y, reduction=reduction, delta=loss.delta)
    assert loss.name == "gaussian_nll"
    if vmapped:
        assert reduction == "none"
        return _gaussian_nll_by_hand(out, y, extra["var"])
    return F.gaussian_nll_loss(out, y, extra["var"], full=False, eps=GAUSSIAN_NLL_EPS,
                               reduction=reduction)


def _cross_entropy(problem: Problem, out: torch.Tensor, y: torch.Tensor,
                   reduction: str) -> torch.Tensor:
    """``F.cross_entropy`` with the problem's arguments; a sequence's (N, T, C) logits are
    flattened to (N·T, C) tokens, as language-model training code does."""
    kw = _ce_kwargs(problem, out)
    if out.ndim == 2:
        return F.cross_entropy(out, y, reduction=reduction, **kw)
    c = out.shape[-1]
    flat_y = y.reshape(-1) if y.dtype == torch.long else y.reshape(-1, c)
    loss = F.cross_entropy(out.reshape(-1, c), flat_y, reduction=reduction, **kw)
    return loss.reshape(out.shape[:-1]) if reduction == "none" else loss


def _unit_losses(problem: Problem, out: torch.Tensor, y: torch.Tensor,
                 extra: Mapping[str, Any], vmapped: bool = False) -> torch.Tensor:
    """The loss of each example, or of each token of a sequence: ``reduction="none"``,
    elementwise losses averaged over their D outputs. Shape ``out.shape[:-1]``."""
    if problem.loss.elementwise:
        return _elementwise(problem, out, y, extra, "none", vmapped).mean(dim=-1)
    return _cross_entropy(problem, out, y, "none")


def per_example_loss(problem: Problem, out: torch.Tensor, y: torch.Tensor,
                     extra: Mapping[str, Any] | None = None,
                     vmapped: bool = False) -> torch.Tensor:
    """ℓ_i, shape (N,): ``reduction="none"``, elementwise losses averaged over their D outputs;
    for a sequence the sum over its valid tokens, Σ_t m_it ℓ_it (masked cross-entropy tokens
    carry label -100 and are 0 already). ``extra`` holds the mask, variances and dropout masks
    (``data.extra_tensors``); ``vmapped`` is True inside ``torch.func.vmap``."""
    extra = {} if extra is None else extra
    units = _unit_losses(problem, out, y, extra, vmapped)
    if out.ndim == 2:
        return units
    if problem.loss.elementwise:
        units = units * extra["mask"]
    return units.sum(dim=1)


def reduced_loss(problem: Problem, out: torch.Tensor, y: torch.Tensor,
                 c: torch.Tensor | None, extra: Mapping[str, Any] | None = None) -> torch.Tensor:
    """L with PyTorch's own reductions where PyTorch has one (spec §1.2, §3.1).

    mean → ``reduction="mean"``: divides by N·D for elementwise losses (the mean over examples of
    the per-example mean), by Σ w[y_i] over non-ignored labels for weighted cross-entropy, by N
    for probability targets; NaN when every label is ignored (returned as it is). sum →
    ``reduction="sum"`` (elementwise losses: divided by D, since ℓ_i is the mean over outputs).
    Sequences: mean is the token mean (``F.cross_entropy`` over (N·T, C) with ignore_index=-100;
    elementwise ``(loss * mask).sum() / mask.sum()``), sum the sum over valid tokens,
    sequence_mean ``(ℓ_i / T_i).mean()``. weighted and weighted_mean → ``reduction="none"`` and
    the sum Σ c_i ℓ_i (/ Σ c_i), as training loops write them.
    """
    extra = {} if extra is None else extra
    name, elementwise = problem.reduction.name, problem.loss.elementwise
    if name in ("mean", "sum"):
        if not elementwise:
            return _cross_entropy(problem, out, y, name)
        if out.ndim == 2:
            total = _elementwise(problem, out, y, extra, name)
            return total / out.shape[1] if name == "sum" else total
        mask = extra["mask"]
        tokens = (_unit_losses(problem, out, y, extra) * mask).sum()
        return tokens / mask.sum() if name == "mean" else tokens
    losses = per_example_loss(problem, out, y, extra)
    if name == "sequence_mean":
        return (losses / extra["mask"].sum(dim=1)).mean()
    assert c is not None
    weighted = (c * losses).sum()
    return weighted / c.sum() if name == "weighted_mean" else weighted
