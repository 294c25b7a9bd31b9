"""What the strategies reject (spec §1.6, §3.1): a contradictory or out-of-range argument raises
``InvalidArgument`` that repeats the bad value, when the strategy is built or at the latest when
it is first drawn from — never a silently empty or vacuous strategy."""

from __future__ import annotations

import inspect
import warnings

import pytest
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument, NonInteractiveExampleWarning

from batchgrad_spec import strategies
from batchgrad_spec.strategies import (
    MAX_DEPTH,
    MAX_WIDTH,
    any_shards,
    batches,
    dropout_masks,
    equal_shards,
    floats,
    layer_networks,
    layer_problems,
    loss_batches,
    loss_problems,
    losses,
    networks,
    parameters,
    problems,
    reaches,
    reductions,
    sequence_batches,
    split_cases,
    splits,
)
from reference.layers import Dense, Dropout, Network
from reference.losses import Loss, Reduction

pytestmark = pytest.mark.meta

NET = Network((Dense(1, 1),))
_CE = "softmax_cross_entropy"
_SEQ_NET = Network((Dense(1, 2),))

BAD_ARGUMENTS = {
    "min_depth > max_depth": (lambda: networks(min_depth=3, max_depth=2), "min_depth=3"),
    "max_depth above the cap": (lambda: networks(max_depth=MAX_DEPTH + 1), f"{MAX_DEPTH + 1}"),
    "max_width above the cap": (lambda: networks(max_width=MAX_WIDTH + 1), f"{MAX_WIDTH + 1}"),
    "min_width 0": (lambda: networks(min_width=0), "min_width=0"),
    "unknown activation": (lambda: networks(activations=("relu", "swish")), "swish"),
    "activations as a bare string": (lambda: networks(activations="relu"), "'relu'"),
    "in_features 0": (lambda: networks(in_features=0), "in_features=0"),
    "bias not a bool": (lambda: networks(bias=1), "bias=1"),
    "empty losses": (lambda: problems(losses=()), "losses=()"),
    "unknown loss": (lambda: problems(losses=("hinge",)), "hinge"),
    "a chapter-3 loss in problems()": (lambda: problems(losses=("huber",)), "loss_problems"),
    "sequence_mean in problems()": (lambda: problems(reductions=("sequence_mean",)),
                                    "sequence_mean"),
    "nets not a strategy": (lambda: problems(nets=NET), "nets=Network"),
    "unknown reduction": (lambda: reductions(names=("median",)), "median"),
    "reductions as a bare string": (lambda: problems(reductions="mean"), "'mean'"),
    "max_magnitude 0 (problems)": (lambda: problems(max_magnitude=0.0), "0.0"),
    "max_magnitude < 0 (floats)": (lambda: floats(max_magnitude=-1.5), "-1.5"),
    "max_magnitude not a number": (lambda: floats(max_magnitude="2"), "'2'"),
    "max_magnitude < 0 (parameters)": (lambda: parameters(NET, max_magnitude=-2.0), "-2.0"),
    "min_batch > max_batch": (lambda: problems(min_batch=5, max_batch=2), "min_batch=5"),
    "max_batch above the cap": (lambda: problems(max_batch=65), "65"),
    "min_size > max_size": (
        lambda: batches(NET, Loss("squared_error"), Reduction("mean"), min_size=4, max_size=3),
        "min_size=4"),
    "batches() of a chapter-3 loss": (
        lambda: batches(NET, Loss("huber"), Reduction("mean")), "loss_batches"),
    "batches() of a non-Loss": (
        lambda: batches(NET, "squared_error", Reduction("mean")), "loss='squared_error'"),
    "parameters() of a non-Network": (lambda: parameters(Dense(1, 1)), "Dense(1, 1)"),
    "dropout_masks() for 0 examples": (
        lambda: dropout_masks(Network((Dropout(0.5), Dense(1, 1))), 0), "n=0"),
    "splits() of an empty batch": (lambda: splits(0), "n=0"),
    "splits() with min_parts > max_parts": (lambda: splits(4, min_parts=3, max_parts=2),
                                           "min_parts=3"),
    "split_cases() of a non-strategy": (lambda: split_cases(NET), "problem_strategy=Network"),
    "equal_shards() on 0 ranks": (lambda: equal_shards(problems(), ranks=0), "ranks=0"),
    "any_shards() of a non-strategy": (lambda: any_shards(NET, ranks=2),
                                       "problem_strategy=Network"),
    "reaches() with no examples": (lambda: reaches(st.just(1), bool, max_examples=0),
                                   "max_examples=0"),
}

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
    "sequences through Dropout": (
        lambda: sequence_batches(Network((Dropout(0.5), Dense(1, 2))), Loss(_CE),
                                 Reduction("mean")), "Dropout(0.5)"),
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


def _rejects_repeating_the_value(make, shown: str) -> None:
    """``make()`` raises InvalidArgument naming ``shown``, when built or when first drawn."""
    with pytest.raises(InvalidArgument) as info:
        strategy = make()
        strategy.validate()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonInteractiveExampleWarning)
            strategy.example()
    assert shown in str(info.value), f"the message does not repeat {shown!r}: {info.value}"


@pytest.mark.clause("1.6")
@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_bad_arguments_raise_invalid_argument_repeating_the_value(case):
    """Raised when the strategy is built, or at the latest when it is first drawn from."""
    _rejects_repeating_the_value(*BAD_ARGUMENTS[case])


@pytest.mark.clause("1.6")
@pytest.mark.parametrize("case", list(LAYER_BAD_ARGUMENTS))
def test_layer_strategies_reject_bad_arguments_repeating_the_value(case):
    _rejects_repeating_the_value(*LAYER_BAD_ARGUMENTS[case])


@pytest.mark.clause("3.1")
@pytest.mark.parametrize("case", list(LOSS_BAD_ARGUMENTS))
def test_loss_strategies_reject_bad_arguments_repeating_the_value(case):
    _rejects_repeating_the_value(*LOSS_BAD_ARGUMENTS[case])


@pytest.mark.clause("1.6")
@pytest.mark.parametrize("name", strategies.__all__)
def test_the_public_api_is_documented_typed_and_keyword_only(name):
    """Every public name is importable from ``batchgrad_spec.strategies``; a public function
    has a docstring and typed arguments, and a strategy's options are keyword-only (only the
    objects it draws for, such as the network, are positional)."""
    obj = getattr(strategies, name)
    if callable(obj):
        assert obj.__doc__ and obj.__doc__.strip(), f"{name} has no docstring"
        signature = inspect.signature(obj)
        for p in signature.parameters.values():
            assert p.annotation is not p.empty, f"{name}: {p.name} has no type"
            if "SearchStrategy" in str(signature.return_annotation):
                assert p.kind is p.KEYWORD_ONLY or p.default is p.empty, (
                    f"{name}: option {p.name} must be keyword-only")
