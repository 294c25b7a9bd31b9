"""Small problems with one chapter-9 layer each, for the library × layer table (spec §9.12).

``library_layer_problems(kind=...)`` draws θ and a batch for a fixed small network around one
layer kind — enough to tell whether a per-example-gradient library handles the layer and agrees
with the reference; the layers' own strategies (their edge cases: repeated indices, all-masked
examples, dilation, groups) are chapter 9's §9.1–§9.7. Shrinks towards one example and zeros.

* ``embedding``  Embedding(5, 3) on (N, T) index sequences (an index repeated within and across
  examples), Dense(3, 2), token cross-entropy; ``embedding_padding`` the same with padding_idx=0
* ``conv1d``     Conv1d(2→2 channels, kernel 2, length 5, dilation 2, groups 2), Dense, squared
  error
* ``attention``  SelfAttention(4, heads=2) over (N, T, 4) with a token mask, Dense(4, 2), token
  cross-entropy
* ``residual``   Residual((Dense(3, 3), tanh)), Dense(3, 2), squared error
* ``tied``       Embedding(4, 3) and the output projection Dense(3, 4) sharing one weight
  (``ties={"1.weight": "0.weight"}``), token cross-entropy

The draw context (``batchgrad_spec.declared``, spec §8.6): a backend that does not declare a
feature of the kind's network, loss or batch is never sent its problems (the test skips with "not
supported: <backend> does not declare <feature>"); the reduction is drawn among the declared ones.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.extra import numpy as hnp

from batchgrad_spec.declared import choose, require
from batchgrad_spec.strategies.value import floats
from reference.activations import Activation
from reference.attention import SelfAttention
from reference.batch import MASK, SEQUENCE, Batch
from reference.conv import Conv1d
from reference.embedding import Embedding
from reference.layers import Dense, Network
from reference.losses import LOSS_FEATURES, REDUCTION_FEATURES, Loss, Reduction
from reference.problem import Problem
from reference.residual import Residual

__all__ = ["LIBRARY_LAYER_KINDS", "library_layer_problems"]

LIBRARY_LAYER_KINDS = ("embedding", "embedding_padding", "conv1d", "attention", "residual", "tied")

_T = 3  # tokens per sequence


def _network(kind: str) -> tuple[Network, str, bool]:
    """(network, loss name, sequence batch?) of ``kind``."""
    if kind in ("embedding", "embedding_padding"):
        pad = 0 if kind == "embedding_padding" else None
        return Network((Embedding(5, 3, padding_idx=pad), Dense(3, 2))), \
            "softmax_cross_entropy", True
    if kind == "conv1d":
        conv = Conv1d(2, 2, kernel_size=2, length=5, dilation=2, groups=2)
        return Network((conv, Activation("tanh"), Dense(conv.out_width(10), 1))), \
            "squared_error", False
    if kind == "attention":
        return Network((SelfAttention(4, heads=2), Dense(4, 2))), "softmax_cross_entropy", True
    if kind == "residual":
        return Network((Residual((Dense(3, 3), Activation("tanh"))), Dense(3, 2))), \
            "squared_error", False
    assert kind == "tied"
    return Network((Embedding(4, 3), Dense(3, 4, bias=False)), ties={"1.weight": "0.weight"}), \
        "softmax_cross_entropy", True


def library_layer_problems(*, kind: str, max_batch: int = 4,
                           max_magnitude: float = 1.0) -> st.SearchStrategy[Problem]:
    """Problems around one layer ``kind`` of ``LIBRARY_LAYER_KINDS`` (module docstring), reduction
    mean or sum, 1–``max_batch`` examples, θ and float inputs in [−max_magnitude, max_magnitude];
    sequence batches have at least one valid token per example."""
    if kind not in LIBRARY_LAYER_KINDS:
        raise InvalidArgument(f"kind={kind!r}; one of {LIBRARY_LAYER_KINDS}")
    if not isinstance(max_batch, int) or not 1 <= max_batch <= 8:
        raise InvalidArgument(f"max_batch={max_batch!r} must be an int in [1, 8]")
    elements = floats(max_magnitude=max_magnitude)
    net, loss_name, sequence = _network(kind)
    first = net.layers[0]
    needed = net.features() | {LOSS_FEATURES[loss_name]} | ({SEQUENCE, MASK} if sequence else set())

    @st.composite
    def build(draw: st.DrawFn) -> Problem:
        for feature in sorted(needed):  # the context, §8.6: never sent undeclared layers
            require(feature)
        params = {k: draw(hnp.arrays(np.float64, s, elements=elements))
                  for k, s in net.param_shapes().items()}
        n = draw(st.integers(1, max_batch))
        reduction = Reduction(draw(st.sampled_from(choose(("mean", "sum"), REDUCTION_FEATURES))))
        lead = (n, _T) if sequence else (n,)
        if isinstance(first, Embedding):
            x = draw(hnp.arrays(np.int64, lead, elements=st.integers(0, first.num_embeddings - 1)))
        else:
            x = draw(hnp.arrays(np.float64, lead + (net.in_features,), elements=elements))
        mask = None
        if sequence:
            valid = draw(hnp.arrays(np.int64, (n,), elements=st.integers(1, _T)))
            mask = np.arange(_T)[None, :] < valid[:, None]
        out = net.out_features
        if loss_name == "softmax_cross_entropy":
            y = draw(hnp.arrays(np.int64, lead, elements=st.integers(0, out - 1)))
        else:
            y = draw(hnp.arrays(np.float64, lead + (out,), elements=elements))
        batch = Batch(x, y, mask=mask)
        return Problem(net, Loss(loss_name), reduction, params, batch)

    return build()
