"""Hypothesis strategies for gradient problems: networks, parameters, batches, reductions.

Every strategy is a function with keyword-only arguments, validated when it is built (an
``InvalidArgument`` that repeats the bad value and says how to fix it), and documented with its
defaults and what its examples shrink towards. Their own behaviour is tested in
``tests/meta/test_strategies.py``.

Values are float32-representable normal numbers (``width=32``) of magnitude ≤ ``max_magnitude``:
the float32 and float64 backends see exactly the same inputs, and nothing overflows (with widths
≤ 16 and depth ≤ 4 every pre-activation stays below 2.2·10⁶). Hypothesis favours 0, ±1 and the
bounds, so exact-zero pre-activations (relu's kink) occur by themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.extra import numpy as hnp

from reference.problem import (
    ACTIVATION_NAMES,
    LOSS_NAMES,
    REDUCTION_NAMES,
    Activation,
    Batch,
    Dense,
    Layer,
    Loss,
    Network,
    Problem,
    Reduction,
)

MAX_WIDTH = 16
MAX_DEPTH = 4
MAX_BATCH = 64


def _check_range(name: str, lo: int, hi: int, floor: int, ceiling: int) -> None:
    if not (isinstance(lo, int) and isinstance(hi, int)):
        raise InvalidArgument(f"min_{name}={lo!r} and max_{name}={hi!r} must be integers")
    if lo < floor:
        raise InvalidArgument(f"min_{name}={lo} must be at least {floor}")
    if hi > ceiling:
        raise InvalidArgument(f"max_{name}={hi} exceeds {ceiling}; magnitudes are bounded for "
                              f"sizes up to {ceiling} (spec §7.1); use max_{name}<={ceiling}")
    if lo > hi:
        raise InvalidArgument(f"min_{name}={lo} > max_{name}={hi}; "
                              f"pass min_{name} <= max_{name}")


def _check_names(arg: str, names: Sequence[str], allowed: Sequence[str]) -> tuple[str, ...]:
    if isinstance(names, str):
        raise InvalidArgument(f"{arg}={names!r} is a string; pass a sequence, e.g. ({names!r},)")
    names = tuple(names)
    if not names:
        raise InvalidArgument(f"{arg}=() is empty; pass at least one of {allowed}")
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise InvalidArgument(f"{arg} contains unknown {unknown}; choose from {allowed}")
    return names


def floats(*, max_magnitude: float = 2.0) -> st.SearchStrategy[float]:
    """Finite float32-representable normal floats in [−max_magnitude, max_magnitude].

    Shrinks towards 0, then small integers.
    """
    if not (0 < max_magnitude <= 8):
        raise InvalidArgument(f"max_magnitude={max_magnitude!r} must lie in (0, 8]")
    return st.floats(-max_magnitude, max_magnitude, width=32, allow_nan=False,
                     allow_infinity=False, allow_subnormal=False)


def networks(
    *,
    min_depth: int = 1,
    max_depth: int = MAX_DEPTH,
    min_width: int = 1,
    max_width: int = 8,
    in_features: int | None = None,
    out_features: int | None = None,
    activations: Sequence[str] = ACTIVATION_NAMES,
    bias: bool | None = None,
) -> st.SearchStrategy[Network]:
    """Multilayer perceptrons: ``depth`` Dense layers, one activation between consecutive ones.

    Defaults: depth 1–4, widths 1–8 (each Dense width drawn independently), every activation,
    bias drawn per layer (``bias=True``/``False`` forces it). ``in_features``/``out_features``
    fix the first input and last output width. Shrinks towards one ``Dense(1, 1)`` with bias,
    then ``identity`` activations (the first name in ``activations``).
    """
    _check_range("depth", min_depth, max_depth, 1, MAX_DEPTH)
    _check_range("width", min_width, max_width, 1, MAX_WIDTH)
    acts = _check_names("activations", activations, ACTIVATION_NAMES)
    for arg, v in (("in_features", in_features), ("out_features", out_features)):
        if v is not None and not (1 <= v <= MAX_WIDTH):
            raise InvalidArgument(f"{arg}={v!r} must be None or an int in [1, {MAX_WIDTH}]")

    @st.composite
    def build(draw: st.DrawFn) -> Network:
        depth = draw(st.integers(min_depth, max_depth))
        widths = [draw(st.integers(min_width, max_width)) for _ in range(depth + 1)]
        if in_features is not None:
            widths[0] = in_features
        if out_features is not None:
            widths[-1] = out_features
        layers: list[Layer] = []
        for i in range(depth):
            b = draw(st.booleans().map(lambda x: not x)) if bias is None else bias
            layers.append(Dense(widths[i], widths[i + 1], b))
            if i < depth - 1:
                layers.append(Activation(draw(st.sampled_from(acts))))
        return Network(tuple(layers))

    return build()


def parameters(network: Network, *, max_magnitude: float = 2.0) -> st.SearchStrategy[dict]:
    """θ for ``network``: {name: float64 array of the documented shape}; shrinks towards zeros.

    A bias vector is drawn for every Dense layer and dropped where the layer has none, so that a
    network without biases is not a shorter (hence "simpler") example to Hypothesis than the
    same network with them: examples shrink towards biases, as ``networks()`` documents.
    """
    if not isinstance(network, Network):
        raise InvalidArgument(f"network={network!r} must be a reference.problem.Network")
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
        return params

    return build()


def reductions(*, names: Sequence[str] = REDUCTION_NAMES) -> st.SearchStrategy[Reduction]:
    """One of the reductions (default all four); shrinks towards ``mean``."""
    return st.sampled_from(_check_names("names", names, REDUCTION_NAMES)).map(Reduction)


def batches(
    network: Network,
    loss: Loss,
    reduction: Reduction,
    *,
    min_size: int = 1,
    max_size: int = 8,
    max_magnitude: float = 2.0,
) -> st.SearchStrategy[Batch]:
    """N examples for ``network`` and ``loss``; weights when ``reduction`` is weighted.

    Defaults: N in 1–8, inputs and squared-error targets in [−2, 2], labels in [0, C).
    ``weighted`` weights are any sign in [−2, 2] (losses can then cancel, spec §2.10);
    ``weighted_mean`` weights are positive, in [1/64, 2], so Σ c_i is well away from 0.
    Shrinks towards one example with zero inputs, target 0 / label 0, weight as small as allowed.
    """
    _check_range("size", min_size, max_size, 1, MAX_BATCH)
    elements = floats(max_magnitude=max_magnitude)

    @st.composite
    def build(draw: st.DrawFn) -> Batch:
        n = draw(st.integers(min_size, max_size))
        x = draw(hnp.arrays(np.float64, (n, network.in_features), elements=elements))
        d = network.out_features
        if loss.name == "squared_error":
            y = draw(hnp.arrays(np.float64, (n, d), elements=elements))
        else:
            # an array like the squared-error targets, so that neither loss is a shorter example
            y = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, d - 1)))
        w = None
        if reduction.name == "weighted":
            w = draw(hnp.arrays(np.float64, (n,), elements=elements))
        elif reduction.name == "weighted_mean":
            w = draw(hnp.arrays(np.float64, (n,), elements=st.floats(
                1 / 64, 2.0, width=32, allow_subnormal=False)))
        return Batch(x, y, w)

    return build()


def problems(
    *,
    nets: st.SearchStrategy[Network] | None = None,
    losses: Sequence[str] = LOSS_NAMES,
    reductions: Sequence[str] = REDUCTION_NAMES,
    min_batch: int = 1,
    max_batch: int = 8,
    max_magnitude: float = 2.0,
) -> st.SearchStrategy[Problem]:
    """Whole problems: network from ``nets`` (default ``networks()``), loss, reduction, θ, batch.

    Cross-entropy networks get at least 2 outputs (classes); shrinks towards the smallest
    network, squared error, ``mean``, one example, all zeros.
    """
    loss_names = _check_names("losses", losses, LOSS_NAMES)
    red = _check_names("reductions", reductions, REDUCTION_NAMES)
    _check_range("batch", min_batch, max_batch, 1, MAX_BATCH)
    floats(max_magnitude=max_magnitude)  # validate now, not at the first draw
    nets = nets if nets is not None else networks()

    @st.composite
    def build(draw: st.DrawFn) -> Problem:
        loss = Loss(draw(st.sampled_from(loss_names)))
        net = draw(nets)
        if loss.name == "softmax_cross_entropy" and net.out_features < 2:
            *head, last = net.layers
            assert isinstance(last, Dense)
            net = Network((*head, Dense(last.in_features, 2, last.bias)))
        reduction = Reduction(draw(st.sampled_from(red)))
        params = draw(parameters(net, max_magnitude=max_magnitude))
        batch = draw(batches(net, loss, reduction, min_size=min_batch, max_size=max_batch,
                             max_magnitude=max_magnitude))
        return Problem(net, loss, reduction, params, batch)

    return build()
