"""Batches and sequences: N examples for a given network, loss and reduction — inputs, targets
or labels (some ignored, or soft), Gaussian variances, weights c_i, dropout keep-masks
(``batches``, ``loss_batches``), and sequence batches of tokens with a validity mask
(``sequence_batches``, spec §3.7)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.extra import numpy as hnp

from batchgrad_spec.declared import permits, require, sizes
from batchgrad_spec.strategies._validation import check_instance, check_range, flag
from batchgrad_spec.strategies.layer import dropout_masks
from batchgrad_spec.strategies.loss import CE, VARIANCE_RANGE, check_ignored
from batchgrad_spec.strategies.value import MAX_BATCH, MAX_LENGTH, float32_range, floats
from reference.batch import MASK, SEQUENCE, Batch
from reference.layers import Dropout, Network
from reference.losses import CORE_LOSSES, CORE_REDUCTIONS, Loss, Reduction

__all__ = ["batches", "loss_batches", "sequence_batches"]

WEIGHTED_MEAN_WEIGHTS = (1 / 64, 2.0)
"""The range of the positive c_i of ``weighted_mean``: Σ c_i is well away from 0."""


def check_batch_args(network: Network, loss: Loss, reduction: Reduction) -> None:
    """Types, and the output width the loss needs (2 classes, one weight per class)."""
    check_instance("network", network, Network)
    check_instance("loss", loss, Loss)
    check_instance("reduction", reduction, Reduction)
    if loss.name == CE and network.out_features < 2:
        raise InvalidArgument(f"network={network!r} has {network.out_features} output; "
                              f"cross-entropy needs at least 2 classes")
    if loss.class_weights is not None and len(loss.class_weights) != network.out_features:
        raise InvalidArgument(f"loss={loss!r} has {len(loss.class_weights)} class weights for "
                              f"{network.out_features} classes")


def draw_targets(draw: st.DrawFn, loss: Loss, lead: tuple[int, ...], d: int,
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


def draw_weights(draw: st.DrawFn, reduction: Reduction, n: int,
                 elements: st.SearchStrategy[float]) -> np.ndarray | None:
    """The c_i of the weighted reductions: any sign for ``weighted``, positive for
    ``weighted_mean``; None for the others."""
    if reduction.name == "weighted":
        return draw(hnp.arrays(np.float64, (n,), elements=elements))
    if reduction.name == "weighted_mean":
        return draw(hnp.arrays(np.float64, (n,),
                               elements=float32_range(*WEIGHTED_MEAN_WEIGHTS)))
    return None


def _examples(network: Network, loss: Loss, reduction: Reduction, min_size: int, max_size: int,
              elements: st.SearchStrategy[float], soft: st.SearchStrategy[bool] | None,
              ignored: str) -> st.SearchStrategy[Batch]:
    """N in [min_size, max_size], inputs, (soft) targets, variances, weights, dropout masks:
    what ``batches`` and ``loss_batches`` draw, in that order."""

    @st.composite
    def build(draw: st.DrawFn) -> Batch:
        n = draw(sizes(min_size, max_size))  # bucketed under shapes:bucketed (spec §8.6)
        x = draw(hnp.arrays(np.float64, (n, network.in_features), elements=elements))
        is_soft = soft is not None and draw(soft)
        y, v = draw_targets(draw, loss, (n,), network.out_features, elements, is_soft, ignored)
        w = draw_weights(draw, reduction, n, elements)
        drop = draw(dropout_masks(network, n)) if network.layers_of(Dropout) else None  # ch. 4
        return Batch(x, y, w, variances=v, dropout=drop)

    return build()


def batches(
    network: Network,
    loss: Loss,
    reduction: Reduction,
    *,
    min_size: int = 1,
    max_size: int = 8,
    max_magnitude: float = 2.0,
) -> st.SearchStrategy[Batch]:
    """N examples for ``network`` and a chapter-2 ``loss`` (squared error or cross-entropy
    without ``ignore_index``); weights when ``reduction`` is weighted; dropout keep-masks when
    the network has Dropout layers (``dropout_masks``).

    Defaults: N in 1–8 (at most 64), inputs and squared-error targets in [−2, 2], labels in
    [0, C). ``weighted`` weights are any sign in [−2, 2] (losses can then cancel, spec §2.10);
    ``weighted_mean`` weights are positive, in [1/64, 2], so Σ c_i is well away from 0.
    Shrinks towards one example with zero inputs, target 0 / label 0, weight as small as allowed.
    For the losses and options of chapter 3 use ``loss_batches``.
    """
    check_batch_args(network, loss, reduction)
    if loss.name not in CORE_LOSSES or loss.ignore_index is not None:
        raise InvalidArgument(f"loss={loss!r}: batches() draws the losses {CORE_LOSSES} without "
                              f"ignore_index; use loss_batches() for this one")
    if reduction.name not in CORE_REDUCTIONS:
        raise InvalidArgument(f"reduction={reduction!r} needs sequences: use "
                              f"sequence_batches()")
    check_range("size", min_size, max_size, 1, MAX_BATCH)
    elements = floats(max_magnitude=max_magnitude)
    return _examples(network, loss, reduction, min_size, max_size, elements, None, "any")


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
    """N examples (one prediction each) for any loss of chapter 3; weights c_i and dropout
    keep-masks as ``batches`` draws them.

    Targets: squared error and Huber in [−max_magnitude, max_magnitude], BCE in [0, 1], Gaussian
    NLL with variances in ``VARIANCE_RANGE``; cross-entropy integer labels in [0, C), or with
    ``soft_targets`` (drawn by default when the loss has no ``ignore_index``) probability rows
    q ∝ e_y + m, m_k ∈ {0..3}. With ``loss.ignore_index`` set, rows are ignored as ``ignored``
    says: "any" (default: none to all but the first), "some" (at least the last, never the
    first; needs N ≥ 2) or "all". Shrinks towards one example, zero inputs, label 0 / target 0,
    no ignored row beyond the forced ones, hard labels, one-hot soft rows.
    """
    check_batch_args(network, loss, reduction)
    check_ignored(ignored)
    if ignored != "any" and loss.ignore_index is None:
        raise InvalidArgument(f"ignored={ignored!r} needs a loss with ignore_index, got {loss!r}")
    ce = loss.name == CE
    if soft_targets and (not ce or loss.ignore_index is not None):
        raise InvalidArgument(f"soft_targets=True needs cross-entropy without ignore_index "
                              f"(PyTorch ignores labels only), got {loss!r}")
    soft = flag("soft_targets", soft_targets)
    if reduction.name == "sequence_mean":
        raise InvalidArgument("reduction=Reduction('sequence_mean') needs sequences: use "
                              "sequence_batches()")
    lo = max(min_size, 2) if ignored == "some" else min_size
    check_range("size", lo, max_size, 1, MAX_BATCH)
    elements = floats(max_magnitude=max_magnitude)
    may_be_soft = ce and loss.ignore_index is None
    return _examples(network, loss, reduction, lo, max_size, elements,
                     soft if may_be_soft else None, ignored)


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
    number of valid tokens, a prefix of each. Defaults: N in 1–4, T in 1–4 (at most 8). Shrinks
    towards one sequence of one valid token, zeros, label 0.
    """
    check_batch_args(network, loss, reduction)
    if loss.ignore_index is not None:
        raise InvalidArgument(f"loss={loss!r}: sequence batches mark ignored tokens with the "
                              f"mask, not ignore_index; pass a loss without it")
    if network.layers_of(Dropout):
        raise InvalidArgument(f"network={network!r} has Dropout: sequence batches draw no "
                              f"keep-masks; pass a network without Dropout")
    flag("empty_sequences", empty_sequences)
    if not isinstance(equal_lengths, bool):
        raise InvalidArgument(f"equal_lengths={equal_lengths!r} must be True or False")
    if empty_sequences and (reduction.name == "sequence_mean" or equal_lengths):
        raise InvalidArgument(f"empty_sequences=True contradicts reduction={reduction!r} / "
                              f"equal_lengths={equal_lengths!r}: those need a valid token in "
                              f"every sequence")
    lo = max(min_size, 2) if empty_sequences else min_size
    check_range("size", lo, max_size, 1, MAX_BATCH)
    check_range("length", min_length, max_length, 1, MAX_LENGTH)
    elements = floats(max_magnitude=max_magnitude)
    every_row = reduction.name == "sequence_mean" or empty_sequences is False

    @st.composite
    def build(draw: st.DrawFn) -> Batch:
        require(SEQUENCE)  # the draw context (spec §8.6)
        masked = permits(MASK)
        if not masked and (equal_lengths or empty_sequences):
            require(MASK)
        n = draw(sizes(lo, max_size))
        t = draw(sizes(min_length, max_length))
        x = draw(hnp.arrays(np.float64, (n, t, network.in_features), elements=elements))
        mask: np.ndarray | None
        if not masked:  # every token valid, no mask
            mask = None
        elif equal_lengths:
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
        y, v = draw_targets(draw, loss, (n, t), network.out_features, elements, False, "any")
        return Batch(x, y, draw_weights(draw, reduction, n, elements), mask=mask, variances=v)

    return build()
