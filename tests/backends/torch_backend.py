"""The PyTorch backend: ``--backend torch``.

Builds the network from ``torch.nn`` modules with the problem's parameters copied in, computes
losses with ``torch.nn.functional`` and its own ``reduction=`` argument, and differentiates with
``torch.autograd`` (batch) and ``torch.func`` (per-example: ``vmap(grad(...))``) or a loop of
single-example backward passes. What is tested is PyTorch's own semantics.

Arguments chosen to realise the reference's definitions (spec §1.5, §7.2):
* ``F.softplus(threshold=...)``: PyTorch returns z itself above ``threshold`` (default 20), off by
  up to e^{−20} ≈ 2.1e-9. That is below float32 resolution but not float64's, so float64 runs
  use threshold 40 (e^{−40} ≈ 4e-18 < u·40).
* Strict precision: ``torch.backends.cuda.matmul.allow_tf32 = False`` and
  ``torch.backends.cudnn.allow_tf32 = False`` while computing.

Devices: "cpu", plus "cuda" when ``torch.cuda.is_available()`` (which does not initialise CUDA).

Threads: importing this module sets ``torch.set_num_threads(1)`` (process-wide) unless
``BATCHGRAD_TORCH_THREADS`` says otherwise (a number; 0 keeps torch's default). The suite's
problems are tiny, so a CPU thread pool costs more than it saves, and on a busy machine waking
it costs milliseconds per op: one thread ran ``tests/test_ch2_core.py`` in 44 s instead of
74-81 s with torch's default of 2 (2 cores, load 2.8; see benchmarks/README.md). The thread
count only changes how sums are grouped, which the error bound allows (spec §7.1).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reference.contract import Config, Grads
from reference.problem import Batch, Dense, Problem

SOFTPLUS_THRESHOLD = {"float32": 20.0, "float64": 40.0}

_THREADS = int(os.environ.get("BATCHGRAD_TORCH_THREADS", "1") or 0)
if _THREADS > 0:
    torch.set_num_threads(_THREADS)


class _Softplus(nn.Module):
    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.softplus(z, beta=1.0, threshold=self.threshold)


def _activation(name: str, dtype: str) -> nn.Module:
    if name == "softplus":
        return _Softplus(SOFTPLUS_THRESHOLD[dtype])
    return {
        "identity": nn.Identity(),
        "relu": nn.ReLU(),
        "tanh": nn.Tanh(),
        "sigmoid": nn.Sigmoid(),
        "gelu": nn.GELU(approximate="none"),
        "gelu_tanh": nn.GELU(approximate="tanh"),
    }[name]


def build_model(problem: Problem, config: Config) -> nn.Sequential:
    """``nn.Sequential`` of the problem's layers with its parameters; names match the problem's."""
    layers: list[nn.Module] = []
    for layer in problem.network.layers:
        if isinstance(layer, Dense):
            layers.append(nn.Linear(layer.in_features, layer.out_features, bias=layer.bias))
        else:
            layers.append(_activation(layer.name, config.dtype))
    model = nn.Sequential(*layers).to(device=config.device, dtype=getattr(torch, config.dtype))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.as_tensor(problem.params[name]))
    return model


def per_example_loss(problem: Problem, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """ℓ_i, shape (N,): ``reduction="none"``, squared error averaged over its D outputs."""
    if problem.loss.name == "squared_error":
        return F.mse_loss(out, y, reduction="none").mean(dim=1)
    return F.cross_entropy(out, y, reduction="none")


def reduced_loss(problem: Problem, out: torch.Tensor, y: torch.Tensor,
                 c: torch.Tensor | None) -> torch.Tensor:
    """L with PyTorch's own reductions where PyTorch has one (spec §1.2).

    mean → ``reduction="mean"`` (divides by N·D for squared error, i.e. the mean over examples of
    the per-example mean); sum → ``reduction="sum"`` (squared error: divided by D, since
    ℓ_i is the mean over outputs); weighted and weighted_mean → ``reduction="none"`` and the sum
    Σ c_i ℓ_i (/ Σ c_i), as training loops write them.
    """
    name, mse = problem.reduction.name, problem.loss.name == "squared_error"
    if name in ("mean", "sum"):
        if mse:
            total = F.mse_loss(out, y, reduction=name)
            return total / out.shape[1] if name == "sum" else total
        return F.cross_entropy(out, y, reduction=name)
    assert c is not None
    weighted = (c * per_example_loss(problem, out, y)).sum()
    return weighted / c.sum() if name == "weighted_mean" else weighted


@contextlib.contextmanager
def _strict(config: Config) -> Iterator[None]:
    """TF32 off (strict) or on (precision "tf32", spec §7.4: no effect on the CPU, where PyTorch
    has no TF32 kernels; on Ampere and later GPUs float32 matmuls then round operands to TF32);
    "bf16_autocast": ``torch.autocast(dtype=torch.bfloat16)`` around the computation (float32
    only; float64 is never autocast)."""
    if config.precision not in ("strict", "tf32", "bf16_autocast"):
        raise ValueError(f"torch backend: precision {config.precision!r} not supported")
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = config.precision == "tf32"
    torch.backends.cudnn.allow_tf32 = config.precision == "tf32"
    autocast = torch.autocast("cuda" if config.device == "cuda" else "cpu", dtype=torch.bfloat16,
                              enabled=config.precision == "bf16_autocast")
    try:
        with autocast:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _tensors(problem: Problem, config: Config) -> tuple[torch.Tensor, torch.Tensor,
                                                         torch.Tensor | None]:
    dt, dev = getattr(torch, config.dtype), config.device
    b = problem.batch
    x = torch.as_tensor(b.inputs, dtype=dt, device=dev)
    y = (torch.as_tensor(b.targets, dtype=torch.long, device=dev)
         if problem.loss.name == "softmax_cross_entropy"
         else torch.as_tensor(b.targets, dtype=dt, device=dev))
    c = None if b.weights is None else torch.as_tensor(b.weights, dtype=dt, device=dev)
    return x, y, c


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float64).numpy()


class TorchBackend:
    name = "torch"

    def versions(self) -> Mapping[str, str]:
        return {"torch": torch.__version__}

    def devices(self) -> Sequence[str]:
        return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)

    def dtypes(self) -> Sequence[str]:
        return ("float64", "float32")

    def per_example_methods(self) -> Sequence[str]:
        return ("vmap", "loop")

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        with _strict(config):
            model = build_model(problem, config)
            x, y, c = _tensors(problem, config)
            loss = reduced_loss(problem, model(x), y, c)
            loss.backward()
            return float(loss.detach()), {n: _numpy(p.grad) for n, p in model.named_parameters()
                                 if p.grad is not None}

    def per_example(
        self, problem: Problem, config: Config, method: str
    ) -> tuple[np.ndarray, Grads]:
        with _strict(config):
            model = build_model(problem, config)
            x, y, _ = _tensors(problem, config)
            if method == "vmap":
                return self._vmap(problem, model, x, y)
            if method == "loop":
                return self._loop(problem, model, x, y)
            raise ValueError(f"torch backend: unknown per-example method {method!r}")

    @staticmethod
    def _vmap(problem: Problem, model: nn.Module, x: torch.Tensor,
              y: torch.Tensor) -> tuple[np.ndarray, Grads]:
        params = {n: p.detach() for n, p in model.named_parameters()}

        def loss_one(p: dict[str, torch.Tensor], xi: torch.Tensor,
                     yi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = torch.func.functional_call(model, p, (xi.unsqueeze(0),))
            loss = per_example_loss(problem, out, yi.unsqueeze(0))[0]
            return loss, loss.detach()

        grads, losses = torch.func.vmap(torch.func.grad(loss_one, has_aux=True),
                                        in_dims=(None, 0, 0))(params, x, y)
        return _numpy(losses), {n: _numpy(g) for n, g in grads.items()}

    @staticmethod
    def _loop(problem: Problem, model: nn.Module, x: torch.Tensor,
              y: torch.Tensor) -> tuple[np.ndarray, Grads]:
        losses, rows = [], []
        for i in range(x.shape[0]):
            model.zero_grad(set_to_none=True)
            loss = per_example_loss(problem, model(x[i:i + 1]), y[i:i + 1])[0]
            loss.backward()
            losses.append(float(loss.detach()))
            rows.append({n: _numpy(p.grad) for n, p in model.named_parameters()})
        return np.array(losses), {n: np.stack([r[n] for r in rows]) for n in rows[0]}

    # -- the optional update step (spec chapter 6) ------------------------------------------------
    def train(self, problem: Problem, config: Config, optimizer: Any,
              batches: Sequence[Batch]) -> Grads:
        """One ``torch.optim`` step per batch from ``problem.params``; the final parameters.

        ``optimizer`` is a ``reference.update.Optimizer``: "sgd" → ``torch.optim.SGD`` (dampening
        0, nesterov False, ``weight_decay`` = L2), "adam" → ``torch.optim.Adam`` (L2),
        "adamw" → ``torch.optim.AdamW`` (decoupled). Each step: ``zero_grad``, the batch's
        reduced loss (``reduced_loss``, the problem's reduction), ``backward()``, ``step()``.
        """
        model = build_model(problem, config)
        opt = torch_optimizer(model.parameters(), optimizer)
        for batch in batches:
            x, y, c = _tensors(problem.with_batch(batch), config)
            opt.zero_grad(set_to_none=True)
            # one precision region (TF32 flags, autocast) per forward/backward, the step outside:
            # autocast caches its bfloat16 copies of the weights until its region ends, so a loop
            # inside one region would run every forward with the first step's weights (§7.4)
            with _strict(config):
                reduced_loss(problem, model(x), y, c).backward()
            opt.step()
        return {n: _numpy(p) for n, p in model.named_parameters()}


def torch_optimizer(params: Any, opt: Any) -> torch.optim.Optimizer:
    """The ``torch.optim`` object realising a ``reference.update.Optimizer`` (spec §6.1)."""
    if opt.name == "sgd":
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, dampening=0.0,
                               weight_decay=opt.weight_decay, nesterov=False)
    cls = torch.optim.Adam if opt.name == "adam" else torch.optim.AdamW
    return cls(params, lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay)


backend = TorchBackend()
