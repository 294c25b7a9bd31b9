"""The layers of spec chapter 9 (§9.1–§9.5): ``structured_problems`` draws a whole problem built
around one structured layer kind (``STRUCTURED_KINDS``), small enough that every edge case
comes up by itself:

- ``embedding``: ``Embedding(num, dim, padding_idx)`` then ``Dense(dim, dim)``, indices (N,) or
  (N, T) from num ≤ 4 rows, so an index repeats within and across examples (pigeonhole);
- ``conv1d``: ``Conv1d`` with stride, padding, dilation and groups drawn (groups divides both
  channel counts), then ``Dense``;
- ``attention``: ``SelfAttention(dim, heads)`` then ``Dense`` on a sequence batch whose token
  mask is drawn per token (an all-masked example comes up; at least one token of the batch is
  kept: a mean over no token is §3.7.4's matter, not this chapter's);
- ``residual``: ``Residual`` around ``Dense`` + tanh, or around an attention (sequences);
- ``tied``: ``Embedding(num, d, padding_idx)``, tanh, ``Dense(d, num)`` with ``ties={"2.weight":
  "0.weight"}`` (the output projection is the embedding; a padding row still gets the output
  projection's gradient), cross-entropy over the num classes.

Everything shrinks towards the first kind (``embedding``), one example of one index, width 1,
no padding row, one head, kernel 1, stride/dilation/groups 1, no padding, every token kept.

The draw context (``batchgrad_spec.declared``, spec §8.6): the kind is drawn among those whose
features (``KIND_FEATURES``) the backend declares, sequences only where it declares
``input:sequence`` and ``input:mask``, a residual around attention only with ``layer:attention``,
the reduction among the declared ones; none left, the test skips with "not supported: <backend>
does not declare <feature>". For a backend declaring every feature the draws are those without a
context, byte for byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

import numpy as np
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from batchgrad_spec.declared import choose, current, permits
from batchgrad_spec.strategies._validation import check_names, check_range
from batchgrad_spec.strategies.value import MAX_BATCH, MAX_LENGTH, floats
from reference.activations import ACTIVATION_FEATURES, Activation
from reference.attention import ATTENTION, SelfAttention
from reference.batch import MASK, SEQUENCE, Batch
from reference.conv import CONV1D, Conv1d
from reference.embedding import EMBEDDING, Embedding
from reference.layers import DENSE, TIED, Dense, Network
from reference.losses import LOSS_FEATURES, REDUCTION_FEATURES, Loss, Reduction
from reference.problem import Problem
from reference.residual import RESIDUAL, Residual

__all__ = ["KIND_FEATURES", "MAX_STRUCTURED_WIDTH", "STRUCTURED_KINDS", "structured_kind",
           "structured_problems"]

STRUCTURED_KINDS = ("embedding", "conv1d", "attention", "residual", "tied")
"""The problem kinds of ``structured_problems``, in shrinking order."""
MAX_STRUCTURED_WIDTH = 4
"""Largest width, channel count, length, number of rows or heads drawn: small problems reach
the edge cases (repeated indices, dilation and groups > 1, an all-masked example) quickly."""
_SE, _CE = LOSS_FEATURES["squared_error"], LOSS_FEATURES["softmax_cross_entropy"]
_TANH = ACTIVATION_FEATURES["tanh"]
_SEQUENCES = frozenset({SEQUENCE, MASK})
KIND_FEATURES = {
    "embedding": frozenset({EMBEDDING, DENSE, _SE}),
    "conv1d": frozenset({CONV1D, DENSE, _SE}),
    "attention": frozenset({ATTENTION, DENSE, _SE}) | _SEQUENCES,
    "residual": frozenset({RESIDUAL, DENSE, _SE}),
    "tied": frozenset({EMBEDDING, DENSE, TIED, _TANH, _CE}),
}
"""Kind → the capabilities every problem of that kind uses (spec §8.6); beside them, sequences
use ``input:sequence`` and ``input:mask``, a residual block is attention (on sequences) or
Dense + tanh, and the reduction its own."""


def structured_kind(problem: Problem) -> str:
    """The ``STRUCTURED_KINDS`` name of a problem ``structured_problems`` drew."""
    net = problem.network
    if net.tied:
        return "tied"
    first = net.layers[0]
    if isinstance(first, Embedding):
        return "embedding"
    if isinstance(first, Conv1d):
        return "conv1d"
    if isinstance(first, SelfAttention):
        return "attention"
    return "residual"


def _array(draw: st.DrawFn, shape: tuple[int, ...], m: float) -> np.ndarray:
    n = int(np.prod(shape))
    return np.array(draw(st.lists(floats(max_magnitude=m), min_size=n, max_size=n)),
                    dtype=np.float64).reshape(shape)


def _lead(draw: st.DrawFn, sequence: bool, max_batch: int, max_tokens: int) -> tuple[int, ...]:
    n = draw(st.integers(1, max_batch))
    return (n, draw(st.integers(1, max_tokens))) if sequence else (n,)


def _mask(draw: st.DrawFn, lead: tuple[int, ...]) -> np.ndarray:
    """A token mask; at least one token of the batch kept."""
    n = int(np.prod(lead))
    keep = np.array(draw(st.lists(st.booleans().map(lambda b: not b), min_size=n, max_size=n)),
                    dtype=bool).reshape(lead)
    if not keep.any():
        keep[0, 0] = True
    return keep


def _optional(draw: st.DrawFn, features: frozenset[str]) -> bool:
    """A drawn flag (``st.booleans()``) whose True uses ``features``: False when one is not
    declared, True when a strict variant (§8.7) requires one."""
    ctx = current()
    if ctx is not None and ctx.required & features:
        return True
    if all([permits(f) for f in sorted(features)]):  # every one recorded when left out
        return draw(st.booleans())
    return False


def _residual_attention(draw: st.DrawFn) -> bool:
    """Whether a residual block is attention on sequences (else Dense + tanh), as declared."""
    ctx = current()
    att = _SEQUENCES | {ATTENTION}
    if ctx is None or _TANH in ctx.allowed and not ctx.required & att:
        return _optional(draw, att)  # st.booleans() where both are declared
    if ctx.required & att or att <= ctx.allowed:
        return True
    ctx.excluded.update(att - ctx.allowed | {_TANH})
    raise ctx.missing(_TANH)


@st.composite
def _network(draw: st.DrawFn, kind: str, w: int) -> tuple[Network, bool]:
    """(network, whether its batch is a sequence batch) of ``kind`` (widths ≤ w)."""
    small = st.integers(1, w)
    if kind in ("embedding", "tied"):  # the same draws: the kind decides what shrinks first
        num, dim = draw(small), draw(small)
        pad = draw(st.integers(0, num))  # 0: no padding row, j: row j − 1
        emb = Embedding(num, dim, padding_idx=pad - 1 if pad else None)
        sequence = _optional(draw, _SEQUENCES)
        if kind == "embedding":
            return Network((emb, Dense(dim, dim))), sequence
        return Network((emb, Activation("tanh"), Dense(dim, num)),
                       ties={"2.weight": "0.weight"}), sequence
    if kind == "conv1d":
        groups = draw(st.integers(1, 2))
        cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
        k, stride, dil, pad = (draw(st.integers(1, 3)), draw(st.integers(1, 2)),
                               draw(st.integers(1, 2)), draw(st.integers(0, 2)))
        span = dil * (k - 1) + 1
        length = draw(st.integers(max(1, span - 2 * pad), max(w, span - 2 * pad)))
        conv = Conv1d(cin, cout, k, length=length, stride=stride, padding=pad, dilation=dil,
                      groups=groups, bias=draw(st.booleans().map(lambda b: not b)))
        return Network((conv, Dense(cout * conv.out_length, draw(small)))), False
    heads = draw(st.integers(1, 2))
    dim = heads * draw(st.integers(1, max(1, w // heads)))
    if kind == "attention":
        return Network((SelfAttention(dim, heads=heads), Dense(dim, draw(small)))), True
    if _residual_attention(draw):  # residual around attention, on sequences
        return Network((Residual((SelfAttention(dim, heads=heads),)), Dense(dim, draw(small)))), \
            True
    return Network((Dense(dim, dim), Residual((Dense(dim, dim), Activation("tanh"))),
                    Dense(dim, draw(small)))), _optional(draw, _SEQUENCES)


def structured_problems(*, kinds: Sequence[str] = STRUCTURED_KINDS, max_batch: int = 4,
                        max_tokens: int = 4, max_width: int = MAX_STRUCTURED_WIDTH,
                        reductions: Sequence[str] = ("sum", "mean"),
                        max_magnitude: float = 1.0) -> st.SearchStrategy[Problem]:
    """Problems around one layer kind of ``kinds`` (``STRUCTURED_KINDS``; module docstring):
    θ and float inputs in [−max_magnitude, max_magnitude] (default 1), N ≤ ``max_batch`` (≤ 64,
    default 4), T ≤ ``max_tokens`` (≤ 8, default 4), widths ≤ ``max_width`` (≤ 4), squared
    error (cross-entropy over the tied vocabulary), a reduction of ``reductions`` ("sum",
    "mean"). Shrinks to N = 1, widths 1, the first reduction, and the kind with the fewest
    choices: the first kind or, from some starting points, "tied" (its Dense weight is
    shared). Only declared features are drawn (module docstring)."""
    kinds = check_names("kinds", kinds, STRUCTURED_KINDS)
    reductions = check_names("reductions", reductions, ("sum", "mean"))
    check_range("batch", 1, max_batch, 1, MAX_BATCH)
    check_range("tokens", 1, max_tokens, 1, MAX_LENGTH)
    check_range("width", 1, max_width, 1, MAX_STRUCTURED_WIDTH)
    if (isinstance(max_magnitude, bool) or not isinstance(max_magnitude, Real)
            or not 0 < max_magnitude <= 2):
        raise InvalidArgument(f"max_magnitude={max_magnitude!r} must lie in (0, 2]; attention "
                              f"scores and the output stay bounded (spec §7.1)")
    m = float(max_magnitude)

    @st.composite
    def build(draw: st.DrawFn) -> Problem:
        kind = draw(st.sampled_from(choose(kinds, KIND_FEATURES.__getitem__)))  # §8.6
        net, sequence = draw(_network(kind, max_width))
        lead = _lead(draw, sequence, max_batch, max_tokens)
        params = {k: _array(draw, s, m) for k, s in net.param_shapes().items()}
        mask = _mask(draw, lead) if sequence else None
        first = net.layers[0]
        if isinstance(first, Embedding):
            n = int(np.prod(lead))
            x = np.array(draw(st.lists(st.integers(0, first.num_embeddings - 1), min_size=n,
                                       max_size=n)), dtype=np.int64).reshape(lead)
        else:
            x = _array(draw, lead + (net.in_features,), m)
        out = net.out_features
        if kind == "tied":
            n = int(np.prod(lead))
            y = np.array(draw(st.lists(st.integers(0, out - 1), min_size=n, max_size=n)),
                         dtype=np.int64).reshape(lead)
            loss = Loss("softmax_cross_entropy")
        else:
            y, loss = _array(draw, lead + (out,), m), Loss("squared_error")
        reduction = Reduction(draw(st.sampled_from(choose(reductions, REDUCTION_FEATURES))))
        return Problem(net, loss, reduction, params, Batch(x, y, mask=mask))

    return build()
