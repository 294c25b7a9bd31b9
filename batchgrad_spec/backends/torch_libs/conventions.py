"""The per-example-gradient conventions of the libraries (spec §9.8–§9.11), stated as data.

Each library returns, for the loss L = Σ_i κ_i ℓ_i that the user backpropagates, the raw
per-example quantity

    raw_i = s · κ_i · g_i,      s = N under the library's ``loss_reduction="mean"``, else 1,

where g_i = ∇_θ ℓ_i is the specification's per-example gradient (§1.3, §1.4). Opacus and
PyTorch's ExpandedWeights multiply by the batch size N under ``loss_reduction="mean"`` (so a plain
mean, κ_i = 1/N, gives g_i); BackPACK's ``BatchGrad`` has no such setting (s = 1), so a mean loss
gives g_i/N (f-dangel/backpack#49, "Beware of scaling issue" in ``BatchGrad``'s docstring).

A per-example *method* (``METHODS``) is a library with the loss it is given: the suite obtains
g_i by backpropagating the loss for which s · κ_i = 1 (the plain mean (1/N) Σ ℓ_i for a "mean"
setting, Σ ℓ_i otherwise) — by choosing the loss the library's convention expects, never by
dividing the library's output. ``expected_raw`` is the reference for the convention itself
(float64 numpy, no torch): ``tests/test_ch9_libraries.py`` checks every library's raw output
under the problem's own reduction against it.

This module imports neither torch nor a library.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reference.grads import per_example_grads
from reference.problem import Problem
from reference.types import Grads

__all__ = ["CONVENTIONS", "METHODS", "Convention", "expected_raw", "scale"]


@dataclass(frozen=True)
class Convention:
    """A library's per-example-gradient call with one ``loss_reduction`` setting.

    ``library``: "opacus", "backpack" or "expanded_weights"; ``setting``: the library's
    ``loss_reduction`` argument ("mean" or "sum"; BackPACK has none: "sum" stands for s = 1);
    ``api``: what the user calls; ``field``: the attribute the library writes;
    ``kind``: "convention" (documented behaviour) — none of these scalings is a bug.
    """

    library: str
    setting: str
    api: str
    field: str
    source: str

    @property
    def s_is_batch_size(self) -> bool:
        """Whether the library multiplies by N (``loss_reduction="mean"``)."""
        return self.setting == "mean"

    @property
    def loss_for_g(self) -> str:
        """The loss whose backpropagation gives raw_i = g_i: "mean" (1/N) Σ ℓ_i or "sum" Σ ℓ_i."""
        return "mean" if self.s_is_batch_size else "sum"


CONVENTIONS: dict[str, Convention] = {
    "opacus_mean": Convention(
        "opacus", "mean", 'opacus.GradSampleModule(model, loss_reduction="mean")', "grad_sample",
        "opacus/grad_sample/grad_sample_module.py: backprops * n under loss_reduction == 'mean'"),
    "opacus_sum": Convention(
        "opacus", "sum", 'opacus.GradSampleModule(model, loss_reduction="sum")', "grad_sample",
        "opacus/grad_sample/grad_sample_module.py: backprops unchanged under 'sum'"),
    "backpack": Convention(
        "backpack", "sum", "backpack.extend(model); with backpack(BatchGrad()): loss.backward()",
        "grad_batch",
        "backpack/extensions/firstorder/batch_grad/__init__.py docstring 'Beware of scaling "
        "issue'; f-dangel/backpack#49"),
    "expanded_weights": Convention(
        "expanded_weights", "sum",
        'torch.nn.utils._per_sample_grad.call_for_per_sample_grads(model, loss_reduction="sum")',
        "grad_sample", "torch/nn/utils/_per_sample_grad.py docstring; pytorch/pytorch#80892"),
    "expanded_weights_mean": Convention(
        "expanded_weights", "mean",
        'torch.nn.utils._per_sample_grad.call_for_per_sample_grads(model, loss_reduction="mean")',
        "grad_sample", "torch/nn/utils/_per_sample_grad.py docstring: scaled by batch_size"),
}
"""Every library call the suite makes, by the per-example method name it is offered under."""

METHODS: tuple[str, ...] = ("opacus_mean", "opacus_sum", "backpack", "expanded_weights")
"""The per-example methods of the ``torch_libs`` backend (besides "vmap" and "loop"), each
offered where its library imports; "expanded_weights_mean" is checked as a convention only
(§9.11): it gives g_i exactly as "opacus_mean" does."""


def scale(problem: Problem, method: str) -> np.ndarray:
    """s · κ_i of every example (shape (N,)) for the problem's own reduced loss (§9.8)."""
    conv = CONVENTIONS[method]
    s = problem.batch.size if conv.s_is_batch_size else 1
    return s * np.asarray(problem.coefficients, dtype=np.float64)


def expected_raw(problem: Problem, method: str) -> Grads:
    """The reference for the library's raw output when the user backpropagates the problem's own
    reduced loss L = Σ κ_i ℓ_i: s · κ_i · g_i (float64)."""
    _, g = per_example_grads(problem)
    k = scale(problem, method)
    return {n: v * k.reshape((-1,) + (1,) * (v.ndim - 1)) for n, v in g.items()}
