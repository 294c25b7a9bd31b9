"""A deliberately wrong use of the libraries, for the meta-tests (spec §1.4, §9.8): the library's
raw field under the problem's own reduced loss passed off as g_i, unnormalised.

``backend`` (name ``libs_unnormalised``) is ``TorchLibsBackend`` except that its library methods
backpropagate L = Σ κ_i ℓ_i as the user wrote it and return the field as it is: BackPACK's
``grad_batch`` under a mean loss is then g_i/N (f-dangel/backpack#49), Opacus's ``grad_sample``
with ``loss_reduction="sum"`` under a mean loss likewise. §2.12 must catch it.
"""

from __future__ import annotations

import numpy as np

from reference.contract import Config
from reference.problem import Problem
from reference.types import Grads

from .adapter import TorchLibsBackend
from .conventions import CONVENTIONS
from .libraries import raw_per_example

__all__ = ["UnnormalisedLibraries", "backend"]


class UnnormalisedLibraries(TorchLibsBackend):
    name = "libs_unnormalised"
    fault = "library per-example fields under the user's reduced loss, not normalised to g_i"

    def per_example(self, problem: Problem, config: Config,
                    method: str) -> tuple[np.ndarray, Grads]:
        if method not in CONVENTIONS:
            return super().per_example(problem, config, method)
        return raw_per_example(problem, config, method, "problem")


backend = UnnormalisedLibraries()
