"""``Conv1d``: a 1-D convolution, channels first as PyTorch lays it out (spec §9.2).

The layer sits in a network of flat rows: its input (N, C_in·L) is read as (N, C_in, L) (the
channels-first layout ``x.reshape(N, C_in, L)``), its output (N, C_out, L_out) is handed on as
(N, C_out·L_out) (``nn.Flatten``'s order). With stride s, zero padding p, dilation d, groups G:

    z[n, o, l] = b[o] + Σ_{c < C_in/G} Σ_{j < K} W[o, c, j] · x[n, g(o)·C_in/G + c, l·s + j·d − p]

(x zero outside [0, L)), g(o) = o // (C_out/G), L_out = ⌊(L + 2p − d(K − 1) − 1)/s⌋ + 1.
It is a linear map with a structured matrix M (the "Toeplitz" matrix: one entry of W, or 0, per
(output, input) pair, since l·s + j·d − p = i has at most one solution j): z = x Mᵀ + b, ā = z̄ M,
and W̄[o, c, j] = Σ_l z̄[o, l] x[g(o)·C_in/G + c, l·s + j·d − p], the generic parameter rule
applied per group to the patches. JAX: ``lax.conv_general_dilated(x, W, window_strides=(s,),
padding=((p, p),), rhs_dilation=(d,), dimension_numbers=("NCH", "OIH", "NCH"),
feature_group_count=G)`` computes the same z (a cross-correlation, not a flipped convolution).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .capabilities import register
from .linear import contract_bound, input_bound
from .numerics import R, Rounding
from .types import Array, Grads, ProblemError, Site
from .unit import LayerUnit

__all__ = ["Conv1d"]

CONV1D = register("layer:conv1d", "Conv1d(in, out, kernel, length, stride, padding, dilation, "
                  "groups, bias): channels-first 1-D convolution on flat rows (spec §9.2)")


@dataclass(frozen=True)
class Conv1d(LayerUnit):
    """``nn.Conv1d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
    bias)`` on inputs of ``length`` positions, flattened channels first (module docstring)."""

    in_channels: int
    out_channels: int
    kernel_size: int
    length: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1
    bias: bool = True

    def __post_init__(self) -> None:
        for name in ("in_channels", "out_channels", "kernel_size", "length", "stride",
                     "dilation", "groups"):
            if getattr(self, name) < 1:
                raise ProblemError(f"{self!r}: {name} must be >= 1")
        if self.padding < 0:
            raise ProblemError(f"{self!r}: padding must be >= 0")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ProblemError(f"{self!r}: groups must divide in_channels and out_channels")
        if self.out_length < 1:
            raise ProblemError(f"{self!r}: the dilated kernel is longer than the padded input")

    def __repr__(self) -> str:
        extra = "".join(f", {n}={getattr(self, n)!r}" for n, d in (
            ("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1), ("bias", True))
            if getattr(self, n) != d)
        return (f"Conv1d({self.in_channels}, {self.out_channels}, {self.kernel_size}, "
                f"length={self.length}{extra})")

    def features(self) -> frozenset[str]:
        return frozenset({CONV1D})

    @property
    def out_length(self) -> int:
        span = self.dilation * (self.kernel_size - 1) + 1
        return (self.length + 2 * self.padding - span) // self.stride + 1

    @property
    def in_width(self) -> int:
        return self.in_channels * self.length

    @property
    def takes_sequences(self) -> bool:
        return False

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {
            "weight": (self.out_channels, self.in_channels // self.groups, self.kernel_size)}
        if self.bias:
            shapes["bias"] = (self.out_channels,)
        return shapes

    def out_width(self, width: int) -> int:
        return self.out_channels * self.out_length

    def check_width(self, width: int) -> bool:
        return width == self.in_width

    # -- the structure: where each tap reads ------------------------------------------------------
    @functools.cached_property
    def _positions(self) -> tuple[Array, Array]:
        """(pos, inside): pos[l, j] = l·s + j·d − p, and whether it lies in [0, L)."""
        pos = (np.arange(self.out_length)[:, None] * self.stride
               + np.arange(self.kernel_size)[None, :] * self.dilation - self.padding)
        return pos, (pos >= 0) & (pos < self.length)

    def matrix(self, weight: Array) -> Array:
        """M (C_out·L_out, C_in·L) with z = x Mᵀ (bias apart): W's entries where they act."""
        cg, og = self.in_channels // self.groups, self.out_channels // self.groups
        pos, inside = self._positions
        m = np.zeros((self.out_channels, self.out_length, self.in_channels, self.length),
                     dtype=weight.dtype)
        ls, js = np.nonzero(inside)
        for o in range(self.out_channels):
            chans = (o // og) * cg + np.arange(cg)
            m[o, ls[:, None], chans[None, :], pos[ls, js][:, None]] = weight[o][:, js].T
        return m.reshape(self.out_channels * self.out_length, self.in_width)

    def patches(self, a: Array) -> Array:
        """(rows, C_in, L_out, K): the input under every tap (0 in the padding)."""
        x = a.reshape(a.shape[0], self.in_channels, self.length)
        pos, inside = self._positions
        return np.where(inside, x[:, :, np.clip(pos, 0, self.length - 1)], 0.0).astype(a.dtype)

    def _by_group(self, g: Array, p: Array) -> list[tuple[Array, Array]]:
        """Per group: (z̄ as (rows, L_out, C_out/G), patches as (rows, L_out, C_in/G·K))."""
        cg, og, n = self.in_channels // self.groups, self.out_channels // self.groups, g.shape[0]
        g3 = g.reshape(n, self.out_channels, self.out_length)
        return [(g3[:, i * og:(i + 1) * og].transpose(0, 2, 1),
                 p[:, i * cg:(i + 1) * cg].transpose(0, 2, 1, 3).reshape(n, self.out_length, -1))
                for i in range(self.groups)]

    def _bias_rows(self, b: Array) -> Array:
        return np.repeat(b, self.out_length)

    # -- the rules --------------------------------------------------------------------------------
    def forward(self, a: Array, site: Site) -> tuple[Array, Array]:
        m = self.matrix(site.param("weight"))
        z = a @ m.T
        if self.bias:
            z = z + self._bias_rows(site.param("bias"))
        return z, m

    def backward(self, g: Array, a: Array, out: Array, m: Array, site: Site,
                 rule: Callable, need_input: bool) -> tuple[Grads, Array]:
        """W̄ per group = rule(z̄ at each position, the patches), b̄ = Σ_l z̄; ā = z̄ M."""
        parts = [rule(gg, pp) for gg, pp in self._by_group(g, self.patches(a))]
        w_bar = np.concatenate([w for w, _ in parts], axis=-2)
        grads = {"weight": w_bar.reshape(w_bar.shape[:-1] + self.param_shapes()["weight"][1:])}
        if self.bias:
            grads["bias"] = np.concatenate([b for _, b in parts], axis=-1)
        return grads, (g @ m if need_input else g)

    def bound_forward(self, a: R, site: Site, r: Rounding) -> tuple[R, Array]:
        """x Mᵀ as a matrix product (γ of C_in·L: a sum over every column of M bounds the
        sum over the C_in/G·K taps it holds), then + b."""
        m = self.matrix(site.param("weight"))
        z = r.matmul(a, m)
        if self.bias:
            z = r.add(z, r.exact(self._bias_rows(site.param("bias"))))
        return z, m

    def bound_backward(self, g: R, x: R, m: Array, site: Site, r: Rounding,
                       per_example: Callable, need_input: bool) -> tuple[dict, R]:
        """W̄: a product-sum over the L_out positions of z̄ and the patches (``contract_bound``),
        b̄ = Σ_l z̄ (γ_{L_out}); ā = z̄ M (``input_bound``)."""
        pv, pe = self.patches(x.v), self.patches(x.e)
        ws, bs = [], []
        for (gv, xv), (ge, xe) in zip(self._by_group(g.v, pv), self._by_group(g.e, pe),
                                      strict=True):
            ws.append(contract_bound("nlo,nlk->nok", R(gv, ge), R(xv, xe), self.out_length, r))
            bs.append(r.sum(R(gv, ge), axis=1))
        shape = (g.v.shape[0],) + self.param_shapes()["weight"]
        w = R(np.concatenate([b.v for b in ws], axis=1).reshape(shape),
              np.concatenate([b.e for b in ws], axis=1).reshape(shape))
        out = {"weight": per_example(w.e, w.v)}
        if self.bias:
            out["bias"] = per_example(np.concatenate([b.e for b in bs], axis=1),
                                      np.concatenate([b.v for b in bs], axis=1))
        return out, (input_bound(g, m, r) if need_input else g)
