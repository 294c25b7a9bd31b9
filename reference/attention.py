"""``SelfAttention``: multi-head scaled dot-product self-attention over the token axis of a
sequence batch, with the batch's token mask as key-padding mask (spec §9.3).

Parameters as ``torch.nn.MultiheadAttention`` names them: ``in_proj_weight`` (3d, d) and
``in_proj_bias`` (3d,) give q, k, v = x W_qᵀ + b_q, …; per head h (d_h = d/H),
S = q kᵀ/√d_h, P = softmax over the keys j with mask[n, j], C = P v, heads concatenated, and
``out_proj`` (d, d) gives z = C W_oᵀ + b_o. A query whose every key is masked (an example whose
every token is masked) has P = 0 and C = 0, so z = b_o: the zero-context convention (§9.3.2).
Its backward is the chain of these products; the softmax's VJP is S̄ = P ⊙ (P̄ − Σ_j P̄ ⊙ P),
zero wherever P is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .batch import Batch
from .capabilities import register
from .linear import contract_bound, input_bound, outer_bound
from .numerics import R, Rounding
from .ops import dense, vjp_dense_input
from .types import Array, Grads, ProblemError, Site
from .unit import LayerUnit

__all__ = ["SCALE_ROUNDINGS", "SelfAttention"]

ATTENTION = register("layer:attention", "SelfAttention(dim, heads): scaled dot-product "
                     "self-attention over tokens, key-padding mask = token mask (spec §9.3)")

SCALE_ROUNDINGS = 4
"""Relative error, in units of u, allowed the scaling by 1/√d_h: the constant rounded, and up to
three roundings in applying it (PyTorch's math kernel scales q and k by √(1/√d_h) each; JAX
scales the scores once) (spec §9.3.3)."""


@dataclass(frozen=True)
class SelfAttention(LayerUnit):
    """Self-attention of width ``dim`` with ``heads`` heads (``dim`` divisible by ``heads``)."""

    dim: int
    heads: int = 1

    def __post_init__(self) -> None:
        if self.dim < 1 or self.heads < 1 or self.dim % self.heads:
            raise ProblemError(f"{self!r}: dim must be >= 1 and divisible by heads >= 1")

    def __repr__(self) -> str:
        return f"SelfAttention({self.dim}, heads={self.heads})"

    def features(self) -> frozenset[str]:
        return frozenset({ATTENTION})

    @property
    def in_width(self) -> int:
        return self.dim

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.dim // self.heads)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        d = self.dim
        return {"in_proj_weight": (3 * d, d), "in_proj_bias": (3 * d,),
                "out_proj.weight": (d, d), "out_proj.bias": (d,)}

    def check_width(self, width: int) -> bool:
        return width == self.dim

    @property
    def data_rows(self) -> bool:
        return False

    def site_data(self, k: int, batch: Batch) -> np.ndarray | None:
        """The key-padding mask: the batch's token mask (N, T)."""
        return batch.token_mask if batch.sequence else None

    def check_data(self, k: int, batch: Batch, lead: tuple[int, ...], width: int) -> None:
        if len(lead) != 2:
            raise ProblemError(f"SelfAttention at layer {k} attends over tokens: it needs a "
                               f"sequence batch (inputs (N, T, d) or indices (N, T))")

    def _heads(self, a: Array) -> Array:
        """(N, T, d) → (N, H, T, d_h)."""
        n, t, _ = a.shape
        return a.reshape(n, t, self.heads, -1).transpose(0, 2, 1, 3)

    def _merge(self, a: Array) -> Array:
        n, _, t, _ = a.shape
        return a.transpose(0, 2, 1, 3).reshape(n, t, self.dim)

    def forward(self, a: Array, site: Site) -> tuple[Array, Any]:
        assert site.keep is not None
        qkv = dense(a, site.param("in_proj_weight"), site.param("in_proj_bias"))
        q, k, v = (self._heads(part) for part in np.split(qkv, 3, axis=-1))
        valid = site.keep.astype(bool)[:, None, None, :]
        s = np.einsum("nhtd,nhsd->nhts", q, k) * a.dtype.type(self.scale)
        top = np.max(np.where(valid, s, -np.inf), axis=-1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        e = np.where(valid, np.exp(np.where(valid, s - top, 0.0)), 0.0)
        z = e.sum(axis=-1, keepdims=True)
        p = (e / np.where(z > 0, z, 1.0)).astype(a.dtype)  # all keys masked: P = 0 (§9.3.2)
        c = self._merge(np.einsum("nhts,nhsd->nhtd", p, v))
        out = dense(c, site.param("out_proj.weight"), site.param("out_proj.bias"))
        return out, (q, k, v, p, c)

    def backward(self, g: Array, a: Array, out: Array, saved: Any, site: Site,
                 rule: Callable, need_input: bool) -> tuple[Grads, Array]:
        q, k, v, p, c = saved
        scale = g.dtype.type(self.scale)
        wo_bar, bo_bar = rule(g, c)
        c_bar = self._heads(vjp_dense_input(g, site.param("out_proj.weight", g.dtype)))
        p_bar = np.einsum("nhtd,nhsd->nhts", c_bar, v)
        v_bar = np.einsum("nhts,nhtd->nhsd", p, c_bar)
        s_bar = p * (p_bar - np.sum(p_bar * p, axis=-1, keepdims=True)) * scale
        q_bar = np.einsum("nhts,nhsd->nhtd", s_bar, k)
        k_bar = np.einsum("nhts,nhtd->nhsd", s_bar, q)
        qkv_bar = np.concatenate([self._merge(q_bar), self._merge(k_bar), self._merge(v_bar)],
                                 axis=-1)
        wi_bar, bi_bar = rule(qkv_bar, a)
        grads = {"in_proj_weight": wi_bar, "in_proj_bias": bi_bar,
                 "out_proj.weight": wo_bar, "out_proj.bias": bo_bar}
        if not need_input:
            return grads, g
        return grads, vjp_dense_input(qkv_bar, site.param("in_proj_weight", g.dtype))

    # -- the bound (rows in, rows out; the mask gives (N, T)) -------------------------------------
    def _r_heads(self, x: R, n: int) -> R:
        return R(self._heads(x.v.reshape(n, -1, x.v.shape[-1])),
                 self._heads(x.e.reshape(n, -1, x.e.shape[-1])))

    def _r_rows(self, x: R) -> R:
        return R(self._merge(x.v).reshape(-1, self.dim), self._merge(x.e).reshape(-1, self.dim))

    def _r_scale(self, x: R, r: Rounding) -> R:
        return R(x.v * self.scale, x.e * self.scale + SCALE_ROUNDINGS * r.u * np.abs(x.v)
                 * self.scale + r.tiny * r.maybe_nonzero(x))

    def bound_forward(self, a: R, site: Site, r: Rounding) -> tuple[R, Any]:
        assert site.keep is not None
        mask = site.keep.astype(bool)
        n, t = mask.shape
        qkv = r.add(r.matmul(a, site.param("in_proj_weight")),
                    r.exact(site.param("in_proj_bias")))
        d = self.dim
        q, k, v = (self._r_heads(R(qkv.v[:, i * d:(i + 1) * d], qkv.e[:, i * d:(i + 1) * d]), n)
                   for i in range(3))
        s = self._r_scale(contract_bound("nhtd,nhsd->nhts", q, k, d // self.heads, r), r)
        valid = mask[:, None, None, :]
        top = np.max(np.where(valid, s.v, -np.inf), axis=-1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        top_e = np.max(np.where(valid, s.e, 0.0), axis=-1, keepdims=True)
        shifted = r.sub(s, R(top, top_e))
        ex = r.exp(R(np.where(valid, shifted.v, 0.0), shifted.e))
        ex = R(np.where(valid, ex.v, 0.0), np.where(valid, ex.e, 0.0))
        z = r.sum(ex, axis=-1)
        z = R(z.v[..., None], z.e[..., None])
        safe = R(np.where(z.v > 0, z.v, 1.0), z.e)
        p = r.div(ex, safe)
        p = R(np.where(valid, p.v, 0.0), np.where(valid, p.e, 0.0))
        c = self._r_rows(contract_bound("nhts,nhsd->nhtd", p, v, t, r))
        out = r.add(r.matmul(c, site.param("out_proj.weight")),
                    r.exact(site.param("out_proj.bias")))
        return out, (q, k, v, p, c, n, t)

    def bound_backward(self, g: R, x: R, saved: Any, site: Site, r: Rounding,
                       per_example: Callable, need_input: bool) -> tuple[dict, R]:
        """The forward's products in reverse, each by ``contract_bound``; the projections'
        parameter gradients by ``Dense``'s rule (``outer_bound``), summed over tokens."""
        q, k, v, p, c, n, t = saved
        op = r.op_rel
        out = {"out_proj.weight": outer_bound(g, c, r, per_example),
               "out_proj.bias": per_example(g.e + 0.5 * op * np.abs(g.v), g.v)}
        c_bar = self._r_heads(input_bound(g, site.param("out_proj.weight"), r), n)
        dh = self.dim // self.heads
        p_bar = contract_bound("nhtd,nhsd->nhts", c_bar, v, dh, r)
        v_bar = contract_bound("nhts,nhtd->nhsd", p, c_bar, t, r)
        dot = r.sum(r.mul(p_bar, p), axis=-1)
        s_bar = self._r_scale(r.mul(p, r.sub(p_bar, R(dot.v[..., None], dot.e[..., None]))), r)
        q_bar = contract_bound("nhts,nhsd->nhtd", s_bar, k, t, r)
        k_bar = contract_bound("nhts,nhtd->nhsd", s_bar, q, t, r)
        parts = [self._r_rows(b) for b in (q_bar, k_bar, v_bar)]
        qkv_bar = R(np.concatenate([b.v for b in parts], axis=-1),
                    np.concatenate([b.e for b in parts], axis=-1))
        out["in_proj_weight"] = outer_bound(qkv_bar, x, r, per_example)
        out["in_proj_bias"] = per_example(qkv_bar.e + 0.5 * op * np.abs(qkv_bar.v), qkv_bar.v)
        if not need_input:
            return out, g
        return out, input_bound(qkv_bar, site.param("in_proj_weight"), r)
