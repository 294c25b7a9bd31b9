"""``TorchLibsBackend``: the torch backend with the per-example methods of the libraries added.

Everything but ``per_example`` is the torch backend's (same modules, losses and autodiff). The
per-example methods are "vmap" and "loop" (the torch backend's, REQUIRED by §2.12) and, where the
library imports, "opacus_mean", "opacus_sum", "backpack" and "expanded_weights" (ExpandedWeights
ships with torch). Each library method backpropagates the loss its convention maps to g_i
(``conventions.Convention.loss_for_g``, spec §9.8) and returns the library's field unscaled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from batchgrad_spec.backends.torch_backend import TorchBackend, train_mode_batchnorm
from reference.contract import Config
from reference.problem import Problem
from reference.types import Grads, Undefined

from .conventions import CONVENTIONS, METHODS
from .libraries import available, library_versions, raw_per_example

__all__ = ["TorchLibsBackend", "backend"]


class TorchLibsBackend(TorchBackend):
    """``--backend batchgrad_spec.backends.torch_libs:backend``."""

    name = "torch_libs"

    def versions(self) -> Mapping[str, str]:
        return {**super().versions(), **library_versions()}

    def per_example_methods(self) -> Sequence[str]:
        libs = [m for m in METHODS if available(CONVENTIONS[m].library)]
        return (*super().per_example_methods(), *libs)

    def capabilities(self) -> Iterable[str]:
        """The torch backend's (the library methods refuse layers they cannot handle with the
        library's own reason: ``libraries.LibraryUnsupported``, spec §9.12)."""
        declared = getattr(super(), "capabilities", None)
        if declared is not None:
            return tuple(declared())
        from reference.capabilities import DEFAULT_CAPABILITIES  # type: ignore[import-not-found]
        return tuple(DEFAULT_CAPABILITIES)

    def per_example(self, problem: Problem, config: Config,
                    method: str) -> tuple[np.ndarray, Grads]:
        if method not in CONVENTIONS:
            return super().per_example(problem, config, method)
        if method not in self.per_example_methods():
            raise ValueError(f"torch_libs: method {method!r} is not offered here (its library "
                             f"does not import); offered: {self.per_example_methods()}")
        coupled = train_mode_batchnorm(problem)
        if coupled:
            raise Undefined(f"per-example gradients are not defined through a train-mode "
                            f"BatchNorm (layer {coupled[0]}; spec §4.3); what {method} does "
                            f"there is §9.12's")
        return raw_per_example(problem, config, method, CONVENTIONS[method].loss_for_g)


backend = TorchLibsBackend()
