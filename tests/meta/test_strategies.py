"""The strategies themselves (spec §1.6; the kink's exact zero, §1.5): what they reject, what
they reach, what they shrink to, and that everything they draw has bounded magnitude.

A property suite is only as good as its generators: a strategy that silently never draws a batch
of one, or a relu exactly at its kink, makes every property that relies on it vacuous there.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis.errors import InvalidArgument, NonInteractiveExampleWarning

from batchgrad_spec.strategies import (
    MAX_BATCH,
    MAX_DEPTH,
    MAX_WIDTH,
    batches,
    floats,
    networks,
    parameters,
    problems,
    reductions,
)
from reference.activations import CORE_ACTIVATIONS, Activation
from reference.batch import Batch
from reference.grads import batch_grad, forward, per_example_grads
from reference.layers import Dense, Network
from reference.losses import CORE_LOSSES, CORE_REDUCTIONS, Loss, Reduction
from reference.ops import ACTIVATIONS
from reference.problem import Problem

pytestmark = pytest.mark.meta

REACH = settings(max_examples=2000, database=None, deadline=None, phases=[Phase.generate])
"""``find`` without shrinking: does the strategy reach the predicate within 2000 draws?"""
SHRINK = settings(max_examples=2000, database=None, deadline=None)
"""``find`` with shrinking: what is the minimal example satisfying the predicate?"""


def _reaches(strategy, predicate):
    """The first drawn example satisfying ``predicate``; NoSuchExample (a failure) if none."""
    return find(strategy, predicate, settings=REACH)


# -- validation -----------------------------------------------------------------------------------
NET = Network((Dense(1, 1),))

BAD_ARGUMENTS = {
    "min_depth > max_depth": (lambda: networks(min_depth=3, max_depth=2), "min_depth=3"),
    "max_depth above the cap": (lambda: networks(max_depth=MAX_DEPTH + 1), f"{MAX_DEPTH + 1}"),
    "max_width above the cap": (lambda: networks(max_width=MAX_WIDTH + 1), f"{MAX_WIDTH + 1}"),
    "min_width 0": (lambda: networks(min_width=0), "min_width=0"),
    "unknown activation": (lambda: networks(activations=("relu", "swish")), "swish"),
    "activations as a bare string": (lambda: networks(activations="relu"), "'relu'"),
    "in_features 0": (lambda: networks(in_features=0), "in_features=0"),
    "empty losses": (lambda: problems(losses=()), "losses=()"),
    "unknown loss": (lambda: problems(losses=("hinge",)), "hinge"),
    "unknown reduction": (lambda: reductions(names=("median",)), "median"),
    "reductions as a bare string": (lambda: problems(reductions="mean"), "'mean'"),
    "max_magnitude 0 (problems)": (lambda: problems(max_magnitude=0.0), "0.0"),
    "max_magnitude < 0 (floats)": (lambda: floats(max_magnitude=-1.5), "-1.5"),
    "max_magnitude < 0 (parameters)": (lambda: parameters(NET, max_magnitude=-2.0), "-2.0"),
    "min_batch > max_batch": (lambda: problems(min_batch=5, max_batch=2), "min_batch=5"),
    "max_batch above the cap": (lambda: problems(max_batch=65), "65"),
    "min_size > max_size": (
        lambda: batches(NET, Loss("squared_error"), Reduction("mean"), min_size=4, max_size=3),
        "min_size=4"),
    "parameters() of a non-Network": (lambda: parameters(Dense(1, 1)), "Dense(1, 1)"),
}


@pytest.mark.clause("1.6")
@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_bad_arguments_raise_invalid_argument_repeating_the_value(case):
    """Raised when the strategy is built, or at the latest when it is first drawn from."""
    make, shown = BAD_ARGUMENTS[case]
    with pytest.raises(InvalidArgument) as info:
        strategy = make()
        strategy.validate()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonInteractiveExampleWarning)
            strategy.example()
    assert shown in str(info.value), f"the message does not repeat {shown!r}: {info.value}"


# -- reach ----------------------------------------------------------------------------------------
def _activations(net: Network) -> set[str]:
    return {layer.name for layer in net.layers if isinstance(layer, Activation)}


def _widths(net: Network) -> list[int]:
    dense = [d for _, d in net.dense_layers()]
    return [dense[0].in_features] + [d.out_features for d in dense]


NETWORK_FEATURES = {
    "depth 1": lambda n: len(n.dense_layers()) == 1,
    f"depth {MAX_DEPTH}": lambda n: len(n.dense_layers()) == MAX_DEPTH,
    "width 1 inside a deep network": lambda n: len(n.dense_layers()) >= 3 and 1 in _widths(n)[1:-1],
    "width 8 (the default maximum)": lambda n: 8 in _widths(n),
    "a Dense layer without bias": lambda n: any(not d.bias for _, d in n.dense_layers()),
    **{f"activation {a}": (lambda n, a=a: a in _activations(n)) for a in CORE_ACTIVATIONS},
}


@pytest.mark.clause("1.6")
@pytest.mark.parametrize("feature", list(NETWORK_FEATURES))
def test_networks_reach(feature):
    _reaches(networks(), NETWORK_FEATURES[feature])


PROBLEM_FEATURES = {
    "batch of one": lambda p: p.batch.size == 1,
    "batch of 8 (the default maximum)": lambda p: p.batch.size == 8,
    **{f"loss {name}": (lambda p, name=name: p.loss.name == name) for name in CORE_LOSSES},
    **{f"reduction {name}": (lambda p, name=name: p.reduction.name == name)
       for name in CORE_REDUCTIONS},
    "negative weights (weighted)": lambda p: p.batch.weights is not None and bool(
        np.any(p.batch.weights < 0)),
    "cross-entropy with two different labels": lambda p: p.loss.name == "softmax_cross_entropy"
    and len(set(p.batch.targets.tolist())) >= 2,
}


@pytest.mark.clause("1.6")
@pytest.mark.parametrize("feature", list(PROBLEM_FEATURES))
def test_problems_reach(feature):
    _reaches(problems(), PROBLEM_FEATURES[feature])


def relu_preactivations(problem: Problem) -> list[np.ndarray]:
    """The pre-activation z (N, width) at every relu: the relu layer's input."""
    trace = forward(problem)
    return [trace.inputs[k] for k, layer in enumerate(problem.network.layers)
            if isinstance(layer, Activation) and layer.name == "relu"]


@pytest.mark.clause("1.5")
def test_problems_reach_an_exact_zero_preactivation_of_a_relu():
    """relu'(0) = 0 is only tested if some relu sees exactly 0: the default strategy gets there.

    (Hypothesis favours 0, so these zeros come from zero inputs or weights. A zero made by
    cancellation of non-zero products, w·a + b = 0 with w·a ≠ 0, is not reached in 2000 draws;
    the near-kink case that matters for float32 is constructed in test_ch7_numerics, §7.3.)
    """
    p = _reaches(problems(), lambda p: any(np.any(z == 0) for z in relu_preactivations(p)))
    assert any(np.any(z == 0) for z in relu_preactivations(p))


# -- shrinking ------------------------------------------------------------------------------------
@pytest.mark.clause("1.6")
def test_problems_shrink_to_the_smallest_problem():
    """One Dense(1, 1) with bias, squared error, mean, one example, all zeros."""
    p = find(problems(), lambda p: True, settings=SHRINK)
    assert p.network == Network((Dense(1, 1, bias=True),))
    assert (p.loss, p.reduction) == (Loss("squared_error"), Reduction("mean"))
    assert p.batch.size == 1 and p.batch.weights is None
    assert all(np.array_equal(v, np.zeros_like(v)) for v in p.params.values())
    assert np.array_equal(p.batch.inputs, [[0.0]]) and np.array_equal(p.batch.targets, [[0.0]])


@pytest.mark.clause("1.6")
def test_a_batch_size_condition_shrinks_to_exactly_that_size():
    p = find(problems(), lambda p: p.batch.size >= 3, settings=SHRINK)
    assert p.batch.size == 3
    assert p.network == Network((Dense(1, 1),)) and p.loss == Loss("squared_error")


@pytest.mark.clause("1.6")
def test_a_two_layer_condition_shrinks_to_two_width_one_layers_and_identity():
    n = find(networks(), lambda n: len(n.dense_layers()) >= 2, settings=SHRINK)
    assert n == Network((Dense(1, 1), Activation("identity"), Dense(1, 1)))


# -- bounded magnitudes ---------------------------------------------------------------------------
MAX_MAGNITUDE = 2.0  # the strategies' default for θ, inputs, targets and weights
VALUE_GROWTH = 1.0  # |σ(z)| ≤ |z| + 1 for every activation (softplus ≤ |z| + log 2; tanh ≤ 1)
SLOPE_MAX = {"identity": 1.0, "relu": 1.0, "tanh": 1.0, "sigmoid": 0.25, "softplus": 1.0,
             "gelu": 1.13, "gelu_tanh": 1.13, "leaky_relu": 1.0, "elu": 1.0}
"""sup |σ'|: gelu' peaks at z = √2 with Φ(√2) + √2 φ(√2) ≈ 1.129 (checked below on a grid)."""


def magnitude_bounds(problem: Problem, m: float = MAX_MAGNITUDE) -> dict:
    """Worst-case magnitudes from the sizes alone, every |θ|, |x|, |y|, |c| ≤ m.

    Forward: a Dense(n_in, ·) maps |a| ≤ A to |z| ≤ n_in·m·A + m, an activation adds ≤ 1.
    Loss: squared error ≤ (F + m)², cross-entropy ≤ 2F + log C for outputs |f| ≤ F.
    Backward: the output cotangent is ≤ 2(F + m) (squared error) or ≤ 1 (softmax − one-hot);
    a Dense(·, n_out) multiplies it by n_out·m, an activation by sup|σ'|; a weight gradient is
    ≤ cotangent × input bound. The batch quantities carry Σ|κ_i| on top.
    """
    net = problem.network
    a, inputs, outputs = m, [], []
    for layer in net.layers:
        inputs.append(a)
        if isinstance(layer, Dense):
            a = layer.in_features * m * a + m
        else:
            a = a + VALUE_GROWTH
        outputs.append(a)
    f = a
    if problem.loss.name == "squared_error":
        loss, g = (f + m) ** 2, 2 * (f + m)
    else:
        loss, g = 2 * f + math.log(net.out_features), 1.0
    grads = {}
    for k in range(len(net.layers) - 1, -1, -1):
        layer = net.layers[k]
        if isinstance(layer, Dense):
            grads[f"{k}.weight"] = g * inputs[k]
            grads[f"{k}.bias"] = g
            g = layer.out_features * m * g
        else:
            g = SLOPE_MAX[layer.name] * g
    return {"outputs": outputs, "loss": loss, "grads": grads}


def _worst_case(activation: str) -> Problem:
    """Widths 16, depth 4, every θ and x equal to 2, eight examples."""
    layers: list = []
    for i in range(MAX_DEPTH):
        layers.append(Dense(MAX_WIDTH, MAX_WIDTH))
        if i < MAX_DEPTH - 1:
            layers.append(Activation(activation))
    net = Network(tuple(layers))
    n = 8
    return Problem(net, Loss("squared_error"), Reduction("mean"),
                   {k: np.full(s, 2.0) for k, s in net.param_shapes().items()},
                   Batch(np.full((n, MAX_WIDTH), 2.0), np.zeros((n, MAX_WIDTH))))


@pytest.mark.clause("1.6")
def test_the_worst_case_magnitudes_stay_far_from_float32_overflow():
    """At the caps (widths 16, depth 4, |θ|, |x| ≤ 2): |f| ≤ 2.2·10⁶ < 10⁷, losses and gradients
    ≤ 10¹³, so squares, sums and float32 (max 3.4·10³⁸) are nowhere near overflow. The forward
    bound is attained: all θ = x = 2 with identity activations give 2 164 802 exactly."""
    b = magnitude_bounds(_worst_case("softplus"))
    assert b["outputs"][-1] < 2.2e6
    assert b["loss"] < 1e13 and max(b["grads"].values()) < 1e13
    assert 2 * MAX_BATCH * b["loss"] < float(np.finfo(np.float32).max)
    attained = forward(_worst_case("identity")).output
    assert np.max(np.abs(attained)) == 2_164_802.0 <= magnitude_bounds(_worst_case("identity"))[
        "outputs"][-1]


@pytest.mark.clause("1.6")
def test_slope_bounds_used_for_magnitudes_hold():
    z = np.linspace(-20, 20, 400_001)
    for name, (f, df) in ACTIVATIONS.items():
        a = f(z)
        assert np.max(np.abs(df(z, a))) <= SLOPE_MAX[name], name
        assert np.all(np.abs(a) <= np.abs(z) + VALUE_GROWTH), name


@pytest.mark.clause("1.6")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems())
def test_drawn_values_are_finite_and_bounded(problem):
    """Every forward value, loss and gradient the reference computes is finite and within the
    size-derived bound of ``magnitude_bounds``: widths ≤ 16 (8 by default), depth ≤ 4 and
    |θ|, |x|, |y|, |c| ≤ 2 keep every pre-activation below 2.2·10⁶ < 10⁷ and every loss and
    gradient below 10¹³ (see the test above), far from float32 overflow. (Typical draws are much
    smaller: over 2000 draws the largest loss seen was 1.6·10⁵.)"""
    b = magnitude_bounds(problem)
    trace = forward(problem)
    for out, bound in zip(trace.outputs, b["outputs"], strict=True):
        assert np.all(np.isfinite(out)) and np.max(np.abs(out)) <= bound < 1e7
    losses, grads = per_example_grads(problem)
    loss, batch = batch_grad(problem)
    kappa = float(np.sum(np.abs(problem.coefficients)))
    assert np.all(np.isfinite(losses)) and np.max(np.abs(losses)) <= b["loss"]
    assert math.isfinite(loss) and abs(loss) <= kappa * b["loss"] * (1 + 1e-12)
    for name, g in grads.items():
        assert np.all(np.isfinite(g)) and np.max(np.abs(g)) <= b["grads"][name], name
        assert np.all(np.isfinite(batch[name]))
        assert np.max(np.abs(batch[name])) <= kappa * b["grads"][name] * (1 + 1e-12), name


# -- chapter 4: layers (spec §4.1–§4.7; batchgrad_spec/strategies.py, section "chapter 4: layers") -
from batchgrad_spec.strategies import (  # noqa: E402
    LAYER_KINDS,
    MAX_DROPOUT_P,
    MIN_RUNNING_VAR,
    layer_networks,
    layer_problems,
)
from reference.activations import CORE_ACTIVATIONS as _CORE_ACTS  # noqa: E402
from reference.layers import Dropout  # noqa: E402
from reference.norms import BatchNorm, LayerNorm  # noqa: E402
from reference.types import Undefined  # noqa: E402


def _kinds(net: Network) -> set[str]:
    out = set()
    for layer in net.layers:
        if isinstance(layer, LayerNorm):
            out.add("layer_norm")
        elif isinstance(layer, BatchNorm):
            out.add("batch_norm" if layer.training else "batch_norm_eval")
        elif isinstance(layer, Dropout):
            out.add("dropout")
    return out


LAYER_BAD_ARGUMENTS = {
    "unknown layer kind": (lambda: layer_networks(layers=("group_norm",)), "group_norm"),
    "layers as a bare string": (lambda: layer_networks(layers="dropout"), "'dropout'"),
    "min_layers > max_layers": (lambda: layer_networks(min_layers=3, max_layers=1),
                                "min_layers=3"),
    "unknown required kind": (lambda: layer_networks(require=("batchnorm",)), "batchnorm"),
    "more required kinds than max_layers": (
        lambda: layer_networks(require=("dropout", "layer_norm"), max_layers=1), "max_layers=1"),
    "min_layers below the required kinds": (
        lambda: layer_networks(require=("dropout", "layer_norm"), min_layers=1), "min_layers=1"),
    "unknown activation (layer_networks)": (lambda: layer_networks(activations=("swish",)),
                                            "swish"),
    "train-mode BatchNorm with min_batch 1": (
        lambda: layer_problems(require=("batch_norm",), min_batch=1), "min_batch=1"),
}


@pytest.mark.clause("1.6")
@pytest.mark.parametrize("case", list(LAYER_BAD_ARGUMENTS))
def test_layer_strategies_reject_bad_arguments_repeating_the_value(case):
    make, shown = LAYER_BAD_ARGUMENTS[case]
    with pytest.raises(InvalidArgument) as info:
        strategy = make()
        strategy.validate()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonInteractiveExampleWarning)
            strategy.example()
    assert shown in str(info.value), f"the message does not repeat {shown!r}: {info.value}"


def _leaky_zero(p: Problem) -> bool:
    trace = forward(p)
    return any(np.any(trace.inputs[k] == 0) for k, la in enumerate(p.network.layers)
               if isinstance(la, Activation) and la.name == "leaky_relu")


LAYER_FEATURES = {
    **{f"layer {kind}": (lambda p, kind=kind: kind in _kinds(p.network)) for kind in LAYER_KINDS},
    **{f"activation {a}": (lambda p, a=a: a in _activations(p.network))
       for a in ("leaky_relu", "elu")},
    "a coupling layer before the first Dense": lambda p: not isinstance(p.network.layers[0],
                                                                        (Dense, Activation)),
    "a coupling layer after the last Dense": lambda p: not isinstance(p.network.layers[-1],
                                                                      (Dense, Activation)),
    "three coupling layers": lambda p: len(_kinds(p.network)) >= 1 and sum(
        not isinstance(la, (Dense, Activation)) for la in p.network.layers) == 3,
    "a LayerNorm of width 1 (x̂ = 0)": lambda p: any(
        isinstance(la, LayerNorm) and la.features == 1 for la in p.network.layers),
    "a dropout mask with a kept and a dropped unit": lambda p: p.batch.dropout is not None and any(
        np.any(m == 0) and np.any(m == 1) for m in p.batch.dropout.values()),
    "dropout p = 0": lambda p: any(isinstance(la, Dropout) and la.p == 0
                                   for la in p.network.layers),
    f"dropout p = {MAX_DROPOUT_P}": lambda p: any(isinstance(la, Dropout) and la.p == MAX_DROPOUT_P
                                                  for la in p.network.layers),
    f"running variance {MIN_RUNNING_VAR}": lambda p: any(
        isinstance(la, BatchNorm) and not la.training and MIN_RUNNING_VAR in (la.running_var or ())
        for la in p.network.layers),
    "cross-entropy with a norm after the last Dense": lambda p: p.loss.name ==
    "softmax_cross_entropy" and isinstance(p.network.layers[-1], (LayerNorm, BatchNorm)),
    "an exact-zero pre-activation of a leaky_relu (the kink, §4.6)": _leaky_zero,
}


@pytest.mark.clause("1.6")
@pytest.mark.parametrize("feature", list(LAYER_FEATURES))
def test_layer_problems_reach(feature):
    _reaches(layer_problems(), LAYER_FEATURES[feature])


@pytest.mark.clause("1.6")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=layer_problems())
def test_layer_problems_are_valid_bounded_and_train_mode_batchnorm_has_two_examples(problem):
    """Every drawn problem runs in the reference in float64 and float32 without overflow, has
    N ≥ 2 when it has a train-mode BatchNorm (§4.2), the documented ranges of p and running
    variances, and per-example gradients exactly when no train-mode BatchNorm couples it."""
    net = problem.network
    if net.couples_examples:
        assert problem.batch.size >= 2
    for la in net.layers:
        if isinstance(la, Dropout):
            assert 0.0 <= la.p <= MAX_DROPOUT_P
        if isinstance(la, BatchNorm) and not la.training:
            assert all(MIN_RUNNING_VAR <= v <= 4.0 for v in la.running_var or ())
    assert np.all(np.abs(forward(problem).output) < 1e7)
    for dtype in (np.float64, np.float32):
        loss, grads = batch_grad(problem.rounded(np.dtype(dtype).name), dtype)
        assert math.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads.values())
    try:
        losses, grads = per_example_grads(problem)
        assert not net.couples_examples
        assert np.all(np.isfinite(losses)) and all(np.all(np.isfinite(g)) for g in grads.values())
    except Undefined:
        assert net.couples_examples


@pytest.mark.clause("1.6")
def test_layer_networks_shrink_to_a_width_one_layernorm_before_one_dense_layer():
    assert find(layer_networks(), lambda n: True, settings=SHRINK) == Network(
        (LayerNorm(1), Dense(1, 1)))
    p = find(layer_problems(require=("batch_norm",)), lambda p: True, settings=SHRINK)
    assert p.network == Network((BatchNorm(1), Dense(1, 1))) and p.batch.size == 2


@pytest.mark.clause("1.6")
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems())
def test_default_strategies_draw_no_chapter_4_layer_or_activation(problem):
    """Chapter 4 is opt-in: ``problems()`` and ``networks()`` draw what they drew before it."""
    assert all(isinstance(la, (Dense, Activation)) for la in problem.network.layers)
    assert _activations(problem.network) <= set(_CORE_ACTS)
    assert problem.batch.dropout is None
    assert set(problem.params) == set(problem.network.param_shapes())


# -- chapter 3: losses (spec §3.1–§3.9; batchgrad_spec/strategies.py, section "chapter 3: losses") -
from batchgrad_spec.strategies import (  # noqa: E402
    CLASS_WEIGHTS,
    HUBER_DELTAS,
    IGNORE_INDEX,
    LABEL_SMOOTHINGS,
    VARIANCE_RANGE,
    loss_batches,
    loss_problems,
    losses,
    sequence_batches,
)
from reference.grads import per_example_losses  # noqa: E402
from reference.losses import LOSS_NAMES as _LOSS_NAMES  # noqa: E402

_CE = "softmax_cross_entropy"
_SEQ_NET = Network((Dense(1, 2),))

LOSS_BAD_ARGUMENTS = {
    "unknown loss name": (lambda: losses(names=("hinge",)), "hinge"),
    "classes 1": (lambda: losses(classes=1), "classes=1"),
    "class_weights not a bool": (lambda: losses(class_weights=1), "class_weights=1"),
    "class_weights without cross-entropy": (
        lambda: losses(names=("huber",), class_weights=True), "class_weights=True"),
    "ignored='some' without ignore_index": (
        lambda: loss_batches(_SEQ_NET, Loss(_CE), Reduction("mean"), ignored="some"), "'some'"),
    "unknown ignored": (
        lambda: loss_batches(_SEQ_NET, Loss(_CE, ignore_index=-100), Reduction("mean"),
                             ignored="most"), "'most'"),
    "soft targets with ignore_index": (
        lambda: loss_batches(_SEQ_NET, Loss(_CE, ignore_index=-100), Reduction("mean"),
                             soft_targets=True), "soft_targets=True"),
    "sequence_mean without sequences": (
        lambda: loss_batches(_SEQ_NET, Loss(_CE), Reduction("sequence_mean")), "sequence_mean"),
    "cross-entropy on one output": (
        lambda: loss_batches(NET, Loss(_CE), Reduction("mean")), "Dense(1, 1)"),
    "sequences with ignore_index": (
        lambda: sequence_batches(_SEQ_NET, Loss(_CE, ignore_index=-100), Reduction("mean")),
        "ignore_index=-100"),
    "empty sequences under sequence_mean": (
        lambda: sequence_batches(_SEQ_NET, Loss(_CE), Reduction("sequence_mean"),
                                 empty_sequences=True), "empty_sequences=True"),
    "max_length above the cap": (
        lambda: sequence_batches(_SEQ_NET, Loss(_CE), Reduction("mean"), max_length=99), "99"),
    "loss_problems: sequence_mean without sequences": (
        lambda: loss_problems(reductions=("sequence_mean",)), "sequence_mean"),
    "loss_problems: ignored='all' for several losses": (
        lambda: loss_problems(ignored="all"), "ignored='all'"),
    "loss_problems: sequences with soft targets": (
        lambda: loss_problems(losses=(_CE,), sequences=True, soft_targets=True),
        "sequences=True"),
    "loss_problems: soft targets with ignore_index": (
        lambda: loss_problems(losses=(_CE,), soft_targets=True, ignore_index=True),
        "soft_targets=True"),
    "loss_problems: ignored='some' with max_batch 1": (
        lambda: loss_problems(losses=(_CE,), ignored="some", max_batch=1), "max_batch=1"),
}


@pytest.mark.clause("3.1")
@pytest.mark.parametrize("case", list(LOSS_BAD_ARGUMENTS))
def test_loss_strategies_reject_bad_arguments_repeating_the_value(case):
    make, shown = LOSS_BAD_ARGUMENTS[case]
    with pytest.raises(InvalidArgument) as info:
        strategy = make()
        strategy.validate()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonInteractiveExampleWarning)
            strategy.example()
    assert shown in str(info.value), f"the message does not repeat {shown!r}: {info.value}"


def _ignored(p: Problem) -> np.ndarray:
    y = p.batch.targets
    if p.loss.ignore_index is None or y.dtype.kind == "f":
        return np.zeros(y.shape[:1], bool)
    return y == p.loss.ignore_index


_ONLY = {name: loss_problems(losses=(name,)) for name in _LOSS_NAMES}
"""The reach of each loss's options is checked where that loss is drawn."""

LOSS_FEATURES = {
    **{f"loss {name}": (loss_problems(), lambda p, name=name: p.loss.name == name)
       for name in _LOSS_NAMES},
    "class weights other than 1": (_ONLY[_CE], lambda p: p.loss.class_weights is not None
                                   and any(w != 1 for w in p.loss.class_weights)),
    "an ignored row among kept ones": (_ONLY[_CE], lambda p: bool(_ignored(p).any())),
    "label smoothing 0.1": (_ONLY[_CE], lambda p: p.loss.label_smoothing == 0.1),
    "label smoothing 1 (uniform targets)": (_ONLY[_CE], lambda p: p.loss.label_smoothing == 1.0),
    "soft targets that are not one-hot": (_ONLY[_CE], lambda p: p.batch.targets.dtype.kind == "f"
                                          and bool(np.any((p.batch.targets > 0)
                                                          & (p.batch.targets < 1)))),
    "class weights with smoothing and an ignored row": (
        _ONLY[_CE], lambda p: p.loss.class_weights is not None and p.loss.label_smoothing > 0
        and bool(_ignored(p).any())),
    "a class-weighted mean with Σ ω ≠ N": (
        _ONLY[_CE], lambda p: p.reduction.name == "mean" and p.loss.class_weights is not None
        and p.counts.sum() != p.batch.size),
    "huber delta other than 1": (_ONLY["huber"], lambda p: p.loss.delta != 1.0),
    "bce targets strictly between 0 and 1": (
        _ONLY["bce_with_logits"], lambda p: bool(np.any((p.batch.targets > 0)
                                                        & (p.batch.targets < 1)))),
    "a negative gaussian nll": (_ONLY["gaussian_nll"],
                                lambda p: bool(np.any(per_example_losses(p) < 0))),
}


@pytest.mark.clause("3.1")
@pytest.mark.parametrize("feature", list(LOSS_FEATURES))
def test_loss_problems_reach(feature):
    strategy, predicate = LOSS_FEATURES[feature]
    _reaches(strategy, predicate)


SEQUENCE_FEATURES = {
    "a sequence without valid tokens": lambda p: bool(np.any(p.batch.token_mask.sum(1) == 0)),
    "unequal numbers of valid tokens": lambda p: len(set(p.batch.token_mask.sum(1))) > 1,
    "a masked token inside a sequence": lambda p: bool(np.any(
        ~p.batch.token_mask[:, :-1] & p.batch.token_mask[:, 1:])),
    "sequence_mean": lambda p: p.reduction.name == "sequence_mean",
    "four sequences of four tokens": lambda p: p.batch.inputs.shape[:2] == (4, 4),
    "cross-entropy over tokens with class weights": lambda p: p.loss.name == _CE
    and p.loss.class_weights is not None,
}


@pytest.mark.clause("3.7")
@pytest.mark.parametrize("feature", list(SEQUENCE_FEATURES))
def test_sequence_problems_reach(feature):
    _reaches(loss_problems(sequences=True), SEQUENCE_FEATURES[feature])


@pytest.mark.clause("3.7")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=loss_problems(sequences=True))
def test_sequence_batches_keep_a_valid_token_where_the_reduction_needs_one(problem):
    """Every batch has a valid token; under sequence_mean every sequence has one."""
    m = problem.batch.token_mask
    assert m.any()
    if problem.reduction.name == "sequence_mean":
        assert m.any(axis=1).all()


@pytest.mark.clause("3.7")
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=loss_problems(sequences=True, equal_lengths=True))
def test_equal_lengths_give_every_sequence_as_many_valid_tokens(problem):
    counts = problem.batch.token_mask.sum(axis=1)
    assert counts.min() == counts.max() >= 1


@pytest.mark.clause("3.4")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=loss_problems(losses=(_CE,), ignore_index=True, min_batch=2))
def test_every_label_is_ignored_only_when_asked(problem):
    ignored = _ignored(problem)
    assert problem.loss.ignore_index == IGNORE_INDEX
    assert not ignored.all() and problem.counts.sum() > 0


@pytest.mark.clause("3.4")
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(all_=loss_problems(losses=(_CE,), ignored="all"),
       some=loss_problems(losses=(_CE,), ignored="some"))
def test_ignored_all_and_some_do_what_they_say(all_, some):
    assert _ignored(all_).all() and all_.counts.sum() == 0
    assert _ignored(some).any() and not _ignored(some).all()


@pytest.mark.clause("3.9")
def test_gaussian_nll_problems_reach_a_negative_loss_and_shrink_to_it_at_zero_residual():
    p = find(loss_problems(losses=("gaussian_nll",)), lambda p: bool(np.any(
        per_example_losses(p) < 0)), settings=SHRINK)
    assert p.batch.size == 1 and float(forward(p).output[0, 0]) == p.batch.targets[0, 0]


@pytest.mark.clause("3.1")
def test_loss_problems_shrink_to_the_plainest_problem():
    """One Dense(1, 1), squared error, mean, one example, zeros; cross-entropy: two classes, no
    weights, no ignore_index, no smoothing, label 0; sequences: one token, valid."""
    p = find(loss_problems(), lambda p: True, settings=SHRINK)
    assert p.network == Network((Dense(1, 1),)) and p.loss == Loss("squared_error")
    assert p.reduction == Reduction("mean") and p.batch.size == 1
    assert np.array_equal(p.batch.inputs, [[0.0]]) and np.array_equal(p.batch.targets, [[0.0]])
    ce = find(loss_problems(losses=(_CE,)), lambda p: True, settings=SHRINK)
    assert ce.loss == Loss(_CE) and ce.network.out_features == 2
    assert ce.batch.targets.dtype.kind == "i" and ce.batch.targets.tolist() == [0]
    seq = find(loss_problems(sequences=True), lambda p: True, settings=SHRINK)
    assert seq.batch.inputs.shape == (1, 1, 1) and seq.batch.token_mask.tolist() == [[True]]
    assert seq.loss == Loss("squared_error") and seq.reduction == Reduction("mean")


@pytest.mark.clause("3.1")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=loss_problems(sequences=None))
def test_loss_problem_values_are_float32_numbers_in_their_documented_ranges(problem):
    """Inputs, targets, weights, class weights and variances are float32 numbers (a float32
    backend sees the reference's values), |x|, |y| ≤ 2, BCE targets in [0, 1], variances in
    [¼, 4], class weights from CLASS_WEIGHTS, ε from LABEL_SMOOTHINGS, δ from HUBER_DELTAS,
    probability rows non-negative summing to 1; everything the reference computes is finite."""
    b, loss = problem.batch, problem.loss

    def f32(a: np.ndarray) -> bool:
        return bool(np.array_equal(a.astype(np.float32).astype(np.float64), a))

    assert f32(b.inputs) and np.all(np.abs(b.inputs) <= 2)
    if b.weights is not None:
        assert f32(b.weights)
    if loss.elementwise:
        assert f32(b.targets) and np.all(np.abs(b.targets) <= 2)
        if loss.name == "bce_with_logits":
            assert np.all((b.targets >= 0) & (b.targets <= 1))
        if loss.name == "gaussian_nll":
            assert b.variances is not None and f32(b.variances)
            assert np.all((b.variances >= VARIANCE_RANGE[0]) & (b.variances <= VARIANCE_RANGE[1]))
        assert loss.delta in HUBER_DELTAS
    elif b.targets.dtype.kind == "f":
        assert np.all(b.targets >= 0) and np.allclose(b.targets.sum(axis=1), 1.0)
    if loss.class_weights is not None:
        assert set(loss.class_weights) <= set(CLASS_WEIGHTS)
    assert loss.label_smoothing == 0.0 or loss.label_smoothing in LABEL_SMOOTHINGS
    losses_, grads = per_example_grads(problem)
    loss_, batch = batch_grad(problem)
    assert np.all(np.isfinite(losses_)) and np.isfinite(loss_)
    assert all(np.all(np.isfinite(g)) for g in (*grads.values(), *batch.values()))
