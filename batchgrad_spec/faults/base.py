"""What every deliberately wrong backend shares: ``Faulty``, the numpy reference backend under
another name that subclasses get wrong in one way; ``Fault``, the naming of a fault for backends
built on another backend (PyTorch's); ``reduced``, the batch results of given per-example ones;
and ``lazy_attributes``, for faults that need an optional framework (built on first use, so that
importing their module needs only numpy).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from reference.contract import Config
from reference.grads import combine
from reference.numpy_backend import NumpyBackend
from reference.problem import Problem
from reference.types import Grads

__all__ = ["Fault", "Faulty", "PerExample", "lazy_attributes", "reduced"]

PerExample = tuple[np.ndarray, Grads]


class Fault:
    """Mixin for a backend class: ``fault`` says what is wrong, and ``versions`` reports it."""

    fault = ""

    def versions(self) -> Mapping[str, str]:
        return {**super().versions(), "fault": self.fault}  # type: ignore[misc]


class Faulty(Fault, NumpyBackend):
    """The numpy reference backend under another name; subclasses override one thing."""

    def __init__(self, name: str) -> None:
        self.name = name

    def reduced_by(self, problem: Problem, config: Config,
                   kappa: np.ndarray) -> tuple[float, Grads]:
        """(Σ κ_i ℓ_i, Σ κ_i g_i) of the reference's per-example results ("vmap") for the given
        coefficients ``kappa``."""
        losses, grads = super().per_example(problem, config, "vmap")
        return reduced(losses, grads, kappa)


def reduced(losses: np.ndarray, grads: Grads, kappa: np.ndarray) -> tuple[float, Grads]:
    """(Σ κ_i ℓ_i, Σ κ_i g_i) for given per-example results and coefficients."""
    kappa = kappa.astype(losses.dtype)
    return float(np.sum(kappa * losses)), combine(grads, kappa)


def lazy_attributes(module: str, builders: Mapping[str, Callable[[], Any]]
                    ) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) that builds each of ``builders``' backends when first
    asked for, once."""
    built: dict[str, Any] = {}

    def __getattr__(name: str) -> Any:
        if name in builders:
            if name not in built:
                built[name] = builders[name]()
            return built[name]
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
