"""The problem: network, loss, reduction, parameters θ and batch, one gradient question (spec
chapter 1).

Everything a backend needs to compute a gradient, and nothing it can misread, as small frozen
dataclasses holding numpy float64 arrays. ``repr(problem)`` is a runnable Python expression (after
``import numpy as np`` and ``from reference import *``): that is the counterexample a failing test
prints.

Shapes (N examples, layer ``k`` a ``Dense(n_in, n_out)``)::

    params[f"{k}.weight"]  (n_out, n_in)     torch.nn.Linear layout: z = a Wᵀ + b
    params[f"{k}.bias"]    (n_out,)          only when Dense.bias is true
    params[f"{k}.weight"]  (features,)       γ of a LayerNorm / BatchNorm at k (β: ``k.bias``)
    batch.inputs           (N, n_in of the first Dense); sequences (N, T, n_in) (spec §3.7)
    batch.targets          (N, D) float64    elementwise losses, D = n_out of the last Dense
                           (N,)   int64      softmax_cross_entropy, labels in [0, C)
                           (N, C) float64    softmax_cross_entropy with probability targets
    batch.weights          (N,) float64      the c_i of the weighted reductions, else None

See ``Batch`` for masks, variances and dropout masks. The parts live in rooms of their own:
layers in ``reference.layers`` (``Dense``, ``Dropout``, ``Network``), ``reference.activations`` and
``reference.norms``; ``Loss`` and ``Reduction`` in ``reference.losses``; ``Batch`` in
``reference.batch``. This room checks that they fit together and prints the whole as a snippet.

Parameter names are those of ``torch.nn.Sequential`` built from the same layer list, so ``k``
counts activations too: ``Dense, relu, Dense`` has parameters ``0.*`` and ``2.*``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .batch import Batch, array_repr
from .layers import Network
from .losses import SOFT_TARGETS, Loss, Reduction
from .types import Params, ProblemError

__all__ = ["DTYPES", "Problem"]

DTYPES = ("float64", "float32")


@dataclass(frozen=True, eq=False)
class Problem:
    """Network, loss, reduction, parameters θ and batch: one gradient question."""

    network: Network
    loss: Loss
    reduction: Reduction
    params: Params
    batch: Batch

    def __post_init__(self) -> None:
        params = {k: np.asarray(v, dtype=np.float64) for k, v in self.params.items()}
        object.__setattr__(self, "params", params)
        self._validate()

    def _validate(self) -> None:
        shapes = self.network.param_shapes()
        if set(shapes) != set(self.params):
            raise ProblemError(
                f"parameters {sorted(self.params)} do not match the network's {sorted(shapes)}"
            )
        for name, shape in shapes.items():
            if self.params[name].shape != shape:
                raise ProblemError(
                    f"parameter {name!r} has shape {self.params[name].shape}, expected {shape}"
                )
        b, n, net, loss = self.batch, self.batch.size, self.network, self.loss
        if n < 1:
            raise ProblemError("a batch needs at least one example (N >= 1)")
        lead = b.inputs.shape[:-1]  # (N,) or (N, T)
        if b.inputs.ndim not in (2, 3) or b.inputs.shape[-1] != net.in_features:
            raise ProblemError(f"inputs have shape {b.inputs.shape}, expected (N, "
                               f"{net.in_features}) or, for sequences, (N, T, {net.in_features})")
        if b.sequence:
            if b.mask is not None and b.mask.shape != lead:
                raise ProblemError(f"mask has shape {b.mask.shape}, expected {lead}")
            for layer in self.network.layers:
                if not layer.takes_sequences:
                    raise ProblemError(f"{type(layer).__name__} is not defined here for sequence "
                                       f"batches")
            if loss.ignore_index is not None:
                raise ProblemError("sequence batches mark ignored tokens with batch.mask, not "
                                   "ignore_index")
        elif b.mask is not None:
            raise ProblemError("batch.mask is for sequence batches (inputs (N, T, d)) only")
        if self.reduction.name == "sequence_mean":
            if not b.sequence:
                raise ProblemError("sequence_mean needs a sequence batch (inputs (N, T, d))")
            if np.any(b.token_mask.sum(axis=1) == 0):
                raise ProblemError("sequence_mean needs at least one valid token per sequence")
        self._validate_targets(lead)
        widths = self.network.widths()
        for k, layer in enumerate(self.network.layers):
            layer.check_data(k, b, lead, widths[k])
        if self.reduction.weighted:
            if b.weights is None or b.weights.shape != (n,):
                raise ProblemError(
                    f"reduction {self.reduction.name!r} needs batch.weights of shape {(n,)}"
                )
            if self.reduction.name == "weighted_mean" and np.sum(b.weights) == 0:
                raise ProblemError("weighted_mean needs Σ c_i ≠ 0")

    def _validate_targets(self, lead: tuple[int, ...]) -> None:
        b, loss, out = self.batch, self.loss, self.network.out_features
        t = b.targets
        if loss.elementwise:
            if t.shape != lead + (out,) or t.dtype.kind != "f":
                raise ProblemError(f"{loss.name} targets must be float of shape "
                                   f"{lead + (out,)}, got {t.dtype} {t.shape}")
            if loss.name == "bce_with_logits" and (np.any(t < 0) or np.any(t > 1)):
                raise ProblemError("bce_with_logits targets must lie in [0, 1]")
            if loss.name == "gaussian_nll":
                v = b.variances
                if v is None or v.shape != t.shape or not np.all(v > 0):
                    raise ProblemError(f"gaussian_nll needs batch.variances > 0 of shape "
                                       f"{t.shape}")
            return
        if loss.class_weights is not None and len(loss.class_weights) != out:
            raise ProblemError(f"{loss!r}: {len(loss.class_weights)} class weights for {out} "
                               f"classes")
        if t.dtype.kind == "f":  # probability (soft) targets
            if b.sequence or t.shape != lead + (out,) or np.any(t < 0):
                raise ProblemError(f"soft targets must be non-negative floats of shape "
                                   f"{lead + (out,)} (not for sequences), got {t.shape}")
            if loss.ignore_index is not None:
                raise ProblemError("ignore_index applies to integer labels only (as in PyTorch)")
            return
        if t.shape != lead:
            raise ProblemError(f"softmax_cross_entropy labels must have shape {lead}, "
                               f"got {t.dtype} {t.shape}")
        live = t if loss.ignore_index is None else t[t != loss.ignore_index]
        if np.any(live < 0) or np.any(live >= out):
            raise ProblemError(f"labels must lie in [0, {out}) (or equal ignore_index), got "
                               f"{t.tolist()}")

    def features(self) -> frozenset[str]:
        """The capability names the problem uses (spec §8.6): those of its layers, loss,
        reduction and batch, and ``loss:soft_targets`` for float cross-entropy targets."""
        soft = self.loss.name == "softmax_cross_entropy" and self.batch.targets.dtype.kind == "f"
        return (self.network.features() | self.loss.features() | self.reduction.features()
                | self.batch.features() | ({SOFT_TARGETS} if soft else set()))

    @property
    def tokens(self) -> np.ndarray | None:
        """T_i, the valid tokens of each sequence (None unless a sequence batch)."""
        return self.batch.token_mask.sum(axis=1).astype(np.float64) if self.batch.sequence \
            else None

    @property
    def counts(self) -> np.ndarray:
        """ω_i, what example i counts in a mean (spec §3.1): w_{y_i} for weighted cross-entropy
        (1 without weights), 0 for an ignored label, summed over the valid tokens of a
        sequence; 1 for every other loss on single examples (so Σ ω_i = N)."""
        b, loss = self.batch, self.loss
        if loss.name == "softmax_cross_entropy" and b.targets.dtype.kind in "iu":
            y = b.targets
            live = np.ones(y.shape, bool) if loss.ignore_index is None else y != loss.ignore_index
            if b.sequence:
                live &= b.token_mask
            w = (np.ones(self.network.out_features) if loss.class_weights is None
                 else np.asarray(loss.class_weights))
            per = np.where(live, w[np.where(live, y, 0)], 0.0)
            return per.sum(axis=1) if b.sequence else per
        if b.sequence:
            return b.token_mask.sum(axis=1).astype(np.float64)
        return np.ones(b.size)

    @property
    def coefficients(self) -> np.ndarray:
        """κ with L = Σ κ_i ℓ_i (spec §1.2, §3.1)."""
        return self.reduction.coefficients(self.counts, self.batch.weights, self.tokens)

    def with_batch(self, batch: Batch) -> Problem:
        return replace(self, batch=batch)

    def with_reduction(
        self, reduction: Reduction | str, weights: np.ndarray | None = None
    ) -> Problem:
        r = Reduction(reduction) if isinstance(reduction, str) else reduction
        batch = self.batch if weights is None else replace(self.batch, weights=weights)
        return replace(self, reduction=r, batch=batch)

    def with_params(self, params: Params) -> Problem:
        return replace(self, params=dict(params))

    def rounded(self, dtype: str) -> Problem:
        """The same problem with every float rounded to ``dtype`` (held in float64).

        A float32 backend sees the rounded values; the float64 reference must be asked about the
        same values, so that input rounding is not counted as backend error (spec §7.1). Data
        a backend holds as arrays is rounded (inputs, float targets, c_i, variances, class
        weights, running statistics); scalars a framework takes as Python floats (label
        smoothing ε, Huber δ, dropout p, the norms' ε) are not: the bound rounds them (§7.1).
        """
        if dtype not in DTYPES:
            raise ProblemError(f"dtype {dtype!r}: choose one of {DTYPES}")
        if dtype == "float64":
            return self

        def r(a: np.ndarray) -> np.ndarray:
            return a.astype(dtype).astype(np.float64)

        b = self.batch
        t = b.targets if b.targets.dtype.kind in "iu" else r(b.targets)
        batch = replace(b, inputs=r(b.inputs), targets=t,
                        weights=None if b.weights is None else r(b.weights),
                        variances=None if b.variances is None else r(b.variances))
        loss = self.loss
        if loss.class_weights is not None:
            loss = replace(loss, class_weights=tuple(r(np.array(loss.class_weights))))
        layers = tuple(la.rounded(dtype) for la in self.network.layers)
        return replace(self, params={k: r(v) for k, v in self.params.items()}, batch=batch,
                       loss=loss, network=Network(layers))

    def __repr__(self) -> str:
        params = ", ".join(f"{k!r}: {array_repr(v)}" for k, v in self.params.items())
        return (
            f"Problem(network={self.network!r}, loss={self.loss!r}, reduction={self.reduction!r}, "
            f"params={{{params}}}, batch={self.batch!r})"
        )
