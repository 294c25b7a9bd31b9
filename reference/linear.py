"""Error bounds of the linear maps the structured layers are made of (spec chapter 7 applied in
chapter 9): a product-sum of two computed quantities, an outer product summed per example, and
a cotangent through an exact matrix. Each rule is the one ``Dense`` states (spec §7.1, §7.4)
written for an arbitrary contraction, so the layers of chapter 9 share one statement of it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .numerics import R, Rounding, gamma

__all__ = ["contract_bound", "input_bound", "outer_bound"]


def contract_bound(spec: str, x: R, y: R, n: int, r: Rounding) -> R:
    """``np.einsum(spec, x, y)`` summing n terms of products of two computed quantities (an
    attention score q·k, a context P v): each product errs by |y|e_x + |x|e_y + e_x e_y and its
    rounding (operands rounded first under TF32/bf16: ``op_rel``), the sum by γ_n Σ|x||y|, and
    each of the ≤ 2n − 1 possibly non-zero products and additions may underflow (§7.1.1)."""
    ax, ay = np.abs(x.v), np.abs(y.v)
    shadow = np.einsum(spec, ax, ay)
    k = np.einsum(spec, r.maybe_nonzero(x).astype(float), r.maybe_nonzero(y).astype(float))
    e = (np.einsum(spec, x.e, ay) + np.einsum(spec, ax, y.e) + np.einsum(spec, x.e, y.e)
         + (gamma(n, r.acc_u) + r.op_rel) * shadow + r.tiny * np.maximum(2 * k - 1, 0))
    return R(np.einsum(spec, x.v, y.v), e)


def outer_bound(g: R, x: R, r: Rounding, per_example: Callable) -> tuple:
    """A parameter gradient z̄ aᵀ per row (rows: examples or tokens), summed per example by
    ``per_example`` (which adds γ of the rows summed): ``Dense``'s rule (spec §7.4)."""
    u, tiny, op = r.u, r.tiny, r.op_rel
    gv, xv = np.abs(g.v), np.abs(x.v)
    maybe = np.einsum("mo,mi->moi", r.maybe_nonzero(g), r.maybe_nonzero(x))
    e_w = (np.einsum("mo,mi->moi", g.e, xv) + np.einsum("mo,mi->moi", gv, x.e)
           + np.einsum("mo,mi->moi", g.e, x.e)
           + (u + op) * np.einsum("mo,mi->moi", gv, xv) + tiny * maybe)
    return per_example(e_w, np.einsum("mo,mi->moi", g.v, x.v))


def input_bound(g: R, weight: np.ndarray, r: Rounding) -> R:
    """ā = z̄ W for an exact W (n_out, n_in): ``Dense``'s input cotangent rule (spec §7.4); a
    subnormal entry of W may be read as zero (§7.1.2)."""
    w = np.abs(weight)
    gv = np.abs(g.v)
    sub = np.where(w < r.tiny, w, 0.0)
    return R(g.v @ weight,
             g.e @ w + (gamma(w.shape[0], r.acc_u) + r.op_rel) * (gv @ w) + gv @ sub
             + r.products(r.maybe_nonzero(g), w))
