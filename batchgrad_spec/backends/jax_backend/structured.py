"""The layers of spec chapter 9 as JAX users write them (the plain programs run them; they have
no slot in the padded normal form: a problem that uses one runs the plain programs, ``adapter``).

* ``Embedding``: ``jnp.take(W, idx, axis=0)``; ``padding_idx`` as ``jnp.where(row == p,
  lax.stop_gradient(W), W)`` (flax's ``nn.Embed`` has no ``padding_idx``; this is how its users
  keep a row frozen): the row is read, and gets no gradient (§9.1).
* ``Conv1d``: ``lax.conv_general_dilated(x, W, window_strides=(s,), padding=((p, p),),
  rhs_dilation=(d,), dimension_numbers=("NCH", "OIH", "NCH"), feature_group_count=G,
  precision=HIGHEST)`` on the flat row read as (C, L) (§9.2).
* ``SelfAttention``: the in/out projections at ``Precision.HIGHEST`` and ``jax.nn.
  dot_product_attention(q, k, v, mask=keys)`` ((B, T, H, d_h) layout, boolean mask: True =
  attend) under ``jax.default_matmul_precision("highest")``. A query whose every key is masked
  gets uniform weights over the (masked) keys in JAX 0.10 (the XLA implementation fills masked
  scores with a large negative finite number), where §9.3.2 states zero context: finite either
  way, and such a query is a masked token, so no loss or gradient sees it.
* ``Residual``: x + block(x), the block's layers by their own rules (``layers``, which holds
  the table they are looked up in).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from reference.attention import SelfAttention
from reference.conv import Conv1d
from reference.embedding import Embedding

from .ops import HIGHEST, dense

__all__ = ["attention_plain", "conv1d_plain", "embedding_plain"]

Params = Mapping[str, jax.Array]


def embedding_plain(layer: Embedding, k: Any, params: Params, x: jax.Array,
                    drop: Mapping[Any, jax.Array]) -> jax.Array:
    w = params[f"{k}.weight"]
    if layer.padding_idx is not None:
        rows = jnp.arange(layer.num_embeddings)[:, None]
        w = jnp.where(rows == layer.padding_idx, jax.lax.stop_gradient(w), w)
    return jnp.take(w, x, axis=0)


def conv1d_plain(layer: Conv1d, k: Any, params: Params, x: jax.Array,
                 drop: Mapping[Any, jax.Array]) -> jax.Array:
    lead = x.shape[:-1]
    xs = x.reshape((-1, layer.in_channels, layer.length))
    z = jax.lax.conv_general_dilated(
        xs, params[f"{k}.weight"], window_strides=(layer.stride,),
        padding=((layer.padding, layer.padding),), rhs_dilation=(layer.dilation,),
        dimension_numbers=("NCH", "OIH", "NCH"), feature_group_count=layer.groups,
        precision=HIGHEST)
    if layer.bias:
        z = z + params[f"{k}.bias"][:, None]
    return z.reshape(lead + (-1,))


def attention_plain(layer: SelfAttention, k: Any, params: Params, x: jax.Array,
                    drop: Mapping[Any, jax.Array]) -> jax.Array:
    single = x.ndim == 2  # one example under vmap: (T, d)
    xs, mask = (x[None], drop[k][None]) if single else (x, drop[k])
    qkv = dense(xs, params[f"{k}.in_proj_weight"], params[f"{k}.in_proj_bias"])
    n, t, _ = xs.shape
    q, kk, v = (a.reshape(n, t, layer.heads, -1) for a in jnp.split(qkv, 3, axis=-1))
    with jax.default_matmul_precision("highest"):
        c = jax.nn.dot_product_attention(q, kk, v, mask=mask[:, None, None, :])
    out = dense(c.reshape(n, t, layer.dim), params[f"{k}.out_proj.weight"],
                params[f"{k}.out_proj.bias"])
    return out[0] if single else out
