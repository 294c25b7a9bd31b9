"""Per-example losses and gradients (spec §1.4, §2.12) by the two methods PyTorch users write:
"vmap", ``torch.func.vmap(torch.func.grad(...))`` over a ``functional_call`` of the model, and
"loop", one single-example ``backward()`` per example.

Train-mode BatchNorm couples the examples: ``per_example`` raises
``reference.contract.Undefined`` (spec §4.3), as PyTorch itself refuses it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from reference.contract import Config
from reference.problem import Problem
from reference.types import Grads, Undefined

from .data import extra_tensors, map_extra, tensors, to_numpy
from .losses import per_example_loss
from .modules import Net, build_model, train_mode_batchnorm
from .precision import precision_region

__all__ = ["METHODS", "per_example"]

PerExample = tuple[np.ndarray, Grads]


def _vmap(problem: Problem, model: Net, x: torch.Tensor, y: torch.Tensor,
          extra: dict[str, Any]) -> PerExample:
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss_one(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor,
                 ei: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        ei = map_extra(lambda a: a.unsqueeze(0), ei)
        out = torch.func.functional_call(model, p, (xi.unsqueeze(0), ei.get("drop")))
        loss = per_example_loss(problem, out, yi.unsqueeze(0), ei, vmapped=True)[0]
        return loss, loss.detach()

    grads, losses = torch.func.vmap(torch.func.grad(loss_one, has_aux=True),
                                    in_dims=(None, 0, 0, 0))(params, x, y, extra)
    return to_numpy(losses), {n: to_numpy(g) for n, g in grads.items()}


def _loop(problem: Problem, model: Net, x: torch.Tensor, y: torch.Tensor,
          extra: dict[str, Any]) -> PerExample:
    losses, rows = [], []
    for i in range(x.shape[0]):
        model.zero_grad(set_to_none=True)
        ei = map_extra(lambda a, i=i: a[i:i + 1], extra)
        out = model(x[i:i + 1], ei.get("drop"))
        loss = per_example_loss(problem, out, y[i:i + 1], ei)[0]
        loss.backward()
        losses.append(float(loss.detach()))
        rows.append({n: to_numpy(p.grad) for n, p in model.named_parameters()})
    return np.array(losses), {n: np.stack([r[n] for r in rows]) for n in rows[0]}


METHODS: dict[str, Callable[[Problem, Net, torch.Tensor, torch.Tensor, dict[str, Any]],
                            PerExample]] = {"vmap": _vmap, "loop": _loop}
"""The per-example methods, in the order ``per_example_methods`` lists them."""


def per_example(problem: Problem, config: Config, method: str) -> PerExample:
    """(ℓ_i, g_i) of every example by ``method``, in the config's precision."""
    if method not in METHODS:
        raise ValueError(f"torch backend: unknown per-example method {method!r}")
    coupled = train_mode_batchnorm(problem)
    if coupled:
        raise Undefined(
            f"per-example gradients are not defined through a train-mode BatchNorm (layer "
            f"{coupled[0]}; spec §4.3): each ℓ_i depends on every example through the batch "
            f"statistics. PyTorch agrees: torch.func.vmap(grad(...)) over nn.BatchNorm1d in "
            f"train mode raises RuntimeError (\"... attempted to call in-place operation "
            f"(aten::add_.Tensor) that would mutate a captured Tensor\", the running-stat "
            f"update), and with the buffers passed in, track_running_stats=False or "
            f"torch.func.replace_all_batch_norm_modules_, and in a loop of batches of one, "
            f"ValueError \"Expected more than 1 value per channel when training\"")
    with precision_region(config):
        model = build_model(problem, config)
        x, y, _ = tensors(problem, config)
        return METHODS[method](problem, model, x, y, extra_tensors(problem, config))
