"""Layers as units: everything the JAX backend does with one layer type, in one table entry.

``LAYERS`` maps each layer class of ``reference.problem`` to its ``LayerRule``:

* ``plain``: its forward as written, in the plain programs (``plain``);
* ``slot``: its slot kind in the padded normal form (``padded.SLOT_KINDS``), or None for Dense,
  which opens a block of its own (``buckets.Layout``);
* ``pad``: writes its parameters and per-slot data into the bucket's arrays (``buckets.pad``);
* ``unpad``: its parameters' gradients, sliced out of the padded gradients (``buckets.unpad``);
* ``couples``: whether it makes ℓ_i depend on the other examples, so that per-example gradients
  are undefined (spec §4.3: a train-mode BatchNorm).

A new layer type is one entry here (and a slot kind in ``padded`` if no branch there computes
it). The arithmetic itself is ``ops``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from reference.activations import ACTIVATION_NAMES, Activation
from reference.attention import SelfAttention
from reference.conv import Conv1d
from reference.embedding import Embedding
from reference.layers import Dense, Dropout, Layer
from reference.norms import BatchNorm, LayerNorm
from reference.problem import Problem
from reference.residual import Residual
from reference.types import Grads

from .ops import ACTIVATIONS, IDENTITY, dense, dropout, normalize
from .padded import NORM_STATS, SLOT_KINDS, Params
from .structured import attention_plain, conv1d_plain, embedding_plain

__all__ = ["LAYERS", "Buffers", "LayerRule", "Site", "bucketable", "rule"]


class Site(NamedTuple):
    """Where layer ``k`` of ``problem`` sits in the bucket: its block, its slot in the block's run
    (0 for a Dense layer, which is the block's own), the real width entering it, and the real
    numbers of examples ``n`` and tokens ``t``."""

    problem: Problem
    k: int
    block: int
    slot: int
    width: int
    n: int
    t: int


class Buffers(NamedTuple):
    """The bucket's per-layer arrays (numpy, written in place by ``LayerRule.pad``)."""

    params: Params
    stats: np.ndarray  # (B, S) int32 NORM_STATS
    rmean: np.ndarray  # (B, S, Wb)
    rvar: np.ndarray  # (B, S, Wb)
    keep: np.ndarray  # (B, S) 1 − p
    drop: np.ndarray  # (Nb, B, S, Tb, Wb) bool keep-masks


Plain = Callable[[Any, int, Mapping[str, jax.Array], jax.Array, Mapping[int, jax.Array]],
                 jax.Array]
"""(layer, k, θ, x, dropout keep-masks by layer index) → the layer's output."""


def _nothing(*_: Any) -> None:
    return None


def _no_grads(*_: Any) -> Grads:
    return {}


@dataclass(frozen=True)
class LayerRule:
    """What this backend does with one layer type (see the module docstring)."""

    plain: Plain
    slot: Callable[[Any], int] | None
    pad: Callable[[Any, Site, Buffers], None] = _nothing
    unpad: Callable[[Any, Site, Params, tuple], Grads] = _no_grads
    couples: Callable[[Any], bool] = lambda layer: False
    bucketed: bool = True
    """False: no slot in the padded normal form; a problem using it runs the plain programs."""


# -- Dense ---------------------------------------------------------------------------------------
def _dense_plain(layer: Dense, k: int, params: Mapping[str, jax.Array], x: jax.Array,
                 drop: Mapping[int, jax.Array]) -> jax.Array:
    return dense(x, params[f"{k}.weight"], params.get(f"{k}.bias"))


def _dense_pad(d: Dense, at: Site, into: Buffers) -> None:
    theta = at.problem.params
    into.params.ws[at.block, : d.out_features, : d.in_features] = theta[f"{at.k}.weight"]
    if d.bias:
        into.params.bs[at.block, : d.out_features] = theta[f"{at.k}.bias"]


def _dense_unpad(d: Dense, at: Site, grads: Params, lead: tuple) -> Grads:
    out = {f"{at.k}.weight": grads.ws[lead + (at.block, slice(d.out_features),
                                              slice(d.in_features))]}
    if d.bias:
        out[f"{at.k}.bias"] = grads.bs[lead + (at.block, slice(d.out_features))]
    return out


# -- activations and Dropout ---------------------------------------------------------------------
def _activation_plain(layer: Activation, k: int, params: Mapping[str, jax.Array], x: jax.Array,
                      drop: Mapping[int, jax.Array]) -> jax.Array:
    return ACTIVATIONS[layer.name](x)


def _dropout_plain(layer: Dropout, k: int, params: Mapping[str, jax.Array], x: jax.Array,
                   drop: Mapping[int, jax.Array]) -> jax.Array:
    return dropout(x, drop[k], 1.0 - layer.p)


def _dropout_pad(layer: Dropout, at: Site, into: Buffers) -> None:
    """Slot branch 0 with this layer's 1 − p and keep-masks (identity slots keep 1 and 1)."""
    j, s, n, t, w = at.block, at.slot, at.n, at.t, at.width
    into.keep[j, s] = 1.0 - layer.p
    masks = at.problem.batch.dropout
    assert masks is not None
    into.drop[:n, j, s, :t, :w] = masks[at.k].reshape(n, t, w) != 0


# -- norms ---------------------------------------------------------------------------------------
def _norm(x: jax.Array, k: int, params: Mapping[str, jax.Array], mean: jax.Array,
          var: jax.Array) -> jax.Array:
    return normalize(x, mean, var, params[f"{k}.weight"], params[f"{k}.bias"])


def _layer_norm_plain(layer: LayerNorm, k: int, params: Mapping[str, jax.Array], x: jax.Array,
                      drop: Mapping[int, jax.Array]) -> jax.Array:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return _norm(x, k, params, mean, var)


def _batch_norm_plain(layer: BatchNorm, k: int, params: Mapping[str, jax.Array], x: jax.Array,
                      drop: Mapping[int, jax.Array]) -> jax.Array:
    if layer.training:  # batch statistics (never reached per example: §4.3)
        mean = jnp.mean(x, axis=0)
        var = jnp.mean(jnp.square(x - mean), axis=0)
    else:
        assert layer.running_mean is not None and layer.running_var is not None
        mean = jnp.asarray(layer.running_mean, x.dtype)
        var = jnp.asarray(layer.running_var, x.dtype)
    return _norm(x, k, params, mean, var)


def _pad_affine(at: Site, into: Buffers, stats: str) -> None:
    """γ, β of a norm slot, and which statistics it uses (NORM_STATS)."""
    j, s, w = at.block, at.slot, at.width
    into.params.gammas[j, s, :w] = at.problem.params[f"{at.k}.weight"]
    into.params.betas[j, s, :w] = at.problem.params[f"{at.k}.bias"]
    into.stats[j, s] = NORM_STATS.index(stats)


def _layer_norm_pad(layer: LayerNorm, at: Site, into: Buffers) -> None:
    _pad_affine(at, into, "layer_norm")


def _batch_norm_pad(layer: BatchNorm, at: Site, into: Buffers) -> None:
    _pad_affine(at, into, "batch_norm_train" if layer.training else "batch_norm_eval")
    if not layer.training:
        j, s, w = at.block, at.slot, at.width
        into.rmean[j, s, :w], into.rvar[j, s, :w] = layer.running_mean, layer.running_var


def _norm_unpad(layer: LayerNorm | BatchNorm, at: Site, grads: Params, lead: tuple) -> Grads:
    real = lead + (at.block, at.slot, slice(layer.features))
    return {f"{at.k}.weight": grads.gammas[real], f"{at.k}.bias": grads.betas[real]}


# -- Residual (spec §9.4) ------------------------------------------------------------------------
def _residual_plain(layer: Residual, k: Any, params: Mapping[str, jax.Array], x: jax.Array,
                    drop: Mapping[Any, jax.Array]) -> jax.Array:
    """x + block(x), each layer of the block by its own table entry (named ``k.block.j``)."""
    h = x
    for j, inner in enumerate(layer.block):
        name = f"{k}.block.{j}"
        h = rule(inner).plain(inner, name, params, h, {name: drop[k]} if k in drop else {})
    return x + h


_NORM_SLOT = SLOT_KINDS.index("norm")

LAYERS: dict[type, LayerRule] = {
    Dense: LayerRule(_dense_plain, None, _dense_pad, _dense_unpad),
    Activation: LayerRule(_activation_plain, lambda layer: ACTIVATION_NAMES.index(layer.name)),
    Dropout: LayerRule(_dropout_plain, lambda layer: IDENTITY, _dropout_pad),
    LayerNorm: LayerRule(_layer_norm_plain, lambda layer: _NORM_SLOT, _layer_norm_pad,
                         _norm_unpad),
    BatchNorm: LayerRule(_batch_norm_plain, lambda layer: _NORM_SLOT, _batch_norm_pad,
                         _norm_unpad, couples=lambda layer: layer.training),
    # spec chapter 9 (``structured``): plain programs only
    Embedding: LayerRule(embedding_plain, None, bucketed=False),
    Conv1d: LayerRule(conv1d_plain, None, bucketed=False),
    SelfAttention: LayerRule(attention_plain, None, bucketed=False),
    Residual: LayerRule(_residual_plain, None, bucketed=False),
}
"""Each layer class of ``reference.problem`` and what this backend does with it."""


def bucketable(problem: Problem) -> bool:
    """Whether the problem fits the padded normal form: no tie and no layer without a slot."""
    return not problem.network.tied and all(rule(la).bucketed for la in problem.network.layers)


def rule(layer: Layer) -> LayerRule:
    """The table entry of ``layer``'s type."""
    try:
        return LAYERS[type(layer)]
    except KeyError:
        raise TypeError(f"the jax backend has no rule for layer {layer!r}") from None
