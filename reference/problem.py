"""The problem description: networks, losses, reductions, batches (spec chapter 1).

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

See ``Batch`` for masks, variances and dropout masks.

Parameter names are those of ``torch.nn.Sequential`` built from the same layer list, so ``k``
counts activations too: ``Dense, relu, Dense`` has parameters ``0.*`` and ``2.*``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

ACTIVATION_NAMES = ("identity", "relu", "tanh", "sigmoid", "softplus", "gelu", "gelu_tanh",
                    "leaky_relu", "elu")
LOSS_NAMES = ("squared_error", "softmax_cross_entropy", "bce_with_logits", "huber",
              "gaussian_nll")
REDUCTION_NAMES = ("mean", "sum", "weighted", "weighted_mean", "sequence_mean")
DTYPES = ("float64", "float32")
CORE_ACTIVATIONS = ACTIVATION_NAMES[:7]
CORE_LOSSES = LOSS_NAMES[:2]
CORE_REDUCTIONS = REDUCTION_NAMES[:4]
"""The chapter-2 vocabulary (spec 0.1.0): what the default strategies draw. Chapters 3 and 4 opt
in to the rest."""
ELEMENTWISE_LOSSES = ("squared_error", "bce_with_logits", "huber", "gaussian_nll")
"""Losses applied to each of the D outputs and averaged over them: targets are float (·, D)."""



class ProblemError(ValueError):
    """A problem description that contradicts itself (shapes, names, label ranges)."""


@dataclass(frozen=True)
class Dense:
    """Affine layer z = a Wᵀ + b with W of shape (out_features, in_features)."""

    in_features: int
    out_features: int
    bias: bool = True

    def __post_init__(self) -> None:
        if self.in_features < 1 or self.out_features < 1:
            raise ProblemError(f"{self!r}: widths must be >= 1")

    def __repr__(self) -> str:
        extra = "" if self.bias else ", bias=False"
        return f"Dense({self.in_features}, {self.out_features}{extra})"


@dataclass(frozen=True)
class Activation:
    """Elementwise activation σ, one of ACTIVATION_NAMES (see reference.ops)."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in ACTIVATION_NAMES:
            raise ProblemError(
                f"Activation({self.name!r}): unknown activation; choose one of {ACTIVATION_NAMES}"
            )

    def __repr__(self) -> str:
        return f"Activation({self.name!r})"


NORM_EPS = 1e-5
"""ε of LayerNorm and BatchNorm: the default of ``torch.nn.LayerNorm``/``BatchNorm1d``."""


@dataclass(frozen=True)
class LayerNorm:
    """Per-example normalisation over the features (spec §4.1), with affine γ ⊙ x̂ + β:
    x̂ = (a − μ)/√(v + ε), μ and v (biased) the mean and variance of a's own features.
    Parameters ``k.weight`` (γ) and ``k.bias`` (β), shape (features,)."""

    features: int

    def __post_init__(self) -> None:
        if self.features < 1:
            raise ProblemError(f"{self!r}: features must be >= 1")

    def __repr__(self) -> str:
        return f"LayerNorm({self.features})"


@dataclass(frozen=True)
class BatchNorm:
    """Normalisation of each feature over the batch (spec §4.2–§4.4), affine γ ⊙ x̂ + β.

    training=True: μ and v (biased) are the batch's own statistics — the examples are coupled.
    training=False: μ, v are the given running statistics — per-example again.
    Parameters ``k.weight`` (γ) and ``k.bias`` (β), shape (features,); running statistics are
    data, not parameters (``torch.nn.BatchNorm1d`` buffers)."""

    features: int
    training: bool = True
    running_mean: tuple[float, ...] | None = None
    running_var: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.features < 1:
            raise ProblemError(f"{self!r}: features must be >= 1")
        for name in ("running_mean", "running_var"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, tuple(float(x) for x in v))
        if not self.training:
            rm, rv = self.running_mean, self.running_var
            if rm is None or rv is None or len(rm) != self.features or len(rv) != self.features:
                raise ProblemError(f"{self!r}: eval mode needs running_mean and running_var of "
                                   f"length {self.features}")
            if min(rv) <= 0:
                raise ProblemError(f"{self!r}: running_var must be > 0")

    def __repr__(self) -> str:
        if self.training:
            return f"BatchNorm({self.features})"
        return (f"BatchNorm({self.features}, training=False, running_mean={self.running_mean!r}, "
                f"running_var={self.running_var!r})")


@dataclass(frozen=True)
class Dropout:
    """Inverted dropout with the keep-mask given as data (spec §4.5): a ⊙ m / (1 − p), where
    m ∈ {0, 1} is ``batch.dropout[k]`` (the shape of a) for this layer's index k."""

    p: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.p < 1.0:
            raise ProblemError(f"{self!r}: p must lie in [0, 1)")

    def __repr__(self) -> str:
        return f"Dropout({self.p!r})"


Layer = Dense | Activation | LayerNorm | BatchNorm | Dropout
NORMS = (LayerNorm, BatchNorm)


@dataclass(frozen=True)
class Network:
    """A sequence of layers; consecutive widths must agree."""

    layers: tuple[Layer, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        dense = self.dense_layers()
        if not dense:
            raise ProblemError(f"{self!r}: a network needs at least one Dense layer")
        for (_, a), (_, b) in zip(dense, dense[1:], strict=False):
            if a.out_features != b.in_features:
                raise ProblemError(
                    f"{self!r}: {a!r} feeds {b!r}; out_features must equal the next in_features"
                )
        for k, layer in enumerate(self.layers):
            if isinstance(layer, NORMS) and layer.features != self.widths()[k]:
                raise ProblemError(f"{self!r}: layer {k} {layer!r} receives width "
                                   f"{self.widths()[k]}; its features must equal that")

    def dense_layers(self) -> list[tuple[int, Dense]]:
        return [(k, layer) for k, layer in enumerate(self.layers) if isinstance(layer, Dense)]

    def widths(self) -> list[int]:
        """The width of the activation entering each layer."""
        width, out = self.dense_layers()[0][1].in_features, []
        for layer in self.layers:
            out.append(width)
            if isinstance(layer, Dense):
                width = layer.out_features
        return out

    @property
    def in_features(self) -> int:
        return self.dense_layers()[0][1].in_features

    @property
    def out_features(self) -> int:
        return self.dense_layers()[-1][1].out_features

    def layers_of(self, kind: type | tuple[type, ...]) -> list[int]:
        return [k for k, layer in enumerate(self.layers) if isinstance(layer, kind)]

    @property
    def couples_examples(self) -> bool:
        """True when a train-mode BatchNorm makes ℓ_i depend on the other examples (§4.2)."""
        return any(isinstance(layer, BatchNorm) and layer.training for layer in self.layers)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        for k, layer in enumerate(self.layers):
            if isinstance(layer, Dense):
                shapes[f"{k}.weight"] = (layer.out_features, layer.in_features)
                if layer.bias:
                    shapes[f"{k}.bias"] = (layer.out_features,)
            elif isinstance(layer, NORMS):
                shapes[f"{k}.weight"] = (layer.features,)
                shapes[f"{k}.bias"] = (layer.features,)
        return shapes

    def __repr__(self) -> str:
        return f"Network(({', '.join(map(repr, self.layers))},))"


@dataclass(frozen=True)
class Loss:
    """Per-example loss ℓ_i (spec §1.1, chapter 3): the framework's ``reduction="none"`` value.

    Elementwise losses act on each of the D outputs (residual r = f − y) and are averaged over D:
      squared_error    ℓ = (1/D) Σ_d r_d²
      bce_with_logits  ℓ = (1/D) Σ_d max(f_d, 0) − f_d y_d + log(1 + e^{−|f_d|}),  y ∈ [0, 1]
      huber            ℓ = (1/D) Σ_d h_δ(r_d),  h_δ(r) = ½r² (|r| ≤ δ), δ(|r| − ½δ) otherwise
      gaussian_nll     ℓ = (1/D) Σ_d ½(log v_d + r_d²/v_d),  variances v from ``batch.variances``
    softmax_cross_entropy, with class weights w (default 1), label smoothing ε and targets q:
      ℓ_i = −Σ_k w_k q̃_ik log softmax(f_i)_k,   q̃_i = (1 − ε) q_i + ε/C
    where q_i = e_{y_i} for an integer label (ℓ_i = 0 when y_i = ignore_index) or the given
    probability row (soft targets). For sequences ℓ_i is the sum over the valid tokens (§3.7).
    """

    name: str
    class_weights: tuple[float, ...] | None = None
    ignore_index: int | None = None
    label_smoothing: float = 0.0
    delta: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in LOSS_NAMES:
            raise ProblemError(f"Loss({self.name!r}): unknown loss; choose one of {LOSS_NAMES}")
        ce = self.name == "softmax_cross_entropy"
        if not ce and (self.class_weights is not None or self.ignore_index is not None
                       or self.label_smoothing != 0.0):
            raise ProblemError(f"{self!r}: class_weights, ignore_index and label_smoothing "
                               f"belong to softmax_cross_entropy only")
        if self.name != "huber" and self.delta != 1.0:
            raise ProblemError(f"{self!r}: delta belongs to huber only")
        if self.class_weights is not None:
            object.__setattr__(self, "class_weights", tuple(float(w) for w in self.class_weights))
            if min(self.class_weights) < 0:
                raise ProblemError(f"{self!r}: class weights must be >= 0")
        if not 0.0 <= self.label_smoothing <= 1.0:
            raise ProblemError(f"{self!r}: label_smoothing must lie in [0, 1]")
        if not self.delta > 0:
            raise ProblemError(f"{self!r}: delta must be > 0")

    @property
    def elementwise(self) -> bool:
        return self.name in ELEMENTWISE_LOSSES

    def __repr__(self) -> str:
        extra = ""
        if self.class_weights is not None:
            extra += f", class_weights={self.class_weights!r}"
        if self.ignore_index is not None:
            extra += f", ignore_index={self.ignore_index!r}"
        if self.label_smoothing:
            extra += f", label_smoothing={self.label_smoothing!r}"
        if self.delta != 1.0:
            extra += f", delta={self.delta!r}"
        return f"Loss({self.name!r}{extra})"


@dataclass(frozen=True)
class Reduction:
    """How per-example losses become the batch loss L = Σ κ_i ℓ_i (spec §1.2, §3.1).

    mean: L = Σ ℓ_i / Σ ω_i, ω_i the count of example i (``Problem.counts``: 1, or w_{y_i} for
    weighted cross-entropy, 0 for an ignored label, the valid tokens of a sequence)
    sum: L = Σ ℓ_i    weighted: L = Σ c_i ℓ_i    weighted_mean: L = Σ c_i ℓ_i / Σ c_i
    sequence_mean: L = (1/N) Σ_i ℓ_i / T_i (sequences; T_i valid tokens of sequence i)
    """

    name: str

    def __post_init__(self) -> None:
        if self.name not in REDUCTION_NAMES:
            raise ProblemError(
                f"Reduction({self.name!r}): unknown reduction; choose one of {REDUCTION_NAMES}"
            )

    @property
    def weighted(self) -> bool:
        return self.name in ("weighted", "weighted_mean")

    def coefficients(self, counts: np.ndarray, weights: np.ndarray | None,
                     tokens: np.ndarray | None = None) -> np.ndarray:
        """The κ_i with L = Σ κ_i ℓ_i, so ∇L = Σ κ_i g_i (spec §1.2, §3.1).

        ``counts`` are the ω_i; a mean over Σ ω_i = 0 (every label ignored) is defined as
        κ = 0: L = 0 and ∇L = 0 (spec §3.4). ``tokens`` are the T_i of a sequence batch."""
        n = len(counts)
        if self.name == "mean":
            total = float(np.sum(counts))
            return np.full(n, 1.0 / total) if total != 0 else np.zeros(n)
        if self.name == "sum":
            return np.ones(n)
        if self.name == "sequence_mean":
            assert tokens is not None
            return 1.0 / (n * tokens)
        assert weights is not None
        if self.name == "weighted":
            return np.asarray(weights, dtype=np.float64)
        return np.asarray(weights, dtype=np.float64) / np.sum(weights)

    def __repr__(self) -> str:
        return f"Reduction({self.name!r})"


def _array_repr(a: np.ndarray) -> str:
    kind = {"i": "np.int64", "u": "np.int64", "b": "bool"}.get(a.dtype.kind, "np.float64")
    return f"np.array({a.tolist()!r}, dtype={kind})"


@dataclass(frozen=True, eq=False)
class Batch:
    """N examples: inputs, targets, and the data some problems need.

    inputs      (N, d) or, for sequences, (N, T, d)
    targets     int labels (N,) / (N, T), or float (N, D) / (N, T, D) (soft targets: (N, C))
    weights     (N,) the c_i of the weighted reductions
    mask        (N, T) bool, sequences only: which tokens count (default: all)
    variances   float, the shape of targets: the v of gaussian_nll
    dropout     {layer index k: keep-mask m ∈ {0, 1} of the shape of layer k's input}
    """

    inputs: np.ndarray
    targets: np.ndarray
    weights: np.ndarray | None = None
    mask: np.ndarray | None = None
    variances: np.ndarray | None = None
    dropout: Mapping[int, np.ndarray] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", np.asarray(self.inputs, dtype=np.float64))
        t = np.asarray(self.targets)
        t = t.astype(np.int64) if t.dtype.kind in "iu" else t.astype(np.float64)
        object.__setattr__(self, "targets", t)
        for name, dt in (("weights", np.float64), ("mask", bool), ("variances", np.float64)):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=dt))
        if self.dropout is not None:
            object.__setattr__(self, "dropout", {int(k): np.asarray(v, dtype=np.float64)
                                                 for k, v in self.dropout.items()})

    @property
    def size(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def sequence(self) -> bool:
        """True for (N, T, d) inputs: one prediction per token (spec §3.7)."""
        return self.inputs.ndim == 3

    @property
    def token_mask(self) -> np.ndarray:
        """(N, T) bool: the given mask, or every token valid."""
        if self.mask is not None:
            return self.mask
        return np.ones(self.inputs.shape[:2], dtype=bool)

    def take(self, index: np.ndarray | list[int]) -> Batch:
        """The examples at ``index``, in that order (repeats allowed)."""
        idx = np.asarray(index, dtype=np.int64)

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        drop = None if self.dropout is None else {k: v[idx] for k, v in self.dropout.items()}
        return Batch(self.inputs[idx], self.targets[idx], pick(self.weights), pick(self.mask),
                     pick(self.variances), drop)

    def __repr__(self) -> str:
        out = f"Batch(inputs={_array_repr(self.inputs)}, targets={_array_repr(self.targets)}"
        for name in ("weights", "mask", "variances"):
            if getattr(self, name) is not None:
                out += f", {name}={_array_repr(getattr(self, name))}"
        if self.dropout is not None:
            masks = ", ".join(f"{k}: {_array_repr(v)}" for k, v in self.dropout.items())
            out += f", dropout={{{masks}}}"
        return out + ")"


Params = Mapping[str, np.ndarray]


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
            if self.network.layers_of(BatchNorm):
                raise ProblemError("BatchNorm is not defined here for sequence batches")
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
        for k in self.network.layers_of(Dropout):
            shape = lead + (self.network.widths()[k],)
            m = None if b.dropout is None else b.dropout.get(k)
            if m is None or m.shape != shape or not np.all((m == 0) | (m == 1)):
                raise ProblemError(f"Dropout at layer {k} needs batch.dropout[{k}], a 0/1 "
                                   f"keep-mask of shape {shape}")
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
        layers = tuple(
            replace(la, running_mean=tuple(r(np.array(la.running_mean))),
                    running_var=tuple(r(np.array(la.running_var))))
            if isinstance(la, BatchNorm) and not la.training else la
            for la in self.network.layers)
        return replace(self, params={k: r(v) for k, v in self.params.items()}, batch=batch,
                       loss=loss, network=Network(layers))

    def __repr__(self) -> str:
        params = ", ".join(f"{k!r}: {_array_repr(v)}" for k, v in self.params.items())
        return (
            f"Problem(network={self.network!r}, loss={self.loss!r}, reduction={self.reduction!r}, "
            f"params={{{params}}}, batch={self.batch!r})"
        )
