"""The network as ``torch.nn`` modules: one builder per layer type of the problem (spec chapters 1
and 4), as PyTorch users write them.

* ``Dense`` → ``nn.Linear``; activations → ``nn.ReLU``, ``nn.Tanh``, ``nn.Sigmoid``,
  ``nn.GELU(approximate="none" | "tanh")``, ``nn.LeakyReLU(0.01)``, ``nn.ELU(alpha=1.0)``, and
  ``F.softplus(threshold=...)``: PyTorch returns z itself above ``threshold`` (default 20), off by
  up to e^{−20} ≈ 2.1e-9. That is below float32 resolution but not float64's, so float64 runs use
  threshold 40 (e^{−40} ≈ 4e-18 < u·40) (spec §1.5, §7.2).
* ``LayerNorm`` → ``nn.LayerNorm(features, eps=1e-5)``; ``BatchNorm`` →
  ``nn.BatchNorm1d(features, eps=1e-5)`` in ``train()`` mode, or in ``eval()`` mode with the
  problem's ``running_mean``/``running_var`` copied into its buffers. Train-mode BatchNorm couples
  the examples (§4.3): ``train_mode_batchnorm`` lists those layers, and ``batch_of_one`` turns
  PyTorch's ``ValueError: Expected more than 1 value per channel when training`` into a ValueError
  citing §4.2.
* ``Dropout`` → ``MaskDropout``, ``a * m / (1 - p)`` with the keep-mask m = ``batch.dropout[k]``
  passed as data: ``torch.func.vmap`` refuses random ops by default (``randomness="error"``,
  spec/appendix-b-pitfalls.md#p11), and random masks drawn inside vmap could not be compared with
  anything.

* ``Embedding`` → ``nn.Embedding(num, dim, padding_idx=)`` on ``torch.long`` indices (§9.1);
  ``Conv1d`` → ``FlatConv1d``, an ``nn.Conv1d`` that reads its flat input as (N, C, L) and
  flattens its output, as ``nn.Unflatten``/``nn.Flatten`` around it would (§9.2);
  ``SelfAttention`` → ``SelfAttention``, ``nn.MultiheadAttention``'s parameters (``in_proj_weight``,
  ``in_proj_bias``, ``out_proj``) around ``F.scaled_dot_product_attention`` with the token mask as
  boolean key-padding mask (§9.3); ``Residual`` → ``Residual``, x + block(x) (§9.4); a tie
  (§9.5) assigns the first use's ``nn.Parameter`` to the later module (real sharing:
  ``named_parameters`` lists it once, under the first use's name).

The model is an ``nn.Sequential`` (``Net``) whose forward takes the masks, so parameter names are
``nn.Sequential``'s, which are the problem's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reference.activations import Activation
from reference.attention import SelfAttention
from reference.contract import Config
from reference.conv import Conv1d
from reference.embedding import Embedding
from reference.layers import Dense, Dropout
from reference.norms import NORM_EPS, BatchNorm, LayerNorm
from reference.problem import Problem
from reference.residual import Residual

from .structured import FlatConv1d, ResidualBlock, TokenAttention, takes_data

__all__ = ["SOFTPLUS_THRESHOLD", "MaskDropout", "Net", "activation", "batch_of_one",
           "build_model", "train_mode_batchnorm"]

SOFTPLUS_THRESHOLD = {"float32": 20.0, "float64": 40.0}


class _Softplus(nn.Module):
    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.softplus(z, beta=1.0, threshold=self.threshold)


def activation(name: str, dtype: str) -> nn.Module:
    """The ``torch.nn`` module of the activation ``name`` in ``dtype``."""
    if name == "softplus":
        return _Softplus(SOFTPLUS_THRESHOLD[dtype])
    return {
        "identity": nn.Identity(),
        "relu": nn.ReLU(),
        "tanh": nn.Tanh(),
        "sigmoid": nn.Sigmoid(),
        "gelu": nn.GELU(approximate="none"),
        "gelu_tanh": nn.GELU(approximate="tanh"),
        "leaky_relu": nn.LeakyReLU(negative_slope=0.01),
        "elu": nn.ELU(alpha=1.0),
    }[name]


class MaskDropout(nn.Module):
    """Inverted dropout with the keep-mask given as data: ``a * mask / (1 - p)`` (spec §4.5)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, a: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return a * mask / (1 - self.p)


class Net(nn.Sequential):
    """``nn.Sequential`` whose ``MaskDropout`` layers take their keep-mask from ``masks`` (layer
    index → mask of the layer input's shape); every other layer is called as in
    ``nn.Sequential.forward``. Parameter names are ``nn.Sequential``'s."""

    def forward(self, x: torch.Tensor,  # type: ignore[override]
                masks: Mapping[int, torch.Tensor] | None = None) -> torch.Tensor:
        for k, module in enumerate(self):
            if isinstance(module, MaskDropout) or takes_data(module):
                if masks is None or k not in masks:
                    raise ValueError(f"torch backend: layer {k} needs its mask "
                                     f"(batch.dropout[{k}] or the token mask); call "
                                     f"model(x, masks)")
                x = module(x, masks[k])
            else:
                x = module(x)
        return x


# -- one builder per layer type: (layer, config) → its module in the config's dtype and device ---
def _dense(layer: Dense, config: Config) -> nn.Module:
    return nn.Linear(layer.in_features, layer.out_features, bias=layer.bias)


def _activation(layer: Activation, config: Config) -> nn.Module:
    return activation(layer.name, config.dtype)


def _layer_norm(layer: LayerNorm, config: Config) -> nn.Module:
    return nn.LayerNorm(layer.features, eps=NORM_EPS)


def _batch_norm(layer: BatchNorm, config: Config) -> nn.Module:
    """Train mode, or eval mode with the problem's running statistics in the buffers."""
    module = nn.BatchNorm1d(layer.features, eps=NORM_EPS)
    if not layer.training:
        # in the model's dtype first: float64 statistics copied into float32 buffers would be
        # rounded; a tuple of Python floats would become float32 under torch.as_tensor
        module.to(device=config.device, dtype=getattr(torch, config.dtype))
        assert module.running_mean is not None and module.running_var is not None
        with torch.no_grad():
            module.running_mean.copy_(torch.as_tensor(np.asarray(layer.running_mean)))
            module.running_var.copy_(torch.as_tensor(np.asarray(layer.running_var)))
        module.eval()
    return module


def _dropout(layer: Dropout, config: Config) -> nn.Module:
    return MaskDropout(layer.p)


def _embedding(layer: Embedding, config: Config) -> nn.Module:
    return nn.Embedding(layer.num_embeddings, layer.embedding_dim, padding_idx=layer.padding_idx)


def _conv1d(layer: Conv1d, config: Config) -> nn.Module:
    return FlatConv1d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.length,
                      stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                      groups=layer.groups, bias=layer.bias)


def _attention(layer: SelfAttention, config: Config) -> nn.Module:
    return TokenAttention(layer.dim, layer.heads)


def _residual(layer: Residual, config: Config) -> nn.Module:
    return ResidualBlock([_BUILDERS[type(inner)](inner, config) for inner in layer.block])


_BUILDERS: dict[type, Callable[[Any, Config], nn.Module]] = {
    Dense: _dense,
    Activation: _activation,
    LayerNorm: _layer_norm,
    BatchNorm: _batch_norm,
    Dropout: _dropout,
    Embedding: _embedding,
    Conv1d: _conv1d,
    SelfAttention: _attention,
    Residual: _residual,
}
"""Layer class of ``reference.problem`` → the builder of its ``torch.nn`` module."""


def build_model(problem: Problem, config: Config) -> Net:
    """``nn.Sequential`` (``Net``) of the problem's layers with its parameters, and the running
    statistics of eval-mode BatchNorm layers in their buffers; names match the problem's."""
    try:
        layers = [_BUILDERS[type(layer)](layer, config) for layer in problem.network.layers]
    except KeyError as exc:
        raise TypeError(f"torch backend: no module for layer type {exc.args[0].__name__}") \
            from None
    model = Net(*layers).to(device=config.device, dtype=getattr(torch, config.dtype))
    for alias, target in problem.network.tied:  # one nn.Parameter, used by both (§9.5)
        path, _, name = alias.rpartition(".")
        setattr(model.get_submodule(path), name, model.get_parameter(target))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.as_tensor(problem.params[name]))
    return model


def train_mode_batchnorm(problem: Problem) -> list[int]:
    """Indices of the train-mode BatchNorm layers: those that couple the examples (spec §4.3)."""
    return [k for k, layer in enumerate(problem.network.layers)
            if isinstance(layer, BatchNorm) and layer.training]


@contextlib.contextmanager
def batch_of_one(problem: Problem) -> Iterator[None]:
    """Turns ``nn.BatchNorm1d``'s refusal of a one-example batch in train mode into a ValueError
    that names the clause (the original stays chained as the cause)."""
    try:
        yield
    except ValueError as exc:
        layers = train_mode_batchnorm(problem)
        if not layers or "Expected more than 1 value per channel" not in str(exc):
            raise
        raise ValueError(
            f"torch backend: train-mode BatchNorm (layer {layers[0]}) needs at least 2 examples "
            f"per batch in PyTorch, got N = {problem.batch.size} (spec §4.2: its statistics are "
            f"those of the batch); torch.nn.BatchNorm1d raised ValueError: {exc}") from exc
