"""Hypothesis strategies for gradient problems: networks, parameters, batches, losses,
reductions and whole problems, as a public API in the style of ``hypothesis.extra.numpy``.

Every strategy is a function with typed keyword-only options, validated when it is built (an
``InvalidArgument`` that repeats the bad value and says how to fix it), documented with its
defaults, what it draws and what its examples shrink towards. Values are float32-representable
normal numbers of magnitude ≤ ``max_magnitude`` (default 2), sizes are capped (``MAX_WIDTH``,
``MAX_DEPTH``, ``MAX_BATCH``, ``MAX_LENGTH``) so that nothing overflows (spec §1.6, §7.1).

Rooms, each importable on its own (imports run one way, down this list):

- ``value``: ``floats``, the one-step array draws (``float_arrays``, ``float_arrays_between``,
  ``label_arrays``; their byte layout in ``_arrays``) and the size caps;
- ``layer``: the coupling layers of chapter 4 as units (kinds, ``norm_parameters``,
  ``dropout_masks``, ``with_two_outputs``, ``layer_kind``);
- ``network``: ``networks``, ``layer_networks``, ``parameters``;
- ``loss``: ``losses`` with their options, ``reductions``;
- ``batch``: ``batches``, ``loss_batches``, ``sequence_batches``;
- ``problem``: ``problems`` (chapters 1–2), ``layer_problems`` (4), ``loss_problems`` (3);
- ``structured``: ``structured_problems`` (chapter 9: embedding, conv1d, attention, residual,
  tied parameters);
- ``plan``: micro-batch ``splits`` and ``split_cases``, data-parallel ``equal_shards`` and
  ``any_shards`` (chapter 5);
- ``reach``: ``reaches`` and ``minimal``, to check what a strategy reaches and shrinks to.

Their own behaviour is tested in ``tests/meta/test_strategies_*.py``.
"""

from __future__ import annotations

from batchgrad_spec.strategies import (
    batch,
    layer,
    loss,
    network,
    plan,
    problem,
    reach,
    structured,
    value,
)
from batchgrad_spec.strategies.batch import *  # noqa: F403
from batchgrad_spec.strategies.layer import *  # noqa: F403
from batchgrad_spec.strategies.loss import *  # noqa: F403
from batchgrad_spec.strategies.network import *  # noqa: F403
from batchgrad_spec.strategies.plan import *  # noqa: F403
from batchgrad_spec.strategies.problem import *  # noqa: F403
from batchgrad_spec.strategies.reach import *  # noqa: F403
from batchgrad_spec.strategies.structured import *  # noqa: F403
from batchgrad_spec.strategies.value import *  # noqa: F403

__all__ = [  # the public API: every room's own __all__, in the order of the list above
    *value.__all__,
    *layer.__all__,
    *network.__all__,
    *loss.__all__,
    *batch.__all__,
    *problem.__all__,
    *structured.__all__,
    *plan.__all__,
    *reach.__all__,
]
