"""The problem description: networks, losses, reductions, batches (spec chapter 1).

Everything a backend needs to compute a gradient, and nothing it can misread, as small frozen
dataclasses holding numpy float64 arrays. ``repr(problem)`` is a runnable Python expression (after
``import numpy as np`` and ``from reference import *``): that is the counterexample a failing test
prints.

Shapes (N examples, layer ``k`` a ``Dense(n_in, n_out)``)::

    params[f"{k}.weight"]  (n_out, n_in)     torch.nn.Linear layout: z = a Wᵀ + b
    params[f"{k}.bias"]    (n_out,)          only when Dense.bias is true
    batch.inputs           (N, n_in of the first Dense)
    batch.targets          (N, D) float64    squared_error, D = n_out of the last Dense
                           (N,)   int64      softmax_cross_entropy, labels in [0, C)
    batch.weights          (N,) float64      the c_i of the weighted reductions, else None

Parameter names are those of ``torch.nn.Sequential`` built from the same layer list, so ``k``
counts activations too: ``Dense, relu, Dense`` has parameters ``0.*`` and ``2.*``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

ACTIVATION_NAMES = ("identity", "relu", "tanh", "sigmoid", "softplus", "gelu", "gelu_tanh")
LOSS_NAMES = ("squared_error", "softmax_cross_entropy")
REDUCTION_NAMES = ("mean", "sum", "weighted", "weighted_mean")
DTYPES = ("float64", "float32")



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


Layer = Dense | Activation


@dataclass(frozen=True)
class Network:
    """A sequence of layers; consecutive Dense widths must agree."""

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

    def dense_layers(self) -> list[tuple[int, Dense]]:
        return [(k, layer) for k, layer in enumerate(self.layers) if isinstance(layer, Dense)]

    @property
    def in_features(self) -> int:
        return self.dense_layers()[0][1].in_features

    @property
    def out_features(self) -> int:
        return self.dense_layers()[-1][1].out_features

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        for k, d in self.dense_layers():
            shapes[f"{k}.weight"] = (d.out_features, d.in_features)
            if d.bias:
                shapes[f"{k}.bias"] = (d.out_features,)
        return shapes

    def __repr__(self) -> str:
        return f"Network(({', '.join(map(repr, self.layers))},))"


@dataclass(frozen=True)
class Loss:
    """Per-example loss ℓ_i (spec §1.1).

    squared_error:          ℓ_i = (1/D) Σ_d (f(x_i)_d − y_id)²      (mean over the D outputs)
    softmax_cross_entropy:  ℓ_i = log Σ_k exp f(x_i)_k − f(x_i)_{y_i}
    """

    name: str

    def __post_init__(self) -> None:
        if self.name not in LOSS_NAMES:
            raise ProblemError(f"Loss({self.name!r}): unknown loss; choose one of {LOSS_NAMES}")

    def __repr__(self) -> str:
        return f"Loss({self.name!r})"


@dataclass(frozen=True)
class Reduction:
    """How per-example losses become the batch loss L (spec §1.2).

    mean: L = (1/N) Σ ℓ_i    sum: L = Σ ℓ_i    weighted: L = Σ c_i ℓ_i
    weighted_mean: L = Σ c_i ℓ_i / Σ c_i
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

    def coefficients(self, n: int, weights: np.ndarray | None) -> np.ndarray:
        """The κ_i with L = Σ κ_i ℓ_i, so ∇L = Σ κ_i g_i (spec §1.2)."""
        if self.name == "mean":
            return np.full(n, 1.0 / n)
        if self.name == "sum":
            return np.ones(n)
        assert weights is not None
        if self.name == "weighted":
            return np.asarray(weights, dtype=np.float64)
        return np.asarray(weights, dtype=np.float64) / np.sum(weights)

    def __repr__(self) -> str:
        return f"Reduction({self.name!r})"


def _array_repr(a: np.ndarray) -> str:
    dtype = "np.int64" if a.dtype.kind in "iu" else "np.float64"
    return f"np.array({a.tolist()!r}, dtype={dtype})"


@dataclass(frozen=True, eq=False)
class Batch:
    """N examples: inputs, targets and (for weighted reductions) the weights c_i."""

    inputs: np.ndarray
    targets: np.ndarray
    weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", np.asarray(self.inputs, dtype=np.float64))
        t = np.asarray(self.targets)
        t = t.astype(np.int64) if t.dtype.kind in "iu" else t.astype(np.float64)
        object.__setattr__(self, "targets", t)
        if self.weights is not None:
            object.__setattr__(self, "weights", np.asarray(self.weights, dtype=np.float64))

    @property
    def size(self) -> int:
        return int(self.inputs.shape[0])

    def take(self, index: np.ndarray | list[int]) -> Batch:
        """The examples at ``index``, in that order (repeats allowed)."""
        idx = np.asarray(index, dtype=np.int64)
        w = None if self.weights is None else self.weights[idx]
        return Batch(self.inputs[idx], self.targets[idx], w)

    def __repr__(self) -> str:
        w = "" if self.weights is None else f", weights={_array_repr(self.weights)}"
        return f"Batch(inputs={_array_repr(self.inputs)}, targets={_array_repr(self.targets)}{w})"


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
        b, n = self.batch, self.batch.size
        if n < 1:
            raise ProblemError("a batch needs at least one example (N >= 1)")
        if b.inputs.shape != (n, self.network.in_features):
            raise ProblemError(
                f"inputs have shape {b.inputs.shape}, expected {(n, self.network.in_features)}"
            )
        out = self.network.out_features
        if self.loss.name == "squared_error":
            if b.targets.shape != (n, out) or b.targets.dtype.kind != "f":
                raise ProblemError(
                    f"squared_error targets must be float of shape {(n, out)}, "
                    f"got {b.targets.dtype} {b.targets.shape}"
                )
        else:
            if b.targets.shape != (n,) or b.targets.dtype.kind not in "iu":
                raise ProblemError(
                    f"softmax_cross_entropy targets must be int labels of shape {(n,)}, "
                    f"got {b.targets.dtype} {b.targets.shape}"
                )
            if np.any(b.targets < 0) or np.any(b.targets >= out):
                raise ProblemError(f"labels must lie in [0, {out}), got {b.targets.tolist()}")
        if self.reduction.weighted:
            if b.weights is None or b.weights.shape != (n,):
                raise ProblemError(
                    f"reduction {self.reduction.name!r} needs batch.weights of shape {(n,)}"
                )
            if self.reduction.name == "weighted_mean" and np.sum(b.weights) == 0:
                raise ProblemError("weighted_mean needs Σ c_i ≠ 0")

    @property
    def coefficients(self) -> np.ndarray:
        """κ with L = Σ κ_i ℓ_i (spec §1.2)."""
        return self.reduction.coefficients(self.batch.size, self.batch.weights)

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
        same values, so that input rounding is not counted as backend error (spec §7.1).
        """
        if dtype not in DTYPES:
            raise ProblemError(f"dtype {dtype!r}: choose one of {DTYPES}")
        if dtype == "float64":
            return self

        def r(a: np.ndarray) -> np.ndarray:
            return a.astype(dtype).astype(np.float64)

        b = self.batch
        t = b.targets if b.targets.dtype.kind in "iu" else r(b.targets)
        batch = Batch(r(b.inputs), t, None if b.weights is None else r(b.weights))
        return replace(self, params={k: r(v) for k, v in self.params.items()}, batch=batch)

    def __repr__(self) -> str:
        params = ", ".join(f"{k!r}: {_array_repr(v)}" for k, v in self.params.items())
        return (
            f"Problem(network={self.network!r}, loss={self.loss!r}, reduction={self.reduction!r}, "
            f"params={{{params}}}, batch={self.batch!r})"
        )
