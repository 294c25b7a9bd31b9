"""Layers as units (spec chapter 4): the coupling layers a strategy can insert into a network,
how one of each kind is drawn, and the data they need beside θ (γ and β of the norms, dropout
keep-masks).

Coupling layers (LayerNorm, BatchNorm in training and eval mode, Dropout with its keep-masks as
data) and the piecewise activations leaky_relu and elu are all opt-in: ``networks()`` and
``problems()`` draw exactly what they drew before chapter 4 (spec §4.1–§4.7). ``parameters`` and
``batches`` call ``norm_parameters`` and ``dropout_masks`` only for networks with those layers.
This module is the one place that maps a layer kind's name to its ``reference.problem`` class.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.extra import numpy as hnp

from batchgrad_spec.strategies._validation import check_instance
from batchgrad_spec.strategies.value import MAX_BATCH, float32_range, floats
from reference.layers import DROPOUT, NORMS, Dense, Dropout, Layer, Network
from reference.norms import BATCHNORM, BATCHNORM_TRAIN, LAYERNORM, BatchNorm, LayerNorm

__all__ = [
    "KIND_FEATURES",
    "LAYER_KINDS",
    "MAX_DROPOUT_P",
    "MIN_RUNNING_VAR",
    "PER_EXAMPLE_KINDS",
    "PIECEWISE_ACTIVATIONS",
    "dropout_masks",
    "layer_kind",
    "norm_parameters",
    "with_two_outputs",
]

LAYER_KINDS = ("layer_norm", "batch_norm", "batch_norm_eval", "dropout")
"""What ``layer_networks`` inserts: LayerNorm, train-mode BatchNorm, eval-mode BatchNorm (running
statistics drawn), Dropout (keep-masks drawn by ``batches``)."""
KIND_FEATURES = {"layer_norm": (LAYERNORM,), "batch_norm": (BATCHNORM, BATCHNORM_TRAIN),
                 "batch_norm_eval": (BATCHNORM,), "dropout": (DROPOUT,)}
"""Layer kind → the capability names a layer of that kind uses (spec §8.6)."""
PER_EXAMPLE_KINDS = ("layer_norm", "batch_norm_eval", "dropout")
"""The kinds that keep ℓ_i a function of example i alone (spec §4.1, §4.4, §4.5)."""
PIECEWISE_ACTIVATIONS = ("identity", "relu", "leaky_relu", "elu")
"""The default activations of ``layer_networks``: identity first (what examples shrink to), the
piecewise-linear/-smooth ones whose slope conventions chapter 4 pins down (spec §4.6)."""
MIN_RUNNING_VAR = 1 / 16
"""Running variances are drawn in [1/16, 4]: 1/√(v + ε) ≤ 4, as for a trained network's
statistics; the batch statistics of train mode have no such floor (v = 0 is reachable)."""
MAX_DROPOUT_P = 0.875
"""Dropout p is drawn in [0, 0.875]: the scale 1/(1 − p) ≤ 8."""


def layer_kind(layer: Layer) -> str | None:
    """The name in ``LAYER_KINDS`` of a coupling layer, None for Dense layers and activations."""
    if isinstance(layer, LayerNorm):
        return "layer_norm"
    if isinstance(layer, BatchNorm):
        return "batch_norm" if layer.training else "batch_norm_eval"
    if isinstance(layer, Dropout):
        return "dropout"
    return None


def draw_layer(draw: st.DrawFn, kind: str, width: int, max_magnitude: float) -> Layer:
    """One layer of ``kind`` (in ``LAYER_KINDS``) on ``width`` features: eval-mode BatchNorm
    draws running means in [−max_magnitude, max_magnitude] and running variances in
    [MIN_RUNNING_VAR, 4]; Dropout draws p in [0, MAX_DROPOUT_P]. Shrinks towards 0 and 1/16."""
    if kind == "layer_norm":
        return LayerNorm(width)
    if kind == "batch_norm":
        return BatchNorm(width)
    if kind == "batch_norm_eval":
        mean = draw(st.lists(floats(max_magnitude=max_magnitude), min_size=width,
                             max_size=width))
        var = draw(st.lists(float32_range(MIN_RUNNING_VAR, 4.0), min_size=width, max_size=width))
        return BatchNorm(width, training=False, running_mean=tuple(mean), running_var=tuple(var))
    p = draw(float32_range(0.0, MAX_DROPOUT_P))
    return Dropout(float(p))


def norm_parameters(network: Network, *, max_magnitude: float = 2.0) -> st.SearchStrategy[dict]:
    """γ (``k.weight``) and β (``k.bias``) of every LayerNorm/BatchNorm of ``network``, each
    (features,) in [−max_magnitude, max_magnitude]; shrinks towards zeros. (``parameters`` draws
    these after the Dense parameters, so networks without norms draw what they drew before.)"""
    check_instance("network", network, Network)
    elements = floats(max_magnitude=max_magnitude)

    @st.composite
    def build(draw: st.DrawFn) -> dict:
        out = {}
        for k in network.layers_of(NORMS):
            shape = (network.layers[k].features,)  # type: ignore[union-attr]
            out[f"{k}.weight"] = draw(hnp.arrays(np.float64, shape, elements=elements))
            out[f"{k}.bias"] = draw(hnp.arrays(np.float64, shape, elements=elements))
        return out

    return build()


def dropout_masks(network: Network, n: int) -> st.SearchStrategy[dict]:
    """{k: keep-mask (n, width entering layer k)} of 0.0/1.0 for every Dropout layer k of
    ``network``, for ``n`` examples; shrinks towards keeping everything (all ones)."""
    check_instance("network", network, Network)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_BATCH:
        raise InvalidArgument(f"n={n!r} must be an int in [1, {MAX_BATCH}] (the batch size)")
    widths = network.widths()

    @st.composite
    def build(draw: st.DrawFn) -> dict:
        return {k: draw(hnp.arrays(np.float64, (n, widths[k]),
                                   elements=st.sampled_from([1.0, 0.0])))
                for k in network.layers_of(Dropout)}

    return build()


def with_two_outputs(net: Network) -> Network:
    """``net`` with its last Dense layer widened to 2 outputs (cross-entropy needs 2 classes),
    and the LayerNorm/BatchNorm layers after it widened to match (eval-mode running statistics
    repeated). For a network ending in its last Dense layer this is ``Dense(n_in, 2, bias)`` in
    its place."""
    check_instance("net", net, Network)
    k_last = net.dense_layers()[-1][0]
    seq: list[Layer] = list(net.layers)
    last = seq[k_last]
    assert isinstance(last, Dense)
    seq[k_last] = Dense(last.in_features, 2, last.bias)
    for k in range(k_last + 1, len(seq)):
        la = seq[k]
        if isinstance(la, LayerNorm):
            seq[k] = LayerNorm(2)
        elif isinstance(la, BatchNorm):
            stats = {} if la.training else {
                "running_mean": (la.running_mean or (0.0,)) * 2,
                "running_var": (la.running_var or (1.0,)) * 2}
            seq[k] = BatchNorm(2, training=la.training, **stats)
    return Network(tuple(seq))
