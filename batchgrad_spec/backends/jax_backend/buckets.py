"""A problem embedded in its shape bucket (``pad``), and the real gradients out of it (``unpad``).

* normal form (``Layout``): blocks b = 0..B-1, each an optional Dense layer followed by a run of
  slots (activations, norms, Dropout); block 0 holds the layers applied to the input, block j+1
  the j-th Dense layer and the run after it.
* widths: every width is padded to one bucket ``Wb`` (next power of two, at least
  ``MIN_WIDTH``); weights become (Wb, Wb) with zero rows/columns, biases get zeros (a bias-free
  Dense gets a zero bias whose gradient is dropped); γ, β get zeros.
* depth: ``B - 1`` Dense blocks (a power of two ≥ ``MIN_DEPTH``); blocks past the real layers
  are skipped by ``jnp.where(live, z, a)``; ``S`` slots per block (≥ ``MIN_SLOTS``).
* batch: ``Nb`` examples of ``Tb`` tokens each (Tb = 1 without sequences, else a bucket ≥
  ``MIN_TOKENS``); padded examples and tokens have zero inputs/targets, label 0, variance 1,
  coefficient 0 and are not "kept". "loop" calls the single-example program, whose shapes
  depend on the buckets only.

Each layer writes its own part (``layers.LAYERS``).

Why the answer is unchanged (exactly, up to the order of summation)
--------------------------------------------------------------------
Forward: a real unit's pre-activation is Σ_j W_ij a_j over real j plus terms 0·a_j = ±0 over
padded j (a_j is finite), and adding ±0 is exact. Padded units may hold nonzero values (σ(0) = ½
for sigmoid, β = 0 after a norm), but only ever meet zero weights. Skipped layers pass a through
``jnp.where``, exactly; identity slots divide by 1, exactly. Norm statistics are masked sums
over the real features (LayerNorm) or the real examples and tokens (BatchNorm), divided by their
real number: padded units and padded examples never enter them (``jnp.where`` gives them zero
cotangent as well). Loss: elementwise losses mask padded outputs to 0 and divide by the real D
(a traced scalar); cross-entropy replaces padded logits by ``finfo.min/2`` so exp(· − max)
underflows to exactly 0 and the log-sum-exp is that of the real logits, and padded classes have
weight 0 (so 0 · q̃ on them). Reduction: L = Σ_i c_i v_i / s with c_i = 0 on padded examples and
s = Σ ω_i, N, Σ c_i or 1 (traced), so L is the real reduction. Backward: the cotangent of every
padded example is c_i·(…) = 0 and that of a padded output or token is 0 (``where`` sends zero to
the branch not taken); into a real unit the backward matmul adds z̄_o·0 = 0 from padded units o,
so real gradients see exactly the real terms; ``where`` in a skipped layer gives zero to its
parameters. Gradients of real parameters are sliced out; the rest is discarded. No inf or NaN is
produced anywhere (denominators are ≥ 1 or guarded, variances 1 where padded), so no 0·inf
arises. Only the grouping of a sum's terms can change (covered by the spec's γ_n bound "in any
order or blocking").
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from reference.layers import Dense, Layer, Network
from reference.losses import REDUCTION_NAMES
from reference.problem import Problem
from reference.types import Grads

from .layers import Buffers, Site, rule
from .ops import IDENTITY
from .padded import CORE_LOSS_KINDS, LOSS_KINDS, SLOT_KINDS, Examples, Net, Params

__all__ = ["MIN_BATCH", "MIN_DEPTH", "MIN_SLOTS", "MIN_TOKENS", "MIN_WIDTH", "Layout", "Padded",
           "bucket", "layout", "pad", "unpad"]

MIN_WIDTH = 16
"""Smallest width bucket; widths in 1..16 all share one bucket."""
MIN_BATCH = 16
"""Smallest batch bucket."""
MIN_DEPTH = 4
"""Smallest depth bucket (number of Dense layers)."""
MIN_SLOTS = 4
"""Smallest number of slots (activations, norms, dropouts) per run: an activation plus up to
three layers of chapter 4 share one bucket (4 slots cost ~0.07 ms a call more than 2)."""
MIN_TOKENS = 4
"""Smallest token bucket of sequence batches (batchgrad_spec.strategies draws T ≤ 4); batches of
single examples have one token per example (Tb = 1)."""


def bucket(n: int, minimum: int) -> int:
    """The bucket of a size n: the next power of two, at least ``minimum``."""
    return max(minimum, 1 << (n - 1).bit_length())


@dataclass(frozen=True)
class Layout:
    """The normal form of a network: Dense layers with the run of other layers after each."""

    dense: tuple[tuple[int, Dense], ...]  # (index in network.layers, layer)
    runs: tuple[tuple[tuple[int, int], ...], ...]  # (slot kind, layer index): runs[0] on the
    # input, runs[j+1] after Dense j
    widths: tuple[int, ...]  # input width, then each Dense's out_features


@functools.lru_cache(maxsize=4096)
def layout(network: Network) -> Layout:
    """``network`` in normal form: a layer whose rule has no slot kind (Dense) opens a block."""
    runs: list[list[tuple[int, int]]] = [[]]
    for k, layer in enumerate(network.layers):
        slot = rule(layer).slot
        if slot is None:
            runs.append([])
        else:
            runs[-1].append((slot(layer), k))
    dense = tuple(network.dense_layers())
    widths = (dense[0][1].in_features,) + tuple(d.out_features for _, d in dense)
    return Layout(dense, tuple(map(tuple, runs)), widths)


@dataclass(frozen=True, eq=False)
class Padded:
    """A problem embedded in its bucket, as numpy arrays in the compute dtype."""

    layout: Layout
    params: Params  # numpy arrays
    net: Net
    ex: Examples  # Nb examples
    coef: np.ndarray  # (Nb,) c_i (or 1), 0 on padded examples
    reduction: np.ndarray  # () int32 index in REDUCTION_NAMES
    full: bool  # the full tier: norms or losses beyond the core tier's


def _sites(problem: Problem, lay: Layout, n: int, t: int) -> Iterator[tuple[Layer, Site]]:
    """(layer, Site) of every layer: the Dense layers (in order), then the runs' layers."""
    layers, widths = problem.network.layers, lay.widths
    for j, (k, d) in enumerate(lay.dense):
        yield d, Site(problem, k, j + 1, 0, d.in_features, n, t)
    for j, run in enumerate(lay.runs):
        for s, (_, k) in enumerate(run):
            yield layers[k], Site(problem, k, j, s, widths[j], n, t)


def pad(problem: Problem, dtype: np.dtype) -> Padded:
    """``problem`` in its bucket, in ``dtype`` (see the module docstring)."""
    lay, b, loss = layout(problem.network), problem.batch, problem.loss
    n, n_dense, d_out = b.size, len(lay.dense), lay.widths[-1]
    t = b.inputs.shape[1] if b.sequence else 1
    wb = bucket(max(lay.widths), MIN_WIDTH)
    blocks = 1 + bucket(n_dense, MIN_DEPTH)
    slots = bucket(max(max(len(r) for r in lay.runs), 1), MIN_SLOTS)
    nb = bucket(n, MIN_BATCH)
    tb = bucket(t, MIN_TOKENS) if b.sequence else 1

    params = Params(np.zeros((blocks, wb, wb), dtype), np.zeros((blocks, wb), dtype),
                    np.zeros((blocks, slots, wb), dtype), np.zeros((blocks, slots, wb), dtype))
    width = np.array(lay.widths + (lay.widths[-1],) * (blocks - len(lay.widths)))
    kinds = np.full((blocks, slots), IDENTITY, np.int32)
    into = Buffers(params, stats=np.zeros((blocks, slots), np.int32),
                   rmean=np.zeros((blocks, slots, wb), dtype),
                   rvar=np.ones((blocks, slots, wb), dtype), keep=np.ones((blocks, slots), dtype),
                   drop=np.ones((nb, blocks, slots, tb, wb), bool))
    for j, run in enumerate(lay.runs):
        for s, (kind, _) in enumerate(run):
            kinds[j, s] = kind
    for layer, at in _sites(problem, lay, n, t):
        rule(layer).pad(layer, at, into)

    hard = loss.name == "softmax_cross_entropy" and b.targets.dtype.kind in "iu"
    if loss.elementwise:
        kind = LOSS_KINDS.index(loss.name)
    elif hard and loss.label_smoothing == 0:
        kind = LOSS_KINDS.index("ce_integer_labels")
    else:
        kind = LOSS_KINDS.index("ce_probabilities")
    class_w = np.zeros(wb, dtype)
    class_w[:d_out] = 1.0 if loss.class_weights is None else loss.class_weights
    eps = loss.label_smoothing
    net = Net(
        live=(np.arange(blocks) >= 1) & (np.arange(blocks) <= n_dense), kinds=kinds,
        stats=into.stats, feat=np.arange(wb) < width[:, None], nfeat=width.astype(dtype),
        rmean=into.rmean, rvar=into.rvar, keep=into.keep, loss=np.asarray(kind, np.int32),
        out_mask=np.arange(wb) < d_out, d_out=np.asarray(d_out, dtype), class_w=class_w,
        hard=np.asarray(hard), soft=np.asarray(not loss.elementwise and not hard),
        one_minus_eps=np.asarray(1.0 - eps, dtype), eps_over_c=np.asarray(eps / d_out, dtype),
        delta=np.asarray(loss.delta, dtype))

    rows = np.zeros((nb, tb), bool)
    rows[:n, :t] = True
    live = rows.copy()
    if b.sequence:
        live[:n, :t] = b.token_mask
    ex = Examples(np.zeros((nb, tb, wb), dtype), np.zeros((nb, tb, wb), dtype),
                  np.ones((nb, tb, wb), dtype), np.zeros((nb, tb), np.int32), live, rows,
                  into.drop)
    ex.x[:n, :t, : lay.widths[0]] = b.inputs.reshape(n, t, -1)
    if hard:
        labels = b.targets.reshape(n, t)
        if loss.ignore_index is not None:
            live[:n, :t] &= labels != loss.ignore_index
        ex.labels[:n, :t] = np.where(live[:n, :t], labels, 0)
    else:
        ex.y[:n, :t, :d_out] = b.targets.reshape(n, t, d_out)
    if b.variances is not None:
        ex.var[:n, :t, :d_out] = b.variances.reshape(n, t, d_out)
    coef = np.zeros(nb, dtype)
    coef[:n] = b.weights if problem.reduction.weighted else 1.0
    red = np.asarray(REDUCTION_NAMES.index(problem.reduction.name), np.int32)
    full = bool(np.any(kinds == SLOT_KINDS.index("norm"))) or kind >= CORE_LOSS_KINDS
    return Padded(lay, params, net, ex, coef, red, full)


def unpad(problem: Problem, lay: Layout, grads: Params, lead: tuple) -> Grads:
    """Real parameters' gradients out of padded arrays (with leading axes ``lead``)."""
    out: Grads = {}
    for layer, at in _sites(problem, lay, 0, 0):
        out.update(rule(layer).unpad(layer, at, grads, lead))
    return out
