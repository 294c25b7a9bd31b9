"""The floating-point model of spec chapter 7: unit roundoffs, precision modes, the accuracy
assumed of elementary functions, and the running error arithmetic every bound is written in.

Each number here is a stated assumption of the floating-point model (spec §7.1), not tuned to make
tests pass:

* basic operations round correctly:  fl(x ∘ y) = (x ∘ y)(1 + δ) + η,  |δ| ≤ u,  |η| ≤ tiny,
  tiny the smallest normal number; η = 0 for an exactly-zero operand or result (§7.1.1)
* a backend may flush subnormal results to zero (XLA on the CPU does), + and − included (§7.1.2):
  a ± whose result may be subnormal gets η ≤ tiny, a sum of k possibly non-zero terms
  (k − 1)·tiny, and a product of several factors formed in any order may flush a partial
  product: error ≤ tiny·Π(the other factors' magnitudes, each counted at least 1) per product
  step (``flush``), carried through later operations by the first-order propagation
* a library elementary function (exp, log, log1p, tanh, erf) is within ELEMENTARY_ULPS ulps,
  i.e. relative error ≤ 2·ELEMENTARY_ULPS·u (1 ulp(x) ≤ 2u|x|)
* a sum or inner product of n terms, in any order or blocking, errs by ≤ γ_n Σ|terms|,
  γ_n = nu/(1 − nu)  (Higham, *Accuracy and Stability*, §3.1)

A value is carried as R(v, e): the float64 value v and a bound e on the absolute error with which
a backend working at unit roundoff u computes it (``Rounding``). Rules are first order (products
of two error terms are dropped; they are O(u²) and below the bound while n·u ≪ 1), except in a
product of two computed quantities, which keeps e_x·e_y: behind a kink a slope's error is the jump
(O(1), not O(u)), and a value may be 0 in the bound's own arithmetic but not in the backend's
(GELU's 1 + erf cancels to 0 for z ≪ 0), so e_x·e_y can be the only term left.

Who uses it: each layer type's bound rule (``reference.layers``, ``reference.activations``,
``reference.norms``), each loss's (``reference.losses``), the bound through a whole problem
(``reference.bounds``), the update step's (``reference.update``) and the data-parallel
combinations' (``reference.parallel``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .ops import erfc

__all__ = [
    "BF16_U", "ELEMENTARY_ULPS", "ERF_ABSOLUTE_U", "MODES", "PRECISIONS", "REFERENCE", "TF32_U",
    "Precision", "R", "Rounding", "gamma", "precision",
]

ELEMENTARY_ULPS = 4
"""Accuracy assumed of exp, log, log1p, tanh, erf: 4 ulp, i.e. relative error ≤ 8u (spec §7.1.4).
An assumption chosen with margin over what was measured (PyTorch 2.13 CPU float32 ≤ 1.96 ulp;
JAX 0.10 tanh 4.4u, erf 5.3u relative, XLA's own polynomials) and over documented maxima of some
libraries (CUDA erfcf 4 ulp; expf, tanhf, erff 2 ulp; SLEEF u10/u35 1 to 3.5 ulp), not a
documented maximum of every library."""


@dataclass(frozen=True)
class Precision:
    """The arithmetic a backend is certified for: unit roundoff u and underflow threshold."""

    name: str
    u: float
    tiny: float
    operand_u: float = 0.0
    """Unit roundoff of a shorter format both operands of every matrix product are converted to
    before exact products are accumulated (TF32: 2⁻¹¹; bfloat16 autocast: 2⁻⁸; spec §7.4).
    0: not converted."""
    truncating: bool = False
    """The conversion and the accumulation may truncate (TF32 on tensor cores, spec §7.4.1):
    each conversion errs by < 1 ulp of the short format (2·operand_u) and each accumulation
    step by < 1 float32 ulp of what it adds (2u), instead of half an ulp."""

    @property
    def product_rel(self) -> float:
        """Relative error of one product of two converted operands, (1 + δ₁)(1 + δ₂) − 1:
        2ε + ε², ε = operand_u when rounded, 2·operand_u when it may truncate (TF32:
        4u_t + 4u_t², spec §7.4.1); 0 in strict modes."""
        eps = self.operand_u * (2.0 if self.truncating else 1.0)
        return 2.0 * eps + eps**2

    @property
    def accumulation_u(self) -> float:
        """Unit roundoff of a matrix product's accumulation: u, or 2u where it may truncate or
        leave partial sums unnormalised (TF32, spec §7.4.1)."""
        return 2.0 * self.u if self.truncating else self.u


PRECISIONS: dict[tuple[str, str], Precision] = {
    ("float64", "strict"): Precision("float64", 2.0**-53, float(np.finfo(np.float64).tiny)),
    ("float32", "strict"): Precision("float32", 2.0**-24, float(np.finfo(np.float32).tiny)),
}
"""(dtype, precision mode) → unit roundoff. ``strict`` is IEEE arithmetic in that dtype
(PyTorch TF32 off, JAX matmul precision "highest")."""

TF32_U = 2.0**-11
"""TF32: float32's 8-bit exponent, 10 explicit mantissa bits (11 significant): u = 2⁻¹¹."""
BF16_U = 2.0**-8
"""bfloat16: float32's 8-bit exponent, 7 explicit mantissa bits (8 significant): u = 2⁻⁸."""

PRECISIONS.update({
    # Matrix products convert both operands to TF32 (rounded or truncated: < 1 TF32 ulp each;
    # products of 11-bit significands are exact in float32) and accumulate in float32 with
    # < 1 float32 ulp per step (truncated or unnormalised partial sums included):
    # (4u_t + 4u_t² + γ_n(2u)) Σ|w||a|, u_t = 2⁻¹¹, u = 2⁻²⁴ (spec §7.4.1, provisional).
    # Everything else is IEEE float32. PyTorch allow_tf32 = True; JAX default matmul precision.
    ("float32", "tf32"): Precision("float32/tf32", 2.0**-24, float(np.finfo(np.float32).tiny),
                                   operand_u=TF32_U, truncating=True),
    # TF32 applies to float32 products only: a float64 run in tf32 mode is strict float64.
    ("float64", "tf32"): Precision("float64", 2.0**-53, float(np.finfo(np.float64).tiny)),
    # bfloat16 autocast (float32 parameters): matmul operands cast to bfloat16 and results
    # rounded to bfloat16, activations evaluated on bfloat16 tensors, losses and reductions
    # autocast to float32 — modelled conservatively as every operation at u = 2⁻⁸ (sums and
    # products accumulating at γ_n(2⁻⁸) ≥ float32 accumulation), operands rounded at 2⁻⁸, with
    # float32's range (spec §7.4). First order: n·u ≤ 1/16 here, so dropped second-order terms
    # are below 1/16 of the bound.
    ("float32", "bf16_autocast"): Precision("float32/bf16_autocast", BF16_U,
                                            float(np.finfo(np.float32).tiny), operand_u=BF16_U),
    ("float64", "bf16_autocast"): Precision("float64", 2.0**-53, float(np.finfo(np.float64).tiny)),
})

MODES = ("strict", "tf32", "bf16_autocast")
"""Precision modes the suite can certify results for (``--precision``, spec §7.4)."""

REFERENCE = PRECISIONS[("float64", "strict")]

ERF_ABSOLUTE_U = 16
"""erf is modelled with an absolute error term as well: |err| ≤ 2·ELEMENTARY_ULPS·u|erf| +
ERF_ABSOLUTE_U·u. Fused GELU kernels evaluate erf by polynomial approximations accurate in
absolute, not relative, terms: PyTorch 2.13's CPU float32 ``F.gelu`` errs by up to 11.4u in its
erf (value error 1.0e-6 at z = −2.985, slope error 2.5e-7 near z = 0) while ``torch.erf`` itself
is within 1.03u (spec §7.1, finding F1). The constant is checked against every selected backend's
GELU kernel by ``test_activation_kernels_are_within_the_model``."""


def precision(dtype: str, mode: str = "strict") -> Precision:
    try:
        return PRECISIONS[(dtype, mode)]
    except KeyError:
        known = ", ".join(f"{d}/{m}" for d, m in PRECISIONS)
        raise ValueError(
            f"no error model for dtype={dtype!r}, precision={mode!r}; known: {known}"
        ) from None


def gamma(n: int | np.ndarray, u: float) -> np.ndarray:
    """γ_n = nu / (1 − nu): relative error bound of an n-term sum."""
    nu = np.asarray(n, dtype=np.float64) * u
    return nu / (1.0 - nu)


# -- running error arithmetic --------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class R:
    """A computed quantity: value v and a bound e on its absolute error."""

    v: np.ndarray
    e: np.ndarray


class Rounding:
    """First-order error propagation at unit roundoff u (rules in the module docstring)."""

    def __init__(self, p: Precision) -> None:
        self.u, self.tiny = p.u, p.tiny
        self.fn_rel = 2 * ELEMENTARY_ULPS * p.u
        self.op_rel = p.product_rel  # 0 in strict modes (spec §7.4)
        self.acc_u = p.accumulation_u  # u in strict modes, 2u under tf32 (spec §7.4.1)

    def exact(self, v: np.ndarray | float) -> R:
        """A value of the problem as the backend holds it: exact, except that a subnormal may
        be read as zero (spec §7.1.2: an input error of |v| < tiny)."""
        v = np.asarray(v, dtype=np.float64)
        return R(v, np.where(np.abs(v) < self.tiny, np.abs(v), 0.0))

    def flush(self, steps: int | np.ndarray, *factors: np.ndarray) -> np.ndarray:
        """Flushed partial products of a product of several factors formed in any order (spec
        §7.1.2): each of ``steps`` product (or addition) steps may flush a subnormal partial
        result, an error ≤ tiny then multiplied by the factors not yet in it, ≤ tiny·Π max(1,
        |f|) over all the factors. 0 where a factor is exactly zero."""
        gain = np.ones(())
        nonzero = np.ones((), dtype=bool)
        for f in factors:
            gain = gain * np.maximum(1.0, np.abs(f))
            nonzero = nonzero & (f != 0)
        return self.tiny * np.asarray(steps) * gain * nonzero

    def sum_flush(self, x: R, axis: int) -> np.ndarray:
        """A sum of k possibly non-zero terms: k − 1 additions, each may flush a subnormal
        partial sum (≤ tiny; spec §7.1.2)."""
        k = self.maybe_nonzero(x).sum(axis)
        return self.tiny * np.maximum(k - 1, 0)

    def _pm(self, v: np.ndarray, e: np.ndarray) -> R:
        """+ or −: rounded (relative u), and a result that may be subnormal and non-zero may be
        flushed (η ≤ tiny, spec §7.1.2); a normal result is never flushed."""
        may = ((np.abs(v) + e) > 0) & ((np.abs(v) - e) < self.tiny)
        return self._round(v, e, may)

    def const(self, c: float) -> R:
        """A real constant (2/D, √½, …) as the backend holds it: rounded once."""
        return R(np.asarray(c), np.asarray(self.u * abs(c)))

    def _round(self, v: np.ndarray, e: np.ndarray, underflow: np.ndarray | float = 0.0) -> R:
        return R(v, e + self.u * np.abs(v) + self.tiny * underflow)

    @staticmethod
    def maybe_nonzero(x: R) -> np.ndarray:
        return (np.abs(x.v) + x.e) > 0

    def add(self, x: R, y: R) -> R:
        return self._pm(x.v + y.v, x.e + y.e)

    def sub(self, x: R, y: R) -> R:
        return self._pm(x.v - y.v, x.e + y.e)

    def mul(self, x: R, y: R) -> R:
        nz = self.maybe_nonzero(x) & self.maybe_nonzero(y)
        # |x̂ŷ − xy| ≤ |y|e_x + |x|e_y + e_x e_y, exactly: e_x e_y is not O(u²) at a kink
        return self._round(x.v * y.v, np.abs(y.v) * x.e + np.abs(x.v) * y.e + x.e * y.e, nz)

    def div(self, x: R, y: R) -> R:
        v = x.v / y.v
        return self._round(v, x.e / np.abs(y.v) + np.abs(v) * y.e / np.abs(y.v),
                           self.maybe_nonzero(x))

    def fn(self, f: Callable, df: Callable, x: R) -> R:
        """An elementary function: propagated |f'(x)| e_x plus its own ≤ 2·ULPS·u relative error."""
        v = f(x.v)
        return R(v, np.abs(df(x.v)) * x.e + self.fn_rel * np.abs(v) + self.tiny)

    def exp(self, x: R) -> R:
        return self.fn(np.exp, np.exp, x)

    def log(self, x: R) -> R:
        return self.fn(np.log, lambda t: 1.0 / t, x)

    def log1p(self, x: R) -> R:
        return self.fn(np.log1p, lambda t: 1.0 / (1.0 + t), x)

    def tanh(self, x: R) -> R:
        return self.fn(np.tanh, lambda t: 1.0 - np.tanh(t) ** 2, x)

    def erf(self, x: R) -> R:
        """erf, with the absolute term ERF_ABSOLUTE_U·u of fused-kernel approximations."""
        v = self.fn(lambda t: 1.0 - erfc(t),
                    lambda t: 2.0 / math.sqrt(math.pi) * np.exp(-t * t), x)
        return R(v.v, v.e + ERF_ABSOLUTE_U * self.u)

    def sum(self, x: R, axis: int) -> R:
        n = x.v.shape[axis]
        return R(x.v.sum(axis), x.e.sum(axis) + gamma(n, self.u) * np.abs(x.v).sum(axis)
                 + self.sum_flush(x, axis))

    def products(self, nonzero: np.ndarray, aw: np.ndarray) -> np.ndarray:
        """tiny per possibly non-zero product of a matrix product and per addition of them
        (2k − 1 for k products: each may underflow or flush, spec §7.1.1, §7.1.2)."""
        k = nonzero.astype(float) @ (aw > 0).astype(float)
        return self.tiny * np.maximum(2 * k - 1, 0)

    def matmul(self, x: R, w: np.ndarray) -> R:
        """x Wᵀ for exact W (n_out, n_in): n_in products (each may underflow), summed at the
        accumulation's unit roundoff; a subnormal W_oi read as zero errs by |W_oi||x_i|."""
        n = w.shape[1]
        aw = np.abs(w)
        shadow = np.abs(x.v) @ aw.T
        sub = np.where(aw < self.tiny, aw, 0.0)
        return R(x.v @ w.T, x.e @ aw.T + (gamma(n, self.acc_u) + self.op_rel) * shadow
                 + np.abs(x.v) @ sub.T + self.products(self.maybe_nonzero(x), aw.T))

    def sqrt(self, x: R) -> R:
        """√x for x ≥ 0: correctly rounded (relative u), plus the propagated error
        |√x̂ − √x| = |x̂ − x|/(√x̂ + √x) ≤ min(e/(√x + √max(x − e, 0)), √e)  (≈ e/(2√x))."""
        v = np.sqrt(x.v)
        lower = np.sqrt(np.maximum(x.v - x.e, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            prop = np.where(x.e > 0, x.e / (v + lower), 0.0)
        return R(v, np.minimum(prop, np.sqrt(x.e)) + self.u * v)
