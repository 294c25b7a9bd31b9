"""Primitives: each forward op with its backward (vector-Jacobian product) rule beside it.

The contract, written once (after jax's ``stax``): every op acts on a batch, leading axis N.
For an activation σ the table ``ACTIVATIONS[name]`` holds ``(σ, σ')`` where ``σ'(z, a)`` is the
slope given the pre-activation z and the value a = σ(z); the VJP of an elementwise op is always
``ḡ ↦ ḡ ⊙ σ'(z, a)``, so one line per activation says everything. Longer rules live in
``vjp_<op>`` on the lines right after their op. Nothing here allocates per example: there is no
Python loop over the batch.

Conventions at kinks (spec §1.5, §4.6): the slope of the branch z ≤ 0, so relu'(0) = 0 (PyTorch
and JAX) and leaky_relu'(0) = LEAKY_SLOPE (PyTorch; ``jax.nn.leaky_relu`` takes 1).

Rows: the losses act on rows of outputs, one row per example or, for sequences, per token; the
normalisations act along an axis (features for LayerNorm, examples for BatchNorm).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Array = np.ndarray
Slope = Callable[[Array, Array], Array]

LEAKY_SLOPE = 0.01
"""Negative slope of leaky_relu: the default of ``torch.nn.LeakyReLU`` and ``jax.nn.leaky_relu``."""
SQRT_HALF = math.sqrt(0.5)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
GELU_TANH_K = math.sqrt(2.0 / math.pi)
GELU_TANH_C = 0.044715


# -- special functions (numpy has no erf) ---------------------------------------------------------
def _erf_series(x: Array) -> Array:
    """erf(x) = (2/√π) e^{−x²} Σ_n 2ⁿ x^{2n+1} / (1·3···(2n+1)) for 0 ≤ x ≤ 1 (all terms of one
    sign, no cancellation; 40 terms leave < 1e-17 at x = 1)."""
    term, total, x2 = x, x, x * x
    for n in range(1, 40):
        term = term * (2.0 * x2) / (2 * n + 1)
        total = total + term
    return (2.0 / math.sqrt(math.pi)) * np.exp(-x2) * total


def _exp_minus_square(a: Array) -> Array:
    """e^{−a²} for a ≥ 0, without the relative error u·a² that rounding a² first would cause
    (5·10⁻¹⁴ at a = 25): a = hi + lo with hi on a grid coarse enough that hi² is exact, and
    e^{−a²} = e^{−hi²} e^{−(a − hi)(a + hi)}. a ≥ 64 gives 0, as e^{−a²} underflows there."""
    scale = 2.0 ** ((np.finfo(a.dtype).nmant + 1) // 2 - 6)  # hi: ≤ 6 + that many bits
    a = np.minimum(a, 64.0)
    hi = np.rint(a * scale) / scale
    return np.exp(-hi * hi) * np.exp(-(a - hi) * (a + hi))


def _erfc_continued_fraction(a: Array, terms: int) -> Array:
    """erfc(a) = e^{−a²}/√π · 1/(a + ½/(a + 1/(a + 3/2/(a + …)))) for a ≥ 1, ``terms`` partial
    denominators, evaluated bottom-up. It converges slowly near 1 (167 terms for 1e-15 at
    a = 1) and fast further out (14 at a ≥ 5)."""
    frac = a
    for k in range(terms, 0, -1):
        frac = a + (0.5 * k) / frac
    return _exp_minus_square(a) / (math.sqrt(math.pi) * frac)


ERFC_STEP = 8
"""Taylor centres c = j/8: |x − c| ≤ 1/16."""
ERFC_TAYLOR_END = 5.0
"""|x| < 5 by Taylor series about the nearest centre, |x| ≥ 5 by the continued fraction."""
ERFC_TAYLOR_TERMS = 15
"""Powers of (x − c) kept: 13 reach 2e-15, 14 and more 6e-16 (tested); one spare."""
ERFC_CF_TERMS = 16
"""Continued-fraction terms for |x| ≥ 5: 14 reach 1.5e-15 at x = 5 (tested); two spare."""


def _erfc_taylor_table() -> Array:
    """(ERFC_TAYLOR_TERMS + 1, centres): row n holds the Taylor coefficient t_n(c) of erfc at c,
    t_0 = erfc(c) (by the series, c < 1, or 300 continued-fraction terms, c ≥ 1: slow, once) and
    t_n = (−1)ⁿ (2/√π) e^{−c²} H_{n−1}(c) / n! (erfc⁽ⁿ⁾ = (−1)ⁿ (2/√π) H_{n−1} e^{−x²}, H the
    physicists' Hermite polynomials, H_{k+1} = 2x H_k − 2k H_{k−1}). c² is exact (c = j/8)."""
    c = np.arange(int(ERFC_TAYLOR_END * ERFC_STEP) + 1) / ERFC_STEP
    table = np.empty((ERFC_TAYLOR_TERMS + 1, len(c)))
    table[0] = np.where(c < 1.0, 1.0 - _erf_series(np.minimum(c, 1.0)),
                        _erfc_continued_fraction(np.maximum(c, 1.0), 300))
    scale = (2.0 / math.sqrt(math.pi)) * np.exp(-c * c)
    h_prev, h = np.zeros_like(c), np.ones_like(c)  # H_{n−2}, H_{n−1}
    for n in range(1, ERFC_TAYLOR_TERMS + 1):
        table[n] = (-1) ** n * scale * h / math.factorial(n)
        h_prev, h = h, 2.0 * c * h - 2.0 * (n - 1) * h_prev
    return table


_ERFC_TABLE = {np.dtype(np.float64): _erfc_taylor_table()}


def erfc(x: Array) -> Array:
    """Complementary error function; relative error < 1e-15 in float64 wherever erfc(x) is a
    normal number (tested against math.erfc; 6e-16 at most on a dense grid), computed in x's
    float dtype (a float32 array runs float32 arithmetic, like the rest of the reference).

    |x| < 5: the Taylor series about the nearest c = j/8, erfc(c + h) = Σ_n t_n(c) hⁿ with
    |h| ≤ 1/16 (see ``_erfc_taylor_table``), by Horner's rule. |x| ≥ 5: the continued fraction
    (``_erfc_continued_fraction``, 16 terms). x < 0: erfc(x) = 2 − erfc(−x). Each method runs
    only on the elements that need it.
    """
    x = np.asarray(x)
    dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)
    ax = np.abs(x).astype(dtype, copy=False)
    out = np.empty(ax.shape, dtype)
    near = ax < ERFC_TAYLOR_END
    if near.any():
        a = ax[near]
        j = np.rint(a * ERFC_STEP).astype(np.intp)
        h = a - (j / ERFC_STEP).astype(dtype)  # exact (Sterbenz), |h| ≤ 1/16
        if dtype not in _ERFC_TABLE:
            _ERFC_TABLE[dtype] = _ERFC_TABLE[np.dtype(np.float64)].astype(dtype)
        coef = _ERFC_TABLE[dtype][:, j]
        s = coef[-1]
        for n in range(ERFC_TAYLOR_TERMS - 1, -1, -1):
            s = s * h + coef[n]
        out[near] = s
    far = ~near  # and NaN
    if far.any():
        out[far] = _erfc_continued_fraction(ax[far], ERFC_CF_TERMS)
    return np.where(x < 0, 2.0 - out, out).astype(dtype, copy=False)


def normal_cdf(x: Array) -> Array:
    """Φ(x) = ½ erfc(−x/√2), accurate in relative terms also far in the left tail."""
    return 0.5 * erfc(-x * SQRT_HALF)


def normal_pdf(x: Array) -> Array:
    """φ(x) = e^{−x²/2}/√(2π)."""
    return INV_SQRT_2PI * np.exp(-0.5 * x * x)


def sigmoid(z: Array) -> Array:
    """σ(z) = 1/(1 + e^{−z}), evaluated without overflow."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softplus(z: Array) -> Array:
    """log(1 + e^z) = max(z, 0) + log1p(e^{−|z|})."""
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def _gelu_tanh_inner(z: Array) -> tuple[Array, Array]:
    t = np.tanh(GELU_TANH_K * (z + GELU_TANH_C * z**3))
    return t, GELU_TANH_K * (1.0 + 3.0 * GELU_TANH_C * z * z)


def gelu_tanh(z: Array) -> Array:
    """½ z (1 + tanh(√(2/π)(z + 0.044715 z³))), torch ``approximate='tanh'``, jax's default."""
    return 0.5 * z * (1.0 + _gelu_tanh_inner(z)[0])


def gelu_tanh_slope(z: Array) -> Array:
    t, du = _gelu_tanh_inner(z)
    return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * du


# -- activations: name -> (σ, σ'(z, a)) -----------------------------------------------------------
ACTIVATIONS: dict[str, tuple[Callable[[Array], Array], Slope]] = {
    "identity":  (lambda z: z,                     lambda z, a: np.ones_like(z)),
    "relu":      (lambda z: np.maximum(z, 0.0),    lambda z, a: (z > 0).astype(z.dtype)),
    "tanh":      (np.tanh,                         lambda z, a: 1.0 - a * a),
    "sigmoid":   (sigmoid,                         lambda z, a: a * (1.0 - a)),
    "softplus":  (softplus,                        lambda z, a: sigmoid(z)),
    "gelu":      (lambda z: z * normal_cdf(z),     lambda z, a: normal_cdf(z) + z * normal_pdf(z)),
    "gelu_tanh": (gelu_tanh,                       lambda z, a: gelu_tanh_slope(z)),
    "leaky_relu": (lambda z: np.where(z > 0, z, LEAKY_SLOPE * z),
                   lambda z, a: np.where(z > 0, 1.0, LEAKY_SLOPE).astype(z.dtype)),
    "elu":       (lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0.0))),
                  lambda z, a: np.where(z > 0, 1.0, np.exp(np.minimum(z, 0.0))).astype(z.dtype)),
}  # fmt: skip


# -- dense layer -----------------------------------------------------------------------------------
def dense(a: Array, w: Array, b: Array | None) -> Array:
    """z = a Wᵀ + b for a batch a of shape (N, n_in); W is (n_out, n_in)."""
    z = a @ w.T
    return z if b is None else z + b


def vjp_dense_input(dz: Array, w: Array) -> Array:
    """ā = z̄ W: the cotangent flowing to the layer's input."""
    return dz @ w


def vjp_dense_params_per_example(dz: Array, a: Array) -> tuple[Array, Array]:
    """Per-example W̄_i = Σ_t z̄_it a_itᵀ (N, n_out, n_in) and b̄_i = Σ_t z̄_it (N, n_out); a
    batch of single examples has one t."""
    n = dz.shape[0]
    dz3, a3 = dz.reshape(n, -1, dz.shape[-1]), a.reshape(n, -1, a.shape[-1])
    return np.einsum("nto,nti->noi", dz3, a3), dz3.sum(axis=1)


def vjp_dense_params_batch(dz: Array, a: Array) -> tuple[Array, Array]:
    """Batch W̄ = Δᵀ A (n_out, n_in) and b̄ = Σ_i z̄_i: the matrix form, summing over examples
    (and tokens)."""
    dz2, a2 = dz.reshape(-1, dz.shape[-1]), a.reshape(-1, a.shape[-1])
    return dz2.T @ a2, dz2.sum(axis=0)


# -- normalisation (LayerNorm: axis −1, BatchNorm: axis 0) and dropout -----------------------------
def normalize(a: Array, axis: int, eps: float) -> tuple[Array, Array]:
    """x̂ = (a − μ)/√(v + ε) with μ, v the mean and biased variance along ``axis``; also
    returns s = 1/√(v + ε) (kept dims) for the backward rule."""
    mu = a.mean(axis=axis, keepdims=True)
    d = a - mu
    s = 1.0 / np.sqrt((d * d).mean(axis=axis, keepdims=True) + eps)
    return d * s, s


def vjp_normalize(dx: Array, xhat: Array, s: Array, axis: int) -> Array:
    """ā = s (x̂̄ − mean(x̂̄) − x̂ mean(x̂̄ ⊙ x̂)), means along ``axis``: μ and v depend on
    every element they average, which is what couples the examples in train-mode BatchNorm."""
    return s * (dx - dx.mean(axis=axis, keepdims=True)
                - xhat * (dx * xhat).mean(axis=axis, keepdims=True))


def standardize(a: Array, mean: Array, var: Array, eps: float) -> tuple[Array, Array]:
    """Eval-mode BatchNorm: x̂ = (a − μ_run)/√(v_run + ε), fixed statistics; s as above."""
    s = 1.0 / np.sqrt(var + eps)
    return (a - mean) * s, s  # VJP: ā = s x̂̄ (the statistics are constants)


def affine(xhat: Array, gamma: Array, beta: Array) -> Array:
    """y = γ ⊙ x̂ + β; VJP: x̂̄ = ȳ γ, γ̄ = Σ ȳ ⊙ x̂, β̄ = Σ ȳ (sums over examples or tokens)."""
    return xhat * gamma + beta


def dropout(a: Array, keep: Array, p: float) -> Array:
    """a ⊙ m/(1 − p) for a given keep-mask m; VJP: ḡ ⊙ m/(1 − p) (the same linear map)."""
    return a * (keep / (1.0 - p))


# -- losses on rows: values ℓ (M,) and ∂ℓ/∂f (M, D) -----------------------------------------------
def squared_error(out: Array, y: Array) -> Array:
    """ℓ = (1/D) Σ_d (f_d − y_d)²."""
    return np.mean((out - y) ** 2, axis=1)


def vjp_squared_error(out: Array, y: Array) -> Array:
    """∂ℓ/∂f = (2/D)(f − y)."""
    return (2.0 / out.shape[1]) * (out - y)


def bce_with_logits(z: Array, y: Array) -> Array:
    """ℓ = (1/D) Σ_d max(z_d, 0) − z_d y_d + log(1 + e^{−|z_d|}): the stable form, finite for
    every finite logit (the naive −y log σ(z) − (1 − y) log(1 − σ(z)) overflows)."""
    return np.mean(np.maximum(z, 0.0) - z * y + np.log1p(np.exp(-np.abs(z))), axis=1)


def vjp_bce_with_logits(z: Array, y: Array) -> Array:
    """∂ℓ/∂z = (σ(z) − y)/D."""
    return (sigmoid(z) - y) / z.shape[1]


def huber(out: Array, y: Array, delta: float) -> Array:
    """ℓ = (1/D) Σ_d h_δ(r_d): ½r² for |r| ≤ δ, δ(|r| − ½δ) beyond (continuous slope at δ)."""
    r = np.abs(out - y)
    return np.mean(np.where(r <= delta, 0.5 * r * r, delta * (r - 0.5 * delta)), axis=1)


def vjp_huber(out: Array, y: Array, delta: float) -> Array:
    """∂ℓ/∂f = clip(f − y, −δ, δ)/D."""
    return np.clip(out - y, -delta, delta) / out.shape[1]


def gaussian_nll(out: Array, y: Array, var: Array) -> Array:
    """ℓ = (1/D) Σ_d ½(log v_d + (f_d − y_d)²/v_d): negative when v < 1 and f ≈ y (spec §3.9)."""
    r = out - y
    return np.mean(0.5 * (np.log(var) + r * r / var), axis=1)


def vjp_gaussian_nll(out: Array, y: Array, var: Array) -> Array:
    """∂ℓ/∂f = (f − y)/(v D)."""
    return (out - y) / (var * out.shape[1])


def log_softmax(z: Array) -> Array:
    m = np.max(z, axis=1, keepdims=True)
    return z - m - np.log(np.sum(np.exp(z - m), axis=1, keepdims=True))


def smoothed_targets(targets: Array, classes: int, smoothing: float,
                     ignore_index: int | None) -> Array:
    """q̃ = (1 − ε) q + ε/C per row, q = e_y for a label (a zero row when y = ignore_index, so
    an ignored row contributes neither its label nor its smoothing term) or the given
    probability row."""
    if targets.dtype.kind == "f":
        return (1.0 - smoothing) * targets + smoothing / classes
    live = np.ones(targets.shape, bool) if ignore_index is None else targets != ignore_index
    q = np.zeros((len(targets), classes))
    q[np.arange(len(targets)), np.where(live, targets, 0)] = 1.0
    return live[:, None] * ((1.0 - smoothing) * q + smoothing / classes)


def cross_entropy(logits: Array, q: Array, w: Array) -> Array:
    """ℓ = −Σ_k w_k q̃_k log softmax(z)_k for smoothed targets q̃ (``smoothed_targets``) and class
    weights w; with one-hot q̃ and w = 1 this is log Σ_k e^{z_k} − z_y."""
    return -np.sum(w * q * log_softmax(logits), axis=1)


def vjp_cross_entropy(logits: Array, q: Array, w: Array) -> Array:
    """∂ℓ/∂z = (Σ_k w_k q̃_k) softmax(z) − w ⊙ q̃ (= softmax(z) − e_y unweighted, hard label)."""
    wq = w * q
    return wq.sum(axis=1, keepdims=True) * np.exp(log_softmax(logits)) - wq


LOSSES: dict[str, tuple[Callable[..., Array], Callable[..., Array]]] = {
    "squared_error": (squared_error, vjp_squared_error),
    "bce_with_logits": (bce_with_logits, vjp_bce_with_logits),
    "huber": (huber, vjp_huber),
    "gaussian_nll": (gaussian_nll, vjp_gaussian_nll),
    "softmax_cross_entropy": (cross_entropy, vjp_cross_entropy),
}
"""name → (ℓ(f, y, *extra), ∂ℓ/∂f(f, y, *extra)) on rows; ``reference.grads.loss_data`` supplies
the extra data (δ, variances, class weights) and, for cross-entropy, q̃ in place of y."""
