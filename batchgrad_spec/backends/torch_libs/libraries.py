"""The three per-example-gradient libraries called as their users call them (spec §9.8–§9.12).

``raw_per_example(problem, config, method, loss)`` builds the torch backend's model (the same
``torch.nn`` modules, ``torch_backend.build_model``), lets the library of ``method``
(``conventions.CONVENTIONS``) instrument it, backpropagates ``loss`` — "mean" (1/N) Σ ℓ_i, "sum"
Σ ℓ_i, or "problem" (the problem's own reduced loss as PyTorch users write it,
``torch_backend.reduced_loss``) — and returns ℓ_i and the field the library wrote, unscaled.

A layer the library cannot handle is never papered over: the library's own refusal (an exception,
or BackPACK's warning plus a missing ``grad_batch``) becomes ``LibraryUnsupported`` carrying the
library's words; the chapter-9 tests report it as a skip with that reason (§9.12).
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from batchgrad_spec.backends.torch_backend import (
    build_model,
    extra_tensors,
    per_example_loss,
    precision_region,
    reduced_loss,
    tensors,
    to_numpy,
)
from reference.contract import Config
from reference.problem import Problem
from reference.types import Grads

from .conventions import CONVENTIONS

__all__ = ["LOSSES", "LibraryUnsupported", "available", "library_versions", "raw_per_example"]

LOSSES = ("mean", "sum", "problem")
"""What ``raw_per_example`` backpropagates: (1/N) Σ ℓ_i, Σ ℓ_i, or the problem's reduced loss."""

_INPUT_HOOK = "Full backward hook is firing when gradients are computed with respect to module"
"""torch's warning when a module hook fires and the input needs no gradient (the suite's inputs
are data): harmless, and not the library's reason for anything."""

_MODULES = {"opacus": "opacus", "backpack": "backpack", "expanded_weights": "torch"}


class LibraryUnsupported(NotImplementedError):
    """The library refused (or silently skipped) a layer of the problem; the message quotes it.
    ``unsupported`` tells the harness to report the test as skipped with this reason (§9.12)."""

    unsupported = True


def available(library: str) -> bool:
    """Whether ``library`` imports here (ExpandedWeights ships with torch)."""
    return importlib.util.find_spec(_MODULES[library]) is not None


def library_versions() -> dict[str, str]:
    """{package: version} of the libraries that import here."""
    out = {}
    for lib, mod in _MODULES.items():
        if lib != "expanded_weights" and available(lib):
            out[lib] = str(getattr(importlib.import_module(mod), "__version__", "?"))
    return out


def _loss(problem: Problem, out: torch.Tensor, y: torch.Tensor, c: torch.Tensor | None,
          extra: dict[str, Any], loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    losses = per_example_loss(problem, out, y, extra)
    if loss == "mean":
        return losses, losses.mean()
    if loss == "sum":
        return losses, losses.sum()
    return losses, reduced_loss(problem, out, y, c, extra)


def _collect(named: dict[str, torch.nn.Parameter], field: str, library: str,
             said: str) -> Grads:
    grads, missing = {}, []
    for name, p in named.items():
        g = getattr(p, field, None)
        if g is None:
            missing.append(name)
        else:
            grads[name] = to_numpy(g)
    if missing:
        raise LibraryUnsupported(f"{library} wrote no {field} for {missing}"
                                 + (f": {said}" if said else ""))
    return grads


def _opacus(model: torch.nn.Module, setting: str, run: Callable[[Any], None]) -> str:
    from opacus import GradSampleModule
    try:
        wrapped = GradSampleModule(model, batch_first=True, loss_reduction=setting, strict=True)
    except NotImplementedError as exc:
        raise LibraryUnsupported(f"opacus.GradSampleModule refused the model: {exc}") from exc
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_INPUT_HOOK)
        try:
            run(wrapped)
        except TypeError as exc:
            # Opacus's functorch fallback (layers it has no grad sampler for) calls the layer
            # with its first input only: a layer that also takes data (attention's key mask)
            # crashes there
            if "required positional argument" not in str(exc):
                raise
            raise LibraryUnsupported(f"opacus crashed with TypeError: {exc} (its functorch "
                                     f"fallback passes a layer one input)") from exc
    return ""


def _plain_convs(model: torch.nn.Module) -> None:
    """BackPACK looks extensions up by a module's exact class: the torch backend's ``FlatConv1d``
    (an ``nn.Conv1d`` subclass reading flat rows) becomes what a BackPACK user writes,
    ``nn.Sequential(nn.Unflatten, nn.Conv1d, nn.Flatten)`` around the same Parameters."""
    from batchgrad_spec.backends.torch_backend.structured import FlatConv1d
    for k, m in enumerate(model):  # type: ignore[arg-type]
        if isinstance(m, FlatConv1d):
            conv = torch.nn.Conv1d(m.in_channels, m.out_channels, m.kernel_size,  # type: ignore
                                   stride=m.stride, padding=m.padding,  # type: ignore[arg-type]
                                   dilation=m.dilation, groups=m.groups,
                                   bias=m.bias is not None)
            conv.weight = m.weight
            conv.bias = m.bias
            model[k] = torch.nn.Sequential(  # type: ignore[index]
                torch.nn.Unflatten(-1, (m.in_channels, m.length)), conv, torch.nn.Flatten(-2))


def _backpack(model: torch.nn.Module, setting: str, run: Callable[[Any], None]) -> str:
    from backpack import backpack, extend
    from backpack.extensions import BatchGrad
    _plain_convs(model)
    extend(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with backpack(BatchGrad()):
                run(model)
        except NotImplementedError as exc:  # e.g. "Only padding_idx=None supported."
            raise LibraryUnsupported(f"backpack raised NotImplementedError: {exc}") from exc
    said = "; ".join(dict.fromkeys(str(w.message) for w in caught
                                   if not str(w.message).startswith(_INPUT_HOOK)))
    for w in caught:  # BackPACK warns and goes on through train-mode BatchNorm (§9.12)
        if "BatchNorm module in training mode" in str(w.message):
            raise LibraryUnsupported(f"backpack warned: {w.message}")
    return said


def _expanded_weights(model: torch.nn.Module, setting: str,
                      run: Callable[[Any], None]) -> str:
    from torch.nn.utils._per_sample_grad import call_for_per_sample_grads
    try:
        run(call_for_per_sample_grads(model, loss_reduction=setting))
    except RuntimeError as exc:
        if "Expanded Weights encountered but cannot handle" not in str(exc):
            raise
        raise LibraryUnsupported(f"torch ExpandedWeights raised RuntimeError: {exc}") from exc
    return ""


_CALLS = {"opacus": _opacus, "backpack": _backpack, "expanded_weights": _expanded_weights}


def raw_per_example(problem: Problem, config: Config, method: str,
                    loss: str) -> tuple[np.ndarray, Grads]:
    """(ℓ_i, the library's raw per-example field) for ``method`` (a key of ``CONVENTIONS``) when
    the user backpropagates ``loss`` (one of ``LOSSES``). Raises ``LibraryUnsupported`` with the
    library's reason where it cannot handle a layer."""
    if method not in CONVENTIONS:
        raise ValueError(f"torch_libs: unknown per-example method {method!r}; known: "
                         f"{', '.join(CONVENTIONS)}")
    if loss not in LOSSES:
        raise ValueError(f"torch_libs: loss must be one of {LOSSES}, got {loss!r}")
    conv = CONVENTIONS[method]
    if not available(conv.library):
        raise ValueError(f"torch_libs: method {method!r} needs {conv.library}, which does not "
                         f"import here (pip install 'batchgrad-spec[{conv.library}]')")
    with precision_region(config):
        model = build_model(problem, config)
        x, y, c = tensors(problem, config)
        extra = extra_tensors(problem, config)
        kept: list[torch.Tensor] = []

        def run(forward: Any) -> None:
            losses, total = _loss(problem, forward(x, extra.get("drop")), y, c, extra, loss)
            total.backward()
            kept.append(losses.detach())

        named = dict(model.named_parameters())  # the problem's names, tied ones once
        said = _CALLS[conv.library](model, conv.setting, run)
        grads = _collect(named, conv.field, conv.library, said)
    return to_numpy(kept[0]), grads
