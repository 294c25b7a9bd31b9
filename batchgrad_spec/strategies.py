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

from reference.activations import ACTIVATION_NAMES, CORE_ACTIVATIONS, Activation
from reference.batch import Batch
from reference.layers import Dense, Layer, Network
from reference.losses import (
    CORE_LOSSES,
    CORE_REDUCTIONS,
    LOSS_NAMES,
    REDUCTION_NAMES,
    Loss,
    Reduction,
)
from reference.problem import Problem

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
    activations: Sequence[str] = CORE_ACTIVATIONS,
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
        raise InvalidArgument(f"network={network!r} must be a reference.layers.Network")
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


def reductions(*, names: Sequence[str] = CORE_REDUCTIONS) -> st.SearchStrategy[Reduction]:
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
        drop = draw(dropout_masks(network, n)) if network.layers_of(Dropout) else None  # ch. 4
        return Batch(x, y, w, dropout=drop)

    return build()


def problems(
    *,
    nets: st.SearchStrategy[Network] | None = None,
    losses: Sequence[str] = CORE_LOSSES,
    reductions: Sequence[str] = CORE_REDUCTIONS,
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
            net = with_two_outputs(net)  # chapter 4 section: layers may follow the last Dense
        reduction = Reduction(draw(st.sampled_from(red)))
        params = draw(parameters(net, max_magnitude=max_magnitude))
        batch = draw(batches(net, loss, reduction, min_size=min_batch, max_size=max_batch,
                             max_magnitude=max_magnitude))
        return Problem(net, loss, reduction, params, batch)

    return build()


# -- chapter 4: layers --------------------------------------------------------------------------
# Coupling layers (LayerNorm, BatchNorm in training and eval mode, Dropout with its keep-masks as
# data) and the piecewise activations leaky_relu and elu, all opt-in: the defaults above draw
# exactly what they drew before chapter 4 (spec §4.1–§4.7). ``parameters`` and ``batches`` call
# ``norm_parameters`` and ``dropout_masks`` only for networks that have those layers.
from reference.layers import NORMS, Dropout  # noqa: E402
from reference.norms import BatchNorm, LayerNorm  # noqa: E402

LAYER_KINDS = ("layer_norm", "batch_norm", "batch_norm_eval", "dropout")
"""What ``layer_networks`` inserts: LayerNorm, train-mode BatchNorm, eval-mode BatchNorm (running
statistics drawn), Dropout (keep-masks drawn by ``batches``)."""
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


def _kind_layer(draw: st.DrawFn, kind: str, width: int, max_magnitude: float) -> Layer:
    if kind == "layer_norm":
        return LayerNorm(width)
    if kind == "batch_norm":
        return BatchNorm(width)
    if kind == "batch_norm_eval":
        mean = draw(st.lists(floats(max_magnitude=max_magnitude), min_size=width,
                             max_size=width))
        var = draw(st.lists(st.floats(MIN_RUNNING_VAR, 4.0, width=32, allow_subnormal=False),
                            min_size=width, max_size=width))
        return BatchNorm(width, training=False, running_mean=tuple(mean), running_var=tuple(var))
    p = draw(st.floats(0.0, MAX_DROPOUT_P, width=32, allow_subnormal=False))
    return Dropout(float(p))


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
    kinds = _check_names("layers", layers, LAYER_KINDS)
    required = () if not require else _check_names("require", require, LAYER_KINDS)
    if len(required) > max_layers:
        raise InvalidArgument(f"require={required!r} inserts {len(required)} layers but "
                              f"max_layers={max_layers}; raise max_layers")
    if min_layers < len(required):
        raise InvalidArgument(f"min_layers={min_layers} is below the {len(required)} layers of "
                              f"require={required!r}; pass min_layers>={len(required)}")
    _check_range("layers", min_layers, max_layers, 0, 8)
    nets = networks(min_depth=min_depth, max_depth=max_depth, min_width=min_width,
                    max_width=max_width, in_features=in_features, out_features=out_features,
                    activations=activations)
    floats(max_magnitude=max_magnitude)  # validate now

    @st.composite
    def build(draw: st.DrawFn) -> Network:
        seq: list[Layer] = list(draw(nets).layers)
        extra = draw(st.integers(min_layers - len(required), max_layers - len(required)))
        for kind in required + tuple(draw(st.sampled_from(kinds)) for _ in range(extra)):
            at = draw(st.integers(0, len(seq)))
            widths = Network(tuple(seq)).widths() + [Network(tuple(seq)).out_features]
            seq.insert(at, _kind_layer(draw, kind, widths[at], max_magnitude))
        return Network(tuple(seq))

    return build()


def norm_parameters(network: Network, *, max_magnitude: float = 2.0) -> st.SearchStrategy[dict]:
    """γ (``k.weight``) and β (``k.bias``) of every LayerNorm/BatchNorm of ``network``, each
    (features,) in [−max_magnitude, max_magnitude]; shrinks towards zeros. (``parameters`` draws
    these after the Dense parameters, so networks without norms draw what they drew before.)"""
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
    """{k: keep-mask (n, width entering layer k)} of 0.0/1.0 for every Dropout layer k; shrinks
    towards keeping everything (all ones)."""
    widths = network.widths()

    @st.composite
    def build(draw: st.DrawFn) -> dict:
        return {k: draw(hnp.arrays(np.float64, (n, widths[k]),
                                   elements=st.sampled_from([1.0, 0.0])))
                for k in network.layers_of(Dropout)}

    return build()


def layer_problems(
    *,
    layers: Sequence[str] = LAYER_KINDS,
    losses: Sequence[str] = CORE_LOSSES,
    reductions: Sequence[str] = CORE_REDUCTIONS,
    min_batch: int | None = None,
    max_batch: int = 8,
    **network_options: object,
) -> st.SearchStrategy[Problem]:
    """``problems(nets=layer_networks(layers=layers, **network_options), ...)``. ``min_batch``
    defaults to 2 when ``layers`` or ``require`` includes ``"batch_norm"`` (train mode: PyTorch
    refuses one example, spec §4.2), else 1; an explicit ``min_batch`` below that is an error."""
    kinds = tuple(layers) + tuple(network_options.get("require", ()))  # type: ignore[arg-type]
    floor = 2 if "batch_norm" in kinds else 1
    lo = floor if min_batch is None else min_batch
    if lo < floor:
        raise InvalidArgument(f"min_batch={lo}: problems with a train-mode BatchNorm need N >= 2 "
                              f"(spec §4.2); pass min_batch>=2 or leave it out")
    nets = layer_networks(layers=layers, **network_options)  # type: ignore[arg-type]
    return problems(nets=nets, losses=losses, reductions=reductions, min_batch=lo,
                    max_batch=max_batch)


def with_two_outputs(net: Network) -> Network:
    """``net`` with its last Dense layer widened to 2 outputs (cross-entropy needs 2 classes),
    and the LayerNorm/BatchNorm layers after it widened to match (eval-mode running statistics
    repeated). For a network ending in its last Dense layer this is ``Dense(n_in, 2, bias)`` in
    its place, as ``problems`` always did."""
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
            seq[k] = BatchNorm(2, training=la.training, **stats)  # type: ignore[arg-type]
    return Network(tuple(seq))


# -- chapter 3: losses -----------------------------------------------------------------------------
# Losses with their options, batches of labels/targets/variances/masks, and whole problems that
# combine them (spec chapter 3). Same conventions as above: keyword-only, validated when built,
# float32-representable values of magnitude ≤ max_magnitude, shrinking towards the plainest case.
IGNORE_INDEX = -100
"""The label that marks a row as ignored: PyTorch's default ``ignore_index`` (spec §3.4)."""
CLASS_WEIGHTS = (1.0, 0.5, 2.0, 0.25, 4.0, 1.5, 0.75, 3.0)
"""Class weights w_k > 0 are drawn from these: exact in float32 (and every Σ w[y_i] of ≤ 64 of
them too), so a float32 backend sees the same weights; they shrink towards 1."""
LABEL_SMOOTHINGS = (0.1, 0.25, 0.5, 0.05, 0.2, 1.0)
"""ε when label smoothing is drawn; shrinks towards 0.1, the most common setting. 0.1, 0.05 and
0.2 are not float32 numbers: frameworks take ε as a Python float, and the bound rounds it (§7.1)."""
HUBER_DELTAS = (1.0, 0.5, 2.0, 0.25, 1.5)
"""Huber δ (exact in float32); shrinks towards 1, PyTorch's default."""
VARIANCE_RANGE = (0.25, 4.0)
"""Gaussian NLL variances are float32 numbers in this range: below 1, ½ log v < 0 and the loss
can be negative (spec §3.9); never near 0, where 1/v would blow up."""
IGNORED = ("any", "some", "all")
"""How many rows of a labelled batch may be ignored: any number but not all, at least one but
not all, or every row (the all-ignored mean of spec §3.4, only when asked)."""
MAX_LENGTH = 8


def _flag(arg: str, value: bool | None) -> st.SearchStrategy[bool]:
    """A feature that is drawn (None: shrinks towards off) or forced (True/False)."""
    if value is not None and not isinstance(value, bool):
        raise InvalidArgument(f"{arg}={value!r} must be True, False or None (drawn)")
    return st.booleans() if value is None else st.just(value)


def _check_ce_flag(arg: str, value: bool | None, names: Sequence[str]) -> None:
    _flag(arg, value)
    if value and "softmax_cross_entropy" not in names:
        raise InvalidArgument(f"{arg}=True applies to softmax_cross_entropy only, which losses="
                              f"{tuple(names)!r} leaves out; add it, or pass {arg}=None")


def losses(
    *,
    names: Sequence[str] = LOSS_NAMES,
    classes: int = 2,
    class_weights: bool | None = None,
    ignore_index: bool | None = None,
    label_smoothing: bool | None = None,
) -> st.SearchStrategy[Loss]:
    """A ``Loss`` named in ``names`` (default: all five), with its options.

    Cross-entropy over ``classes`` classes (2–16) gets class weights drawn from
    ``CLASS_WEIGHTS``, ``ignore_index=IGNORE_INDEX`` and a label smoothing ε from
    ``LABEL_SMOOTHINGS``, each drawn (None, the default) or forced on (True) or off (False);
    Huber gets δ from ``HUBER_DELTAS``. The flags concern cross-entropy draws only. Shrinks
    towards the first name (squared error), then no weights, no ignore_index, no smoothing, δ = 1.
    """
    names = _check_names("names", names, LOSS_NAMES)
    if not isinstance(classes, int) or not 2 <= classes <= MAX_WIDTH:
        raise InvalidArgument(f"classes={classes!r} must be an int in [2, {MAX_WIDTH}] "
                              f"(cross-entropy needs at least two classes)")
    for arg, value in (("class_weights", class_weights), ("ignore_index", ignore_index),
                       ("label_smoothing", label_smoothing)):
        _check_ce_flag(arg, value, names)

    @st.composite
    def build(draw: st.DrawFn) -> Loss:
        name = draw(st.sampled_from(names))
        if name == "huber":
            return Loss(name, delta=draw(st.sampled_from(HUBER_DELTAS)))
        if name != "softmax_cross_entropy":
            return Loss(name)
        w = None
        if draw(_flag("class_weights", class_weights)):
            w = tuple(draw(st.lists(st.sampled_from(CLASS_WEIGHTS), min_size=classes,
                                    max_size=classes)))
        ii = IGNORE_INDEX if draw(_flag("ignore_index", ignore_index)) else None
        eps = (draw(st.sampled_from(LABEL_SMOOTHINGS))
               if draw(_flag("label_smoothing", label_smoothing)) else 0.0)
        return Loss(name, class_weights=w, ignore_index=ii, label_smoothing=eps)

    return build()


_losses = losses  # ``loss_problems`` has an argument of that name


def _draw_targets(draw: st.DrawFn, loss: Loss, lead: tuple[int, ...], d: int,
                  elements: st.SearchStrategy[float], soft: bool,
                  ignored: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(targets, variances or None) of shape ``lead`` (+ (d,)) for ``loss``."""
    if loss.elementwise:
        target_elements = (st.floats(0.0, 1.0, width=32) if loss.name == "bce_with_logits"
                           else elements)
        y = draw(hnp.arrays(np.float64, lead + (d,), elements=target_elements))
        v = None
        if loss.name == "gaussian_nll":
            v = draw(hnp.arrays(np.float64, lead + (d,), elements=st.floats(
                *VARIANCE_RANGE, width=32)))
        return y, v
    labels = draw(hnp.arrays(np.int64, lead, elements=st.integers(0, d - 1)))
    if soft:  # q ∝ e_y + m with m_k ∈ {0..3}: shrinks to the one-hot row e_0
        mass = draw(hnp.arrays(np.int64, lead + (d,), elements=st.integers(0, 3)))
        mass = mass + np.eye(d, dtype=np.int64)[labels]
        return mass / mass.sum(axis=-1, keepdims=True), None
    if loss.ignore_index is None:
        return labels, None
    if ignored == "all":
        return np.full(lead, loss.ignore_index, dtype=np.int64), None
    skip = draw(hnp.arrays(bool, lead, elements=st.booleans()))  # shrinks to none ignored
    skip.flat[0] = False  # at least one label counts
    if ignored == "some":
        skip.flat[-1] = True  # and at least one is ignored
    return np.where(skip, loss.ignore_index, labels), None


def _draw_weights(draw: st.DrawFn, reduction: Reduction, n: int,
                  elements: st.SearchStrategy[float]) -> np.ndarray | None:
    """The c_i of the weighted reductions, as ``batches`` draws them."""
    if reduction.name == "weighted":
        return draw(hnp.arrays(np.float64, (n,), elements=elements))
    if reduction.name == "weighted_mean":
        return draw(hnp.arrays(np.float64, (n,), elements=st.floats(
            1 / 64, 2.0, width=32, allow_subnormal=False)))
    return None


def _check_loss_args(network: Network, loss: Loss, reduction: Reduction) -> None:
    for arg, value, kind in (("network", network, Network), ("loss", loss, Loss),
                             ("reduction", reduction, Reduction)):
        if not isinstance(value, kind):
            raise InvalidArgument(f"{arg}={value!r} must be a {kind.__module__}.{kind.__name__}")
    if loss.name == "softmax_cross_entropy" and network.out_features < 2:
        raise InvalidArgument(f"network={network!r} has {network.out_features} output; "
                              f"cross-entropy needs at least 2 classes")
    if loss.class_weights is not None and len(loss.class_weights) != network.out_features:
        raise InvalidArgument(f"loss={loss!r} has {len(loss.class_weights)} class weights for "
                              f"{network.out_features} classes")


def loss_batches(
    network: Network,
    loss: Loss,
    reduction: Reduction,
    *,
    min_size: int = 1,
    max_size: int = 8,
    max_magnitude: float = 2.0,
    ignored: str = "any",
    soft_targets: bool | None = None,
) -> st.SearchStrategy[Batch]:
    """N examples (one prediction each) for any loss of chapter 3; weights c_i as ``batches``.

    Targets: squared error and Huber in [−max_magnitude, max_magnitude], BCE in [0, 1], Gaussian
    NLL with variances in ``VARIANCE_RANGE``; cross-entropy integer labels in [0, C), or with
    ``soft_targets`` (drawn by default when the loss has no ``ignore_index``) probability rows
    q ∝ e_y + m, m_k ∈ {0..3}. With ``loss.ignore_index`` set, rows are ignored as ``ignored``
    says: "any" (default: none to all but the first), "some" (at least the last, never the
    first; needs N ≥ 2) or "all". Shrinks towards one example, zero inputs, label 0 / target 0,
    no ignored row beyond the forced ones, hard labels, one-hot soft rows.
    """
    _check_loss_args(network, loss, reduction)
    if ignored not in IGNORED:
        raise InvalidArgument(f"ignored={ignored!r}; choose one of {IGNORED}")
    if ignored != "any" and loss.ignore_index is None:
        raise InvalidArgument(f"ignored={ignored!r} needs a loss with ignore_index, got {loss!r}")
    ce = loss.name == "softmax_cross_entropy"
    if soft_targets and (not ce or loss.ignore_index is not None):
        raise InvalidArgument(f"soft_targets=True needs cross-entropy without ignore_index "
                              f"(PyTorch ignores labels only), got {loss!r}")
    _flag("soft_targets", soft_targets)
    if reduction.name == "sequence_mean":
        raise InvalidArgument("reduction=Reduction('sequence_mean') needs sequences: use "
                              "sequence_batches()")
    lo = max(min_size, 2) if ignored == "some" else min_size
    _check_range("size", lo, max_size, 1, MAX_BATCH)
    elements = floats(max_magnitude=max_magnitude)
    may_be_soft = ce and loss.ignore_index is None

    @st.composite
    def build(draw: st.DrawFn) -> Batch:
        n = draw(st.integers(lo, max_size))
        x = draw(hnp.arrays(np.float64, (n, network.in_features), elements=elements))
        soft = may_be_soft and draw(_flag("soft_targets", soft_targets))
        y, v = _draw_targets(draw, loss, (n,), network.out_features, elements, soft, ignored)
        return Batch(x, y, _draw_weights(draw, reduction, n, elements), variances=v)

    return build()


def sequence_batches(
    network: Network,
    loss: Loss,
    reduction: Reduction,
    *,
    min_size: int = 1,
    max_size: int = 4,
    min_length: int = 1,
    max_length: int = 4,
    max_magnitude: float = 2.0,
    equal_lengths: bool = False,
    empty_sequences: bool | None = None,
) -> st.SearchStrategy[Batch]:
    """N sequences of T tokens, inputs (N, T, d), with a mask (N, T) of valid tokens (§3.7).

    Targets per token as ``loss_batches`` draws them per example (labels (N, T), floats and
    variances (N, T, D); no soft targets or ignore_index: masks mark what does not count). The
    mask is drawn token by token (shrinking towards valid), then: the first token of the batch
    is valid (a batch has at least one valid token); with ``sequence_mean``, or
    ``empty_sequences=False``, every sequence has a valid token; ``empty_sequences=True`` makes
    the last sequence entirely masked (N ≥ 2); ``equal_lengths`` gives every sequence the same
    number of valid tokens, a prefix of each. Defaults: N in 1–4, T in 1–4. Shrinks towards one
    sequence of one valid token, zeros, label 0.
    """
    _check_loss_args(network, loss, reduction)
    if loss.ignore_index is not None:
        raise InvalidArgument(f"loss={loss!r}: sequence batches mark ignored tokens with the "
                              f"mask, not ignore_index; pass a loss without it")
    _flag("empty_sequences", empty_sequences)
    if empty_sequences and (reduction.name == "sequence_mean" or equal_lengths):
        raise InvalidArgument(f"empty_sequences=True contradicts reduction={reduction!r} / "
                              f"equal_lengths={equal_lengths!r}: those need a valid token in "
                              f"every sequence")
    lo = max(min_size, 2) if empty_sequences else min_size
    _check_range("size", lo, max_size, 1, MAX_BATCH)
    _check_range("length", min_length, max_length, 1, MAX_LENGTH)
    elements = floats(max_magnitude=max_magnitude)
    every_row = reduction.name == "sequence_mean" or empty_sequences is False

    @st.composite
    def build(draw: st.DrawFn) -> Batch:
        n = draw(st.integers(lo, max_size))
        t = draw(st.integers(min_length, max_length))
        x = draw(hnp.arrays(np.float64, (n, t, network.in_features), elements=elements))
        if equal_lengths:
            valid = draw(st.integers(1, t).map(lambda k: t + 1 - k))  # shrinks towards all
            mask = np.zeros((n, t), dtype=bool)
            mask[:, :valid] = True
        else:
            mask = ~draw(hnp.arrays(bool, (n, t), elements=st.booleans()))
            mask[0, 0] = True
            if every_row:
                mask[~mask.any(axis=1), 0] = True
            if empty_sequences:
                mask[-1] = False
        y, v = _draw_targets(draw, loss, (n, t), network.out_features, elements, False, "any")
        return Batch(x, y, _draw_weights(draw, reduction, n, elements), mask=mask, variances=v)

    return build()


def loss_problems(
    *,
    nets: st.SearchStrategy[Network] | None = None,
    losses: Sequence[str] = LOSS_NAMES,
    reductions: Sequence[str] | None = None,
    sequences: bool | None = False,
    class_weights: bool | None = None,
    ignore_index: bool | None = None,
    label_smoothing: bool | None = None,
    soft_targets: bool | None = None,
    ignored: str = "any",
    empty_sequences: bool | None = None,
    equal_lengths: bool = False,
    min_batch: int = 1,
    max_batch: int = 8,
    max_length: int = 4,
    max_magnitude: float = 2.0,
) -> st.SearchStrategy[Problem]:
    """Whole problems for chapter 3: network from ``nets`` (default ``networks()``), a loss of
    ``losses`` with options as ``losses()`` draws them, a reduction, θ, and a batch.

    ``sequences``: False (default) draws ``loss_batches``, True ``sequence_batches`` (N ≤
    min(max_batch, 4), T ≤ ``max_length``), None either. ``reductions`` defaults to the four of
    chapter 2, plus ``sequence_mean`` where sequences are drawn. ``ignored``, ``soft_targets``,
    ``empty_sequences`` and ``equal_lengths`` are passed on. Cross-entropy networks get at least
    2 outputs. Shrinks towards the smallest network, the first loss, ``mean``, one example,
    zeros, no options.
    """
    loss_names = _check_names("losses", losses, LOSS_NAMES)
    _flag("sequences", sequences)
    if reductions is None:
        red = CORE_REDUCTIONS + (("sequence_mean",) if sequences is not False else ())
    else:
        red = _check_names("reductions", reductions, REDUCTION_NAMES)
    if sequences is False and "sequence_mean" in red:
        raise InvalidArgument(f"reductions={red!r} contains 'sequence_mean', which needs "
                              f"sequences; pass sequences=True or None")
    if sequences is None and red == ("sequence_mean",):
        sequences = True
    for arg, value in (("class_weights", class_weights), ("ignore_index", ignore_index),
                       ("label_smoothing", label_smoothing), ("soft_targets", soft_targets)):
        _check_ce_flag(arg, value, loss_names)
    if ignored not in IGNORED:
        raise InvalidArgument(f"ignored={ignored!r}; choose one of {IGNORED}")
    if ignored != "any":
        if ignore_index is False or loss_names != ("softmax_cross_entropy",):
            raise InvalidArgument(f"ignored={ignored!r} needs losses=('softmax_cross_entropy',) "
                                  f"with ignore_index; got losses={loss_names!r}, "
                                  f"ignore_index={ignore_index!r}")
        ignore_index = True
    if sequences and (ignore_index or soft_targets):
        raise InvalidArgument("sequences=True: sequence batches have neither ignore_index nor "
                              "soft targets (the mask marks what counts); drop those options")
    if soft_targets and ignore_index:
        raise InvalidArgument("soft_targets=True with ignore_index=True: PyTorch ignores integer "
                              "labels only; pass one of them")
    if ignore_index and sequences is None:
        sequences = False
    if sequences is None and soft_targets:
        sequences = False
    _flag("empty_sequences", empty_sequences)
    if empty_sequences and (equal_lengths or red == ("sequence_mean",)):
        raise InvalidArgument(f"empty_sequences=True contradicts equal_lengths={equal_lengths!r}"
                              f" / reductions={red!r}: those need a valid token in every "
                              f"sequence")
    _check_range("batch", max(min_batch, 2) if ignored == "some" or empty_sequences
                 else min_batch, max_batch, 1, MAX_BATCH)
    _check_range("length", 1, max_length, 1, MAX_LENGTH)
    floats(max_magnitude=max_magnitude)  # validate now, not at the first draw
    nets = nets if nets is not None else networks()
    seq_max = min(max_batch, 4)

    @st.composite
    def build(draw: st.DrawFn) -> Problem:
        name = draw(st.sampled_from(loss_names))
        net = draw(nets)
        if name == "softmax_cross_entropy" and net.out_features < 2:
            *head, last = net.layers
            assert isinstance(last, Dense)
            net = Network((*head, Dense(last.in_features, 2, last.bias)))
        seq = draw(_flag("sequences", sequences))
        if seq:
            usable = tuple(r for r in red if not (empty_sequences and r == "sequence_mean"))
        else:
            usable = tuple(r for r in red if r != "sequence_mean")
        reduction = Reduction(draw(st.sampled_from(usable)))
        soft = False
        if name == "softmax_cross_entropy" and not seq and not ignore_index:
            soft = draw(_flag("soft_targets", soft_targets))
        ce = name == "softmax_cross_entropy"
        loss = draw(_losses(
            names=(name,), classes=max(net.out_features, 2),
            class_weights=class_weights if ce else None,
            ignore_index=(False if (seq or soft) else ignore_index) if ce else None,
            label_smoothing=label_smoothing if ce else None))
        params = draw(parameters(net, max_magnitude=max_magnitude))
        if seq:
            batch = draw(sequence_batches(
                net, loss, reduction, min_size=min(min_batch, seq_max), max_size=seq_max,
                max_length=max_length, max_magnitude=max_magnitude,
                equal_lengths=equal_lengths, empty_sequences=empty_sequences))
        else:
            batch = draw(loss_batches(
                net, loss, reduction, min_size=min_batch, max_size=max_batch,
                max_magnitude=max_magnitude, ignored=ignored if loss.ignore_index is not None
                else "any", soft_targets=soft))
        return Problem(net, loss, reduction, params, batch)

    return build()
