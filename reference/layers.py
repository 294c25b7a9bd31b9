"""Layers as units, and the network that chains them (spec chapter 1, chapter 4).

Each layer type is a unit that knows its own rules (the contract: ``reference.unit``):
``Dense`` and ``Dropout`` here, ``Activation`` in ``reference.activations``, ``LayerNorm`` and
``BatchNorm`` in ``reference.norms``. ``Network`` chains them and checks that widths agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .activations import Activation
from .batch import Batch
from .capabilities import register
from .norms import BatchNorm, LayerNorm
from .numerics import R, Rounding, gamma
from .ops import dense, dropout, vjp_dense_input
from .types import Array, Grads, ProblemError, Site
from .unit import LayerUnit

__all__ = ["NORMS", "Dense", "Dropout", "Layer", "Network"]

DENSE = register("layer:dense", "Dense(in_features, out_features, bias): z = a Wᵀ + b, "
                 "weight (out, in), bias optional (§1.1)")
DROPOUT = register("layer:dropout", "Dropout(p): a ⊙ m / (1 − p), keep-mask m given as data "
                   "in batch.dropout[k] (§4.5)")


@dataclass(frozen=True)
class Dense(LayerUnit):
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

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {"weight": (self.out_features, self.in_features)}
        if self.bias:
            shapes["bias"] = (self.out_features,)
        return shapes

    def out_width(self, width: int) -> int:
        return self.out_features

    def features(self) -> frozenset[str]:
        return frozenset({DENSE})

    def forward(self, a: Array, site: Site) -> tuple[Array, None]:
        bias = site.param("bias") if self.bias else None
        return dense(a, site.param("weight"), bias), None

    def backward(self, g: Array, a: Array, out: Array, saved: None, site: Site,
                 rule: Callable, need_input: bool) -> tuple[Grads, Array]:
        """W̄, b̄ = rule(z̄, a); ā = z̄ W (``ops.vjp_dense_input``)."""
        w_bar, b_bar = rule(g, a)
        grads = {"weight": w_bar}
        if self.bias:
            grads["bias"] = b_bar
        return grads, (vjp_dense_input(g, site.param("weight", g.dtype)) if need_input else g)

    def bound_forward(self, a: R, site: Site, r: Rounding) -> tuple[R, None]:
        z = r.matmul(a, site.param("weight"))
        if self.bias:
            z = r.add(z, r.exact(site.param("bias")))
        return z, None

    def bound_backward(self, g: R, x: R, saved: None, site: Site, r: Rounding,
                       per_example: Callable, need_input: bool) -> tuple[dict, R]:
        """z̄ aᵀ and z̄ per example (errors of both factors, their product, the rounding, and
        operands rounded in the matrix product, spec §7.4), then ā = z̄ W."""
        u, tiny, op = r.u, r.tiny, r.op_rel
        weight = site.param("weight")
        w = np.abs(weight)
        gv, xv = np.abs(g.v), np.abs(x.v)
        maybe = np.einsum("mo,mi->moi", r.maybe_nonzero(g), r.maybe_nonzero(x))
        e_w = (np.einsum("mo,mi->moi", g.e, xv) + np.einsum("mo,mi->moi", gv, x.e)
               + np.einsum("mo,mi->moi", g.e, x.e)  # see Rounding.mul
               + (u + op) * np.einsum("mo,mi->moi", gv, xv) + tiny * maybe)
        out = {"weight": per_example(e_w, np.einsum("mo,mi->moi", g.v, x.v))}
        if self.bias:  # a bias gradient may be a product with ones: only z̄ is rounded
            out["bias"] = per_example(g.e + 0.5 * op * gv, g.v)
        if not need_input:
            return out, g
        sub = np.where(w < tiny, w, 0.0)  # a subnormal weight read as zero (spec §7.1.2)
        return out, R(g.v @ weight,
                      g.e @ w + (gamma(w.shape[0], r.acc_u) + op) * (gv @ w) + gv @ sub
                      + r.products(r.maybe_nonzero(g), w))


@dataclass(frozen=True)
class Dropout(LayerUnit):
    """Inverted dropout with the keep-mask given as data (spec §4.5): a ⊙ m / (1 − p), where
    m ∈ {0, 1} is ``batch.dropout[k]`` (the shape of a) for this layer's index k."""

    p: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.p < 1.0:
            raise ProblemError(f"{self!r}: p must lie in [0, 1)")

    def __repr__(self) -> str:
        return f"Dropout({self.p!r})"

    def check_data(self, k: int, batch: Batch, lead: tuple[int, ...], width: int) -> None:
        """A 0/1 keep-mask ``batch.dropout[k]`` of the shape of the layer's input."""
        shape = lead + (width,)
        m = None if batch.dropout is None else batch.dropout.get(k)
        if m is None or m.shape != shape or not np.all((m == 0) | (m == 1)):
            raise ProblemError(f"Dropout at layer {k} needs batch.dropout[{k}], a 0/1 "
                               f"keep-mask of shape {shape}")

    def features(self) -> frozenset[str]:
        return frozenset({DROPOUT})

    def forward(self, a: Array, site: Site) -> tuple[Array, None]:
        assert site.keep is not None
        return dropout(a, site.keep.astype(site.dtype), self.p), None

    def backward(self, g: Array, a: Array, out: Array, saved: None, site: Site,
                 rule: Callable, need_input: bool) -> tuple[Grads, Array]:
        """ḡ ⊙ m/(1 − p): the same linear map."""
        assert site.keep is not None
        return {}, dropout(g, site.keep.astype(g.dtype), self.p)

    def bound_forward(self, a: R, site: Site, r: Rounding) -> tuple[R, R]:
        assert site.keep is not None
        c = 1.0 / (1.0 - self.p)
        scale = R(site.keep * c, site.keep * r.u * c)  # m/(1 − p), or (a m)/(1 − p): ≤ 2u
        return r.mul(a, scale), scale

    def bound_backward(self, g: R, x: R, scale: R, site: Site, r: Rounding,
                       per_example: Callable, need_input: bool) -> tuple[dict, R]:
        return {}, r.mul(g, scale)


Layer = Dense | Activation | LayerNorm | BatchNorm | Dropout
NORMS = (LayerNorm, BatchNorm)


@dataclass(frozen=True)
class Network:
    """A sequence of layers; consecutive widths must agree."""

    layers: tuple[Layer, ...]
    _shapes: ClassVar[dict[str, tuple[int, ...]]]

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
        # computed once (the passes ask for it on every call); not a field: eq and repr ignore it
        object.__setattr__(self, "_shapes", {f"{k}.{name}": shape
                                             for k, layer in enumerate(self.layers)
                                             for name, shape in layer.param_shapes().items()})
        for k, layer in enumerate(self.layers):
            if not layer.check_width(self.widths()[k]):
                raise ProblemError(f"{self!r}: layer {k} {layer!r} receives width "
                                   f"{self.widths()[k]}; its features must equal that")

    def dense_layers(self) -> list[tuple[int, Dense]]:
        return [(k, layer) for k, layer in enumerate(self.layers) if isinstance(layer, Dense)]

    def widths(self) -> list[int]:
        """The width of the activation entering each layer."""
        width, out = self.dense_layers()[0][1].in_features, []
        for layer in self.layers:
            out.append(width)
            width = layer.out_width(width)
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
        return any(layer.couples_examples for layer in self.layers)

    def features(self) -> frozenset[str]:
        """The capability names its layers use (spec §8.6)."""
        return frozenset().union(*(layer.unit_features() for layer in self.layers))

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """{``k.name``: shape} of every parameter, in layer order (a fresh dict)."""
        return dict(self._shapes)

    def __repr__(self) -> str:
        return f"Network(({', '.join(map(repr, self.layers))},))"
