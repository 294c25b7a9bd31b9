"""Primitives: each forward op with its backward (vector-Jacobian product) rule beside it.

The contract, written once (after jax's ``stax``): every op acts on a batch, leading axis N.
For an activation σ the table ``ACTIVATIONS[name]`` holds ``(σ, σ')`` where ``σ'(z, a)`` is the
slope given the pre-activation z and the value a = σ(z); the VJP of an elementwise op is always
``ḡ ↦ ḡ ⊙ σ'(z, a)``, so one line per activation says everything. Longer rules live in
``vjp_<op>`` on the lines right after their op. Nothing here allocates per example: there is no
Python loop over the batch.

Conventions at kinks (spec §1.5): relu'(0) = 0, the value PyTorch and JAX both use.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Array = np.ndarray
Slope = Callable[[Array, Array], Array]

SQRT_HALF = math.sqrt(0.5)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
GELU_TANH_K = math.sqrt(2.0 / math.pi)
GELU_TANH_C = 0.044715


# -- special functions (numpy has no erf) ---------------------------------------------------------
def erfc(x: Array) -> Array:
    """Complementary error function; relative error < 1e-14 in float64 for every real x (tested).

    |x| < 1: erf by the series (2/√π) e^{−x²} Σ_n 2ⁿ x^{2n+1} / (1·3···(2n+1)) (all terms of one
    sign, no cancellation), erfc = 1 − erf. |x| ≥ 1: the continued fraction
    erfc(x) = e^{−x²}/√π · 1/(x + ½/(x + 1/(x + 3/2/(x + …)))) evaluated bottom-up, and
    erfc(−x) = 2 − erfc(x).
    """
    x = np.asarray(x)
    ax = np.abs(x)
    small = np.minimum(ax, 1.0)
    term, total, x2 = small, small, small * small
    for n in range(1, 40):
        term = term * (2.0 * x2) / (2 * n + 1)
        total = total + term
    erf_small = (2.0 / math.sqrt(math.pi)) * np.exp(-x2) * total
    big = np.maximum(ax, 1.0)
    frac = big
    for k in range(300, 0, -1):
        frac = big + (0.5 * k) / frac
    erfc_big = np.exp(-big * big) / (math.sqrt(math.pi) * frac)
    erfc_abs = np.where(ax < 1.0, 1.0 - erf_small, erfc_big)
    return np.where(x < 0, 2.0 - erfc_abs, erfc_abs).astype(x.dtype)


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
    """Per-example W̄_i = z̄_i a_iᵀ (N, n_out, n_in) and b̄_i = z̄_i (N, n_out)."""
    return np.einsum("no,ni->noi", dz, a), dz


def vjp_dense_params_batch(dz: Array, a: Array) -> tuple[Array, Array]:
    """Batch W̄ = Δᵀ A (n_out, n_in) and b̄ = Σ_i z̄_i: the matrix form, summing over examples."""
    return dz.T @ a, dz.sum(axis=0)


# -- losses: per-example values ℓ_i (N,) and ∂ℓ_i/∂f_i (N, D) --------------------------------------
def squared_error(out: Array, y: Array) -> Array:
    """ℓ_i = (1/D) Σ_d (f_id − y_id)²."""
    return np.mean((out - y) ** 2, axis=1)


def vjp_squared_error(out: Array, y: Array) -> Array:
    """∂ℓ_i/∂f_i = (2/D)(f_i − y_i)."""
    return (2.0 / out.shape[1]) * (out - y)


def log_softmax(z: Array) -> Array:
    m = np.max(z, axis=1, keepdims=True)
    return z - m - np.log(np.sum(np.exp(z - m), axis=1, keepdims=True))


def softmax_cross_entropy(logits: Array, labels: Array) -> Array:
    """ℓ_i = log Σ_k e^{z_ik} − z_{i,y_i}."""
    return -np.take_along_axis(log_softmax(logits), labels[:, None], axis=1)[:, 0]


def vjp_softmax_cross_entropy(logits: Array, labels: Array) -> Array:
    """∂ℓ_i/∂z_i = softmax(z_i) − e_{y_i}."""
    p = np.exp(log_softmax(logits))
    p[np.arange(len(labels)), labels] -= 1.0
    return p


LOSSES: dict[str, tuple[Callable[[Array, Array], Array], Callable[[Array, Array], Array]]] = {
    "squared_error": (squared_error, vjp_squared_error),
    "softmax_cross_entropy": (softmax_cross_entropy, vjp_softmax_cross_entropy),
}
