"""A third-party adapter written from Appendix A alone (issue #18's check of the documentation):
PyTorch, for a subset of the vocabulary, declared with ``capabilities()``.

Only what Appendix A says was used: the members of its section 1, the fields of section 2, the
formulas and PyTorch calls of section 4, the per-example methods of section 6. It supports Dense
layers, the seven activations of chapter 1, squared error and (hard-label) cross-entropy, and the
four reductions of chapter 2 — the chapter-1/2 vocabulary — and declares exactly that, so the
suite sends it nothing else (§8.6)::

    python -m pytest --backend examples.docs_adapter:backend tests/test_ch1_definitions.py \
        tests/test_ch2_core.py
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from reference.contract import Config
from reference.problem import Problem

__all__ = ["DocsAdapter", "backend"]

ACTS = {"identity": lambda z: z, "relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
        "gelu": lambda z: F.gelu(z, approximate="none"),
        "gelu_tanh": lambda z: F.gelu(z, approximate="tanh")}
DTYPE = {"float64": torch.float64, "float32": torch.float32}


def softplus(dtype: torch.dtype):  # Appendix A §4.1: threshold 40 in float64
    return lambda z: F.softplus(z, threshold=40.0 if dtype == torch.float64 else 20.0)


class DocsAdapter:
    name = "docs_adapter"

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}

    def devices(self) -> Sequence[str]:
        return ("cpu",)

    def dtypes(self) -> Sequence[str]:
        return ("float64", "float32")

    def per_example_methods(self) -> Sequence[str]:
        return ("vmap", "loop")

    def capabilities(self) -> frozenset[str]:
        acts = ("identity", "relu", "tanh", "sigmoid", "softplus", "gelu", "gelu_tanh")
        return frozenset({"layer:dense", *(f"activation:{a}" for a in acts),
                          "loss:squared_error", "loss:softmax_cross_entropy",
                          *(f"reduction:{r}" for r in ("mean", "sum", "weighted",
                                                       "weighted_mean"))})

    # -- the network: Appendix A §2 (layers in order, "k.weight" (out, in), "k.bias") ---------
    def _module(self, problem: Problem, dtype: torch.dtype) -> torch.nn.Sequential:
        layers: list[torch.nn.Module] = []
        for layer in problem.network.layers:
            if type(layer).__name__ == "Dense":
                layers.append(torch.nn.Linear(layer.in_features, layer.out_features,
                                              bias=layer.bias, dtype=dtype))
            else:
                fn = softplus(dtype) if layer.name == "softplus" else ACTS[layer.name]
                layers.append(_Lambda(fn))
        return torch.nn.Sequential(*layers)

    def _params(self, problem: Problem, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        return {k: torch.tensor(v, dtype=dtype) for k, v in problem.params.items()}

    # -- ℓ_i: Appendix A §4.2 ---------------------------------------------------------------
    @staticmethod
    def _losses(problem: Problem, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if problem.loss.name == "squared_error":
            return F.mse_loss(out, y, reduction="none").mean(-1)
        return F.cross_entropy(out, y, reduction="none")

    def _data(self, problem: Problem, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        b = problem.batch
        x = torch.tensor(b.inputs, dtype=dtype)
        y = (torch.tensor(b.targets) if b.targets.dtype.kind in "iu"
             else torch.tensor(b.targets, dtype=dtype))
        return x, y

    # -- L: Appendix A §4.3 -----------------------------------------------------------------
    def loss_and_grad(self, problem: Problem, config: Config):
        dtype = DTYPE[config.dtype]
        net, params = self._module(problem, dtype), self._params(problem, dtype)
        for p in params.values():
            p.requires_grad_(True)
        x, y = self._data(problem, dtype)
        losses = self._losses(problem, functional_call(net, params, (x,)), y)
        name = problem.reduction.name
        if name == "mean":
            loss = losses.mean()
        elif name == "sum":
            loss = losses.sum()
        else:
            c = torch.tensor(problem.batch.weights, dtype=dtype)
            loss = (c * losses).sum() / (c.sum() if name == "weighted_mean" else 1)
        grads = torch.autograd.grad(loss, list(params.values()))
        return float(loss.detach()), {k: g.detach().numpy()
                                      for k, g in zip(params, grads, strict=True)}

    # -- ℓ_i and g_i: Appendix A §6 ---------------------------------------------------------
    def per_example(self, problem: Problem, config: Config, method: str):
        dtype = DTYPE[config.dtype]
        net, params = self._module(problem, dtype), self._params(problem, dtype)
        x, y = self._data(problem, dtype)

        def one(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
            return self._losses(problem, functional_call(net, p, (xi[None],)), yi[None])[0]

        if method == "vmap":
            losses = vmap(one, in_dims=(None, 0, 0))(params, x, y)
            grads = vmap(grad(one), in_dims=(None, 0, 0))(params, x, y)
            return losses.detach().numpy(), {k: g.detach().numpy() for k, g in grads.items()}
        if method != "loop":
            raise ValueError(f"unknown per-example method {method!r}")
        rows = [(one(params, x[i], y[i]), grad(one)(params, x[i], y[i]))
                for i in range(len(x))]
        return (np.array([float(r[0]) for r in rows]),
                {k: np.stack([r[1][k].detach().numpy() for r in rows]) for k in params})


class _Lambda(torch.nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fn(z)


backend = DocsAdapter()
