"""``Embedding``: a lookup table indexed by the batch's integer inputs (spec §9.1).

Forward: row ``idx`` of W, for every index of the batch ((N,) or, for sequences, (N, T)).
Backward: W̄_i = Σ_t onehot(idx_it) ⊗ z̄_it, a scatter-ADD of the cotangent rows into W's rows:
an index repeated within one example or across examples adds; the ``padding_idx`` row gets no
gradient (as ``torch.nn.Embedding``). Written as the generic parameter rule applied to one-hot
rows (a product with 1 or 0 is exact), so per-example and batch gradients are the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .batch import Batch
from .capabilities import register
from .numerics import R, Rounding
from .types import Array, Grads, ProblemError, Site
from .unit import LayerUnit

__all__ = ["INDEX_WIDTH", "Embedding"]

EMBEDDING = register("layer:embedding", "Embedding(num, dim, padding_idx): rows of W looked up "
                     "by integer inputs; scatter-add gradient (spec §9.1)")
INDEX_WIDTH = 0
"""The width ``Network.widths`` gives the input of an ``Embedding``: indices, no feature axis."""


@dataclass(frozen=True)
class Embedding(LayerUnit):
    """Lookup table ``weight`` (num_embeddings, embedding_dim); only as a network's first layer,
    on integer inputs in [0, num_embeddings)."""

    num_embeddings: int
    embedding_dim: int
    padding_idx: int | None = None

    def __post_init__(self) -> None:
        if self.num_embeddings < 1 or self.embedding_dim < 1:
            raise ProblemError(f"{self!r}: num_embeddings and embedding_dim must be >= 1")
        if self.padding_idx is not None and not 0 <= self.padding_idx < self.num_embeddings:
            raise ProblemError(f"{self!r}: padding_idx must lie in [0, num_embeddings)")

    def __repr__(self) -> str:
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"Embedding({self.num_embeddings}, {self.embedding_dim}{pad})"

    def features(self) -> frozenset[str]:
        return frozenset({EMBEDDING})

    @property
    def in_width(self) -> int:
        return INDEX_WIDTH

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.num_embeddings, self.embedding_dim)}

    def out_width(self, width: int) -> int:
        return self.embedding_dim

    def check_width(self, width: int) -> bool:
        return width == INDEX_WIDTH  # only first: every other layer receives features

    def check_data(self, k: int, batch: Batch, lead: tuple[int, ...], width: int) -> None:
        x = batch.inputs
        if not batch.indices:
            raise ProblemError(f"Embedding at layer {k} needs integer inputs (indices) of shape "
                               f"(N,) or (N, T), got {x.dtype} {x.shape}")
        if np.any(x < 0) or np.any(x >= self.num_embeddings):
            raise ProblemError(f"Embedding at layer {k}: indices must lie in "
                               f"[0, {self.num_embeddings}), got {x.tolist()}")

    def _onehot(self, idx: Array, dtype: np.dtype) -> Array:
        return (idx[..., None] == np.arange(self.num_embeddings)).astype(dtype)

    def _no_padding(self, w_bar: Array) -> Array:
        if self.padding_idx is not None:
            w_bar = w_bar.copy()
            w_bar[..., self.padding_idx, :] = 0.0
        return w_bar

    def forward(self, a: Array, site: Site) -> tuple[Array, None]:
        return site.param("weight")[a.astype(np.int64)], None

    def backward(self, g: Array, a: Array, out: Array, saved: None, site: Site,
                 rule: Callable, need_input: bool) -> tuple[Grads, Array]:
        """W̄ = rule(z̄, onehot(idx))ᵀ: Σ_t z̄_t onehot(idx_t)ᵀ, i.e. the scatter-add."""
        w_bar, _ = rule(g, self._onehot(a.astype(np.int64), g.dtype))
        return {"weight": self._no_padding(np.swapaxes(w_bar, -1, -2))}, g

    def bound_forward(self, a: R, site: Site, r: Rounding) -> tuple[R, None]:
        w = r.exact(site.param("weight"))  # a gather: exact (a subnormal may read as zero)
        idx = a.v.astype(np.int64)
        return R(w.v[idx], w.e[idx]), None

    def bound_backward(self, g: R, x: R, saved: None, site: Site, r: Rounding,
                       per_example: Callable, need_input: bool) -> tuple[dict, R]:
        """Per row onehot ⊗ z̄ (exact products; z̄ rounded to the operand format under
        TF32/bf16 if a backend writes the scatter as a one-hot product), summed per example
        with γ of the rows (``per_example``)."""
        hot = self._onehot(x.v.astype(np.int64), np.dtype(np.float64))
        e = np.einsum("mi,mo->mio", hot, g.e + r.op_rel * np.abs(g.v))
        v = np.einsum("mi,mo->mio", hot, g.v)
        e_w, shadow = per_example(self._no_padding(e), self._no_padding(v))
        return {"weight": (e_w, shadow)}, g
