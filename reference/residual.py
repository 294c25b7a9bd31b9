"""``Residual``: a skip connection x + block(x) around a block of layers (spec §9.4).

The block's layers are units of their own; their parameters are named as PyTorch names those of
``Residual(block=nn.Sequential(...))`` at index k: ``k.block.j.weight``. The backward pass adds
the cotangent through the block to the one that skips it: ā = z̄ + block'(x)ᵀ z̄.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .batch import Batch
from .capabilities import register
from .numerics import R, Rounding
from .types import Array, Grads, ProblemError, Site
from .unit import LayerUnit

__all__ = ["Residual"]

RESIDUAL = register("layer:residual", "Residual(block): x + block(x) around a block of layers "
                    "(spec §9.4)")


@dataclass(frozen=True)
class Residual(LayerUnit):
    """x + block(x); the block keeps the width (its layers: any that need no data of their own
    but an attention's mask, and no train-mode BatchNorm)."""

    block: tuple[Any, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "block", tuple(self.block))
        if not self.block:
            raise ProblemError("Residual needs a block of at least one layer")
        for layer in self.block:
            name = type(layer).__name__
            if name in ("Dropout", "Embedding") or getattr(layer, "couples_examples", False):
                raise ProblemError(f"Residual: {layer!r} cannot sit in a residual block here")

    def __repr__(self) -> str:
        return f"Residual(({', '.join(map(repr, self.block))},))"

    def features(self) -> frozenset[str]:
        return frozenset({RESIDUAL}).union(*(layer.unit_features() for layer in self.block))

    @property
    def in_width(self) -> int | None:
        for layer in self.block:
            w = getattr(layer, "in_width", None)
            if w is not None:
                return w
        return None

    def _widths(self, width: int) -> list[int]:
        out = []
        for layer in self.block:
            out.append(width)
            width = layer.out_width(width)
        return out + [width]

    def check_width(self, width: int) -> bool:
        ws = self._widths(width)
        return ws[-1] == width and all(la.check_width(w) for la, w in zip(self.block, ws,
                                                                          strict=False))

    @property
    def takes_sequences(self) -> bool:
        return all(layer.takes_sequences for layer in self.block)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {f"block.{j}.{name}": shape for j, layer in enumerate(self.block)
                for name, shape in layer.param_shapes().items()}

    @property
    def data_rows(self) -> bool:
        return all(layer.data_rows for layer in self.block)

    def site_data(self, k: int, batch: Batch) -> np.ndarray | None:
        """The first data a layer of the block asks for (an attention's token mask)."""
        for layer in self.block:
            data = layer.site_data(k, batch)
            if data is not None:
                return data
        return None

    def check_data(self, k: int, batch: Batch, lead: tuple[int, ...], width: int) -> None:
        for layer, w in zip(self.block, self._widths(width), strict=False):
            layer.check_data(k, batch, lead, w)

    def rounded(self, dtype: str) -> Residual:
        return Residual(tuple(layer.rounded(dtype) for layer in self.block))

    def _site(self, j: int, site: Site) -> Site:
        return Site(f"{site.k}.block.{j}", site.params, site.dtype, site.keep)  # type: ignore

    def forward(self, a: Array, site: Site) -> tuple[Array, Any]:
        x, trace = a, []
        for j, layer in enumerate(self.block):
            y, kept = layer.forward(x, self._site(j, site))
            trace.append((x, y, kept))
            x = y
        return a + x, trace

    def backward(self, g: Array, a: Array, out: Array, trace: Any, site: Site,
                 rule: Callable, need_input: bool) -> tuple[Grads, Array]:
        grads: Grads = {}
        h = g
        for j in range(len(self.block) - 1, -1, -1):
            x, y, kept = trace[j]
            own, h = self.block[j].backward(h, x, y, kept, self._site(j, site), rule,
                                            j > 0 or need_input)
            grads.update({f"block.{j}.{name}": v for name, v in own.items()})
        return grads, (g + h if need_input else g)

    def bound_forward(self, a: R, site: Site, r: Rounding) -> tuple[R, Any]:
        x, trace = a, []
        for j, layer in enumerate(self.block):
            y, kept = layer.bound_forward(x, self._site(j, site), r)
            trace.append((x, kept))
            x = y
        return r.add(a, x), trace

    def bound_backward(self, g: R, x: R, trace: Any, site: Site, r: Rounding,
                       per_example: Callable, need_input: bool) -> tuple[dict, R]:
        out: dict = {}
        h = g
        for j in range(len(self.block) - 1, -1, -1):
            xj, kept = trace[j]
            own, h = self.block[j].bound_backward(h, xj, kept, self._site(j, site), r,
                                                  per_example, True)
            out.update({f"block.{j}.{name}": v for name, v in own.items()})
        return out, (r.add(g, h) if need_input else g)
