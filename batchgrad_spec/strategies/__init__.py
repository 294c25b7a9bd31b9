"""Hypothesis strategies for gradient problems: networks, parameters, batches, losses,
reductions and whole problems, as a public API in the style of ``hypothesis.extra.numpy``.

Every strategy is a function with typed keyword-only options, validated when it is built (an
``InvalidArgument`` that repeats the bad value and says how to fix it), documented with its
defaults, what it draws and what its examples shrink towards. Values are float32-representable
normal numbers of magnitude ≤ ``max_magnitude`` (default 2), sizes are capped (``MAX_WIDTH``,
``MAX_DEPTH``, ``MAX_BATCH``, ``MAX_LENGTH``) so that nothing overflows (spec §1.6, §7.1).

Rooms, each importable on its own (imports run one way, down this list):

- ``value``: ``floats`` and the size caps;
- ``layer``: the coupling layers of chapter 4 as units (kinds, ``norm_parameters``,
  ``dropout_masks``, ``with_two_outputs``, ``layer_kind``);
- ``network``: ``networks``, ``layer_networks``, ``parameters``;
- ``loss``: ``losses`` with their options, ``reductions``;
- ``batch``: ``batches``, ``loss_batches``, ``sequence_batches``;
- ``problem``: ``problems`` (chapters 1–2), ``layer_problems`` (4), ``loss_problems`` (3);
- ``reach``: ``reaches`` and ``minimal``, to check what a strategy reaches and shrinks to.

Their own behaviour is tested in ``tests/meta/test_strategies_*.py``.
"""

from __future__ import annotations

from batchgrad_spec.strategies.batch import batches, loss_batches, sequence_batches
from batchgrad_spec.strategies.layer import (
    LAYER_KINDS,
    MAX_DROPOUT_P,
    MIN_RUNNING_VAR,
    PER_EXAMPLE_KINDS,
    PIECEWISE_ACTIVATIONS,
    dropout_masks,
    layer_kind,
    norm_parameters,
    with_two_outputs,
)
from batchgrad_spec.strategies.loss import (
    CLASS_WEIGHTS,
    HUBER_DELTAS,
    IGNORE_INDEX,
    IGNORED,
    LABEL_SMOOTHINGS,
    VARIANCE_RANGE,
    losses,
    reductions,
)
from batchgrad_spec.strategies.network import layer_networks, networks, parameters
from batchgrad_spec.strategies.problem import layer_problems, loss_problems, problems
from batchgrad_spec.strategies.reach import minimal, reaches
from batchgrad_spec.strategies.value import MAX_BATCH, MAX_DEPTH, MAX_LENGTH, MAX_WIDTH, floats

__all__ = [
    # values and sizes
    "MAX_BATCH",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "MAX_WIDTH",
    "floats",
    # networks and layers
    "LAYER_KINDS",
    "MAX_DROPOUT_P",
    "MIN_RUNNING_VAR",
    "PER_EXAMPLE_KINDS",
    "PIECEWISE_ACTIVATIONS",
    "dropout_masks",
    "layer_kind",
    "layer_networks",
    "networks",
    "norm_parameters",
    "parameters",
    "with_two_outputs",
    # losses, their options, reductions
    "CLASS_WEIGHTS",
    "HUBER_DELTAS",
    "IGNORED",
    "IGNORE_INDEX",
    "LABEL_SMOOTHINGS",
    "VARIANCE_RANGE",
    "losses",
    "reductions",
    # batches and sequences
    "batches",
    "loss_batches",
    "sequence_batches",
    # problems
    "layer_problems",
    "loss_problems",
    "problems",
    # checking a strategy
    "minimal",
    "reaches",
]
