"""The normalisation layers as one unit: LayerNorm and BatchNorm, their forward and backward
rules (``reference.ops.normalize``/``vjp_normalize``/``standardize``/``affine``) and their error
model (spec §4.1–§4.4, §7.1).

Both normalise along an axis (``_Norm.axis``: −1 the features for LayerNorm, 0 the examples for a
train-mode BatchNorm, None for an eval-mode BatchNorm, which uses its running statistics) and
apply the affine map y = γ ⊙ x̂ + β with parameters ``k.weight`` (γ) and ``k.bias`` (β).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from .capabilities import register
from .numerics import R, Rounding, gamma
from .ops import affine, normalize, standardize, vjp_normalize
from .types import Array, Grads, ProblemError, Site
from .unit import LayerUnit

__all__ = ["NORM_EPS", "BatchNorm", "LayerNorm", "NormRounding"]

LAYERNORM = register("layer:layernorm", "LayerNorm(features): per-example normalisation over "
                     "the features, affine γ, β; ε = 1e-5 (§4.1)")
BATCHNORM = register("layer:batchnorm", "BatchNorm(features, training=False, running_mean, "
                     "running_var): eval mode, the given running statistics (§4.4)")
BATCHNORM_TRAIN = register("layer:batchnorm_train", "BatchNorm(features): train mode, the "
                           "batch's own biased statistics; couples the examples, per_example "
                           "raises Undefined (§4.2, §4.3); implies layer:batchnorm")


class _Norm(LayerUnit):
    """What LayerNorm and BatchNorm share: their rules (the layer contract: ``reference.unit``)."""

    features: int

    @property
    def axis(self) -> int | None:
        raise NotImplementedError

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.features,), "bias": (self.features,)}

    def check_width(self, width: int) -> bool:
        return self.features == width

    def standardize(self, a: Array, site: Site) -> tuple[Array, Array]:
        raise NotImplementedError

    def forward(self, a: Array, site: Site) -> tuple[Array, tuple[Array, Array]]:
        """y = γ ⊙ x̂ + β; keeps (x̂, s) for the backward rule."""
        axis = self.axis
        xhat, s = (normalize(a, axis, NORM_EPS) if axis is not None
                   else self.standardize(a, site))
        return affine(xhat, site.param("weight"), site.param("bias")), (xhat, s)

    def backward(self, g: Array, a: Array, out: Array, saved: tuple[Array, Array], site: Site,
                 rule: Callable, need_input: bool) -> tuple[Grads, Array]:
        """γ̄ = rule(ȳ ⊙ x̂), β̄ = rule(ȳ); ā by ``ops.vjp_normalize`` (eval mode: s x̂̄)."""
        xhat, s = saved
        ones = np.ones(g.shape[:-1] + (1,), g.dtype)
        grads = {"weight": rule(g * xhat, ones)[1], "bias": rule(g, ones)[1]}
        if not need_input:
            return grads, g
        dxhat = g * site.param("weight", g.dtype)
        axis = self.axis
        return grads, (vjp_normalize(dxhat, xhat, s, axis) if axis is not None else dxhat * s)

    def bound_forward(self, a: R, site: Site, r: Rounding) -> tuple[R, NormRounding]:
        return _norm_forward(self, a, site.param("weight"), site.param("bias"), r)

    def bound_backward(self, g: R, x: R, nr: NormRounding, site: Site, r: Rounding,
                       per_example: Callable, need_input: bool) -> tuple[dict, R]:
        gx = r.mul(g, nr.xhat)
        # γ̄ may be formed as (ȳ·(a − μ))·s: an underflow before the ·s costs s·tiny
        out = {"weight": per_example(gx.e + r.tiny * nr.s.v * r.maybe_nonzero(g), gx.v),
               "bias": per_example(g.e, g.v)}
        if not need_input:
            return out, g
        return out, _norm_backward(nr, g, site.param("weight"), r)


NORM_EPS = 1e-5
"""ε of LayerNorm and BatchNorm: the default of ``torch.nn.LayerNorm``/``BatchNorm1d``."""


@dataclass(frozen=True)
class LayerNorm(_Norm):
    """Per-example normalisation over the features (spec §4.1), with affine γ ⊙ x̂ + β:
    x̂ = (a − μ)/√(v + ε), μ and v (biased) the mean and variance of a's own features.
    Parameters ``k.weight`` (γ) and ``k.bias`` (β), shape (features,)."""

    features: int

    def __post_init__(self) -> None:
        if self.features < 1:
            raise ProblemError(f"{self!r}: features must be >= 1")

    def __repr__(self) -> str:
        return f"LayerNorm({self.features})"

    def unit_features(self) -> frozenset[str]:  # ``features`` is the width (spec 0.2.0)
        return frozenset({LAYERNORM})

    @property
    def axis(self) -> int | None:
        return -1


@dataclass(frozen=True)
class BatchNorm(_Norm):
    """Normalisation of each feature over the batch (spec §4.2–§4.4), affine γ ⊙ x̂ + β.

    training=True: μ and v (biased) are the batch's own statistics — the examples are coupled.
    training=False: μ, v are the given running statistics — per-example again.
    Parameters ``k.weight`` (γ) and ``k.bias`` (β), shape (features,); running statistics are
    data, not parameters (``torch.nn.BatchNorm1d`` buffers)."""

    features: int
    training: bool = True
    running_mean: tuple[float, ...] | None = None
    running_var: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.features < 1:
            raise ProblemError(f"{self!r}: features must be >= 1")
        for name in ("running_mean", "running_var"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, tuple(float(x) for x in v))
        if not self.training:
            rm, rv = self.running_mean, self.running_var
            if rm is None or rv is None or len(rm) != self.features or len(rv) != self.features:
                raise ProblemError(f"{self!r}: eval mode needs running_mean and running_var of "
                                   f"length {self.features}")
            if min(rv) <= 0:
                raise ProblemError(f"{self!r}: running_var must be > 0")

    def __repr__(self) -> str:
        if self.training:
            return f"BatchNorm({self.features})"
        return (f"BatchNorm({self.features}, training=False, running_mean={self.running_mean!r}, "
                f"running_var={self.running_var!r})")

    @property
    def axis(self) -> int | None:
        return 0 if self.training else None

    @property
    def couples_examples(self) -> bool:
        """Train mode: ℓ_i depends on the other examples (§4.2)."""
        return self.training

    def unit_features(self) -> frozenset[str]:  # ``features`` is the width (spec 0.2.0)
        return frozenset({BATCHNORM, BATCHNORM_TRAIN} if self.training else {BATCHNORM})

    @property
    def takes_sequences(self) -> bool:
        """Not defined here for sequence batches."""
        return False

    def standardize(self, a: Array, site: Site) -> tuple[Array, Array]:
        assert self.running_mean is not None and self.running_var is not None
        return standardize(a, np.asarray(self.running_mean, site.dtype),
                           np.asarray(self.running_var, site.dtype), NORM_EPS)

    def rounded(self, dtype: str) -> BatchNorm:
        """Eval mode: the running statistics (data) rounded to ``dtype`` (``Problem.rounded``)."""
        if self.training:
            return self

        def r(a: np.ndarray) -> np.ndarray:
            return a.astype(dtype).astype(np.float64)

        return replace(self, running_mean=tuple(r(np.array(self.running_mean))),
                       running_var=tuple(r(np.array(self.running_var))))



# -- the error model -------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class NormRounding:
    """What the backward bound of a LayerNorm/BatchNorm needs from its forward bound."""

    axis: int | None  # −1 LayerNorm, 0 train-mode BatchNorm, None eval-mode BatchNorm
    xhat: R
    s: R  # 1/√(v + ε), keepdims
    scale: np.ndarray  # 1 + |μ|s: formulas in terms of the raw input X round at |X|s


def _norm_forward(layer: _Norm, x: R, gamma_: np.ndarray, beta: np.ndarray,
                  r: Rounding) -> tuple[R, NormRounding]:
    """y = γ ⊙ x̂ + β with x̂ = (x − μ)s, s = 1/√(v + ε) (spec §4.1–§4.4, §7.1).

    Statistics along an axis of n elements. Propagated (first order, exact): ∂x̂_i/∂x_j =
    s(δ_ij − 1/n − x̂_i x̂_j/n), so e_x̂ ≤ s(e_x + mean e_x + |x̂| mean(|x̂| e_x)). Rounding: μ
    errs by γ_n mean|x|; v by γ_{n+3}(v + 2μ²) (a bound for the one-pass E[x²] − μ², which
    covers two-pass and Welford updates too); s by ELEMENTARY_ULPS (rsqrt) + u; kernels that
    compute y = X·(γs) + (β − μγs) round at |X|s = |x̂ + μs| (the factor 1 + |μ|s). Eval-mode
    BatchNorm uses the running statistics (exact data) instead."""
    eps = NORM_EPS
    if layer.axis is None:
        assert isinstance(layer, BatchNorm)
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
        axis = layer.axis
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
