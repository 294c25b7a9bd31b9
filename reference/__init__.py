"""batchgrad-spec reference: numpy, float64, hand-written backward (see spec/).

``from reference import *`` brings in everything a counterexample snippet needs.

The rooms, bottom to top (each imports only from rooms before it in this list):
``types`` (shared types and exceptions), ``ops`` (primitives and their VJPs), ``numerics`` (the
floating-point model), ``batch``, ``unit`` (the layer contract), ``activations``, ``norms``,
``linear`` (bounds of linear maps), ``embedding``, ``conv``, ``attention``, ``residual`` (spec
chapter 9),
``layers`` (layer types as units, the network), ``losses`` (losses and reductions), ``problem``,
``grads`` (the gradient passes), ``bounds`` (the error bound and tolerance of a problem),
``update`` (optimisers), ``parallel`` (data-parallel combinations), ``accumulation``
(micro-batches), ``contract`` and ``numpy_backend`` (the backend contract).
"""

from .activations import ACTIVATION_NAMES, Activation
from .attention import SelfAttention
from .batch import Batch
from .bounds import error_bound, problem_tolerance
from .contract import Backend, BackendError, Config, load_backend
from .conv import Conv1d
from .embedding import Embedding
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
from .layers import Dense, Dropout, Network
from .losses import LOSS_NAMES, REDUCTION_NAMES, Loss, Reduction
from .norms import BatchNorm, LayerNorm
from .numerics import precision
from .problem import Problem
from .residual import Residual
from .types import ProblemError, Undefined

__version__ = "0.2.0"
SPEC_VERSION = "0.2.0"

__all__ = [
    "ACTIVATION_NAMES", "LOSS_NAMES", "REDUCTION_NAMES", "SPEC_VERSION",
    "Activation", "Backend", "BackendError", "Batch", "BatchNorm", "Config", "Conv1d", "Dense",
    "Dropout", "Embedding", "LayerNorm", "Loss", "Network", "Problem", "ProblemError",
    "Reduction", "Residual", "SelfAttention", "Undefined",
    "batch_grad", "batch_loss", "combine",
    "error_bound", "finite_difference_grad", "forward", "load_backend", "np",
    "per_example_grads", "per_example_losses", "precision", "problem_tolerance", "reduce_losses",
    "scaled_per_example_grads",
]

import numpy as np  # noqa: E402  (re-exported so that repro snippets need one import)
