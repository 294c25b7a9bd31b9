"""The losses and the guarded mean as JAX users write them (spec chapter 3), shared by the
bucketed and the plain programs.

* ``optax.squared_error``, ``optax.sigmoid_binary_cross_entropy``, ``optax.huber_loss(delta=δ)``,
  Gaussian NLL written out as ½(log v + (f − y)²/v) (optax has none), each averaged over the D
  outputs (``ELEMENTWISE``). Cross-entropy of integer labels without smoothing:
  ``w[y] * optax.softmax_cross_entropy_with_integer_labels`` (no multiply without class
  weights); with smoothing or probability targets: ``optax.softmax_cross_entropy(logits, w * q̃)``
  with q̃ = ``optax.smooth_labels`` = (1 − ε) q + ε/C (``smoothed_cross_entropy``).
* Ignored labels (optax has no ``ignore_index``) and masked tokens: ``jnp.where(kept, ℓ, 0)``,
  counts ω = ``jnp.where(kept, w[y], 0)``; ℓ_i of a sequence is the sum over its tokens.
  ``mean`` is ``safe_mean(Σ ℓ_i, Σ ω_i)``: the guarded ``jnp.where(Σω != 0, Σℓ / jnp.where(Σω
  != 0, Σω, 1), 0)``, which gives L = 0 and ∇L = 0 when every label is ignored (§3.4).
  Measured (jax 0.10.2, optax 0.2.8, float32 and float64 alike) with every label ignored: the
  naive ``jnp.sum(mask * ℓ) / jnp.sum(mask)`` returns loss NaN and a gradient that is NaN in
  every entry; ``jnp.where(count > 0, jnp.sum(mask * ℓ) / count, 0)`` returns loss 0 but still
  an all-NaN gradient (the untaken branch's cotangent is 0 · 1/0; JAX FAQ "gradients contain
  NaN where using where"); ``jnp.maximum(count, 1)`` returns 0 and 0 but divides by the wrong
  number whenever class weights make 0 < Σω < 1. ``sequence_mean`` is
  ``jnp.mean(ℓ_i / T_i)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

__all__ = ["ELEMENTWISE", "gaussian_nll", "safe_mean", "smoothed_cross_entropy"]


def gaussian_nll(f: jax.Array, y: jax.Array, var: jax.Array) -> jax.Array:
    """½(log v + (f − y)²/v) elementwise; optax has no Gaussian NLL, so it is written in jnp."""
    return 0.5 * (jnp.log(var) + jnp.square(f - y) / var)


ELEMENTWISE: dict[str, Callable[..., jax.Array]] = {
    "squared_error": lambda f, y, var, delta: optax.squared_error(f, y),
    "bce_with_logits": lambda f, y, var, delta: optax.sigmoid_binary_cross_entropy(f, y),
    "huber": lambda f, y, var, delta: optax.huber_loss(f, y, delta=delta),
    "gaussian_nll": lambda f, y, var, delta: gaussian_nll(f, y, var),
}
"""Elementwise losses (per output d): ℓ is their mean over the D outputs (spec §1.1)."""


def smoothed_cross_entropy(logits: jax.Array, q: jax.Array, class_weights: jax.Array | None,
                           one_minus_eps: Any, eps_over_c: Any) -> jax.Array:
    """−Σ_k w_k q̃_k log softmax(z)_k with q̃ = ``optax.smooth_labels``'s (1 − ε) q + ε/C, the
    class weights applied as users do: ``optax.softmax_cross_entropy(logits, w * q̃)``."""
    q = one_minus_eps * q + eps_over_c
    return optax.softmax_cross_entropy(logits, q if class_weights is None else class_weights * q)


def safe_mean(total: jax.Array, count: jax.Array) -> jax.Array:
    """total / count, and 0 (with gradient 0) when count = 0 (spec §3.4: every label ignored).

    The denominator is guarded too: ``jnp.where(count > 0, total / count, 0)`` alone has value 0
    but gradient NaN (the where's untaken branch still gets cotangent 0 · 1/0 = NaN; JAX FAQ
    "gradients contain NaN where using where"), and the plain ``total / count`` is NaN with a NaN
    gradient. ``jnp.maximum(count, 1)`` would be wrong for class weights summing to less than 1."""
    ok = count != 0
    return jnp.where(ok, total / jnp.where(ok, count, 1), 0)
