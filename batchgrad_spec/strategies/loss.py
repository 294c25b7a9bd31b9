"""Losses and their options (spec chapter 3), and reductions (spec chapter 2): which values an
option is drawn from, and the strategies ``losses`` and ``reductions``."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from batchgrad_spec.declared import choose, feature_flag
from batchgrad_spec.strategies._validation import check_names, flag
from batchgrad_spec.strategies.value import MAX_WIDTH
from reference import losses as units
from reference.losses import CORE_REDUCTIONS, LOSS_NAMES, REDUCTION_NAMES, Loss, Reduction

__all__ = [
    "CLASS_WEIGHTS",
    "HUBER_DELTAS",
    "IGNORED",
    "IGNORE_INDEX",
    "LABEL_SMOOTHINGS",
    "VARIANCE_RANGE",
    "losses",
    "reductions",
]

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

CE = "softmax_cross_entropy"


def check_ce_flag(arg: str, value: bool | None, names: Sequence[str]) -> None:
    """A cross-entropy option (``class_weights=``...) is a flag, and True only if CE is drawn."""
    flag(arg, value)
    if value and CE not in names:
        raise InvalidArgument(f"{arg}=True applies to softmax_cross_entropy only, which losses="
                              f"{tuple(names)!r} leaves out; add it, or pass {arg}=None")


def check_ignored(ignored: str) -> None:
    """``ignored`` is one of ``IGNORED``."""
    if ignored not in IGNORED:
        raise InvalidArgument(f"ignored={ignored!r}; choose one of {IGNORED}")


def reductions(*, names: Sequence[str] = CORE_REDUCTIONS) -> st.SearchStrategy[Reduction]:
    """One of the reductions named in ``names`` (default the four of chapter 2: ``mean``,
    ``sum``, ``weighted``, ``weighted_mean``); shrinks towards the first, ``mean``."""
    names = check_names("names", names, REDUCTION_NAMES)

    @st.composite
    def build(draw: st.DrawFn) -> Reduction:  # the draw context's choice (spec §8.6)
        return Reduction(draw(st.sampled_from(choose(names, units.REDUCTION_FEATURES))))

    return build()


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
    names = check_names("names", names, LOSS_NAMES)
    if isinstance(classes, bool) or not isinstance(classes, int) or not (
            2 <= classes <= MAX_WIDTH):
        raise InvalidArgument(f"classes={classes!r} must be an int in [2, {MAX_WIDTH}] "
                              f"(cross-entropy needs at least two classes)")
    for arg, value in (("class_weights", class_weights), ("ignore_index", ignore_index),
                       ("label_smoothing", label_smoothing)):
        check_ce_flag(arg, value, names)

    @st.composite
    def build(draw: st.DrawFn) -> Loss:
        name = draw(st.sampled_from(choose(names, units.LOSS_FEATURES)))  # the draw context (§8.6)
        if name == "huber":
            return Loss(name, delta=draw(st.sampled_from(HUBER_DELTAS)))
        if name != CE:
            return Loss(name)
        w = None
        if draw(feature_flag(class_weights, units.CLASS_WEIGHTS)):
            w = tuple(draw(st.lists(st.sampled_from(CLASS_WEIGHTS), min_size=classes,
                                    max_size=classes)))
        ii = IGNORE_INDEX if draw(feature_flag(ignore_index, units.IGNORE_INDEX)) else None
        eps = (draw(st.sampled_from(LABEL_SMOOTHINGS))
               if draw(feature_flag(label_smoothing, units.LABEL_SMOOTHING)) else 0.0)
        return Loss(name, class_weights=w, ignore_index=ii, label_smoothing=eps)

    return build()
