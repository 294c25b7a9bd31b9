"""The network and losses in tinygrad (spec chapters 1-3), as tinygrad users write them.

* ``Dense`` → ``tinygrad.nn.Linear`` (weight (out, in), PyTorch's layout) with the problem's
  parameters as its tensors; ``LayerNorm`` → ``tinygrad.nn.LayerNorm(eps=1e-5)``. For the
  per-example-copies method (tinygrad has no vmap) every parameter has a leading example axis
  and a Dense layer is ``Tensor.einsum("noi,ni->no", w, a)`` plus the bias.
* activations → ``Tensor.relu``, ``tanh``, ``sigmoid``, ``softplus``, ``gelu(approximate="none")``
  (exact; tinygrad's default is the tanh form) and ``gelu()`` (tanh form), ``leaky_relu(0.01)``,
  ``elu(1.0)``.
* losses → ``Tensor.sparse_categorical_crossentropy(Y, ignore_index=, label_smoothing=,
  reduction=)`` for integer labels, ``log_softmax().nll_loss(Y, weight=, ignore_index=,
  reduction=)`` with class weights, ``cross_entropy(Y, reduction=)`` for probability targets,
  ``binary_crossentropy_logits(Y, reduction=)``; tinygrad has no squared-error loss, so it is
  ``(out - y).square().mean(-1)`` as tinygrad's own examples write it. Reductions: tinygrad's
  ``reduction="mean"``/``"sum"``, and Σ c_i ℓ_i (/ Σ c_i) for the weighted ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from tinygrad import Tensor, dtypes, nn

from reference.activations import Activation
from reference.layers import Dense
from reference.norms import NORM_EPS, LayerNorm
from reference.problem import Problem

__all__ = ["ACTIVATIONS", "DTYPES", "forward", "per_example_losses", "reduced_loss",
           "unsupported"]

DTYPES = {"float64": dtypes.float64, "float32": dtypes.float32}

ACTIVATIONS: dict[str, Any] = {
    "identity": lambda z: z,
    "relu": Tensor.relu,
    "tanh": Tensor.tanh,
    "sigmoid": Tensor.sigmoid,
    "softplus": Tensor.softplus,
    "gelu": lambda z: z.gelu(approximate="none"),
    "gelu_tanh": lambda z: z.gelu(),
    "leaky_relu": lambda z: z.leaky_relu(0.01),
    "elu": lambda z: z.elu(1.0),
}


def unsupported(problem: Problem) -> str | None:
    """Why the problem cannot be expressed by this adapter, or None."""
    b, loss = problem.batch, problem.loss
    for layer in problem.network.layers:
        if not isinstance(layer, (Dense, Activation, LayerNorm)):
            return f"layer {type(layer).__name__} is not implemented by this adapter"
    if b.sequence:
        return "sequence inputs are not implemented by this adapter"
    if loss.name in ("huber", "gaussian_nll"):
        return f"tinygrad has no {loss.name} loss"
    if loss.name == "softmax_cross_entropy":
        if b.targets.dtype.kind == "f" and (loss.class_weights is not None
                                            or loss.label_smoothing):
            return "tinygrad's cross_entropy has no class weights; smoothing of soft targets"
        if loss.class_weights is not None and loss.label_smoothing:
            return "tinygrad has no class weights with label smoothing"
    return None


def forward(problem: Problem, params: Mapping[str, Tensor], x: Tensor, *,
            copies: bool = False) -> Tensor:
    """f_θ(x); with ``copies`` every parameter has a leading example axis (example i uses θ_i)."""
    a = x
    for k, layer in enumerate(problem.network.layers):
        if isinstance(layer, Dense):
            w, b = params[f"{k}.weight"], params.get(f"{k}.bias")
            if copies:
                a = Tensor.einsum("noi,ni->no", w, a)
                a = a if b is None else a + b
            else:
                lin = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias)
                lin.weight, lin.bias = w, b
                a = lin(a)
        elif isinstance(layer, LayerNorm):
            w, b = params[f"{k}.weight"], params[f"{k}.bias"]
            if copies:
                a = a.layernorm(eps=NORM_EPS) * w + b
            else:
                norm = nn.LayerNorm(layer.features, eps=NORM_EPS)
                norm.weight, norm.bias = w, b
                a = norm(a)
        else:
            a = ACTIVATIONS[layer.name](a)
    return a


def _labels(problem: Problem, dtype: Any) -> Tensor:
    return Tensor(problem.batch.targets.astype(np.int32), dtype=dtypes.int32)


def _loss(problem: Problem, out: Tensor, y: Tensor, reduction: str) -> Tensor:
    """The tinygrad loss of the problem with ``reduction=`` ("none", "mean" or "sum")."""
    loss = problem.loss
    if loss.name == "squared_error":
        per = (out - y).square().mean(-1)
        return per if reduction == "none" else per.mean() if reduction == "mean" else per.sum()
    if loss.name == "bce_with_logits":
        per = out.binary_crossentropy_logits(y, reduction="none").mean(-1)
        return per if reduction == "none" else per.mean() if reduction == "mean" else per.sum()
    if y.dtype not in (dtypes.int32, dtypes.int64):
        return out.cross_entropy(y, reduction=reduction)
    if loss.class_weights is not None:
        w = Tensor(np.asarray(loss.class_weights), dtype=out.dtype)
        return out.log_softmax(-1).nll_loss(y, weight=w, ignore_index=loss.ignore_index,
                                            reduction=reduction)
    ignore = -1 if loss.ignore_index is None else loss.ignore_index
    return out.sparse_categorical_crossentropy(y, ignore_index=ignore,
                                               label_smoothing=loss.label_smoothing,
                                               reduction=reduction)


def targets(problem: Problem, dtype: Any) -> Tensor:
    b = problem.batch
    if b.targets.dtype.kind in "iu":
        return _labels(problem, dtype)
    return Tensor(b.targets, dtype=dtype)


def per_example_losses(problem: Problem, out: Tensor, y: Tensor) -> Tensor:
    return _loss(problem, out, y, "none")


def reduced_loss(problem: Problem, out: Tensor, y: Tensor, c: Tensor | None) -> Tensor:
    name = problem.reduction.name
    if name in ("mean", "sum"):
        return _loss(problem, out, y, name)
    assert c is not None
    weighted = (c * per_example_losses(problem, out, y)).sum()
    return weighted / c.sum() if name == "weighted_mean" else weighted
