"""The backend contract's methods (``reference.contract``) for JAX: ``JaxBackend``.

``loss_and_grad`` and ``per_example`` run the bucketed programs (``padded``, with the problem in
its bucket: ``buckets``) or, with ``BATCHGRAD_JAX_BUCKETS=0``, the plain ones (``plain``);
``train`` and ``accumulate`` build on ``loss_and_grad`` (``update``, ``accumulation``).

Train-mode BatchNorm, ``per_example``: raises ``reference.contract.Undefined`` (§4.3). What a
JAX user gets instead, measured (N = 4, Dense → BatchNorm → Dense, squared error): (a) the
batched loss's code vmapped, ``jax.vmap(jax.grad(ℓ_one))`` with ``mean(axis=0)`` inside, takes
the statistics over the one example's *features* (a LayerNorm without saying so), silently;
(b) ``ℓ_one = ℓ(x_i[None])``, a batch of one: v = 0, x̂ = 0 exactly, losses that are not the
ℓ_i, and gradients exactly 0 for γ and everything below the BatchNorm, silently; (c)
``jax.lax.pmean`` over a vmap ``axis_name`` (flax's ``BatchNorm(axis_name=...)``): the losses
are the coupled ℓ_i and the lanes sum to ∇Σℓ_i exactly, but lane i is not ∂ℓ_i/∂θ (it
differed from the Jacobian row by 0.68 in a weight below the BatchNorm; γ's agreed). None
raises. ``loss_and_grad`` on a batch of one computes v = 0, x̂ = 0 (L from β alone, zero
gradient below the BatchNorm), the reference's value; PyTorch raises ValueError there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
import optax

from reference.batch import Batch
from reference.capabilities import DEFAULT_CAPABILITIES, KnownDeviation
from reference.contract import Config
from reference.layers import STRUCTURED
from reference.loop import LOOP_FEATURES
from reference.problem import Problem
from reference.types import Grads, Undefined

from . import accumulation, update
from . import loop as _loop
from .buckets import pad, unpad
from .compilation import TRACES, buckets_enabled, on_device
from .devices import check, gpu, stack
from .layers import bucketable, rule
from .padded import PADDED_BATCH, PADDED_SINGLE, PADDED_VMAP, Params
from .plain import (
    PLAIN_BATCH,
    PLAIN_SINGLE,
    PLAIN_VMAP,
    bound_plain_caches,
    plain_inputs,
    plain_static,
)

__all__ = ["JaxBackend", "JaxMultiStepsAsIs"]


class JaxBackend:
    """JAX adapter. ``buckets`` None reads BATCHGRAD_JAX_BUCKETS at every call (default on)."""

    name = "jax"

    def __init__(self, buckets: bool | None = None) -> None:
        self.buckets = buckets

    def versions(self) -> Mapping[str, str]:
        import jaxlib

        return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "optax": optax.__version__}

    def devices(self) -> Sequence[str]:
        return ("cpu", "gpu") if gpu() is not None else ("cpu",)

    def dtypes(self) -> Sequence[str]:
        return ("float64", "float32")

    def per_example_methods(self) -> Sequence[str]:
        return ("vmap", "loop")

    def capabilities(self) -> frozenset[str]:
        """The 0.2.0 vocabulary: every layer type of ``layers.LAYERS``, every activation, loss
        with its options, reduction, and sequences with masks (spec §8.6), and the layers of chapter
        9 (``reference.layers.STRUCTURED``) and the training-loop features of chapter 10
        (``train_loop``)."""
        return DEFAULT_CAPABILITIES | STRUCTURED | frozenset(LOOP_FEATURES)

    def known_deviations(self) -> tuple[KnownDeviation, ...]:
        """float64 attention: ``jax.nn.dot_product_attention`` computes its softmax in float32
        (spec §9.3.1, docs/findings/jax-dot-product-attention-float64-softmax.md), in §9.3, §9.6
        and §9.4 (a residual around attention: 1.3e6 × the float64 bound, ci profile)."""
        reason = ("jax.nn.dot_product_attention computes the softmax in float32 for float64 "
                  "inputs (docs/findings/jax-dot-product-attention-float64-softmax.md)")
        return tuple(KnownDeviation(clause, "layer:attention", reason, dtype="float64")
                     for clause in ("9.3", "9.4", "9.6"))

    @staticmethod
    def trace_counts() -> dict[str, int]:
        """Compilations so far, per jitted function (for performance reports)."""
        return dict(TRACES)

    def _bucketed(self) -> bool:
        return buckets_enabled() if self.buckets is None else self.buckets

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        dtype, device = check(config)
        with jax.default_device(device):  # numpy arguments: jit transfers them (cheaper)
            if self._bucketed() and bucketable(problem):
                p = pad(problem, dtype)
                fn = on_device(PADDED_BATCH, device)
                value, grads = jax.device_get(fn(p.params, p.net, p.ex, p.coef, p.reduction,
                                                 full=p.full))
                return float(value), unpad(problem, p.layout, grads, ())
            bound_plain_caches()
            params, data, w = plain_inputs(problem, dtype)
            value, grads = on_device(PLAIN_BATCH, device)(
                params, data, w, **plain_static(problem), reduction=problem.reduction.name)
        return float(value), {k: np.asarray(v) for k, v in jax.device_get(grads).items()}

    def per_example(
        self, problem: Problem, config: Config, method: str
    ) -> tuple[np.ndarray, Grads]:
        if method not in ("vmap", "loop"):
            raise ValueError(f"unknown per-example method {method!r}; jax has vmap, loop")
        dtype, device = check(config)
        coupled = [k for k, la in enumerate(problem.network.layers) if rule(la).couples(la)]
        if coupled:
            raise Undefined(
                f"per-example gradients are not defined through a train-mode BatchNorm (layer "
                f"{coupled[0]}; spec §4.3): each ℓ_i depends on every example through the batch "
                f"statistics. JAX raises nothing here: jax.vmap(jax.grad(ℓ_one)) silently "
                f"computes something else (statistics over the one example's features when "
                f"the batch code's mean(axis=0) is vmapped; variance 0, x̂ = 0 and zero "
                f"gradients below the BatchNorm for a batch of one; with lax.pmean over a vmap "
                f"axis_name, lanes that sum to ∇Σℓ_i but are not ∇ℓ_i)")
        n = problem.batch.size
        with jax.default_device(device):
            if self._bucketed() and bucketable(problem):
                p = pad(problem, dtype)
                if method == "vmap":
                    out = on_device(PADDED_VMAP, device)(p.params, p.net, p.ex, full=p.full)
                else:
                    params, net, ex = jax.device_put((p.params, p.net, p.ex), device)
                    single = on_device(PADDED_SINGLE, device)
                    out = stack([single(params, net, ex, np.int32(i), full=p.full)
                                 for i in range(n)])
                losses, grads = jax.device_get(out)
                return np.asarray(losses)[:n], unpad(problem, p.layout, Params(*grads),
                                                     (slice(n),))
            bound_plain_caches()
            params, data, _ = plain_inputs(problem, dtype)
            static = plain_static(problem)
            if method == "vmap":
                out = on_device(PLAIN_VMAP, device)(params, data, **static)
            else:
                rows = [jax.tree.map(lambda a, i=i: a[i], data) for i in range(n)]
                single = on_device(PLAIN_SINGLE, device)
                out = stack([single(params, row, **static) for row in rows])
        losses, grads = jax.device_get(out)
        return np.asarray(losses), {k: np.asarray(v) for k, v in grads.items()}

    # -- the optional update step (spec chapter 6) ------------------------------------------------
    def train(self, problem: Problem, config: Config, optimizer: Any,
              batches: Sequence[Batch]) -> Grads:
        """One optax update per batch from ``problem.params``; the final parameters
        (``update.train``: ∇L from ``loss_and_grad``, the optax step eager)."""
        return update.train(self.loss_and_grad, problem, config, optimizer, batches)

    # -- the optional gradient accumulation (spec §5.1–§5.5) --------------------------------------
    def accumulation_methods(self) -> Sequence[str]:
        return accumulation.METHODS

    def accumulate(self, problem: Problem, config: Config, plan: Any,
                   method: str = "sum") -> Grads:
        """Gradient accumulation over the micro-batches of a ``reference.accumulation.
        Accumulation`` plan, J_k = s_k L_k + t_k (λ/2)‖θ‖², all at the same θ: "sum" (jnp.add)
        or "average" (optax.MultiSteps), each ∇L_k from ``loss_and_grad`` (``accumulation``)."""
        return accumulation.accumulate(self.loss_and_grad, problem, config, plan, method)

    # -- the optional training loop (spec chapter 10, §8.10) --------------------------------------
    def train_loop(self, problem: Problem, config: Config, loop: Any,
                   batches: Sequence[Batch]) -> Mapping[str, Any]:
        """One epoch through ``optax.MultiSteps(apply_if_finite(chain(clip_by_global_norm, opt)),
        every_k_schedule=window sizes)`` (``loop.train_loop``)."""
        return _loop.train_loop(self.loss_and_grad, self.per_example, problem, config, loop,
                                batches)


class JaxMultiStepsAsIs(JaxBackend):
    """The jax backend with ``train_loop`` leaving ``optax.MultiSteps``' accumulator as optax
    leaves it after a non-finite window (``loop`` module docstring; the finding of spec §10.3):
    ``--backend batchgrad_spec.backends.jax_backend:multisteps_as_is``."""

    name = "jax_multisteps_as_is"

    def train_loop(self, problem: Problem, config: Config, loop: Any,
                   batches: Sequence[Batch]) -> Mapping[str, Any]:
        return _loop.train_loop(self.loss_and_grad, self.per_example, problem, config, loop,
                                batches, workaround=False)
