"""Deliberately wrong backends for chapter 9 (structured layers).

Each wraps the reference's ``NumpyBackend`` and gets exactly one thing wrong; loadable as
``--backend batchgrad_spec.faults.structured:<name>``, the subjects of
``tests/meta/test_structured_faults.py`` and rows of the README gallery:

* ``embedding_overwriting_scatter``  per-example embedding gradients written with an indexed
  assignment (``w[i, idx] = z̄``: the last of repeated indices wins) instead of an indexed add
  (§9.1); right where no index repeats within an example.
* ``tied_one_use_only``              a tied parameter's gradient taken from its first use only
  (the output projection's contribution dropped: Opacus#413, pytorch#80951) (§9.5).
* ``conv_ignores_dilation``          the convolution's weight gradient read with dilation 1
  (the forward pass right) (§9.2); right where dilation is 1 or the kernel has one tap.
* ``attention_all_masked_nan``       the masked softmax as e / Σe without the guard for a row
  whose every key is masked: 0/0 = NaN, which reaches that example's ℓ_i and g_i (0 · NaN) and
  the batch gradient (pytorch#41508) (§9.3.2).

The 1/N-scaled per-example gradients passed off as g_i are chapter 2's ``per_example_scaled``,
caught on the structured layers by §9.6. Faults are injected as in ``faults.layers``: one rule
of the reference swapped (``unittest.mock.patch``) for the duration of the backend's call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any
from unittest import mock

import numpy as np

from reference.attention import SelfAttention
from reference.contract import Config
from reference.conv import Conv1d
from reference.embedding import Embedding
from reference.grads import batch_grad, per_example_grads
from reference.layers import Network
from reference.problem import Problem
from reference.types import Array, Grads, Site

from .base import Faulty, PerExample

__all__ = ["attention_all_masked_nan", "conv_ignores_dilation", "embedding_overwriting_scatter",
           "tied_one_use_only"]


class _Patched(Faulty):
    """The numpy reference backend computing under ``patched()``."""

    def patched(self) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext()

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        with self.patched():
            return super().loss_and_grad(problem, config)

    def per_example(self, problem: Problem, config: Config, method: str) -> PerExample:
        with self.patched():
            return super().per_example(problem, config, method)


# -- §9.1 -----------------------------------------------------------------------------------------
_embedding_backward = Embedding.backward


def _overwriting_backward(self: Embedding, g: Array, a: Array, out: Array, saved: None,
                          site: Site, rule: Callable, need_input: bool) -> tuple[Grads, Array]:
    """Per example (a rule with a leading example axis): W̄_i[idx] = z̄ by assignment."""
    grads, cot = _embedding_backward(self, g, a, out, saved, site, rule, need_input)
    if grads["weight"].ndim == 2:  # the batch gradient: left right
        return grads, cot
    n = g.shape[0]
    idx = a.reshape(n, -1).astype(np.int64)
    w = np.zeros_like(grads["weight"])
    w[np.arange(n)[:, None], idx] = g.reshape(n, idx.shape[1], -1)  # last write wins
    if self.padding_idx is not None:
        w[:, self.padding_idx] = 0.0
    return {"weight": w}, cot


class EmbeddingOverwritingScatter(_Patched):
    fault = "embedding per-example gradient by an overwriting scatter"

    def patched(self) -> contextlib.AbstractContextManager[object]:
        return mock.patch.object(Embedding, "backward", _overwriting_backward)


# -- §9.5 -----------------------------------------------------------------------------------------
class TiedOneUseOnly(Faulty):
    """Untie the parameter into two copies, differentiate, keep only the first use's gradient."""

    fault = "tied parameter gradient from its first use only"

    @staticmethod
    def _untied(problem: Problem) -> Problem:
        net = problem.network
        params = dict(problem.params)
        for alias, target in net.tied:
            params[alias] = params[target]
        return Problem(Network(net.layers), problem.loss, problem.reduction, params,
                       problem.batch)

    @staticmethod
    def _first_use(problem: Problem, grads: Grads) -> Grads:
        return {k: v for k, v in grads.items() if k in problem.network.param_shapes()}

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        loss, grads = batch_grad(self._untied(problem), np.dtype(config.dtype))
        return loss, self._first_use(problem, grads)

    def per_example(self, problem: Problem, config: Config, method: str) -> PerExample:
        losses, grads = per_example_grads(self._untied(problem), np.dtype(config.dtype))
        return losses, self._first_use(problem, grads)


# -- §9.2 -----------------------------------------------------------------------------------------
def _undilated_patches(self: Conv1d, a: Array) -> Array:
    """The patches as if the dilation were 1 (same L_out): where a dilation-blind weight
    gradient reads its inputs."""
    x = a.reshape(a.shape[0], self.in_channels, self.length)
    pos = (np.arange(self.out_length)[:, None] * self.stride
           + np.arange(self.kernel_size)[None, :] - self.padding)
    inside = (pos >= 0) & (pos < self.length)
    return np.where(inside, x[:, :, np.clip(pos, 0, self.length - 1)], 0.0).astype(a.dtype)


class ConvIgnoresDilation(_Patched):
    fault = "conv weight gradient ignoring dilation"

    def patched(self) -> contextlib.AbstractContextManager[object]:
        return mock.patch.object(Conv1d, "patches", _undilated_patches)


# -- §9.3.2 ---------------------------------------------------------------------------------------
_attention_forward = SelfAttention.forward


def _unguarded_forward(self: SelfAttention, a: Array, site: Site) -> tuple[Array, Any]:
    """The reference's forward, then P = e/Σe recomputed without the all-masked guard."""
    out, (q, k, v, p, c) = _attention_forward(self, a, site)
    assert site.keep is not None
    dead = ~site.keep.astype(bool).any(axis=-1)  # examples with every key masked
    if not dead.any():
        return out, (q, k, v, p, c)
    with np.errstate(invalid="ignore"):
        p = np.where(dead[:, None, None, None], np.zeros_like(p) / 0.0, p)
        c = self._merge(np.einsum("nhts,nhsd->nhtd", p, v))
        z = c @ site.param("out_proj.weight").T + site.param("out_proj.bias")
    return z, (q, k, v, p, c)


class AttentionAllMaskedNaN(_Patched):
    fault = "all-masked attention row NaN (softmax 0/0)"

    def patched(self) -> contextlib.AbstractContextManager[object]:
        return mock.patch.object(SelfAttention, "forward", _unguarded_forward)


embedding_overwriting_scatter = EmbeddingOverwritingScatter("embedding_overwriting_scatter")
tied_one_use_only = TiedOneUseOnly("tied_one_use_only")
conv_ignores_dilation = ConvIgnoresDilation("conv_ignores_dilation")
attention_all_masked_nan = AttentionAllMaskedNaN("attention_all_masked_nan")
