"""Networks and their parameters: multilayer perceptrons (``networks``), the same with coupling
layers inserted (``layer_networks``, spec chapter 4), and θ for a given network
(``parameters``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.extra import numpy as hnp

from batchgrad_spec.declared import choose, require, sizes
from batchgrad_spec.strategies._validation import (
    check_feature,
    check_instance,
    check_names,
    check_range,
)
from batchgrad_spec.strategies.layer import (
    KIND_FEATURES,
    LAYER_KINDS,
    PIECEWISE_ACTIVATIONS,
    draw_layer,
    norm_parameters,
)
from batchgrad_spec.strategies.value import MAX_DEPTH, MAX_WIDTH, floats
from reference.activations import (
    ACTIVATION_FEATURES,
    ACTIVATION_NAMES,
    CORE_ACTIVATIONS,
    Activation,
)
from reference.layers import DENSE, NORMS, Dense, Layer, Network

__all__ = ["layer_networks", "networks", "parameters"]

MAX_INSERTED = 8
"""Most coupling layers ``layer_networks`` inserts."""


def networks(
    *,
    min_depth: int = 1,
    max_depth: int = MAX_DEPTH,
    min_width: int = 1,
    max_width: int = 8,
    in_features: int | None = None,
    out_features: int | None = None,
    activations: Sequence[str] = CORE_ACTIVATIONS,
    bias: bool | None = None,
) -> st.SearchStrategy[Network]:
    """Multilayer perceptrons: ``depth`` Dense layers, one activation between consecutive ones.

    Defaults: depth 1–4, widths 1–8 (each Dense width drawn independently, at most 16), every
    core activation, bias drawn per layer (``bias=True``/``False`` forces it).
    ``in_features``/``out_features`` fix the first input and last output width. Shrinks towards
    one ``Dense(1, 1)`` with bias, then ``identity`` activations (the first name in
    ``activations``).
    """
    check_range("depth", min_depth, max_depth, 1, MAX_DEPTH)
    check_range("width", min_width, max_width, 1, MAX_WIDTH)
    acts = check_names("activations", activations, ACTIVATION_NAMES)
    check_feature("in_features", in_features, 1, MAX_WIDTH)
    check_feature("out_features", out_features, 1, MAX_WIDTH)
    if bias is not None and not isinstance(bias, bool):
        raise InvalidArgument(f"bias={bias!r} must be True, False or None (drawn per layer)")

    @st.composite
    def build(draw: st.DrawFn) -> Network:
        require(DENSE)  # the draw context (spec §8.6): what the target's backend declares
        drawn = choose(acts, ACTIVATION_FEATURES, empty_ok=True)
        if not drawn and min_depth > 1:
            choose(acts, ACTIVATION_FEATURES)  # a skip: no declared activation
        depth = draw(st.integers(min_depth, max_depth if drawn else 1))
        widths = [draw(sizes(min_width, max_width)) for _ in range(depth + 1)]
        if in_features is not None:
            widths[0] = in_features
        if out_features is not None:
            widths[-1] = out_features
        layers: list[Layer] = []
        for i in range(depth):
            b = draw(st.booleans().map(lambda x: not x)) if bias is None else bias
            layers.append(Dense(widths[i], widths[i + 1], b))
            if i < depth - 1:
                layers.append(Activation(draw(st.sampled_from(drawn))))
        return Network(tuple(layers))

    return build()


def layer_networks(
    *,
    layers: Sequence[str] = LAYER_KINDS,
    require: Sequence[str] = (),
    min_layers: int = 1,
    max_layers: int = 3,
    activations: Sequence[str] = PIECEWISE_ACTIVATIONS,
    min_depth: int = 1,
    max_depth: int = 3,
    min_width: int = 1,
    max_width: int = 6,
    in_features: int | None = None,
    out_features: int | None = None,
    max_magnitude: float = 2.0,
) -> st.SearchStrategy[Network]:
    """``networks(...)`` with ``min_layers``–``max_layers`` coupling layers of the kinds in
    ``layers`` (``LAYER_KINDS``) inserted anywhere: before the first Dense layer (normalising or
    dropping the inputs), after any Dense layer or activation, or at the very end (normalising
    the outputs). Each gets the width that reaches it; eval-mode BatchNorm draws running means in
    [−max_magnitude, max_magnitude] and running variances in [1/16, 4]; Dropout draws p in
    [0, 0.875]. ``require`` lists kinds inserted once each in any case (counted in
    ``min_layers``/``max_layers``), e.g. ``require=("batch_norm",)`` for a network that surely
    couples its examples. Defaults: 1–3 inserted layers, depth 1–3, widths 1–6, activations
    ``PIECEWISE_ACTIVATIONS``. Shrinks towards ``LayerNorm(1)`` (the first kind in ``layers``;
    the first of ``require`` if given) before one ``Dense(1, 1)``.

    Problems with a train-mode BatchNorm need N ≥ 2 to run on PyTorch (spec §4.2): use
    ``layer_problems``, which sets that.
    """
    kinds = check_names("layers", layers, LAYER_KINDS)
    required = () if not require else check_names("require", require, LAYER_KINDS)
    if len(required) > max_layers:
        raise InvalidArgument(f"require={required!r} inserts {len(required)} layers but "
                              f"max_layers={max_layers}; raise max_layers")
    if min_layers < len(required):
        raise InvalidArgument(f"min_layers={min_layers} is below the {len(required)} layers of "
                              f"require={required!r}; pass min_layers>={len(required)}")
    check_range("layers", min_layers, max_layers, 0, MAX_INSERTED)
    nets = networks(min_depth=min_depth, max_depth=max_depth, min_width=min_width,
                    max_width=max_width, in_features=in_features, out_features=out_features,
                    activations=activations)
    floats(max_magnitude=max_magnitude)  # validate now

    @st.composite
    def build(draw: st.DrawFn) -> Network:
        for kind in required:  # the draw context (spec §8.6)
            choose((kind,), KIND_FEATURES)
        drawn = choose(kinds, KIND_FEATURES, empty_ok=True)
        if not drawn and min_layers > len(required):
            choose(kinds, KIND_FEATURES)  # a skip: no declared kind
        seq: list[Layer] = list(draw(nets).layers)
        extra = draw(st.integers(min_layers - len(required),
                                 (max_layers if drawn else min_layers) - len(required)))
        for kind in required + tuple(draw(st.sampled_from(drawn)) for _ in range(extra)):
            at = draw(st.integers(0, len(seq)))
            widths = Network(tuple(seq)).widths() + [Network(tuple(seq)).out_features]
            seq.insert(at, draw_layer(draw, kind, widths[at], max_magnitude))
        return Network(tuple(seq))

    return build()


def parameters(network: Network, *, max_magnitude: float = 2.0) -> st.SearchStrategy[dict]:
    """θ for ``network``: {name: float64 array of the documented shape, spec §1.6}, every entry
    in [−max_magnitude, max_magnitude]; shrinks towards zeros.

    A bias vector is drawn for every Dense layer and dropped where the layer has none, so that a
    network without biases is not a shorter (hence "simpler") example to Hypothesis than the
    same network with them: examples shrink towards biases, as ``networks()`` documents. γ and β
    of the norms (``norm_parameters``) are drawn after the Dense parameters.
    """
    check_instance("network", network, Network)
    elements = floats(max_magnitude=max_magnitude)

    @st.composite
    def build(draw: st.DrawFn) -> dict:
        params = {}
        for k, d in network.dense_layers():
            params[f"{k}.weight"] = draw(hnp.arrays(np.float64, (d.out_features, d.in_features),
                                                    elements=elements))
            b = draw(hnp.arrays(np.float64, (d.out_features,), elements=elements))
            if d.bias:
                params[f"{k}.bias"] = b
        if network.layers_of(NORMS):  # chapter 4: γ, β after the Dense parameters
            params.update(draw(norm_parameters(network, max_magnitude=max_magnitude)))
            params = {k: params[k] for k in network.param_shapes()}
        return params

    return build()
