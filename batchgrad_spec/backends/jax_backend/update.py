"""The optional update step (spec chapter 6): optax transformations applied to the backend's ∇L.

``train`` runs one optax update per batch from ``problem.params``: each step takes ∇L of the
batch from the backend's ``loss_and_grad`` (the jitted ``jax.value_and_grad`` programs, at the
current parameters) and applies the transformation of ``optax_optimizer`` eagerly —
``tx.update`` then ``optax.apply_updates``, in the dtype, un-jitted, so no program is compiled
per optimiser or network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import optax

from reference.batch import Batch
from reference.contract import Config
from reference.problem import Problem
from reference.types import Grads

from .devices import check

__all__ = ["optax_optimizer", "train"]


def optax_optimizer(opt: Any) -> optax.GradientTransformation:
    """The optax transformation realising a ``reference.update.Optimizer`` (spec §6.1): "sgd" →
    ``optax.sgd`` (momentum as ``trace``, nesterov False), "adam" → ``optax.adam``, "adamw" →
    ``optax.adamw``; L2 weight decay of sgd and adam as ``optax.add_decayed_weights`` chained
    before the optimiser (g + λθ)."""
    if opt.name == "sgd":
        tx = optax.sgd(opt.lr, momentum=opt.momentum or None, nesterov=False)
    elif opt.name == "adam":
        tx = optax.adam(opt.lr, b1=opt.betas[0], b2=opt.betas[1], eps=opt.eps, eps_root=0.0)
    else:
        return optax.adamw(opt.lr, b1=opt.betas[0], b2=opt.betas[1], eps=opt.eps, eps_root=0.0,
                           weight_decay=opt.weight_decay)
    if opt.weight_decay:
        return optax.chain(optax.add_decayed_weights(opt.weight_decay), tx)
    return tx


def train(loss_and_grad: Callable[[Problem, Config], tuple[float, Grads]], problem: Problem,
          config: Config, optimizer: Any, batches: Sequence[Batch]) -> Grads:
    """One optax update per batch from ``problem.params``; the final parameters."""
    dtype, device = check(config)
    tx = optax_optimizer(optimizer)
    params = jax.device_put({k: v.astype(dtype) for k, v in problem.params.items()}, device)
    state = tx.init(params)
    for batch in batches:
        now = {k: np.asarray(v, np.float64) for k, v in jax.device_get(params).items()}
        _, grads = loss_and_grad(problem.with_params(now).with_batch(batch), config)
        grads = jax.device_put({k: np.asarray(g, dtype) for k, g in grads.items()}, device)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return {k: np.asarray(v) for k, v in jax.device_get(params).items()}
