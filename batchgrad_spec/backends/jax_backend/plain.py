"""The plain programs (``BATCHGRAD_JAX_BUCKETS=0``): the problem traced as written.

Static network and loss, exact shapes, ``jnp.mean`` etc.: every problem compiles its own
programs, which certifies the unpadded semantics that the bucketed programs (``padded``) embed.
``PLAIN_CACHE_LIMIT`` bounds the jit caches that this fills. Each layer's forward is its
``layers.LAYERS`` entry's ``plain``.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from reference.layers import Network
from reference.problem import Problem

from .compilation import CPU_COMPILER_OPTIONS, TRACES
from .layers import rule
from .losses import ELEMENTWISE, safe_mean, smoothed_cross_entropy

__all__ = ["PLAIN_BATCH", "PLAIN_CACHE_LIMIT", "PLAIN_SINGLE", "PLAIN_VMAP", "bound_plain_caches",
           "plain_batch", "plain_inputs", "plain_single", "plain_static", "plain_vmap"]


def _plain_forward(params: Mapping[str, jax.Array], network: Network, x: jax.Array,
                   drop: Mapping[int, jax.Array]) -> jax.Array:
    params = network.with_ties(params)  # a tied name reads the same array: grads sum (§9.5)
    for k, layer in enumerate(network.layers):
        x = rule(layer).plain(layer, k, params, x, drop)
    return x


def _plain_losses(params, data, *, network, loss, sequence):
    """(ℓ, ω, T) for the examples in ``data`` (or the one example), as a JAX user writes it:
    per-token losses, ignored labels and masked tokens zeroed by ``jnp.where``, summed over
    tokens."""
    f = _plain_forward(params, network, data["x"], data.get("drop", {}))
    y = data["y"]
    cw = None if loss.class_weights is None else jnp.asarray(loss.class_weights, f.dtype)
    live = data.get("mask")  # token mask (sequences)
    count = jnp.ones(f.shape[:-1], f.dtype)
    if loss.elementwise:
        per_token = jnp.mean(ELEMENTWISE[loss.name](f, y, data.get("var"), loss.delta), axis=-1)
    elif jnp.issubdtype(y.dtype, jnp.integer):
        if loss.ignore_index is not None:
            live = y != loss.ignore_index
            y = jnp.where(live, y, 0)
        if loss.label_smoothing == 0:
            per_token = optax.softmax_cross_entropy_with_integer_labels(f, y)
            if cw is not None:
                per_token = cw[y] * per_token
        else:
            q = optax.smooth_labels(jax.nn.one_hot(y, f.shape[-1], dtype=f.dtype),
                                    loss.label_smoothing)
            per_token = optax.softmax_cross_entropy(f, q if cw is None else cw * q)
        if cw is not None:
            count = cw[y]
    else:
        eps = loss.label_smoothing
        per_token = smoothed_cross_entropy(f, y, cw, 1.0 - eps, eps / f.shape[-1])
    if live is not None:
        per_token, count = jnp.where(live, per_token, 0), jnp.where(live, count, 0)
    if not sequence:
        return per_token, count, jnp.ones_like(count)
    return (jnp.sum(per_token, axis=-1), jnp.sum(count, axis=-1),
            jnp.sum(data["mask"], axis=-1).astype(f.dtype))


def _plain_example_loss(params, data, *, network, loss, sequence):
    return _plain_losses(params, data, network=network, loss=loss, sequence=sequence)[0]


def _plain_reduced_loss(params, data, w, *, network, loss, sequence, reduction):
    losses, counts, tokens = _plain_losses(params, data, network=network, loss=loss,
                                           sequence=sequence)
    if reduction == "mean":
        return safe_mean(jnp.sum(losses), jnp.sum(counts))
    if reduction == "sequence_mean":
        return jnp.mean(losses / tokens)
    if reduction == "sum":
        return jnp.sum(losses)
    if reduction == "weighted":
        return jnp.sum(w * losses)
    return jnp.sum(w * losses) / jnp.sum(w)


_PLAIN_STATIC = ("network", "loss", "sequence")


# The jitted functions keep their names (_plain_batch, …): a program's name is part of its key
# in the persistent compilation cache. Each is jitted for the CPU (with CPU_COMPILER_OPTIONS:
# BATCHGRAD_JAX_FAST_COMPILE) and for accelerators (stock), as the bucketed programs are.
def _plain_batch(params, data, w, *, network, loss, sequence, reduction):
    TRACES["plain_batch"] += 1
    fn = functools.partial(_plain_reduced_loss, network=network, loss=loss, sequence=sequence,
                           reduction=reduction)
    return jax.value_and_grad(fn)(params, data, w)


def _plain_vmap(params, data, *, network, loss, sequence):
    TRACES["plain_vmap"] += 1
    fn = functools.partial(_plain_example_loss, network=network, loss=loss, sequence=sequence)
    return jax.vmap(jax.value_and_grad(fn), in_axes=(None, 0))(params, data)


def _plain_single(params, data, *, network, loss, sequence):
    TRACES["plain_single"] += 1
    fn = functools.partial(_plain_example_loss, network=network, loss=loss, sequence=sequence)
    return jax.value_and_grad(fn)(params, data)


def _per_platform(fn: Any, static: tuple[str, ...]) -> dict[str, Any]:
    return {"cpu": jax.jit(fn, static_argnames=static, compiler_options=CPU_COMPILER_OPTIONS),
            "other": jax.jit(fn, static_argnames=static)}


PLAIN_BATCH = _per_platform(_plain_batch, (*_PLAIN_STATIC, "reduction"))
PLAIN_VMAP = _per_platform(_plain_vmap, _PLAIN_STATIC)
PLAIN_SINGLE = _per_platform(_plain_single, _PLAIN_STATIC)
plain_batch, plain_vmap, plain_single = PLAIN_BATCH["other"], PLAIN_VMAP["other"], \
    PLAIN_SINGLE["other"]
"""(L, ∇L) of the reduced loss; (ℓ_i, g_i) by ``jax.vmap``; (ℓ, g) of one example: jitted
stock; ``on_device(PLAIN_…, device)`` is the CPU entry on the CPU."""

PLAIN_CACHE_LIMIT = 64
"""The unpadded programs compiled between two clearings of their jit caches. Every problem
compiles its own programs and jit keeps each executable: ``BATCHGRAD_JAX_BUCKETS=0`` on
the chapter 3 and 4 tests (≈1,750 programs) grew to 3.7 GB and died
twice in a segmentation fault inside a jitted call; bounded, it stays under 1 GB and passes."""
_PLAIN_CLEARED = collections.Counter()


def bound_plain_caches() -> None:
    """Clear the plain programs' jit caches every ``PLAIN_CACHE_LIMIT`` traces."""
    traced = sum(TRACES[k] for k in ("plain_batch", "plain_vmap", "plain_single"))
    if traced - _PLAIN_CLEARED["at"] >= PLAIN_CACHE_LIMIT:
        for table in (PLAIN_BATCH, PLAIN_VMAP, PLAIN_SINGLE):
            for fn in table.values():
                fn.clear_cache()
        _PLAIN_CLEARED["at"] = traced


def plain_static(problem: Problem) -> dict[str, Any]:
    """The plain programs' static arguments: the network, the loss, whether it has sequences."""
    return {"network": problem.network, "loss": problem.loss,
            "sequence": problem.batch.sequence}


def plain_inputs(problem: Problem, dtype: np.dtype) -> tuple:
    """(θ, per-example data, c) as numpy arrays in the dtype: data holds x, y and, where the
    problem has them, the token mask, the variances and the dropout keep-masks and attention
    key-padding masks (bool) by layer index; indices as int32."""
    b = problem.batch
    params = {k: v.astype(dtype) for k, v in problem.params.items()}
    y = b.targets.astype(np.int32) if b.targets.dtype.kind in "iu" else b.targets.astype(dtype)
    x = b.inputs.astype(np.int32) if b.indices else b.inputs.astype(dtype)
    data: dict[str, Any] = {"x": x, "y": y}
    if b.sequence:
        data["mask"] = b.token_mask
    if b.variances is not None:
        data["var"] = b.variances.astype(dtype)
    drop = {k: m != 0 for k, m in (b.dropout or {}).items()}
    for k, layer in enumerate(problem.network.layers):  # an attention's key-padding mask
        mask = None if layer.data_rows else layer.site_data(k, b)
        if mask is not None:
            drop[k] = mask
    if drop:
        data["drop"] = drop
    w = np.ones(b.size, dtype) if b.weights is None else b.weights.astype(dtype)
    return params, data, w
