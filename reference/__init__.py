"""batchgrad-spec reference: numpy, float64, hand-written backward (see spec/).

``from reference import *`` brings in everything a counterexample snippet needs.
"""

from .contract import Backend, BackendError, Config, Undefined, load_backend
from .grads import (
    batch_grad,
    batch_loss,
    combine,
    finite_difference_grad,
    forward,
    per_example_grads,
    per_example_losses,
    reduce_losses,
    scaled_per_example_grads,
)
from .numerics import error_bound, precision, tolerance
from .problem import (
    ACTIVATION_NAMES,
    LOSS_NAMES,
    REDUCTION_NAMES,
    Activation,
    Batch,
    BatchNorm,
    Dense,
    Dropout,
    LayerNorm,
    Loss,
    Network,
    Problem,
    ProblemError,
    Reduction,
)

__version__ = "0.1.0"
SPEC_VERSION = "0.1.0"

__all__ = [
    "ACTIVATION_NAMES", "LOSS_NAMES", "REDUCTION_NAMES", "SPEC_VERSION",
    "Activation", "Backend", "BackendError", "Batch", "BatchNorm", "Config", "Dense", "Dropout",
    "LayerNorm", "Loss", "Network", "Problem", "ProblemError", "Reduction", "Undefined",
    "batch_grad", "batch_loss", "combine",
    "error_bound", "finite_difference_grad", "forward", "load_backend", "np",
    "per_example_grads", "per_example_losses", "precision", "reduce_losses",
    "scaled_per_example_grads", "tolerance",
]

import numpy as np  # noqa: E402  (re-exported so that repro snippets need one import)
