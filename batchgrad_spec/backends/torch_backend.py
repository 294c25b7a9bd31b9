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

Layers and data (spec chapters 3-4), as PyTorch users write them:
* ``nn.LeakyReLU(0.01)``, ``nn.ELU(alpha=1.0)``, ``nn.LayerNorm(features, eps=1e-5)``,
  ``nn.BatchNorm1d(features, eps=1e-5)`` in ``train()`` mode or in ``eval()`` mode with the
  problem's ``running_mean``/``running_var`` copied into its buffers. Dropout is ``a * m / (1 - p)``
  with the keep-mask m = ``batch.dropout[k]`` passed as data: ``torch.func.vmap`` refuses random
  ops by default (``randomness="error"``, pitfalls #11), and random masks drawn inside vmap could
  not be compared with anything. The model is an ``nn.Sequential`` (``Net``) whose forward takes
  the masks, so parameter names are ``nn.Sequential``'s.
* Sequences (N, T, d): ``nn.Linear``/``nn.LayerNorm`` act on the last axis; masked tokens of a
  cross-entropy get label -100 and ``ignore_index=-100``; "mean" is the token mean
  (``F.cross_entropy(logits.reshape(-1, C), labels.reshape(-1), ignore_index=-100)``, the 2024
  Hugging Face token-loss convention; elementwise losses ``(loss * mask).sum() / mask.sum()``);
  "sequence_mean" the mean over sequences of per-sequence token means; ℓ_i = Σ_t m_it ℓ_it.
* Losses: ``F.cross_entropy(weight=, ignore_index=, label_smoothing=, reduction=)`` for integer
  labels and probability targets, ``F.binary_cross_entropy_with_logits``,
  ``F.huber_loss(delta=)``, ``F.gaussian_nll_loss(full=False, eps=1e-6)``; "mean" and "sum" are
  PyTorch's own ``reduction=``. Where PyTorch's mean is NaN (every label ignored: pitfalls #7)
  the backend returns the NaN; it is not papered over.
* ``F.gaussian_nll_loss`` cannot run under ``torch.func.vmap`` with per-example variances: it
  checks ``torch.any(var < 0)`` in Python, data-dependent control flow that vmap rejects
  (RuntimeError "vmap: It looks like you're either (1) calling .item() on a Tensor or (2)
  attempting to use a Tensor in some data-dependent control flow ..."). The "vmap" method
  therefore writes its formula out as torch.func users must, with the same operations in the
  same order (``_gaussian_nll_by_hand``); "loop" and ``loss_and_grad`` call ``F.gaussian_nll_loss``.
* Train-mode BatchNorm couples the examples: ``per_example`` raises
  ``reference.types.Undefined`` (spec §4.3); ``loss_and_grad`` on one example turns PyTorch's
  ``ValueError: Expected more than 1 value per channel when training`` into a ValueError citing
  §4.2.

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

from reference.batch import Batch
from reference.contract import Config
from reference.layers import Dense, Dropout
from reference.norms import NORM_EPS, BatchNorm, LayerNorm
from reference.problem import Problem
from reference.types import Grads, Undefined

SOFTPLUS_THRESHOLD = {"float32": 20.0, "float64": 40.0}
GAUSSIAN_NLL_EPS = 1e-6
"""``F.gaussian_nll_loss``'s default ``eps`` (variances are clamped below it; the suite's are far
above it)."""
IGNORE = -100
"""PyTorch's default ``ignore_index``: the label given to masked tokens of a sequence."""

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
            if isinstance(module, MaskDropout):
                if masks is None or k not in masks:
                    raise ValueError(f"torch backend: Dropout at layer {k} needs its keep-mask "
                                     f"(batch.dropout[{k}]); call model(x, masks)")
                x = module(x, masks[k])
            else:
                x = module(x)
        return x


def build_model(problem: Problem, config: Config) -> Net:
    """``nn.Sequential`` (``Net``) of the problem's layers with its parameters, and the running
    statistics of eval-mode BatchNorm layers in their buffers; names match the problem's."""
    layers: list[nn.Module] = []
    for layer in problem.network.layers:
        if isinstance(layer, Dense):
            layers.append(nn.Linear(layer.in_features, layer.out_features, bias=layer.bias))
        elif isinstance(layer, LayerNorm):
            layers.append(nn.LayerNorm(layer.features, eps=NORM_EPS))
        elif isinstance(layer, BatchNorm):
            layers.append(nn.BatchNorm1d(layer.features, eps=NORM_EPS))
        elif isinstance(layer, Dropout):
            layers.append(MaskDropout(layer.p))
        else:
            layers.append(_activation(layer.name, config.dtype))
    model = Net(*layers).to(device=config.device, dtype=getattr(torch, config.dtype))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.as_tensor(problem.params[name]))
        for layer, module in zip(problem.network.layers, model, strict=True):
            if isinstance(layer, BatchNorm) and not layer.training:
                assert isinstance(module, nn.BatchNorm1d)
                assert module.running_mean is not None and module.running_var is not None
                # a tuple of Python floats would become float32 under torch.as_tensor
                module.running_mean.copy_(torch.as_tensor(np.asarray(layer.running_mean)))
                module.running_var.copy_(torch.as_tensor(np.asarray(layer.running_var)))
                module.eval()
    return model


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
    (``_extra``); ``vmapped`` is True inside ``torch.func.vmap``."""
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
    """(x, y, c): inputs, targets (integer labels as ``torch.long``; the masked tokens of a
    sequence labelled -100, PyTorch's ``ignore_index``) and the c_i of the weighted reductions."""
    dt, dev = getattr(torch, config.dtype), config.device
    b = problem.batch
    x = torch.as_tensor(b.inputs, dtype=dt, device=dev)
    if b.targets.dtype.kind in "iu":
        labels = b.targets
        if b.sequence:
            labels = np.where(b.token_mask, labels, IGNORE)
        y = torch.as_tensor(labels, dtype=torch.long, device=dev)
    else:
        y = torch.as_tensor(b.targets, dtype=dt, device=dev)
    c = None if b.weights is None else torch.as_tensor(b.weights, dtype=dt, device=dev)
    return x, y, c


def _extra(problem: Problem, config: Config) -> dict[str, Any]:
    """The rest of the batch as tensors, each with the examples on axis 0 (so ``vmap`` can split
    it): "mask" (N, T) 0/1 of a sequence, "var" the gaussian_nll variances, "drop" the keep-masks
    {layer index: mask}. Only the entries the problem has."""
    dt, dev = getattr(torch, config.dtype), config.device
    b, out = problem.batch, {}
    if b.sequence:
        out["mask"] = torch.as_tensor(b.token_mask, dtype=dt, device=dev)
    if b.variances is not None:
        out["var"] = torch.as_tensor(b.variances, dtype=dt, device=dev)
    if b.dropout:
        out["drop"] = {k: torch.as_tensor(m, dtype=dt, device=dev) for k, m in b.dropout.items()}
    return out


def _map(fn: Any, extra: Mapping[str, Any]) -> dict[str, Any]:
    """``fn`` applied to every tensor of an ``_extra`` dict (the dropout masks included)."""
    return {k: ({j: fn(m) for j, m in v.items()} if k == "drop" else fn(v))
            for k, v in extra.items()}


def _train_mode_batchnorm(problem: Problem) -> list[int]:
    return [k for k, layer in enumerate(problem.network.layers)
            if isinstance(layer, BatchNorm) and layer.training]


@contextlib.contextmanager
def _batch_of_one(problem: Problem) -> Iterator[None]:
    """Turns ``nn.BatchNorm1d``'s refusal of a one-example batch in train mode into a ValueError
    that names the clause (the original stays chained as the cause)."""
    try:
        yield
    except ValueError as exc:
        layers = _train_mode_batchnorm(problem)
        if not layers or "Expected more than 1 value per channel" not in str(exc):
            raise
        raise ValueError(
            f"torch backend: train-mode BatchNorm (layer {layers[0]}) needs at least 2 examples "
            f"per batch in PyTorch, got N = {problem.batch.size} (spec §4.2: its statistics are "
            f"those of the batch); torch.nn.BatchNorm1d raised ValueError: {exc}") from exc


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
        with _strict(config), _batch_of_one(problem):
            model = build_model(problem, config)
            x, y, c = _tensors(problem, config)
            extra = _extra(problem, config)
            loss = reduced_loss(problem, model(x, extra.get("drop")), y, c, extra)
            loss.backward()
            return float(loss.detach()), {n: _numpy(p.grad) for n, p in model.named_parameters()
                                 if p.grad is not None}

    def per_example(
        self, problem: Problem, config: Config, method: str
    ) -> tuple[np.ndarray, Grads]:
        if method not in ("vmap", "loop"):
            raise ValueError(f"torch backend: unknown per-example method {method!r}")
        coupled = _train_mode_batchnorm(problem)
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
        with _strict(config):
            model = build_model(problem, config)
            x, y, _ = _tensors(problem, config)
            extra = _extra(problem, config)
            if method == "vmap":
                return self._vmap(problem, model, x, y, extra)
            return self._loop(problem, model, x, y, extra)

    @staticmethod
    def _vmap(problem: Problem, model: Net, x: torch.Tensor, y: torch.Tensor,
              extra: dict[str, Any]) -> tuple[np.ndarray, Grads]:
        params = {n: p.detach() for n, p in model.named_parameters()}

        def loss_one(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor,
                     ei: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
            ei = _map(lambda a: a.unsqueeze(0), ei)
            out = torch.func.functional_call(model, p, (xi.unsqueeze(0), ei.get("drop")))
            loss = per_example_loss(problem, out, yi.unsqueeze(0), ei, vmapped=True)[0]
            return loss, loss.detach()

        grads, losses = torch.func.vmap(torch.func.grad(loss_one, has_aux=True),
                                        in_dims=(None, 0, 0, 0))(params, x, y, extra)
        return _numpy(losses), {n: _numpy(g) for n, g in grads.items()}

    @staticmethod
    def _loop(problem: Problem, model: Net, x: torch.Tensor, y: torch.Tensor,
              extra: dict[str, Any]) -> tuple[np.ndarray, Grads]:
        losses, rows = [], []
        for i in range(x.shape[0]):
            model.zero_grad(set_to_none=True)
            ei = _map(lambda a, i=i: a[i:i + 1], extra)
            out = model(x[i:i + 1], ei.get("drop"))
            loss = per_example_loss(problem, out, y[i:i + 1], ei)[0]
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
        A train-mode BatchNorm updates its running statistics as a side effect, which does not
        change the returned parameters.
        """
        model = build_model(problem, config)
        opt = torch_optimizer(model.parameters(), optimizer)
        for batch in batches:
            step = problem.with_batch(batch)
            x, y, c = _tensors(step, config)
            extra = _extra(step, config)
            opt.zero_grad(set_to_none=True)
            # one precision region (TF32 flags, autocast) per forward/backward, the step outside:
            # autocast caches its bfloat16 copies of the weights until its region ends, so a loop
            # inside one region would run every forward with the first step's weights (§7.4)
            with _strict(config), _batch_of_one(step):
                reduced_loss(step, model(x, extra.get("drop")), y, c, extra).backward()
            opt.step()
        return {n: _numpy(p) for n, p in model.named_parameters()}

    # -- the optional gradient accumulation (spec §5.1–§5.5) --------------------------------------
    def accumulation_methods(self) -> Sequence[str]:
        return ("sum",)

    def accumulate(self, problem: Problem, config: Config, plan: Any,
                   method: str = "sum") -> Grads:
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
            x, y, c = _tensors(part, config)
            extra = _extra(part, config)
            with _strict(config), _batch_of_one(part):
                loss = reduced_loss(part, model(x, extra.get("drop")), y, c, extra) * s
                if t:
                    penalty = sum(p.pow(2).sum() for p in model.parameters())
                    loss = loss + t * (plan.l2 / 2) * penalty
                loss.backward()
        return {n: _numpy(p.grad) for n, p in model.named_parameters() if p.grad is not None}


def torch_optimizer(params: Any, opt: Any) -> torch.optim.Optimizer:
    """The ``torch.optim`` object realising a ``reference.update.Optimizer`` (spec §6.1)."""
    if opt.name == "sgd":
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, dampening=0.0,
                               weight_decay=opt.weight_decay, nesterov=False)
    cls = torch.optim.Adam if opt.name == "adam" else torch.optim.AdamW
    return cls(params, lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay)


backend = TorchBackend()
