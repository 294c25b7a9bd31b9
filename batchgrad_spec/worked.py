"""The worked example of spec §2.11: two per-example gradients that cancel in one component.

A fixed problem (no Hypothesis draw) used by chapter 2 and by the contract tests of chapter 8.
"""

from __future__ import annotations

import numpy as np

from reference.batch import Batch
from reference.layers import Dense, Network
from reference.losses import Loss, Reduction
from reference.problem import Problem

__all__ = ["WORKED_EXAMPLE", "WORKED_MEAN", "worked_example_problem"]

WORKED_EXAMPLE = (
    np.array([1.5, -2.0, 1.1, 0.4, -0.9]),
    np.array([1.2, 2.3, -1.1, -0.8, -0.7]),
)
WORKED_MEAN = np.array([1.35, 0.15, 0.0, -0.2, -0.8])


def worked_example_problem() -> Problem:
    """Two examples whose per-example gradients are the vectors of the seed question.

    f(x) = w·x (Dense(5, 1) without bias), squared error against y = −½ at w = 0:
    ℓ_i = (w·x_i + ½)², g_i = 2(w·x_i + ½) x_i = x_i.
    """
    return Problem(Network((Dense(5, 1, bias=False),)), Loss("squared_error"), Reduction("mean"),
                   {"0.weight": np.zeros((1, 5))},
                   Batch(np.stack(WORKED_EXAMPLE), np.full((2, 1), -0.5)))
