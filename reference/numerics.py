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

from .grads import Grads, batch_grad, per_example_grads
from .ops import ACTIVATIONS, GELU_TANH_C, GELU_TANH_K, INV_SQRT_2PI, SQRT_HALF, erfc
from .problem import Activation, Batch, Dense, Problem
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
}
"""M2 = sup_z |σ''(z)| for each activation (each value is checked on a grid by the meta-tests)."""

KINKS: dict[str, tuple[float, float]] = {"relu": (0.0, 1.0)}
"""Activation → (location, jump of the slope) of its kink."""


def _activation_rounding(name: str, z: np.ndarray, r: Rounding) -> tuple[R, R]:
    """(σ(z), σ'(z)) with the error of evaluating them at an exactly known z."""
    x = r.exact(z)
    one, half = r.exact(1.0), r.exact(0.5)
    if name == "identity":
        return x, r.exact(np.ones_like(z))
    if name == "relu":
        return r.exact(np.maximum(z, 0.0)), r.exact((z > 0).astype(np.float64))
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
    own_formula = 0.0 if name in ("identity", "relu") else r.fn_rel * np.abs(s.v)
    slope_err = s.e + own_formula + CURVATURE[name] * z.e
    if name in KINKS:
        at, jump = KINKS[name]
        near = np.abs(z.v - at) <= z.e
        near &= z.e > 0
        lipschitz = np.where(near, np.maximum(lipschitz, jump), lipschitz)
        slope_err = slope_err + np.where(near, jump, 0.0)
    return R(a.v, a.e + lipschitz * z.e), R(s.v, slope_err)


# -- losses ----------------------------------------------------------------------------------------
def _loss_and_cotangent(problem: Problem, out: R, r: Rounding) -> tuple[R, R]:
    y = problem.batch.targets
    if problem.loss.name == "squared_error":
        d = out.v.shape[1]
        res = r.sub(out, r.exact(y))
        loss = r.mul(r.sum(r.mul(res, res), axis=1), r.const(1.0 / d))
        return loss, r.mul(r.const(2.0 / d), res)
    # softmax cross-entropy via log-softmax: ls = (z − m) − log Σ e^{z−m}; δ = e^{ls} − e_y
    m = R(out.v.max(axis=1, keepdims=True), out.e.max(axis=1, keepdims=True))
    s = r.sub(out, m)
    lse = r.log(r.sum(r.exp(s), axis=1))
    ls = r.sub(s, R(lse.v[:, None], lse.e[:, None]))
    rows = np.arange(len(y))
    loss = R(-ls.v[rows, y], ls.e[rows, y])
    p = r.exp(ls)
    onehot = np.zeros_like(p.v)
    onehot[rows, y] = 1.0
    return loss, r.sub(p, r.exact(onehot))


# -- the bound for a whole problem -----------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Bound:
    """Absolute error bounds, same shapes as the quantities they bound."""

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
    """Relative error of the computed κ_i: 1/N and Σc rounding (weighted_mean)."""
    n, name = problem.batch.size, problem.reduction.name
    if name == "mean":
        return np.full(n, u)
    if name == "weighted_mean":
        c = problem.batch.weights
        assert c is not None
        return np.full(n, gamma(n, u) * np.sum(np.abs(c)) / abs(np.sum(c)) + u)
    return np.zeros(n)


def error_bound(problem: Problem, p: Precision,
                reference: tuple[np.ndarray, Grads] | None = None) -> Bound:
    """First-order bound on the error of a backend computing ``problem`` at precision p.

    ``reference`` is ``per_example_grads(problem)`` when the caller has it already (it does not
    depend on p: ``tolerance`` computes it once for the two bounds it adds).
    """
    r = Rounding(p)
    a = r.exact(problem.batch.inputs)
    inputs: list[R] = []
    slopes: dict[int, R] = {}
    for k, layer in enumerate(problem.network.layers):
        inputs.append(a)
        if isinstance(layer, Dense):
            z = r.matmul(a, problem.params[f"{k}.weight"])
            if layer.bias:
                z = r.add(z, r.exact(problem.params[f"{k}.bias"]))
            a = z
        else:
            assert isinstance(layer, Activation)
            a, slopes[k] = activation(layer.name, a, r)
    losses, cot = _loss_and_cotangent(problem, a, r)
    names = problem.network.param_shapes()
    values, grads = per_example_grads(problem) if reference is None else reference
    n = problem.batch.size
    kappa = problem.coefficients
    eps = _coefficient_rel_error(problem, p.u)

    # Per-example gradients: the backward pass seeded with ∂ℓ_i/∂f_i.
    per_example = _backward_bound(problem, inputs, slopes, cot, r)

    # The batch gradient: frameworks seed the backward pass with κ_i ∂ℓ_i/∂f_i (κ_i rounded,
    # relative error ε_i), so underflow happens at the scaled magnitude; then an N-term sum.
    # A backend that instead scales the per-example gradients at the end makes one more
    # rounding (u|κ_i g_i| + tiny), also added.
    seed = R(kappa[:, None] * cot.v,
             np.abs(kappa)[:, None] * cot.e + (eps + p.u)[:, None] * np.abs(kappa[:, None] * cot.v)
             + p.tiny * r.maybe_nonzero(cot))
    scaled = _backward_bound(problem, inputs, slopes, seed, r)

    def reduce(err: np.ndarray, val: np.ndarray) -> np.ndarray:
        shape = (-1,) + (1,) * (err.ndim - 1)
        kv = np.abs(kappa.reshape(shape) * val)
        return np.sum(err + p.u * kv + p.tiny * (kv > 0), axis=0) + gamma(n, p.u) * kv.sum(0)

    loss_terms = np.abs(kappa) * losses.e + eps * np.abs(kappa * values)
    return Bound(
        losses=losses.e,
        grads=per_example,
        loss=float(reduce(loss_terms, values)),
        batch_grads={k: reduce(scaled[k], grads[k]) for k in names},
    )


def _backward_bound(problem: Problem, inputs: list[R], slopes: dict[int, R], g: R,
                    r: Rounding) -> Grads:
    """Error bounds of z̄_i a_iᵀ and z̄_i for every Dense layer, from the output cotangent g."""
    out: Grads = {}
    u, tiny = r.u, r.tiny
    op = r.op_rel  # operands of matrix products rounded (spec §7.4); 0 in strict modes
    first = problem.network.dense_layers()[0][0]  # below it, no parameter needs a cotangent
    for k in range(len(problem.network.layers) - 1, first - 1, -1):
        layer, x = problem.network.layers[k], inputs[k]
        if isinstance(layer, Dense):
            w = np.abs(problem.params[f"{k}.weight"])
            gv, xv = np.abs(g.v), np.abs(x.v)
            maybe = np.einsum("no,ni->noi", r.maybe_nonzero(g), r.maybe_nonzero(x))
            out[f"{k}.weight"] = (np.einsum("no,ni->noi", g.e, xv)
                                  + np.einsum("no,ni->noi", gv, x.e)
                                  + np.einsum("no,ni->noi", g.e, x.e)  # see Rounding.mul
                                  + (u + op) * np.einsum("no,ni->noi", gv, xv) + tiny * maybe)
            if layer.bias:  # a bias gradient may be a product with ones: only z̄ is rounded
                out[f"{k}.bias"] = g.e + 0.5 * op * gv
            if k == first:
                break
            products = r.maybe_nonzero(g).astype(float) @ (w > 0)
            g = R(g.v @ problem.params[f"{k}.weight"],
                  g.e @ w + (gamma(w.shape[0], u) + op) * (gv @ w) + tiny * products)
        else:
            g = r.mul(g, slopes[k])
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
    reference = per_example_grads(problem)  # the same for both bounds
    b = error_bound(problem, precision(dtype, mode), reference)
    other = b if twice else error_bound(problem, REFERENCE, reference)
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
