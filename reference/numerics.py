"""Tolerances, derived: a first-order running error bound for a Problem (spec chapter 7).

Every tolerance the suite uses comes from this module. Nothing here is tuned to make tests pass;
each number is a stated assumption of the floating-point model (spec §7.1):

* basic operations round correctly:  fl(x ∘ y) = (x ∘ y)(1 + δ) + η,  |δ| ≤ u,  |η| ≤ tiny,
  where η = 0 for + and − (IEEE addition never underflows inexactly) and for a product with an
  exactly-zero factor; tiny is the smallest normal number (flush-to-zero included)
* a library elementary function (exp, log, log1p, tanh, erf) is within ELEMENTARY_ULPS ulps,
  i.e. relative error ≤ 2·ELEMENTARY_ULPS·u (1 ulp(x) ≤ 2u|x|)
* a sum or inner product of n terms, in any order or blocking, errs by ≤ γ_n Σ|terms|,
  γ_n = nu/(1 − nu)  (Higham, *Accuracy and Stability*, §3.1)

A value is carried as R(v, e): the float64 value v and a bound e on the absolute error with which
a backend working at unit roundoff u computes it. Rules are first order (products of two error
terms are dropped; they are O(u²) and below the bound while n·u ≪ 1), except in a product of two
computed quantities, which keeps e_x·e_y: behind a kink a slope's error is the jump (O(1), not
O(u)), and a value may be 0 in the bound's own arithmetic but not in the backend's (GELU's
1 + erf cancels to 0 for z ≪ 0), so e_x·e_y can be the only term left. The bound is run through
the network forward and backward in the same structure as ``reference.grads``; elementwise
activations are evaluated by the formula frameworks use (e.g. GELU as ½z(1 + erf(z/√2))), so their
error reflects that formula. A slope σ'(z) evaluated at a z that itself errs by e_z errs by
M2·e_z, M2 = sup|σ''| (``CURVATURE``); at a kink (relu at 0) where |z| ≤ e_z the backend may
take either branch, so the bound adds the jump of the slope (spec §7.3).

The tolerance for comparing a backend with the reference is the backend's bound plus the
reference's own float64 bound (spec §7.2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .grads import Grads, batch_grad
from .ops import (
    ACTIVATIONS,
    GELU_TANH_C,
    GELU_TANH_K,
    INV_SQRT_2PI,
    LEAKY_SLOPE,
    SQRT_HALF,
    erfc,
    sigmoid,
    smoothed_targets,
)
from .problem import NORM_EPS, Activation, Batch, BatchNorm, Dense, Dropout, LayerNorm, Problem
from .update import Optimizer

ELEMENTARY_ULPS = 4
"""Accuracy assumed of exp, log, log1p, tanh, erf: the largest documented error among the math
libraries the built-in backends call (CUDA erfcf: 4 ulp; expf, tanhf, erff: 2 ulp; SLEEF u10/u35:
1 to 3.5 ulp; glibc: ≤ 3 ulp)."""


@dataclass(frozen=True)
class Precision:
    """The arithmetic a backend is certified for: unit roundoff u and underflow threshold."""

    name: str
    u: float
    tiny: float
    operand_u: float = 0.0
    """Unit roundoff of a shorter format both operands of every matrix product are rounded to
    before exact products are accumulated at ``u`` (TF32: 2⁻¹¹; spec §7.4). 0: not rounded."""

    @property
    def product_rel(self) -> float:
        """Relative error of one product of two rounded operands: (1 + δ₁)(1 + δ₂) − 1."""
        return 2.0 * self.operand_u + self.operand_u**2


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
    # Matrix products round both operands to TF32 (products of 11-bit significands are exact in
    # float32) and accumulate in float32: (2·2⁻¹¹ + 2⁻²² + γ_n(2⁻²⁴)) Σ|w||a| (spec §7.4).
    # Everything else is IEEE float32. PyTorch allow_tf32 = True; JAX default matmul precision.
    ("float32", "tf32"): Precision("float32/tf32", 2.0**-24, float(np.finfo(np.float32).tiny),
                                   operand_u=TF32_U),
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

    def exact(self, v: np.ndarray | float) -> R:
        v = np.asarray(v, dtype=np.float64)
        return R(v, np.zeros_like(v))

    def const(self, c: float) -> R:
        """A real constant (2/D, √½, …) as the backend holds it: rounded once."""
        return R(np.asarray(c), np.asarray(self.u * abs(c)))

    def _round(self, v: np.ndarray, e: np.ndarray, underflow: np.ndarray | float = 0.0) -> R:
        return R(v, e + self.u * np.abs(v) + self.tiny * underflow)

    @staticmethod
    def maybe_nonzero(x: R) -> np.ndarray:
        return (np.abs(x.v) + x.e) > 0

    def add(self, x: R, y: R) -> R:
        return self._round(x.v + y.v, x.e + y.e)

    def sub(self, x: R, y: R) -> R:
        return self._round(x.v - y.v, x.e + y.e)

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
        return R(x.v.sum(axis), x.e.sum(axis) + gamma(n, self.u) * np.abs(x.v).sum(axis))

    def matmul(self, x: R, w: np.ndarray) -> R:
        """x Wᵀ for exact W (n_out, n_in): n_in products (each may underflow), summed."""
        n = w.shape[1]
        aw = np.abs(w)
        shadow = np.abs(x.v) @ aw.T
        products = (self.maybe_nonzero(x).astype(float) @ (aw > 0).T.astype(float))
        return R(x.v @ w.T, x.e @ aw.T + (gamma(n, self.u) + self.op_rel) * shadow
                 + self.tiny * products)

    def sqrt(self, x: R) -> R:
        """√x for x ≥ 0: correctly rounded (relative u), plus the propagated error
        |√x̂ − √x| = |x̂ − x|/(√x̂ + √x) ≤ min(e/(√x + √max(x − e, 0)), √e)  (≈ e/(2√x))."""
        v = np.sqrt(x.v)
        lower = np.sqrt(np.maximum(x.v - x.e, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            prop = np.where(x.e > 0, x.e / (v + lower), 0.0)
        return R(v, np.minimum(prop, np.sqrt(x.e)) + self.u * v)


# -- activations: value and slope evaluated by the frameworks' formulas --------------------------
CURVATURE: dict[str, float] = {
    "identity": 0.0,
    "relu": 0.0,  # piecewise linear; the kink is handled separately (KINKS)
    "tanh": 4.0 / (3.0 * math.sqrt(3.0)),  # |tanh''| peaks at tanh z = 1/√3
    "sigmoid": 1.0 / (6.0 * math.sqrt(3.0)),  # |σ''| = σ(1−σ)|1−2σ|, peak at σ = ½ ± 1/(2√3)
    "softplus": 0.25,  # softplus'' = σ(1−σ) ≤ ¼
    "gelu": 2.0 * INV_SQRT_2PI,  # gelu'' = φ(z)(2 − z²), largest at z = 0
    "gelu_tanh": 2.0 * INV_SQRT_2PI,  # equal to gelu''(0) at 0, smaller elsewhere (tested)
    "leaky_relu": 0.0,  # piecewise linear; kink in KINKS
    "elu": 1.0,  # elu'' = e^z ≤ 1 for z < 0, 0 for z > 0: the slope is 1-Lipschitz (no jump)
}
"""M2 = sup_z |σ''(z)| for each activation (each value is checked on a grid by the meta-tests)."""

KINKS: dict[str, tuple[float, float]] = {"relu": (0.0, 1.0),
                                          "leaky_relu": (0.0, 1.0 - LEAKY_SLOPE)}
"""Activation → (location, jump of the slope) of its kink."""


def _activation_rounding(name: str, z: np.ndarray, r: Rounding) -> tuple[R, R]:
    """(σ(z), σ'(z)) with the error of evaluating them at an exactly known z."""
    x = r.exact(z)
    one, half = r.exact(1.0), r.exact(0.5)
    if name == "identity":
        return x, r.exact(np.ones_like(z))
    if name == "relu":
        return r.exact(np.maximum(z, 0.0)), r.exact((z > 0).astype(np.float64))
    if name == "leaky_relu":  # slope·z rounded once below 0
        neg = r.mul(x, r.const(LEAKY_SLOPE))
        return (R(np.where(z > 0, z, neg.v), np.where(z > 0, 0.0, neg.e)),
                R(np.where(z > 0, 1.0, LEAKY_SLOPE), np.where(z > 0, 0.0, r.u * LEAKY_SLOPE)))
    if name == "elu":  # expm1(z) and slope e^z below 0 (PyTorch; JAX: expm1 + 1 for the slope)
        zn = r.exact(np.minimum(z, 0.0))
        em1 = r.fn(np.expm1, np.exp, zn)
        slope = r.exp(zn)
        slope = R(slope.v, np.maximum(slope.e, r.add(em1, one).e))
        return (R(np.where(z > 0, z, em1.v), np.where(z > 0, 0.0, em1.e)),
                R(np.where(z > 0, 1.0, slope.v), np.where(z > 0, 0.0, slope.e)))
    if name == "tanh":
        a = r.tanh(x)
        return a, r.sub(one, r.mul(a, a))
    if name in ("sigmoid", "softplus"):  # stable forms, e = exp(−|z|), as frameworks evaluate
        e = r.exp(r.exact(-np.abs(z)))
        sig = r.div(R(np.where(z >= 0, 1.0, e.v), np.where(z >= 0, 0.0, e.e)), r.add(one, e))
        if name == "sigmoid":  # slope a(1 − a)
            return sig, r.mul(sig, r.sub(one, sig))
        stable = r.add(r.exact(np.maximum(z, 0.0)), r.log1p(e))  # JAX: logaddexp(z, 0)
        # PyTorch: log1p(e^z) and slope e^z/(e^z + 1) below its threshold (20, or 40 as the
        # torch backend sets it in float64), z itself above it.
        ez = r.exp(r.exact(np.minimum(z, 40.0)))
        naive, naive_slope = r.log1p(ez), r.div(ez, r.add(ez, one))
        below = z <= 40.0
        return (R(stable.v, np.maximum(stable.e, np.where(below, naive.e, 0.0))),
                R(sig.v, np.maximum(sig.e, np.where(below, naive_slope.e, 0.0))))
    if name == "gelu":  # z·½(1 + erf(z/√2)); slope Φ + z·e^{−z²/2}/√(2π)
        cdf = r.mul(half, r.add(one, r.erf(r.mul(x, r.const(SQRT_HALF)))))
        pdf = r.mul(r.exp(r.mul(r.exact(-0.5 * z), x)), r.const(INV_SQRT_2PI))
        return r.mul(x, cdf), r.add(cdf, r.mul(x, pdf))
    if name == "gelu_tanh":
        cube = r.mul(r.mul(x, x), x)
        inner = r.mul(r.const(GELU_TANH_K), r.add(x, r.mul(r.const(GELU_TANH_C), cube)))
        t = r.tanh(inner)
        right = r.add(one, t)
        left = r.mul(half, x)
        dinner = r.mul(r.const(GELU_TANH_K),
                       r.add(one, r.mul(r.const(3 * GELU_TANH_C), r.mul(x, x))))
        slope = r.add(r.mul(half, right), r.mul(r.mul(left, r.sub(one, r.mul(t, t))), dinner))
        return r.mul(left, right), slope
    raise KeyError(name)


def activation(name: str, z: R, r: Rounding) -> tuple[R, R]:
    """σ and σ' at a computed z (value z.v, error z.e): evaluation error plus propagated error."""
    a, s = _activation_rounding(name, z.v, r)
    slope_exact = ACTIVATIONS[name][1](z.v, a.v)
    lipschitz = np.abs(slope_exact) + CURVATURE[name] * z.e
    # A framework's backward kernel may evaluate σ' by a formula of its own (XLA's tanh slope errs
    # by 1.45u where 1 − a² would give 1u): smooth slopes also get an elementary function's error.
    own_formula = 0.0 if name in ("identity", "relu", "leaky_relu") else r.fn_rel * np.abs(s.v)
    slope_err = s.e + own_formula + CURVATURE[name] * z.e
    if name in KINKS:
        at, jump = KINKS[name]
        near = np.abs(z.v - at) <= z.e
        near &= z.e > 0
        lipschitz = np.where(near, np.maximum(lipschitz, jump), lipschitz)
        slope_err = slope_err + np.where(near, jump, 0.0)
    return R(a.v, a.e + lipschitz * z.e), R(s.v, slope_err)


# -- losses on rows: ℓ (M,) and ∂ℓ/∂f (M, D) -------------------------------------------------------
def _rows(x: np.ndarray, lead: int) -> np.ndarray:
    return x.reshape((-1,) + x.shape[lead:])


def _abs_terms(r: Rounding, v: np.ndarray, e: np.ndarray, shadow: np.ndarray, ops: int) -> R:
    """A value computed by ``ops`` roundings of terms of total magnitude ``shadow`` (a formula
    frameworks write in more than one way): propagated error e plus ops·u·shadow."""
    return R(v, e + ops * r.u * shadow + r.tiny)


def _loss_and_cotangent(problem: Problem, out: R, r: Rounding) -> tuple[R, R]:
    """Rows of f (M, D) → (ℓ per row (M,), ∂ℓ/∂f (M, D)) with error bounds (spec §7.1, §3)."""
    loss, b = problem.loss, problem.batch
    lead = 2 if b.sequence else 1
    d = out.v.shape[1]
    inv_d = r.const(1.0 / d)
    if loss.name == "softmax_cross_entropy":
        return _cross_entropy(problem, out, r, lead)
    y = _rows(b.targets, lead)
    res = r.sub(out, r.exact(y))
    if loss.name == "squared_error":
        value = r.mul(r.sum(r.mul(res, res), axis=1), inv_d)
        return value, r.mul(r.const(2.0 / d), res)
    if loss.name == "bce_with_logits":
        # max(z,0) − z y + log(1 + e^{−|z|}) (torch: log(e^{−m} + e^{−z−m}); optax: via
        # log σ(±z)): ≤ 4 roundings of terms of size |z| + |z y| + 1, the log's error
        # relative to 1 (a log of a sum ≥ 1), and |∂ℓ/∂z| = |σ(z) − y| ≤ 1 times e_z.
        z = out.v
        sp = np.log1p(np.exp(-np.abs(z)))
        v = np.maximum(z, 0.0) - z * y + sp
        e = out.e + 4 * r.u * (np.abs(z) + np.abs(z * y) + 1.0) + r.fn_rel * (1.0 + sp)
        elem = R(v, e + r.tiny)
        # ∂ℓ/∂z = σ(z) − y; a backward kernel may form σ(z) as 1 − σ(−z) (PyTorch's batched
        # rule under torch.func.vmap does: 5·10⁻⁶ relative at z = −12.5), off by 2u absolute;
        # autodiff of optax's −y log σ(z) − (1 − y) log σ(−z) gives −yσ(−z) + (1 − y)σ(z):
        # each σ to ELEMENTARY_ULPS, three roundings, of terms |y|σ(−z) + |1 − y|σ(z)
        # (and PyTorch's vmap decomposition into clamp_min/exp/log gives (1 − y) − σ(−z)-like
        # forms): every such form is ≤ 4 roundings and two σ's of terms each ≤ 1 in size
        sig, _ = activation("sigmoid", out, r)
        terms = np.abs(y) + np.abs(1.0 - y) + sigmoid(-z) + sig.v
        sig = R(sig.v, sig.e + (r.fn_rel + 4 * r.u) * terms)
        return r.mul(r.sum(elem, axis=1), inv_d), r.mul(r.sub(sig, r.exact(y)), inv_d)
    if loss.name == "huber":
        delta = loss.delta
        a = np.abs(res.v)
        quad = np.minimum(a, delta)
        v = 0.5 * quad * quad + delta * (a - quad)
        # ½q² + δ(|r| − q) or its two-branch form: ≤ 4 roundings of ½q² + δ|r|; Lipschitz
        # |h'| = min(|r|, δ); the branches agree to ½e² at |r| = δ (first order: 0)
        elem = _abs_terms(r, v, np.minimum(a, delta) * res.e, 0.5 * quad**2 + delta * a, 4)
        slope = R(np.clip(res.v, -delta, delta), res.e + r.u * delta)
        return r.mul(r.sum(elem, axis=1), inv_d), r.mul(slope, inv_d)
    if loss.name == "gaussian_nll":
        assert b.variances is not None
        var = _rows(b.variances, lead)
        lv = np.log(var)
        q = res.v * res.v / var
        v = 0.5 * (lv + q)
        # ½(log v + r²/v): log to ELEMENTARY_ULPS, ≤ 4 roundings of |log v| + r²/v;
        # ∂/∂r = r/v
        elem = R(v, np.abs(res.v / var) * res.e + r.fn_rel * np.abs(lv)
                 + 4 * r.u * (np.abs(lv) + q) + r.tiny)
        cot = r.div(res, r.exact(var * d))
        return r.mul(r.sum(elem, axis=1), inv_d), R(cot.v, cot.e + 2 * r.u * np.abs(cot.v))
    raise KeyError(loss.name)


def _cross_entropy(problem: Problem, out: R, r: Rounding, lead: int) -> tuple[R, R]:
    """ℓ = −Σ_k w_k q̃_k ls_k and ∂ℓ/∂z = (Σ_k w_k q̃_k) p − w ⊙ q̃, ls = log-softmax, p = e^{ls}.

    q̃ = (1 − ε)q + ε/C is formed by the backend (two constants rounded: 2u|q̃|). Frameworks
    group the sums differently (PyTorch: (1 − ε)·nll + (ε/C)·Σ_k w_k(−ls_k)): every grouping
    of the C products errs by ≤ (γ_C + 3u) Σ_k |w_k q̃_k ls_k| (spec §7.1)."""
    loss, b = problem.loss, problem.batch
    c = out.v.shape[1]
    m = R(out.v.max(axis=1, keepdims=True), out.e.max(axis=1, keepdims=True))
    s = r.sub(out, m)
    lse = r.log(r.sum(r.exp(s), axis=1))
    ls = r.sub(s, R(lse.v[:, None], lse.e[:, None]))
    w = np.ones(c) if loss.class_weights is None else np.asarray(loss.class_weights)
    q = smoothed_targets(_rows(b.targets, lead), c, loss.label_smoothing, loss.ignore_index)
    wq = w * q
    hard = loss.label_smoothing == 0.0 and b.targets.dtype.kind in "iu"
    wq_rel = 0.0 if hard else 2 * r.u  # one-hot q̃ is exact
    terms = np.abs(wq * ls.v)
    value = R(-np.sum(wq * ls.v, axis=1),
              np.sum(np.abs(wq) * ls.e, axis=1)
              + (gamma(c, r.u) + 3 * r.u + wq_rel) * terms.sum(axis=1)
              + r.tiny * (terms > 0).sum(axis=1))
    p = r.exp(ls)
    total = np.abs(wq).sum(axis=1, keepdims=True)
    cot_v = wq.sum(axis=1, keepdims=True) * p.v - wq
    shadow = total * np.abs(p.v) + np.abs(wq)
    cot = R(cot_v, total * p.e + (gamma(c, r.u) + 3 * r.u + wq_rel) * shadow
            + r.tiny * (shadow > 0))
    return value, cot


# -- normalisation layers ------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class NormRounding:
    """What the backward bound of a LayerNorm/BatchNorm needs from its forward bound."""

    axis: int | None  # −1 LayerNorm, 0 train-mode BatchNorm, None eval-mode BatchNorm
    xhat: R
    s: R  # 1/√(v + ε), keepdims
    scale: np.ndarray  # 1 + |μ|s: formulas in terms of the raw input X round at |X|s


def _norm_forward(layer: LayerNorm | BatchNorm, x: R, gamma_: np.ndarray, beta: np.ndarray,
                  r: Rounding) -> tuple[R, NormRounding]:
    """y = γ ⊙ x̂ + β with x̂ = (x − μ)s, s = 1/√(v + ε) (spec §4.1–§4.4, §7.1).

    Statistics along an axis of n elements. Propagated (first order, exact): ∂x̂_i/∂x_j =
    s(δ_ij − 1/n − x̂_i x̂_j/n), so e_x̂ ≤ s(e_x + mean e_x + |x̂| mean(|x̂| e_x)). Rounding: μ
    errs by γ_n mean|x|; v by γ_{n+3}(v + 2μ²) (a bound for the one-pass E[x²] − μ², which
    covers two-pass and Welford updates too); s by ELEMENTARY_ULPS (rsqrt) + u; kernels that
    compute y = X·(γs) + (β − μγs) round at |X|s = |x̂ + μs| (the factor 1 + |μ|s). Eval-mode
    BatchNorm uses the running statistics (exact data) instead."""
    eps = NORM_EPS
    if isinstance(layer, BatchNorm) and not layer.training:
        assert layer.running_mean is not None and layer.running_var is not None
        mu = np.asarray(layer.running_mean)
        s_v = 1.0 / np.sqrt(np.asarray(layer.running_var) + eps)
        s = R(s_v, (r.fn_rel + 2 * r.u) * s_v)
        xhat_v = (x.v - mu) * s_v
        scale = 1.0 + np.abs(mu) * s_v
        xhat = R(xhat_v, s_v * x.e + np.abs(xhat_v) * (r.fn_rel + 2 * r.u)
                 + 2 * r.u * scale + r.tiny)
        axis: int | None = None
    else:
        axis = -1 if isinstance(layer, LayerNorm) else 0
        n = x.v.shape[axis]
        mu = x.v.mean(axis=axis, keepdims=True)
        d = x.v - mu
        var = (d * d).mean(axis=axis, keepdims=True)
        s_v = 1.0 / np.sqrt(var + eps)
        xhat_v = d * s_v
        e_var = gamma(n + 3, r.u) * (var + 2 * mu * mu) + r.u * (var + eps)
        s_rel = 0.5 * e_var / (var + eps) + r.fn_rel + 2 * r.u
        s = R(s_v, s_rel * s_v)
        e_mu = gamma(n, r.u) * np.abs(x.v).mean(axis=axis, keepdims=True)
        prop = s_v * (x.e + x.e.mean(axis=axis, keepdims=True)
                      + np.abs(xhat_v) * (np.abs(xhat_v) * x.e).mean(axis=axis, keepdims=True))
        scale = 1.0 + np.abs(mu) * s_v
        xhat = R(xhat_v, prop + s_v * (e_mu + r.u * np.abs(d)) + np.abs(xhat_v) * s_rel
                 + 2 * r.u * scale + r.tiny)
    y_v = xhat.v * gamma_ + beta
    # underflow: a kernel forming (a − μ)·(γs) may flush γs (|γs| < tiny) or (a − μ)·γs to 0
    # (XLA on CPU flushes subnormals): ≤ tiny·(1 + |a − μ|) = tiny·(1 + |x̂|/s)
    y = R(y_v, np.abs(gamma_) * xhat.e
          + 3 * r.u * (np.abs(gamma_) * (np.abs(xhat.v) + 2 * scale) + np.abs(beta) + np.abs(y_v))
          + r.tiny * (1.0 + np.abs(xhat.v) / s.v))
    return y, NormRounding(axis, xhat, s, scale)


def _norm_backward(nr: NormRounding, g: R, gamma_: np.ndarray, r: Rounding) -> R:
    """ā = s(x̂̄ − mean x̂̄ − x̂ mean(x̂̄ x̂)), x̂̄ = ȳγ (``ops.vjp_normalize``); eval: ā = s x̂̄.

    Propagated first order through each factor, plus rounding of ≤ (n + 8) operations on terms
    of size s(|x̂̄| + mean|x̂̄| + |x̂| mean|x̂̄ x̂|)·(1 + |μ|s) (formulas in X, as for the forward)."""
    dx = r.mul(g, r.exact(gamma_))
    s, xh = nr.s, nr.xhat
    # underflow of γs (flushed when |γs| < tiny) or of ȳ·(γs): ≤ tiny·(1 + s)(|ȳ| + mean|ȳ|)
    flush = r.tiny * (1.0 + s.v) * (np.abs(g.v) + 1.0)
    if nr.axis is None:
        out = r.mul(dx, s)
        return R(out.v, out.e + 2 * r.u * np.abs(out.v) * nr.scale + flush)
    ax = nr.axis
    n = dx.v.shape[ax]

    def mean(a: np.ndarray) -> np.ndarray:
        return a.mean(axis=ax, keepdims=True)

    m1, m2 = mean(dx.v), mean(dx.v * xh.v)
    inner = dx.v - m1 - xh.v * m2
    v = s.v * inner
    prop_dx = s.v * (dx.e + mean(dx.e) + np.abs(xh.v) * mean(np.abs(xh.v) * dx.e))
    prop_xh = s.v * (np.abs(m2) * xh.e + np.abs(xh.v) * mean(np.abs(dx.v) * xh.e))
    prop_s = np.abs(inner) * s.e
    shadow = s.v * (np.abs(dx.v) + mean(np.abs(dx.v)) + np.abs(xh.v) * mean(np.abs(dx.v * xh.v)))
    flush = flush + r.tiny * (1.0 + s.v) * np.abs(g.v).mean(axis=ax, keepdims=True)
    return R(v, prop_dx + prop_xh + prop_s + gamma(n + 8, r.u) * shadow * nr.scale + flush)


# -- the bound for a whole problem -----------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Bound:
    """Absolute error bounds, same shapes as the quantities they bound. ``grads`` (per-example)
    is empty for a problem whose per-example gradients are undefined (spec §4.3)."""

    losses: np.ndarray  # (N,)
    grads: Grads  # {name: (N, *shape)} per-example
    loss: float  # the reduced loss
    batch_grads: Grads  # {name: shape}

    def __add__(self, other: Bound) -> Bound:
        return Bound(
            self.losses + other.losses,
            {k: v + other.grads[k] for k, v in self.grads.items()},
            self.loss + other.loss,
            {k: v + other.batch_grads[k] for k, v in self.batch_grads.items()},
        )


def _coefficient_rel_error(problem: Problem, u: float) -> np.ndarray:
    """Relative error of the computed κ_i: the division by Σ ω_i (a computed sum unless every
    ω_i is an integer: counts are exact), by Σ c_i (weighted_mean), N·T_i (sequence_mean: two
    divisions)."""
    n, name = problem.batch.size, problem.reduction.name
    if name == "mean":
        w = problem.counts
        if np.all(w == np.round(w)) or not np.sum(w):
            return np.full(n, u)
        return np.full(n, gamma(w.size, u) * np.sum(np.abs(w)) / abs(np.sum(w)) + u)
    if name == "sequence_mean":
        return np.full(n, 2 * u)
    if name == "weighted_mean":
        c = problem.batch.weights
        assert c is not None
        return np.full(n, gamma(n, u) * np.sum(np.abs(c)) / abs(np.sum(c)) + u)
    return np.zeros(n)


@dataclass(frozen=True, eq=False)
class _Forward:
    """The forward pass in R arithmetic, on rows (examples, or tokens of a sequence batch)."""

    inputs: list[R]
    slopes: dict[int, R]
    norms: dict[int, NormRounding]
    scales: dict[int, R]  # dropout m/(1 − p) per layer
    output: R


def _forward_bound(problem: Problem, r: Rounding) -> _Forward:
    lead = 2 if problem.batch.sequence else 1
    a = r.exact(_rows(problem.batch.inputs, lead))
    inputs: list[R] = []
    slopes: dict[int, R] = {}
    norms: dict[int, NormRounding] = {}
    scales: dict[int, R] = {}
    for k, layer in enumerate(problem.network.layers):
        inputs.append(a)
        if isinstance(layer, Dense):
            z = r.matmul(a, problem.params[f"{k}.weight"])
            if layer.bias:
                z = r.add(z, r.exact(problem.params[f"{k}.bias"]))
            a = z
        elif isinstance(layer, Activation):
            a, slopes[k] = activation(layer.name, a, r)
        elif isinstance(layer, Dropout):
            assert problem.batch.dropout is not None
            keep = _rows(problem.batch.dropout[k], lead)
            c = 1.0 / (1.0 - layer.p)
            scales[k] = R(keep * c, keep * r.u * c)  # m/(1 − p), or (a m)/(1 − p): ≤ 2u
            a = r.mul(a, scales[k])
        else:
            a, norms[k] = _norm_forward(layer, a, problem.params[f"{k}.weight"],
                                        problem.params[f"{k}.bias"], r)
    return _Forward(inputs, slopes, norms, scales, a)


def error_bound(problem: Problem, p: Precision,
                reference: tuple[np.ndarray, Grads] | None = None) -> Bound:
    """First-order bound on the error of a backend computing ``problem`` at precision p.

    Everything runs in R arithmetic on the problem's own values; ``reference`` is accepted for
    compatibility and unused. For a sequence batch rows are tokens: ℓ_i = Σ_t m_it ℓ_it adds
    γ_{T−1}, and the reduction over all N·T rows uses γ_{NT} (a flat sum, spec §7.1).
    """
    r = Rounding(p)
    fw = _forward_bound(problem, r)
    rows_loss, cot = _loss_and_cotangent(problem, fw.output, r)
    n = problem.batch.size
    t = problem.batch.inputs.shape[1] if problem.batch.sequence else 1
    m = problem.batch.token_mask.reshape(-1).astype(float) if problem.batch.sequence else None
    if m is not None:  # masked tokens: ℓ and ∂ℓ/∂f are multiplied by 0 exactly
        rows_loss = R(rows_loss.v * m, rows_loss.e * m)
        cot = R(cot.v * m[:, None], cot.e * m[:, None])
    losses = R(rows_loss.v.reshape(n, t).sum(axis=1),
               rows_loss.e.reshape(n, t).sum(axis=1)
               + gamma(t - 1, p.u) * np.abs(rows_loss.v).reshape(n, t).sum(axis=1))
    kappa = problem.coefficients
    eps = _coefficient_rel_error(problem, p.u)
    k_rows = np.repeat(kappa, t)
    eps_rows = np.repeat(eps, t)
    names = problem.network.param_shapes()

    # Per-example gradients: the backward pass seeded with ∂ℓ_i/∂f_i.
    per_example: Grads = {}
    if not problem.network.couples_examples:
        per_example = {k: e for k, (e, _) in _backward_bound(problem, fw, cot, r, n).items()}

    # The batch gradient: frameworks seed the backward pass with κ_i ∂ℓ_i/∂f_i (κ_i rounded,
    # relative error ε_i), so underflow happens at the scaled magnitude; then a sum over all
    # rows (γ of the number of rows: a flat sum). A backend that instead scales per-example
    # gradients at the end makes one more rounding (u|κ_i g_i| + tiny), also added.
    seed = R(k_rows[:, None] * cot.v,
             np.abs(k_rows)[:, None] * cot.e
             + (eps_rows + p.u)[:, None] * np.abs(k_rows[:, None] * cot.v)
             + p.tiny * r.maybe_nonzero(cot))
    scaled = _backward_bound(problem, fw, seed, r, n)

    def reduce(err: np.ndarray, shadow: np.ndarray, rows: int) -> np.ndarray:
        return (np.sum(err + p.u * shadow + p.tiny * (shadow > 0), axis=0)
                + gamma(rows, p.u) * shadow.sum(0))

    loss_terms = np.abs(kappa) * losses.e + eps * np.abs(kappa * losses.v)
    k_abs_loss = np.abs(kappa) * (np.abs(rows_loss.v).reshape(n, t).sum(axis=1))
    return Bound(
        losses=losses.e,
        grads=per_example,
        loss=float(reduce(loss_terms, k_abs_loss, n * t)),
        batch_grads={k: reduce(*scaled[k], n * t) for k in names},
    )


def _backward_bound(problem: Problem, fw: _Forward, g: R, r: Rounding,
                    n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """From the output cotangent g (rows), per parameter: (error bound, |value|) of each
    example's contribution (N, *shape): Σ over its rows of z̄ aᵀ and z̄ (Dense), ȳ ⊙ x̂ and ȳ
    (norms), the sum over T rows adding γ_{T−1} Σ|terms|."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    u, tiny = r.u, r.tiny
    op = r.op_rel  # operands of matrix products rounded (spec §7.4); 0 in strict modes
    layers = problem.network.layers
    first = min(int(name.split(".")[0]) for name in problem.network.param_shapes())
    t = g.v.shape[0] // n

    def per_example(e: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e3, v3 = e.reshape((n, t) + e.shape[1:]), np.abs(v).reshape((n, t) + v.shape[1:])
        return e3.sum(1) + gamma(t - 1, u) * v3.sum(1), v3.sum(1)

    for k in range(len(layers) - 1, first - 1, -1):
        layer, x = layers[k], fw.inputs[k]
        if isinstance(layer, Dense):
            w = np.abs(problem.params[f"{k}.weight"])
            gv, xv = np.abs(g.v), np.abs(x.v)
            maybe = np.einsum("mo,mi->moi", r.maybe_nonzero(g), r.maybe_nonzero(x))
            e_w = (np.einsum("mo,mi->moi", g.e, xv) + np.einsum("mo,mi->moi", gv, x.e)
                   + np.einsum("mo,mi->moi", g.e, x.e)  # see Rounding.mul
                   + (u + op) * np.einsum("mo,mi->moi", gv, xv) + tiny * maybe)
            out[f"{k}.weight"] = per_example(e_w, np.einsum("mo,mi->moi", g.v, x.v))
            if layer.bias:  # a bias gradient may be a product with ones: only z̄ is rounded
                out[f"{k}.bias"] = per_example(g.e + 0.5 * op * gv, g.v)
            if k == first:
                break
            products = r.maybe_nonzero(g).astype(float) @ (w > 0)
            g = R(g.v @ problem.params[f"{k}.weight"],
                  g.e @ w + (gamma(w.shape[0], u) + op) * (gv @ w) + tiny * products)
        elif isinstance(layer, Activation):
            g = r.mul(g, fw.slopes[k])
        elif isinstance(layer, Dropout):
            g = r.mul(g, fw.scales[k])
        else:
            nr = fw.norms[k]
            gx = r.mul(g, nr.xhat)
            # γ̄ may be formed as (ȳ·(a − μ))·s: an underflow before the ·s costs s·tiny
            out[f"{k}.weight"] = per_example(gx.e + tiny * nr.s.v * r.maybe_nonzero(g), gx.v)
            out[f"{k}.bias"] = per_example(g.e, g.v)
            if k == first:
                break
            g = _norm_backward(nr, g, problem.params[f"{k}.weight"], r)
    return {k: out[k] for k in problem.network.param_shapes()}


# -- tolerances ------------------------------------------------------------------------------------
Override = float | Mapping[str, float] | None


def tolerance(problem: Problem, dtype: str, mode: str = "strict", *, override: Override = None,
              twice: bool = False) -> Bound:
    """Tolerance for a backend at (dtype, mode) against the float64 reference (spec §7.2).

    ``problem`` must already be rounded to ``dtype`` (``Problem.rounded``). ``twice=True`` is for
    comparing two backend results with each other (both at dtype), e.g. mean of per-example
    gradients against the batch gradient (spec §2.13). ``override`` replaces the bound: one
    number for every quantity, or a dict {"loss", "grad"} of absolute tolerances.
    """
    b = error_bound(problem, precision(dtype, mode))
    other = b if twice else error_bound(problem, REFERENCE)
    total = b + other
    if override is None:
        return total
    spec = {"loss": override, "grad": override} if isinstance(override, float | int) else override
    lt, gt = float(spec.get("loss", 0.0)), float(spec.get("grad", 0.0))
    return Bound(
        np.full_like(total.losses, lt),
        {k: np.full_like(v, gt) for k, v in total.grads.items()},
        lt,
        {k: np.full_like(v, gt) for k, v in total.batch_grads.items()},
    )


# -- the update step (spec chapter 6) --------------------------------------------------------------
@dataclass
class UpdateState:
    """Optimiser state as the bound carries it: value (the float64 reference) and error bound."""

    t: int = 0
    buf: dict[str, R] = field(default_factory=dict)
    m: dict[str, R] = field(default_factory=dict)
    v: dict[str, R] = field(default_factory=dict)


def _lincomb(r: Rounding, c1: float, x: R, c2: float, y: R) -> R:
    """c₁x + c₂y with constants rounded once: |c₁|e_x + |c₂|e_y + 3u(|c₁x| + |c₂y|) + u|result|
    (+ tiny per product). 3u covers both ways frameworks write a moving average: the affine form
    (c₁, c₂ rounded, two products, one sum: 2u) and ``lerp`` x + w(y − x) (or its mirror for
    w ≥ ½), whose rounding is ≤ 3u·min(w, 1 − w)|y − x| ≤ 3u(|c₁x| + |c₂y|)."""
    a, b = np.abs(c1 * x.v), np.abs(c2 * y.v)
    v = c1 * x.v + c2 * y.v
    under = r.tiny * ((r.maybe_nonzero(x) & (c1 != 0)).astype(float)
                      + (r.maybe_nonzero(y) & (c2 != 0)).astype(float))
    return R(v, abs(c1) * x.e + abs(c2) * y.e + 3 * r.u * (a + b) + r.u * np.abs(v) + under)


def _div_by_positive(r: Rounding, x: R, y: R, floor: float) -> R:
    """x / y where the computed y is known to be ≥ ``floor`` > 0 (√v̂ + ε ≥ ε): rigorously
    |x̂/ŷ − x/y| ≤ (e_x y + |x| e_y) / (y · max(y − e_y, floor)), plus the division's rounding."""
    v = x.v / y.v
    low = np.maximum(y.v - y.e, floor)
    return R(v, (x.e * y.v + np.abs(x.v) * y.e) / (y.v * low) + r.u * np.abs(v)
             + r.tiny * r.maybe_nonzero(x))


def _worse(a: R, b: R) -> R:
    """Two evaluation orders of the same value: keep the larger error bound."""
    return R(a.v, np.maximum(a.e, b.e))


def update_step_bound(opt: Optimizer, theta: Mapping[str, np.ndarray], grads: Mapping[str, R],
                      state: UpdateState, p: Precision) -> tuple[dict[str, R], UpdateState]:
    """One optimiser step in R arithmetic: θ' (value and error bound) from exact θ and gradients
    ``grads`` (value, error bound), at precision p (spec §6.1; rules of ``reference.update``).

    Where frameworks order the arithmetic differently — PyTorch's Adam divides √v by √(1 − β₂ᵗ)
    and scales m/(·) by η/(1 − β₁ᵗ), optax divides m and v by their bias corrections first; AdamW
    multiplies θ by (1 − ηλ) in PyTorch, adds λθ to the update before scaling by −η in optax —
    both orders are bounded and the larger bound is kept. Scalars are computed in float64 and
    rounded once (``Rounding.const``)."""
    r = Rounding(p)
    t = state.t + 1
    new = UpdateState(t)
    out: dict[str, R] = {}
    for k in theta:
        th = r.exact(theta[k])
        g = grads[k]
        raw = g
        if opt.l2:
            g = r.add(g, r.mul(r.const(opt.l2), th))
        if opt.name == "sgd":
            if opt.momentum:
                g = g if t == 1 else r.add(r.mul(r.const(opt.momentum), state.buf[k]), g)
                new.buf[k] = g
            out[k] = r.sub(th, r.mul(r.const(opt.lr), g))
            if opt.l2 and (not opt.momentum or t == 1):
                # the same value written with decoupled decay, θ(1 − ηλ) − ηg (spec §6.5)
                out[k] = _worse(out[k], r.sub(r.mul(th, r.const(1.0 - opt.lr * opt.l2)),
                                              r.mul(r.const(opt.lr), raw)))
            continue
        b1, b2 = opt.betas
        zero = r.exact(np.zeros_like(theta[k]))
        m = _lincomb(r, b1, state.m.get(k, zero), 1.0 - b1, g)
        v = _lincomb(r, b2, state.v.get(k, zero), 1.0 - b2, r.mul(g, g))
        new.m[k], new.v[k] = m, v
        bc1, bc2 = opt.bias_corrections(t)
        eps = r.const(opt.eps)
        floor = opt.eps * (1.0 - 3.0 * p.u)
        # PyTorch (and reference.update): θ(1 − ηλ) − (η/bc₁) · m / (√v / √bc₂ + ε)
        denom = r.add(r.div(r.sqrt(v), r.const(math.sqrt(bc2))), eps)
        decayed = th if opt.name != "adamw" else r.mul(th, r.const(1.0 - opt.lr * opt.weight_decay))
        torch_order = r.sub(decayed, r.mul(r.const(opt.lr / bc1), _div_by_positive(r, m, denom,
                                                                                    floor)))
        # optax: θ + (−η)·(m̂ / (√v̂ + ε) [+ λθ]),  m̂ = m / bc₁, v̂ = v / bc₂
        q = _div_by_positive(r, r.div(m, r.const(bc1)),
                             r.add(r.sqrt(r.div(v, r.const(bc2))), eps), floor)
        if opt.name == "adamw":
            q = r.add(q, r.mul(r.const(opt.weight_decay), th))
        optax_order = r.sub(th, r.mul(r.const(opt.lr), q))
        out[k] = _worse(torch_order, optax_order)
    return out, new


def update_tolerance(problem: Problem, opt: Optimizer, batches: Sequence[Batch],
                     iterates: Sequence[Mapping[str, np.ndarray]], dtype: str,
                     mode: str = "strict") -> list[dict[str, np.ndarray]]:
    """Tolerances for a backend's parameters after each step, checked along its own trajectory.

    ``iterates[k]`` are the parameters the backend reported before step k (``problem.params``
    for k = 0, exact in ``dtype``); entry k bounds |θ̂_{k+1} − θ_{k+1}| where θ_{k+1} is the
    reference's step from ``iterates[k]`` (``reference.update.shadow``). The gradient of batch k
    at ``iterates[k]`` carries the chapter-7 bound of the backend's dtype and of the float64
    reference; both are propagated through the update, and through the optimiser state from
    step to step, at the backend's and at the reference's unit roundoff, and added (spec §7.2,
    §6.1). ``problem`` and the batches must already be rounded to ``dtype``.
    """
    states = {"backend": UpdateState(), "reference": UpdateState()}
    precisions = {"backend": precision(dtype, mode), "reference": REFERENCE}
    out = []
    for batch, theta in zip(batches, iterates, strict=True):
        at = problem.with_params(theta).with_batch(batch)
        _, value = batch_grad(at)
        total: dict[str, np.ndarray] = {}
        for who, p in precisions.items():
            bound = error_bound(at, p).batch_grads
            grads = {k: R(value[k], bound[k]) for k in value}
            new, states[who] = update_step_bound(opt, at.params, grads, states[who], p)
            for k, x in new.items():
                total[k] = total.get(k, 0.0) + x.e
        out.append(total)
    return out
