"""Whole problems — (network, loss, reduction, θ, batch), spec §1.6 — for chapters 1–2
(``problems``), chapter 4 (``layer_problems``, networks with coupling layers) and chapter 3
(``loss_problems``, every loss with its options, and sequences)."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from batchgrad_spec.declared import choose, feature_flag
from batchgrad_spec.strategies._validation import check_names, check_range, flag
from batchgrad_spec.strategies.batch import batches, loss_batches, sequence_batches
from batchgrad_spec.strategies.layer import LAYER_KINDS, PIECEWISE_ACTIVATIONS, with_two_outputs
from batchgrad_spec.strategies.loss import CE, check_ce_flag, check_ignored
from batchgrad_spec.strategies.loss import losses as loss_options
from batchgrad_spec.strategies.network import layer_networks, networks, parameters
from batchgrad_spec.strategies.value import MAX_BATCH, MAX_LENGTH, floats
from reference.batch import SEQUENCE
from reference.layers import Network
from reference.losses import (
    CORE_LOSSES,
    CORE_REDUCTIONS,
    LOSS_FEATURES,
    LOSS_NAMES,
    REDUCTION_FEATURES,
    REDUCTION_NAMES,
    SOFT_TARGETS,
    Loss,
    Reduction,
)
from reference.problem import Problem

__all__ = ["layer_problems", "loss_problems", "problems"]

SEQUENCE_MAX_BATCH = 4
"""Most sequences ``loss_problems`` draws in a sequence batch."""


def _with_classes(net: Network, loss_name: str) -> Network:
    """``net``, with two outputs where cross-entropy needs them (``with_two_outputs``)."""
    return with_two_outputs(net) if loss_name == CE and net.out_features < 2 else net


def _check_nets(nets: st.SearchStrategy[Network] | None) -> st.SearchStrategy[Network]:
    if nets is None:
        return networks()
    if not isinstance(nets, st.SearchStrategy):
        raise InvalidArgument(f"nets={nets!r} must be a strategy of networks, e.g. "
                              f"networks(max_depth=2) or st.just(network)")
    return nets


def problems(
    *,
    nets: st.SearchStrategy[Network] | None = None,
    losses: Sequence[str] = CORE_LOSSES,
    reductions: Sequence[str] = CORE_REDUCTIONS,
    min_batch: int = 1,
    max_batch: int = 8,
    max_magnitude: float = 2.0,
) -> st.SearchStrategy[Problem]:
    """Whole problems: network from ``nets`` (default ``networks()``), a loss of ``losses``
    (squared error, cross-entropy), a reduction of ``reductions`` (the four of chapter 2), θ
    (``parameters``) and a batch of ``min_batch``–``max_batch`` examples (``batches``); every
    value in [−max_magnitude, max_magnitude].

    Cross-entropy networks get at least 2 outputs (classes); shrinks towards the smallest
    network, squared error, ``mean``, one example, all zeros. For the losses of chapter 3 and
    sequences use ``loss_problems``.
    """
    loss_names = check_names("losses", losses, LOSS_NAMES)
    red = check_names("reductions", reductions, REDUCTION_NAMES)
    if set(loss_names) - set(CORE_LOSSES) or set(red) - set(CORE_REDUCTIONS):
        raise InvalidArgument(f"losses={loss_names!r}, reductions={red!r}: problems() draws "
                              f"the losses {CORE_LOSSES} and reductions {CORE_REDUCTIONS}; use "
                              f"loss_problems() for the others")
    check_range("batch", min_batch, max_batch, 1, MAX_BATCH)
    floats(max_magnitude=max_magnitude)  # validate now, not at the first draw
    nets = _check_nets(nets)

    @st.composite
    def build(draw: st.DrawFn) -> Problem:
        loss = Loss(draw(st.sampled_from(choose(loss_names, LOSS_FEATURES))))  # §8.6
        net = _with_classes(draw(nets), loss.name)  # layers may follow the last Dense (ch. 4)
        reduction = Reduction(draw(st.sampled_from(choose(red, REDUCTION_FEATURES))))
        params = draw(parameters(net, max_magnitude=max_magnitude))
        batch = draw(batches(net, loss, reduction, min_size=min_batch, max_size=max_batch,
                             max_magnitude=max_magnitude))
        return Problem(net, loss, reduction, params, batch)

    return build()


def layer_problems(
    *,
    layers: Sequence[str] = LAYER_KINDS,
    require: Sequence[str] = (),
    losses: Sequence[str] = CORE_LOSSES,
    reductions: Sequence[str] = CORE_REDUCTIONS,
    min_batch: int | None = None,
    max_batch: int = 8,
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
) -> st.SearchStrategy[Problem]:
    """``problems(nets=layer_networks(layers=layers, require=require, ...), losses=losses,
    reductions=reductions, ...)``: the network options are those of ``layer_networks``,
    ``max_magnitude`` bounds θ, the batch and the running means alike. ``min_batch`` defaults
    to 2 when ``layers`` or ``require`` includes ``"batch_norm"`` (train mode: PyTorch refuses
    one example, spec §4.2), else 1; an explicit ``min_batch`` below that is an error. Shrinks
    as ``layer_networks`` and ``problems`` do."""
    kinds = tuple(layers) + tuple(require)
    floor = 2 if "batch_norm" in kinds else 1
    lo = floor if min_batch is None else min_batch
    if lo < floor:
        raise InvalidArgument(f"min_batch={lo}: problems with a train-mode BatchNorm need N >= 2 "
                              f"(spec §4.2); pass min_batch>=2 or leave it out")
    nets = layer_networks(layers=layers, require=require, min_layers=min_layers,
                          max_layers=max_layers, activations=activations, min_depth=min_depth,
                          max_depth=max_depth, min_width=min_width, max_width=max_width,
                          in_features=in_features, out_features=out_features,
                          max_magnitude=max_magnitude)
    return problems(nets=nets, losses=losses, reductions=reductions, min_batch=lo,
                    max_batch=max_batch, max_magnitude=max_magnitude)


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
    loss_names = check_names("losses", losses, LOSS_NAMES)
    flag("sequences", sequences)
    if reductions is None:
        red = CORE_REDUCTIONS + (("sequence_mean",) if sequences is not False else ())
    else:
        red = check_names("reductions", reductions, REDUCTION_NAMES)
    if sequences is False and "sequence_mean" in red:
        raise InvalidArgument(f"reductions={red!r} contains 'sequence_mean', which needs "
                              f"sequences; pass sequences=True or None")
    if sequences is None and red == ("sequence_mean",):
        sequences = True
    for arg, value in (("class_weights", class_weights), ("ignore_index", ignore_index),
                       ("label_smoothing", label_smoothing), ("soft_targets", soft_targets)):
        check_ce_flag(arg, value, loss_names)
    check_ignored(ignored)
    if ignored != "any":
        if ignore_index is False or loss_names != (CE,):
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
    flag("empty_sequences", empty_sequences)
    if empty_sequences and (equal_lengths or red == ("sequence_mean",)):
        raise InvalidArgument(f"empty_sequences=True contradicts equal_lengths={equal_lengths!r}"
                              f" / reductions={red!r}: those need a valid token in every "
                              f"sequence")
    check_range("batch", max(min_batch, 2) if ignored == "some" or empty_sequences
                else min_batch, max_batch, 1, MAX_BATCH)
    check_range("length", 1, max_length, 1, MAX_LENGTH)
    floats(max_magnitude=max_magnitude)  # validate now, not at the first draw
    nets = _check_nets(nets)
    seq_max = min(max_batch, SEQUENCE_MAX_BATCH)

    @st.composite
    def build(draw: st.DrawFn) -> Problem:
        name = draw(st.sampled_from(choose(loss_names, LOSS_FEATURES)))  # the context, §8.6
        net = _with_classes(draw(nets), name)
        seq = draw(feature_flag(sequences, SEQUENCE))
        if seq:
            usable = tuple(r for r in red if not (empty_sequences and r == "sequence_mean"))
        else:
            usable = tuple(r for r in red if r != "sequence_mean")
        reduction = Reduction(draw(st.sampled_from(choose(usable, REDUCTION_FEATURES))))
        ce = name == CE
        soft = False
        if ce and not seq and not ignore_index:
            soft = draw(feature_flag(soft_targets, SOFT_TARGETS))
        loss = draw(loss_options(
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
