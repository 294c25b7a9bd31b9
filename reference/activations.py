"""The activation layer as one unit: its names, its forward and backward rules (from the table
``reference.ops.ACTIVATIONS``) and its error model (spec §1.5, §4.6, §7.1, §7.3).

Elementwise activations are bounded by the formula frameworks evaluate (e.g. GELU as
½z(1 + erf(z/√2))), so their error reflects that formula. A slope σ'(z) evaluated at a z that
itself errs by e_z errs by M2·e_z, M2 = sup|σ''| (``CURVATURE``); at a kink (relu at 0) where
|z| ≤ e_z the backend may take either branch, so the bound adds the jump of the slope (``KINKS``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .capabilities import register
from .numerics import R, Rounding
from .ops import (
    ACTIVATIONS,
    GELU_TANH_C,
    GELU_TANH_K,
    INV_SQRT_2PI,
    LEAKY_SLOPE,
    SQRT_HALF,
)
from .types import Array, Grads, ProblemError, Site
from .unit import LayerUnit

__all__ = ["ACTIVATION_FEATURES", "ACTIVATION_NAMES", "CORE_ACTIVATIONS", "CURVATURE", "KINKS",
           "Activation", "activation"]

ACTIVATION_NAMES = ("identity", "relu", "tanh", "sigmoid", "softplus", "gelu", "gelu_tanh",
                    "leaky_relu", "elu")
CORE_ACTIVATIONS = ACTIVATION_NAMES[:7]
"""The chapter-2 activations (spec 0.1.0): what the default strategies draw."""

ACTIVATION_FEATURES = {name: register(f"activation:{name}", f"Activation({name!r}): {what}")
                       for name, what in (
    ("identity", "σ(z) = z (§1.5)"),
    ("relu", "σ(z) = max(z, 0), slope 0 at z = 0 (§1.5, §2.9)"),
    ("tanh", "σ(z) = tanh z (§1.5)"),
    ("sigmoid", "σ(z) = 1/(1 + e^{−z}) (§1.5)"),
    ("softplus", "σ(z) = log(1 + e^z) (§1.5)"),
    ("gelu", "σ(z) = ½z(1 + erf(z/√2)), the exact GELU (§1.5)"),
    ("gelu_tanh", "σ(z) = ½z(1 + tanh(√(2/π)(z + 0.044715z³))), the tanh GELU (§1.5)"),
    ("leaky_relu", "σ(z) = z (z > 0), 0.01z otherwise, slope 0.01 at 0 (§4.6)"),
    ("elu", "σ(z) = z (z > 0), e^z − 1 otherwise, α = 1 (§4.6)"))}
"""Activation name → its capability name ``activation:<name>`` (spec §8.6)."""


@dataclass(frozen=True)
class Activation(LayerUnit):
    """Elementwise activation σ, one of ACTIVATION_NAMES (see reference.ops)."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in ACTIVATION_NAMES:
            raise ProblemError(
                f"Activation({self.name!r}): unknown activation; choose one of {ACTIVATION_NAMES}"
            )

    def __repr__(self) -> str:
        return f"Activation({self.name!r})"

    def features(self) -> frozenset[str]:
        return frozenset({ACTIVATION_FEATURES[self.name]})

    # -- its rules (the layer contract: ``reference.unit``) -------------------------------------
    def forward(self, a: Array, site: Site) -> tuple[Array, None]:
        return ACTIVATIONS[self.name][0](a), None

    def backward(self, g: Array, a: Array, out: Array, saved: None, site: Site,
                 rule: Callable, need_input: bool) -> tuple[Grads, Array]:
        """ḡ ⊙ σ'(z, a)."""
        return {}, g * ACTIVATIONS[self.name][1](a, out)

    def bound_forward(self, a: R, site: Site, r: Rounding) -> tuple[R, R]:
        """σ(z) with its error; keeps the slope σ'(z) with its error for the backward bound."""
        return activation(self.name, a, r)

    def bound_backward(self, g: R, x: R, slope: R, site: Site, r: Rounding, per_example: Callable,
                       need_input: bool) -> tuple[dict, R]:
        return {}, r.mul(g, slope)


# -- the error model: value and slope evaluated by the frameworks' formulas ----------------------
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
