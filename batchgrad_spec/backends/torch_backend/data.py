"""The problem's batch as tensors, and results back as numpy arrays.

Integer labels become ``torch.long`` (the masked tokens of a sequence labelled -100, PyTorch's
``ignore_index``); the rest of the batch (token mask, variances, dropout keep-masks) is a dict of
tensors with the examples on axis 0, so ``torch.func.vmap`` can split it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from reference.contract import Config
from reference.problem import Problem

from .losses import IGNORE

__all__ = ["extra_tensors", "map_extra", "tensors", "to_numpy"]


def tensors(problem: Problem, config: Config) -> tuple[torch.Tensor, torch.Tensor,
                                                        torch.Tensor | None]:
    """(x, y, c): inputs, targets (integer labels as ``torch.long``; the masked tokens of a
    sequence labelled -100, PyTorch's ``ignore_index``) and the c_i of the weighted reductions."""
    dt, dev = getattr(torch, config.dtype), config.device
    b = problem.batch
    x = torch.as_tensor(b.inputs, dtype=torch.long if b.indices else dt, device=dev)
    if b.targets.dtype.kind in "iu":
        labels = b.targets
        if b.sequence:
            labels = np.where(b.token_mask, labels, IGNORE)
        y = torch.as_tensor(labels, dtype=torch.long, device=dev)
    else:
        y = torch.as_tensor(b.targets, dtype=dt, device=dev)
    c = None if b.weights is None else torch.as_tensor(b.weights, dtype=dt, device=dev)
    return x, y, c


def extra_tensors(problem: Problem, config: Config) -> dict[str, Any]:
    """The rest of the batch as tensors, each with the examples on axis 0 (so ``vmap`` can split
    it): "mask" (N, T) 0/1 of a sequence, "var" the gaussian_nll variances, "drop" the keep-masks
    {layer index: mask} and the key-padding masks of attention layers (bool). Only the entries
    the problem has."""
    dt, dev = getattr(torch, config.dtype), config.device
    b, out = problem.batch, {}
    if b.sequence:
        out["mask"] = torch.as_tensor(b.token_mask, dtype=dt, device=dev)
    if b.variances is not None:
        out["var"] = torch.as_tensor(b.variances, dtype=dt, device=dev)
    drop = {k: torch.as_tensor(m, dtype=dt, device=dev) for k, m in (b.dropout or {}).items()}
    for k, layer in enumerate(problem.network.layers):  # an attention's key-padding mask (§9.3)
        data = None if layer.data_rows else layer.site_data(k, b)
        if data is not None:
            drop[k] = torch.as_tensor(data, dtype=torch.bool, device=dev)
    if drop:
        out["drop"] = drop
    return out


def map_extra(fn: Callable[[torch.Tensor], torch.Tensor],
              extra: Mapping[str, Any]) -> dict[str, Any]:
    """``fn`` applied to every tensor of an ``extra_tensors`` dict (the dropout masks included)."""
    return {k: ({j: fn(m) for j, m in v.items()} if k == "drop" else fn(v))
            for k, v in extra.items()}


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor as a float64 numpy array on the CPU, detached."""
    return t.detach().cpu().to(torch.float64).numpy()
