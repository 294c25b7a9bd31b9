"""The layers' arithmetic as JAX users write it (spec chapters 1 and 4), shared by the bucketed
and the plain programs.

* Dense: ``a Wᵀ + b`` (``torch.nn.Linear`` layout) with matmuls at ``Precision.HIGHEST`` (IEEE
  arithmetic in the requested dtype).
* Activations: ``jax.nn`` (``ACTIVATIONS``). ``jax.nn.leaky_relu(x, 0.01)`` is
  ``jnp.where(x >= 0, x, 0.01 x)``: its slope at exactly 0 is 1 (also at −0.0), where the spec
  and PyTorch take 0.01 (§4.6). It is used as is: the kink tests are strict xfails on jax (a
  finding). ``jax.nn.elu`` (α = 1) has slope 1 at 0 from both sides, as the spec.
* LayerNorm / BatchNorm without flax: μ = mean(a), v = mean((a − μ)²) (biased; not flax's
  default "fast variance" E[a²] − μ²), then ``(a - μ) * jax.lax.rsqrt(v + 1e-5) * γ + β``
  (``normalize``). LayerNorm over the features, train-mode BatchNorm over the batch axis of the
  batched loss, eval-mode BatchNorm with the running statistics as data.
* Dropout: ``jnp.where(m, a / (1 - p), 0)`` (``flax.linen.Dropout``'s form) with the keep-mask m
  taken from ``batch.dropout`` as data.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from reference.activations import ACTIVATION_NAMES
from reference.norms import NORM_EPS

__all__ = ["ACTIVATIONS", "HIGHEST", "IDENTITY", "dense", "dropout", "normalize"]

HIGHEST = jax.lax.Precision.HIGHEST

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "identity": lambda z: z,
    "relu": jax.nn.relu,  # relu'(0) = 0
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # exact erf form
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    # jnp.where(x >= 0, x, 0.01 x): slope 1 at exactly 0, where the spec (§4.6) and PyTorch say
    # 0.01. Kept as JAX users get it: the kink tests xfail it on jax (a finding, not hidden).
    "leaky_relu": functools.partial(jax.nn.leaky_relu, negative_slope=0.01),
    "elu": jax.nn.elu,  # α = 1: jnp.where(x > 0, x, expm1(x)); slope 1 at 0 from both sides
}
IDENTITY = ACTIVATION_NAMES.index("identity")
"""The index of "identity" in ACTIVATION_NAMES (and so in the padded program's slot kinds)."""


def dense(a: jax.Array, w: jax.Array, b: jax.Array | None) -> jax.Array:
    """z = a Wᵀ + b (torch.nn.Linear layout), IEEE arithmetic in a's dtype."""
    z = jnp.matmul(a, w.T, precision=HIGHEST)
    return z if b is None else z + b


def normalize(a: jax.Array, mean: jax.Array, var: jax.Array, gamma: jax.Array,
              beta: jax.Array) -> jax.Array:
    """(a − μ) · rsqrt(v + ε) · γ + β, left to right, as written by hand without flax (spec §4.1,
    §4.4); ε = 1e-5 is a Python float, rounded to the dtype like any weakly typed constant.
    ``jax.lax.rsqrt`` on XLA:CPU is 1/sqrt (bit-identical results; ≤ 1.24 u in float32)."""
    return (a - mean) * jax.lax.rsqrt(var + NORM_EPS) * gamma + beta


def dropout(a: jax.Array, keep: jax.Array, keep_prob: jax.Array | float) -> jax.Array:
    """flax.linen.Dropout with the keep-mask given as data: select(m, a / (1 − p), 0)."""
    return jnp.where(keep, a / keep_prob, 0)
